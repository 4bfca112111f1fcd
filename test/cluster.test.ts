// grid --list / --index / the scheduler's index / --emit slurm|k8s, through the built CLI
// on small synthetic data; the emitted documents are parsed (yaml library, bash -n).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { chooseIndex } from '../src/cluster/index';
import { compareRuns } from '../src/report/compare';
import { buildFig6Spec } from '../src/report/plot';
import { loadRuns } from '../src/report/runs';
import { memoryGiB, stopSeconds } from '../src/cluster/resources';
import { cli, ROOT, tempDir, writeSyntheticCifar } from './helpers';

const RECORDS = 64;
const work = tempDir('resnet-exp-cluster-');
const data = path.join(work, 'data');
const expFile = path.join(work, 'four.json');
const EXP = {
  description: 'four tiny runs',
  recipe: { iterations: 6, evalEvery: 3, batch: 16 },
  runs: [{ depth: 8, plain: true }, { depth: 8, seeds: [1, 2] }, { depth: 14 }],
};
const NAMES = ['plain-8-s1-it6', 'resnet-8-s1-it6', 'resnet-8-s2-it6', 'resnet-14-s1-it6'];
const common = (out: string) => ['--data-dir', data, '--records-per-file', String(RECORDS), '--out', out];

/** The environment without any scheduler's index, whatever runs the tests. */
function noScheduler(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.SLURM_ARRAY_TASK_ID;
  delete env.JOB_COMPLETION_INDEX;
  return env;
}

