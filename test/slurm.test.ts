// The grid on a real Slurm (scripts/slurm-local.sh): the --emit slurm script of a tiny
// experiment, submitted unchanged with sbatch; one task requeued from outside midway
// (SIGTERM path), one warned with SIGUSR1 (the time-limit path: it checkpoints and requeues
// itself). Every run must end with the metrics of the same run made by `resnet-exp run`.
// And `srun -n 2` (no mpirun) trains one run data-parallel as `mpirun -np 2` does.
// Brings the local Slurm up if it is not (and down again after); skips when Slurm is not
// installed, except under CI, where that is a failure.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ADDON_PATH, loadAddon } from '../src/engine/native/addon';
import {
  BIN,
  cli,
  metricsWithoutTiming,
  readCsv,
  ROOT,
  tempDir,
  tinyDataParallelRun,
  writeSyntheticCifar,
} from './helpers';

const SCRIPT = path.join(ROOT, 'scripts', 'slurm-local.sh');
const installed =
  spawnSync('sh', ['-c', 'command -v slurmctld && command -v sbatch && command -v munged']).status === 0;
const missing = 'Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge)';
if (!installed && process.env.CI) throw new Error(`${missing}: CI must install it`);

const RECORDS = 64;
const work = tempDir('resnet-exp-slurm-');
const data = path.join(work, 'data');
const results = path.join(work, 'results');
const expFile = path.join(work, 'tiny.json');
const RECIPE = { iterations: 120, evalEvery: 20, batch: 16 };
const RUNS = [{ depth: 8, plain: true }, { depth: 8 }, { depth: 8, seeds: [2] }];
const NAMES = ['plain-8-s1-it120', 'resnet-8-s1-it120', 'resnet-8-s2-it120'];
let env: NodeJS.ProcessEnv = process.env;
let broughtUp = false;
let job = '';
/** Why the local Slurm could not be brought up (e.g. not root), if it could not. */
let unavailable: string | undefined;

