// Issue 9 end to end, on `--engine cpu` so that it holds where the native engine is not
// built: the folder check happens before training, failures are recorded, resume is exact.
// Tiny on purpose (tfjs cpu is slow): depth 8, batch 2, 2 iterations, 16-record files; the
// kill -9 resume tests are in cli.test.ts (native engine).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { processStart } from '../src/experiment/lock';
import { runStatus } from '../src/experiment/run-folder';
import { cli, tempDir, writeSyntheticCifar } from './helpers';

const RECORDS = 16;
const work = tempDir('resnet-exp-integrity-');
const data = path.join(work, 'data');
const args = (out: string, extra: string[] = []) => [
  'run',
  '--engine',
  'cpu',
  '--depth',
  '8',
  '--iterations',
  '2',
  '--eval-every',
  '1',
  '--batch',
  '2',
  '--data-dir',
  data,
  '--records-per-file',
  String(RECORDS),
  '--out',
  out,
  ...extra,
];
const dirOf = (out: string) => path.join(out, 'resnet-8-s1-it2');

/** Exit 1, one `error:` line as the last word, matching `pattern`, and no training started. */
function refusedBeforeTraining(r: { status: number | null; stderr: string }, pattern: RegExp): void {
  assert.equal(r.status, 1, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.filter((l) => l.startsWith('error: ')).length, 1, r.stderr);
  assert.match(lines[lines.length - 1], pattern);
  assert.ok(!/engine: /.test(r.stderr), `stopped before loading an engine: ${r.stderr}`);
}

function files(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of fs.readdirSync(dir)) out[f] = fs.readFileSync(path.join(dir, f)).toString('base64');
  return out;
}

/** A finished tiny run, copied for each case so that the cases do not depend on each other. */
let finished: string;
function copyOfFinished(name: string): string {
  const out = path.join(work, name);
  fs.cpSync(finished, out, { recursive: true });
  return dirOf(out);
}

before(() => {
  writeSyntheticCifar(data, RECORDS);
  finished = path.join(work, 'finished');
  const r = cli(args(finished));
  assert.equal(r.status, 0, r.stderr);
});

describe('integrity on --engine cpu', () => {
  it('a finished run in a schedule-named folder; resuming from its last checkpoint changes no row', () => {
    const dir = copyOfFinished('resume');
    const csv = fs.readFileSync(path.join(dir, 'metrics.csv'), 'utf8');
    assert.equal(csv.trim().split('\n').length, 3);
    fs.rmSync(path.join(dir, 'summary.json'));
    const r = cli(args(path.dirname(dir)));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /resuming .* at iteration 2/);
    assert.equal(fs.readFileSync(path.join(dir, 'metrics.csv'), 'utf8'), csv);
    assert.equal(runStatus(dir).state, 'finished');
  });

  it('case 2: metrics.csv without its header', () => {
    const dir = copyOfFinished('no-header');
    fs.rmSync(path.join(dir, 'summary.json'));
    const csv = path.join(dir, 'metrics.csv');
    fs.writeFileSync(csv, fs.readFileSync(csv, 'utf8').split('\n').slice(1).join('\n'));
    const before = files(dir);
    refusedBeforeTraining(cli(args(path.dirname(dir))), /metrics\.csv is damaged: its first line is not the header/);
    const after = files(dir);
    delete after['failed.json'];
    assert.deepEqual(after, before, 'nothing deleted or changed');
    assert.equal(runStatus(dir).state, 'failed');
  });

  it('case 5: config.json deleted beside the checkpoint; other settings refused', () => {
    const dir = copyOfFinished('no-config');
    fs.rmSync(path.join(dir, 'summary.json'));
    refusedBeforeTraining(
      cli(args(path.dirname(dir), ['--lr', '0.05'])),
      /other settings \(recipe\.lr 0\.1 there, 0\.05 now/,
    );
    fs.rmSync(path.join(dir, 'config.json'));
    refusedBeforeTraining(
      cli(args(path.dirname(dir), ['--lr', '0.05'])),
      /config\.json is missing beside checkpoint\.bin/,
    );
  });

  it('case 8: run.lock of a live process names run.lock, its host and pid', () => {
    const dir = copyOfFinished('locked');
    const lock = {
      host: os.hostname(),
      pid: process.pid,
      start: processStart(process.pid),
      heartbeat: Date.now(),
      token: 't',
    };
    fs.writeFileSync(path.join(dir, 'run.lock'), JSON.stringify(lock));
    const r = cli(args(path.dirname(dir)));
    refusedBeforeTraining(
      r,
      new RegExp(`run\\.lock is held by pid ${process.pid} on this host \\(${os.hostname()}\\)`),
    );
    assert.equal(runStatus(dir).state, 'finished', 'a held lock is not a failure of the run');
  });

  it('case 9: a corrupt summary.json names it', () => {
    const dir = copyOfFinished('bad-summary');
    fs.writeFileSync(path.join(dir, 'summary.json'), '{"finished": tr');
    refusedBeforeTraining(cli(args(path.dirname(dir))), /summary\.json is not valid JSON/);
  });

  it('a diverging run records failed.json (for grid --list)', () => {
    const out = path.join(work, 'diverge');
    const r = cli(args(out, ['--lr', '1e30']));
    assert.equal(r.status, 1);
    assert.match(r.stderr, /error: training loss is (NaN|Infinity|-Infinity) at iteration \d+/);
    const status = runStatus(dirOf(out));
    assert.equal(status.state, 'failed');
    assert.match(status.error ?? '', /training loss is/);
  });

  it('case 12: --threads above the cores, a huge depth, plot --out "", no empty folder', () => {
    const out = path.join(work, 'limits');
    refusedBeforeTraining(cli(args(out, ['--threads', '999'])), /--threads 999 is more than the \d+ cores/);
    refusedBeforeTraining(cli(args(out, ['--depth', '600000002'])), /depth 600000002 is above the limit of 2000/);
    const noData = cli(args(out, ['--data-dir', path.join(work, 'nothing-here')]));
    assert.equal(noData.status, 1);
    assert.equal(fs.existsSync(out), false, `no folder left by a run that never started: ${noData.stderr}`);
    const plot = cli(['plot', '--results', finished, '--out', '']);
    assert.equal(plot.status, 1);
    assert.match(plot.stderr, /error: --out is empty/);
  });
});