interface Listed {
  index: number;
  name: string;
  dir: string;
  plannedIterations: number;
  status: { state: string; iteration: number; error?: string };
}
function list(out: string): Listed[] {
  const r = cli(['grid', expFile, '--list', '--json', ...common(out)]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Listed[];
}

function oneLineError(r: { status: number | null; stderr: string }, pattern: RegExp): void {
  assert.equal(r.status, 1, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, pattern);
}

before(() => {
  writeSyntheticCifar(data, RECORDS);
  fs.writeFileSync(expFile, JSON.stringify(EXP));
});

describe('chooseIndex', () => {
  it('takes --index, else SLURM_ARRAY_TASK_ID, else JOB_COMPLETION_INDEX, else none', () => {
    assert.deepEqual(chooseIndex('2', 4, {}), { index: 2, source: '--index' });
    assert.deepEqual(chooseIndex(undefined, 4, { SLURM_ARRAY_TASK_ID: '3' }), {
      index: 3,
      source: 'SLURM_ARRAY_TASK_ID',
    });
    assert.deepEqual(chooseIndex(undefined, 4, { JOB_COMPLETION_INDEX: '0' }), {
      index: 0,
      source: 'JOB_COMPLETION_INDEX',
    });
    assert.deepEqual(chooseIndex('1', 4, { SLURM_ARRAY_TASK_ID: '3' }), { index: 1, source: '--index' });
    assert.equal(chooseIndex(undefined, 4, {}), undefined);
  });
  it('refuses what is not a run', () => {
    assert.throws(() => chooseIndex('4', 4, {}), /--index is 4, but this experiment has 4 runs \(indices 0-3\)/);
    assert.throws(() => chooseIndex(undefined, 4, { JOB_COMPLETION_INDEX: '9' }), /JOB_COMPLETION_INDEX.*9.*0-3/);
    assert.throws(() => chooseIndex('-1', 4, {}), /whole number/);
    assert.throws(() => chooseIndex('1.5', 4, {}), /whole number/);
  });
});

describe('grid --list and --index', () => {
  const out = path.join(work, 'results');

  it('lists every run, not started, in the order of the file', () => {
    const runs = list(out);
    assert.deepEqual(
      runs.map((r) => [r.index, r.name, r.status.state, r.plannedIterations]),
      NAMES.map((n, i) => [i, n, 'not-started', 6]),
    );
    assert.equal(runs[1].dir, path.join(out, 'four', 'resnet-8-s1-it6'));
    const table = cli(['grid', expFile, '--list', ...common(out)]);
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout, /^index\s+run\s+status\s+folder$/m);
    assert.match(table.stdout, /^3\s+resnet-14-s1-it6\s+not started\s+\//m);
  });

  it('--index runs exactly that run', () => {
    const r = cli(['grid', expFile, '--index', '1', ...common(out)], { env: noScheduler() });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /run 1 of 0-3, from --index/);
    assert.deepEqual(
      list(out).map((x) => x.status.state),
      ['not-started', 'finished', 'not-started', 'not-started'],
    );
  });

  it("a scheduler's index (JOB_COMPLETION_INDEX) is used and said on stderr", () => {
    const r = cli(['grid', expFile, ...common(out)], { env: { ...noScheduler(), JOB_COMPLETION_INDEX: '2' } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /run 2 of 0-3, from JOB_COMPLETION_INDEX/);
    assert.doesNotMatch(r.stderr, /plain-8-s1-it6|resnet-14/);
    const runs = list(out);
    assert.deepEqual(
      runs.map((x) => x.status.state),
      ['not-started', 'finished', 'finished', 'not-started'],
    );
    assert.equal(runs[2].status.iteration, 6);
  });

  it('shows a run in progress at its last row, and a failed one with its error', () => {
    // As the trainer leaves them: a run killed after its first row, before its first
    // checkpoint (a finished run without its summary, checkpoint and last row); a run whose
    // folder holds failed.json (written by the run folder code when a run fails).
    const made = cli(['grid', expFile, '--index', '3', ...common(out)], { env: noScheduler() });
    assert.equal(made.status, 0, made.stderr);
    const partial = path.join(out, 'four', 'resnet-14-s1-it6');
    fs.rmSync(path.join(partial, 'summary.json'));
    fs.rmSync(path.join(partial, 'checkpoint.bin'));
    const csv = fs.readFileSync(path.join(partial, 'metrics.csv'), 'utf8').split('\n');
    fs.writeFileSync(path.join(partial, 'metrics.csv'), csv.slice(0, 2).join('\n') + '\n');
    const failed = path.join(out, 'four', 'plain-8-s1-it6');
    fs.mkdirSync(failed, { recursive: true });
    fs.writeFileSync(path.join(failed, 'failed.json'), JSON.stringify({ error: 'loss is NaN at 4', iteration: 3 }));
    const runs = list(out);
    assert.deepEqual(runs[3].status, { state: 'in-progress', iteration: 3, plannedIterations: 6 });
    assert.equal(runs[0].status.state, 'failed');
    assert.equal(runs[0].status.error, 'loss is NaN at 4');
    const table = cli(['grid', expFile, '--list', ...common(out)]).stdout;
    assert.match(table, /resnet-14-s1-it6\s+at iteration 3\/6/);
    assert.match(table, /plain-8-s1-it6\s+failed at iteration 3: loss is NaN at 4/);
  });

  it('compare and plot read the shared folder meanwhile, marking the unfinished run', () => {
    const runs = loadRuns(out, () => {});
    const row = compareRuns(runs).rows.find((r) => r.depth === 14)!;
    assert.deepEqual([row.finishedSeeds, row.iterationsDone, row.plannedIterations], [0, 3, 6]);
    const spec = JSON.stringify(buildFig6Spec(runs));
    assert.match(spec, /"ResNet-14 \(running: 3\/6\)"/);
    assert.match(spec, /"ResNet-8"/, 'finished series are not marked');
  });

  it('an index out of range, or a bad one, is one line and exit 1, before any training', () => {
    const fresh = path.join(work, 'untouched');
    oneLineError(cli(['grid', expFile, '--index', '4', ...common(fresh)], { env: noScheduler() }), /--index is 4.*0-3/);
    oneLineError(
      cli(['grid', expFile, ...common(fresh)], { env: { ...noScheduler(), SLURM_ARRAY_TASK_ID: '7' } }),
      /SLURM_ARRAY_TASK_ID \(set by the scheduler\) is 7.*4 runs/,
    );
    oneLineError(cli(['grid', expFile, '--index', 'one', ...common(fresh)]), /--index must be a whole number/);
    oneLineError(cli(['grid', expFile, '--json', ...common(fresh)]), /--json only goes with --list/);
    oneLineError(cli(['grid', expFile, '--emit', 'slurm', '--time', '2h', ...common(fresh)]), /--time must be/);
    oneLineError(cli(['grid', expFile, '--emit', 'k8s', '--mem', '4000M', ...common(fresh)]), /--mem is whole GiB/);
    oneLineError(cli(['grid', expFile, '--emit', 'slurm', '--fresh', ...common(fresh)]), /--fresh does not go/);
    const pbs = cli(['grid', expFile, '--emit', 'pbs', ...common(fresh)]);
    assert.equal(pbs.status, 1);
    assert.match(pbs.stderr, /--emit.*'pbs' is invalid.*slurm, k8s/); // commander's, plus its --help hint
    assert.ok(!fs.existsSync(fresh), 'nothing written');
  });
});

function directives(script: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of script.split('\n')) {
    const d = /^#SBATCH --([\w-]+)(?:=(.*))?$/.exec(line);
    if (d) m.set(d[1], d[2] ?? '');
  }
  return m;
}