function sh(cmd: string, args: string[], check = true): string {
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', timeout: 60_000 });
  if (check && r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, f: () => T | undefined, seconds = 240): Promise<T> {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const v = f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function rows(name: string): number {
  try {
    return readCsv(path.join(results, 'tiny', name, 'metrics.csv')).length - 1;
  } catch {
    return 0;
  }
}

/** `scontrol show job` of one task as key=value pairs (kept MinJobAge seconds after it ends). */
function jobInfo(id: string): Record<string, string> {
  const text = sh('scontrol', ['show', 'job', '-o', id], false);
  return Object.fromEntries(
    text
      .trim()
      .split(/\s+/)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
}

/**
 * A requeued task waits ~120 s (BeginTime); the test has no time for that. But not less
 * than a second either: slurmd revokes the job's credential when it kills the task, with a
 * time of whole seconds, and refuses a relaunch whose credential is of that same second
 * ("Job 1 already killed, do not launch batch job" in slurmd.log; the task then ends FAILED,
 * exit 1, with no output). Seen on a loaded machine, where PENDING comes within the second.
 */
async function startNow(id: string): Promise<void> {
  await until(`${id} to be pending again`, () => jobInfo(id).JobState === 'PENDING' || undefined, 60);
  await sleep(1100);
  sh('scontrol', ['update', `JobId=${id}`, 'StartTime=now']);
}

describe('grid on a local Slurm', { skip: installed ? false : missing, timeout: 600_000 }, () => {
  before(() => {
    const conf = '/tmp/resnet-exp-slurm/slurm.conf';
    env = { ...process.env, SLURM_CONF: process.env.SLURM_CONF ?? conf };
    broughtUp = spawnSync('scontrol', ['ping'], { env }).status !== 0;
    const up = spawnSync('bash', [SCRIPT, 'up'], { encoding: 'utf8', timeout: 60_000 });
    if (up.status !== 0) {
      unavailable = `scripts/slurm-local.sh up failed: ${up.stderr.trim().split('\n').pop()}`;
      if (process.env.CI) throw new Error(unavailable);
      return;
    }
    env.SLURM_CONF = /export SLURM_CONF=(\S+)/.exec(up.stdout)![1];
    writeSyntheticCifar(data, RECORDS);
    fs.writeFileSync(expFile, JSON.stringify({ description: 'tiny', recipe: RECIPE, runs: RUNS }));
  });
  after(() => {
    if (job) spawnSync('scancel', [job], { env });
    if (broughtUp) spawnSync('bash', [SCRIPT, 'down'], { timeout: 60_000 });
  });

  it('runs every task to the same metrics as `resnet-exp run`, two of them requeued midway', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const emitted = cli([
      'grid',
      expFile,
      '--emit',
      'slurm',
      '--cpus',
      '1',
      '--mem',
      '1',
      '--time',
      '10',
      '--data-dir',
      data,
      '--records-per-file',
      String(RECORDS),
      '--out',
      results,
    ]);
    assert.equal(emitted.status, 0, emitted.stderr);
    const script = path.join(work, 'tiny.sbatch');
    fs.writeFileSync(script, emitted.stdout);
    const t0 = Date.now();
    job = /Submitted batch job (\d+)/.exec(sh('sbatch', [script]))![1];

    // Task 1: requeued from outside (what preemption or an admin does) at its first row;
    // the rest of the run takes seconds, scontrol milliseconds, so it is surely midway.
    // (Suspending it first does not work: Slurm holds a requeued suspended job, and refuses
    // to signal a suspended one.)
    await until('task 1 to write a row', () => rows(NAMES[1]) >= 1 || undefined);
    const rowsAtRequeue1 = rows(NAMES[1]);
    sh('scontrol', ['requeue', `${job}_1`]);

    // Task 2: the time-limit warning, sent to the batch shell as --signal=B:USR1 would.
    await until('task 2 to write a row', () => rows(NAMES[2]) >= 1 || undefined);
    const rowsAtRequeue2 = rows(NAMES[2]);
    sh('scancel', ['--batch', '--signal=USR1', `${job}_2`]);

    await startNow(`${job}_1`);
    await startNow(`${job}_2`);
    await until('the array to finish', () => sh('squeue', ['-h', '-j', job]).trim() === '' || undefined);
    const seconds = ((Date.now() - t0) / 1000).toFixed(1);

    const logs = path.join(results, 'tiny', 'logs');
    for (const [i, name] of NAMES.entries()) {
      const info = jobInfo(`${job}_${i}`);
      const log = fs.readFileSync(path.join(logs, `${job}_${i}.log`), 'utf8');
      assert.equal(info.JobState, 'COMPLETED', `task ${i}: ${JSON.stringify(info)}\n${log}`);
      assert.match(log, new RegExp(`run ${i} of 0-2, from SLURM_ARRAY_TASK_ID`), log);
      assert.ok(fs.existsSync(path.join(results, 'tiny', name, 'summary.json')), `${name} finished`);
      if (i === 0) assert.equal(info.Restarts, '0');
      else {
        // Two starts in one appended log; the second resumed where the first stopped.
        assert.equal(info.Restarts, '1', `task ${i} restarts`);
        assert.equal(log.match(/^resnet-exp task /gm)?.length, 2, log);
        const resumed = /resuming \S+ at iteration (\d+)/.exec(log);
        assert.ok(resumed, `task ${i} resumed from its checkpoint:\n${log}`);
        const at = Number(resumed[1]);
        assert.ok(at > 0 && at < RECIPE.iterations, `resumed midway, at ${at}`);
        assert.ok(at >= (i === 1 ? rowsAtRequeue1 : rowsAtRequeue2) * RECIPE.evalEvery);
      }
    }
    assert.match(fs.readFileSync(path.join(logs, `${job}_2.log`), 'utf8'), /requeued/);
    process.stderr.write(`slurm job ${job}: 3 tasks, 2 requeued, ${seconds} s\n`);

    // The same runs, one by one, without a scheduler.
    const ref = path.join(work, 'ref');
    for (const [i, r] of RUNS.entries()) {
      const args = [
        'run',
        '--depth',
        '8',
        '--iterations',
        '120',
        '--eval-every',
        '20',
        '--batch',
        '16',
        '--threads',
        '1',
      ];
      if (r.plain) args.push('--plain');
      args.push('--seed', String(r.seeds?.[0] ?? 1), '--data-dir', data, '--records-per-file', String(RECORDS));
      const made = cli([...args, '--out', ref]);
      assert.equal(made.status, 0, made.stderr);
      assert.deepEqual(
        metricsWithoutTiming(path.join(results, 'tiny', NAMES[i], 'metrics.csv')),
        metricsWithoutTiming(path.join(ref, NAMES[i], 'metrics.csv')),
        `${NAMES[i]}: the Slurm run's metrics equal the uninterrupted run's`,
      );
    }
  });

  // Issue 8 under Slurm: `srun -n 2` starts the ranks itself (PMIx, MpiDefault=pmix), without
  // mpirun; they must train one run data-parallel exactly as `mpirun -np 2` does.
  it('srun -n 2 trains one run data-parallel, with the same metrics as mpirun -np 2', (t) => {
    if (unavailable) return t.skip(unavailable);
    const noMpi =
      spawnSync('mpirun', ['--version']).status !== 0
        ? 'mpirun not found'
        : !fs.existsSync(ADDON_PATH) || !loadAddon().hasMpi
          ? 'the native engine was built without MPI'
          : undefined;
    if (noMpi && process.env.CI) throw new Error(`CI: ${noMpi}`);
    if (noMpi) return t.skip(noMpi);
    const args = (out: string) => [
      BIN,
      ...tinyDataParallelRun({ data, records: RECORDS, out, iterations: 24, evalEvery: 8 }),
    ];
    const viaSrun = path.join(work, 'srun');
    const s = spawnSync(
      'srun',
      ['-n', '2', '--cpus-per-task', '1', '--mem', '1G', process.execPath, ...args(viaSrun)],
      {
        env,
        encoding: 'utf8',
        timeout: 300_000,
        cwd: ROOT,
      },
    );
    assert.equal(s.status, 0, s.stderr);
    assert.equal(s.stderr.split('\n').filter((l) => l.startsWith('finished')).length, 1, s.stderr);
    const run = path.join(viaSrun, 'resnet-8-s1-it24');
    assert.deepEqual(fs.readdirSync(viaSrun), ['resnet-8-s1-it24']);
    const config = JSON.parse(fs.readFileSync(path.join(run, 'config.json'), 'utf8'));
    assert.equal(config.world.size, 2);
    assert.equal(config.world.launcher, 'srun');

    const viaMpirun = path.join(work, 'mpirun');
    const m = spawnSync(
      'mpirun',
      ['--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath, ...args(viaMpirun)],
      {
        encoding: 'utf8',
        timeout: 300_000,
        cwd: ROOT,
      },
    );
    assert.equal(m.status, 0, m.stderr);
    const figures = metricsWithoutTiming(path.join(run, 'metrics.csv'));
    assert.equal(figures.length, 1 + 3);
    assert.deepEqual(figures, metricsWithoutTiming(path.join(viaMpirun, 'resnet-8-s1-it24', 'metrics.csv')));
  });
});