describe('grid --emit slurm', () => {
  it('prints a script with the array, resources, logs, requeue, warning signal and absolute paths', () => {
    const out = path.join(work, 'emitted');
    const r = cli([
      'grid',
      expFile,
      '--emit',
      'slurm',
      '--parallel',
      '2',
      '--cpus',
      '4',
      '--partition',
      'cpu',
      ...common(out),
    ]);
    assert.equal(r.status, 0, r.stderr);
    const d = directives(r.stdout);
    assert.equal(d.get('array'), '0-3%2');
    assert.equal(d.get('cpus-per-task'), '4');
    assert.equal(d.get('partition'), 'cpu');
    assert.equal(d.get('time'), '24:00:00');
    assert.equal(d.get('mem'), `${memoryGiB(14)}G`);
    assert.equal(d.get('output'), path.join(out, 'four', 'logs', '%A_%a.log'));
    assert.ok(fs.statSync(path.join(out, 'four', 'logs')).isDirectory(), 'the log folder exists before sbatch');
    assert.equal(d.get('open-mode'), 'append');
    assert.ok(d.has('requeue'));
    const lead = Number(/^B:USR1@(\d+)$/.exec(d.get('signal') ?? '')?.[1]);
    assert.ok(lead >= stopSeconds(14) + 60, `signal lead ${lead}`);
    const exec = r.stdout.split('\n').find((l) => l.startsWith('exec '))!;
    assert.equal(
      exec,
      `exec ${process.execPath} ${path.join(ROOT, 'bin', 'resnet-exp')} grid ${expFile} --data-dir ${data} ` +
        `--out ${out} --records-per-file ${RECORDS} --threads "$SLURM_CPUS_PER_TASK"`,
    );
    const check = spawnSync('bash', ['-n'], { input: r.stdout, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr);
  });

  it('names a built-in experiment by name, sized by its deepest net', () => {
    const r = cli(['grid', 'fig6-resnet', '--emit', 'slurm', '--out', path.join(work, 'fig6')]);
    assert.equal(r.status, 0, r.stderr);
    const d = directives(r.stdout);
    assert.equal(d.get('array'), '0-4');
    assert.equal(d.get('mem'), '4G'); // ResNet-110: ~3 GiB peak RSS
    assert.match(r.stdout, / grid fig6-resnet --data-dir \//);
  });
});

describe('grid --emit k8s', () => {
  it('prints an Indexed Job (and a ConfigMap for a custom experiment) that parses', () => {
    const r = cli([
      'grid',
      expFile,
      '--emit',
      'k8s',
      '--image',
      'registry.example/resnet-exp:1',
      '--results-claim',
      'res',
      '--data-claim',
      'cifar',
      '--parallel',
      '3',
      ...common(path.join(work, 'k8s')),
    ]);
    assert.equal(r.status, 0, r.stderr);
    const docs = parseAllDocuments(r.stdout);
    assert.ok(Array.isArray(docs) && docs.every((doc) => doc.errors.length === 0), 'valid YAML');
    const [cm, job] = (docs as { toJS(): unknown }[]).map((doc) => doc.toJS()) as [
      { kind: string; metadata: { name: string }; data: Record<string, string> },
      {
        apiVersion: string;
        kind: string;
        metadata: { name: string };
        spec: Record<string, unknown> & {
          template: { spec: Record<string, unknown> & { containers: Record<string, unknown>[]; volumes: unknown[] } };
        };
      },
    ];
    assert.equal(cm.kind, 'ConfigMap');
    assert.deepEqual(JSON.parse(cm.data['four.json']), EXP);
    assert.equal(job.apiVersion, 'batch/v1');
    assert.equal(job.kind, 'Job');
    assert.equal(job.metadata.name, 'resnet-exp-four');
    assert.equal(job.spec.completionMode, 'Indexed');
    assert.equal(job.spec.completions, 4);
    assert.equal(job.spec.parallelism, 3);
    assert.equal(job.spec.backoffLimitPerIndex, 2);
    assert.equal(job.spec.podReplacementPolicy, 'Failed');
    const pod = job.spec.template.spec;
    assert.equal(pod.restartPolicy, 'Never');
    assert.equal(pod.terminationGracePeriodSeconds, stopSeconds(14));
    const c = pod.containers[0];
    assert.equal(c.image, 'registry.example/resnet-exp:1');
    assert.deepEqual(c.args, [
      'grid',
      '/experiment/four.json',
      '--data-dir',
      '/data',
      '--out',
      '/results',
      '--records-per-file',
      String(RECORDS),
      '--threads',
      '2',
    ]);
    const mem = `${memoryGiB(14)}Gi`;
    assert.deepEqual(c.resources, { requests: { cpu: '2', memory: mem }, limits: { memory: mem } });
    assert.deepEqual(pod.volumes, [
      { name: 'data', persistentVolumeClaim: { claimName: 'cifar', readOnly: true } },
      { name: 'results', persistentVolumeClaim: { claimName: 'res' } },
      { name: 'experiment', configMap: { name: cm.metadata.name } },
    ]);
    assert.deepEqual(
      (c.volumeMounts as { mountPath: string }[]).map((m) => m.mountPath),
      ['/data', '/results', '/experiment'],
    );
  });

  it('a built-in experiment needs no ConfigMap; the default image is the Dockerfile tag', () => {
    const r = cli(['grid', 'fig6-plain', '--emit', 'k8s']);
    assert.equal(r.status, 0, r.stderr);
    const docs = parseAllDocuments(r.stdout) as { toJS(): { kind: string; spec?: { completions: number } } }[];
    assert.equal(docs.length, 1);
    const job = docs[0].toJS() as unknown as {
      spec: { completions: number; template: { spec: { containers: { image: string; args: string[] }[] } } };
    };
    assert.equal(job.spec.completions, 4);
    const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string })
      .version;
    assert.equal(job.spec.template.spec.containers[0].image, `resnet-exp:${version}`);
    assert.equal(job.spec.template.spec.containers[0].args[1], 'fig6-plain');
    const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    assert.match(dockerfile, /^FROM node:20-bookworm/m);
  });
});
