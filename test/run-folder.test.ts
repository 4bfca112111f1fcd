// The run folder's owner (src/experiment/run-folder.ts): its name, the whole-folder check
// before training, temp files, failed.json and runStatus. Issue 9's numbered cases are
// marked (case N); the end-to-end ones are in test/integrity.test.ts.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { CheckpointError, writeCheckpoint } from '../src/experiment/checkpoint';
import { outputError, OutputError, writeFileAtomic } from '../src/experiment/files';
import { loadExperiment } from '../src/experiment/grid';
import { appendMetricsRow, createMetrics } from '../src/experiment/metrics-csv';
import { FolderError, identityOf, RunFolder, runDir, runStatus } from '../src/experiment/run-folder';
import { checkNet, completeRecipe, SettingsError, type RunSettings } from '../src/experiment/settings';
import { compareRuns } from '../src/report/compare';
import { loadRuns } from '../src/report/runs';
import type { Row } from '../src/train/trainer';
import { tempDir } from './helpers';

function settings(out: string, over: Partial<RunSettings> = {}): RunSettings {
  return {
    net: { depth: 8, plain: false, shortcut: 'A' },
    seed: 1,
    recipe: completeRecipe({ iterations: 12, evalEvery: 3 }),
    dataDir: '/nonexistent',
    recordsPerFile: 64,
    out,
    engine: 'cpu',
    precision: 'fp32',
    fresh: false,
    ...over,
  };
}

const row = (iteration: number): Row => ({
  iteration,
  epoch: iteration / 10,
  lr: 0.1,
  trainLoss: 2,
  trainError: 80,
  testError: 85,
  valError: null,
  elapsedS: iteration,
  imagesPerS: 100,
});

/** A folder as a run leaves it after `iteration` steps, rows every 3 (no training needed). */
function writeRun(s: RunSettings, iteration: number, o: { identity?: unknown; summary?: boolean } = {}): string {
  const dir = runDir(s);
  fs.mkdirSync(dir, { recursive: true });
  const config = {
    name: path.basename(dir),
    variant: s.net.plain ? 'plain' : 'resnet',
    depth: s.net.depth,
    shortcut: s.net.shortcut,
    seed: s.seed,
    params: 1000,
    net: s.net,
    recipe: s.recipe,
    precision: s.precision,
    data: { recordsPerFile: s.recordsPerFile },
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  createMetrics(path.join(dir, 'metrics.csv'));
  for (let i = 3; i <= iteration; i += 3) appendMetricsRow(path.join(dir, 'metrics.csv'), row(i));
  const state = { iteration, warmup: {}, interval: {}, elapsedS: iteration };
  writeCheckpoint(
    path.join(dir, 'checkpoint.bin'),
    { version: 2, state, identity: o.identity ?? identityOf(s) },
    new Map([['param/w', { shape: [2], data: Float32Array.from([1, 2]) }]]),
  );
  if (o.summary) {
    const sum = { finished: true, iterations: iteration, final_train_error: 1, final_test_error: 2 };
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(sum));
  }
  return dir;
}

/** Runs the folder check as `run` does; returns the plan or the error. */
async function check(s: RunSettings): Promise<string> {
  const folder = await RunFolder.open(runDir(s));
  try {
    return folder.check(identityOf(s)).kind;
  } finally {
    folder.close();
  }
}

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of fs.readdirSync(dir)) out[f] = fs.readFileSync(path.join(dir, f)).toString('base64');
  return out;
}

/** The check fails with one line naming `file` and matching `pattern`, and changes nothing. */
async function refused(s: RunSettings, file: string, pattern: RegExp): Promise<void> {
  const dir = runDir(s);
  const before = snapshot(dir);
  await assert.rejects(check(s), (e: Error) => {
    assert.ok(e instanceof FolderError || e instanceof SettingsError || e instanceof CheckpointError, String(e));
    assert.ok(!e.message.includes('\n'), e.message);
    assert.ok(e.message.includes(file), `names ${file}: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
  assert.deepEqual(snapshot(dir), before, 'nothing changed or deleted');
}

describe('run folder check (before any training step)', () => {
  it('a healthy folder resumes, a finished one is finished, an empty one is new', async () => {
    const out = tempDir();
    assert.equal(await check(settings(out)), 'new');
    writeRun(settings(out), 6);
    assert.equal(await check(settings(out)), 'resume');
    // a row written just before a kill, before its checkpoint: still resumable
    appendMetricsRow(path.join(runDir(settings(out)), 'metrics.csv'), row(9));
    assert.equal(await check(settings(out)), 'resume');
    writeRun(settings(out, { seed: 2 }), 12, { summary: true });
    assert.equal(await check(settings(out, { seed: 2 })), 'finished');
  });

  it('case 2: a damaged metrics.csv (no header, duplicated row, empty)', async () => {
    const out = tempDir();
    const s = settings(out);
    const dir = writeRun(s, 6);
    const csv = path.join(dir, 'metrics.csv');
    const good = fs.readFileSync(csv, 'utf8');
    const lines = good.split('\n');
    fs.writeFileSync(csv, lines.slice(1).join('\n'));
    await refused(s, 'metrics.csv', /is damaged: its first line is not the header.*--fresh/);
    fs.writeFileSync(csv, [lines[0], lines[1], lines[1], lines[2], ''].join('\n'));
    await refused(s, 'metrics.csv', /is damaged: metrics.csv line 3: iteration 3 after 3/);
    fs.writeFileSync(csv, '');
    await refused(s, 'metrics.csv', /is damaged: it is empty/);
    fs.writeFileSync(csv, [lines[0], lines[1], ''].join('\n')); // a row lost
    await refused(s, 'metrics.csv', /does not match checkpoint.bin at iteration 6 \(rows at 3, expected 3,6\)/);
  });

  it('case 3: an edited checkpoint header (iteration) fails the checksum', async () => {
    const s = settings(tempDir());
    const file = path.join(writeRun(s, 6), 'checkpoint.bin');
    const bytes = fs.readFileSync(file);
    const text = bytes.toString('latin1');
    const at = text.indexOf('"iteration":6');
    assert.ok(at > 0);
    bytes.write('"iteration":9', at, 'latin1');
    fs.writeFileSync(file, bytes);
    await refused(s, 'checkpoint.bin', /unreadable \(checksum mismatch\).*--fresh/);
  });

  it('case 4: a checkpoint of another depth or seed', async () => {
    const s = settings(tempDir());
    writeRun(s, 6, { identity: identityOf({ ...s, net: { ...s.net, depth: 14 } }) });
    await refused(s, 'checkpoint.bin', /belongs to another run \(net.depth 14 there, 8 now\)/);
    writeRun(s, 6, { identity: identityOf({ ...s, seed: 2 }) });
    await refused(s, 'checkpoint.bin', /belongs to another run \(seed 2 there, 1 now\)/);
  });

  it('case 5: config.json missing beside a checkpoint; other settings refused', async () => {
    const s = settings(tempDir());
    const dir = writeRun(s, 6);
    await refused(
      settings(s.out, { recipe: { ...s.recipe, lr: 0.05 } }),
      'other settings',
      /recipe.lr 0.1 there, 0.05 now/,
    );
    fs.rmSync(path.join(dir, 'config.json'));
    await refused(s, 'config.json', /is missing beside checkpoint.bin/);
  });

  it('case 6: metrics.csv missing beside a checkpoint; rows without a checkpoint', async () => {
    const s = settings(tempDir());
    const dir = writeRun(s, 6);
    fs.rmSync(path.join(dir, 'metrics.csv'));
    await refused(s, 'metrics.csv', /is missing beside checkpoint.bin \(iteration 6\)/);
    writeRun(s, 6);
    fs.rmSync(path.join(dir, 'checkpoint.bin'));
    await refused(s, 'checkpoint.bin', /is missing but metrics.csv has 2 rows/);
  });

  it('case 9: a corrupt config.json or summary.json names the file', async () => {
    const s = settings(tempDir());
    const dir = writeRun(s, 12, { summary: true });
    fs.writeFileSync(path.join(dir, 'summary.json'), '{"finished": tr');
    await refused(s, 'summary.json', /is not valid JSON .*delete it to let the run finish again/);
    fs.writeFileSync(path.join(dir, 'config.json'), "{'net'");
    await refused(s, 'config.json', /is not valid JSON/);
  });

  it('case 7: leftover temp files are removed at start; a failed write removes its temp file', async () => {
    const s = settings(tempDir());
    const dir = writeRun(s, 6);
    fs.writeFileSync(path.join(dir, 'metrics.csv.tmp-12345'), 'partial');
    fs.writeFileSync(path.join(dir, 'checkpoint.bin.tmp-99'), 'partial');
    assert.equal(await check(s), 'resume');
    assert.deepEqual(fs.readdirSync(dir).sort(), ['checkpoint.bin', 'config.json', 'metrics.csv']);
    // A write that fails (here: the target is a folder) leaves no temp file behind.
    fs.mkdirSync(path.join(dir, 'blocked'));
    assert.throws(() => writeFileAtomic(path.join(dir, 'blocked'), 'x'));
    assert.deepEqual(fs.readdirSync(dir).sort(), ['blocked', 'checkpoint.bin', 'config.json', 'metrics.csv']);
    const full = outputError(dir, Object.assign(new Error('write'), { code: 'ENOSPC' }));
    assert.ok(full instanceof OutputError);
    assert.match(full.message, new RegExp(`cannot write ${dir}: ENOSPC \\(no space left on the device\\)`));
  });

  it('case 12: no empty folder is left by a run that never started; EROFS-like errors are named', async () => {
    const out = path.join(tempDir(), 'a', 'b');
    const folder = await RunFolder.open(runDir(settings(out)));
    assert.ok(fs.existsSync(folder.dir));
    folder.recordFailure(new Error('no data'), 0); // nothing written: no failed.json either
    folder.close();
    assert.equal(fs.existsSync(path.dirname(out)), false, 'the folders made for it are gone');
    await assert.rejects(
      RunFolder.open('/proc/no-such/run'),
      /cannot write to \/proc\/no-such\/run: E[A-Z]+; choose another --out/,
    );
  });
});

describe('folder names (case 10)', () => {
  it('carry the schedule when it is not the paper', () => {
    const base = settings('/r');
    assert.equal(runDir({ ...base, recipe: completeRecipe({}) }), path.join('/r', 'resnet-8-s1'));
    assert.equal(
      runDir({ ...base, recipe: completeRecipe({ iterations: 400 }) }),
      path.join('/r', 'resnet-8-s1-it400'),
    );
    assert.equal(
      runDir({ ...base, recipe: completeRecipe({ iterations: 400, milestones: [100, 300] }) }),
      path.join('/r', 'resnet-8-s1-it400-m100-300'),
    );
  });

  it('a folder made before the suffix keeps resuming; one of another schedule is left alone', () => {
    const out = tempDir();
    const s = settings(out);
    const legacy = path.join(out, 'resnet-8-s1');
    fs.mkdirSync(legacy);
    const config = { net: s.net, seed: 1, recipe: s.recipe, data: { recordsPerFile: 64 } };
    fs.writeFileSync(path.join(legacy, 'config.json'), JSON.stringify(config));
    assert.equal(runDir(s), legacy);
    const paper = settings(out, { recipe: completeRecipe({}) });
    assert.equal(runDir(paper), legacy, 'the paper schedule has no suffix');
    const other = settings(out, { recipe: completeRecipe({ iterations: 400 }) });
    assert.equal(runDir(other), path.join(out, 'resnet-8-s1-it400'));
  });
});

describe('runStatus (for grid --list)', () => {
  it('not-started, in-progress, failed, finished, and who holds the lock', async () => {
    const s = settings(tempDir());
    const dir = runDir(s);
    assert.deepEqual(runStatus(dir), { state: 'not-started', iteration: 0 });
    writeRun(s, 6);
    assert.deepEqual(runStatus(dir), { state: 'in-progress', iteration: 6, plannedIterations: 12 });
    const folder = await RunFolder.open(dir);
    assert.deepEqual(runStatus(dir).lockedBy, { host: os.hostname(), pid: process.pid });
    folder.recordFailure(new Error('training loss is NaN at iteration 7\nmore'), 7);
    folder.close();
    assert.deepEqual(runStatus(dir), {
      state: 'failed',
      iteration: 7,
      plannedIterations: 12,
      error: 'training loss is NaN at iteration 7',
    });
    const again = await RunFolder.open(dir);
    again.startTraining({ net: s.net, seed: 1, recipe: s.recipe, data: { recordsPerFile: 64 } }, 6);
    again.close();
    assert.equal(runStatus(dir).state, 'in-progress', 'failed.json is removed when training starts');
    writeRun(s, 12, { summary: true });
    assert.deepEqual(runStatus(dir), { state: 'finished', iteration: 12, plannedIterations: 12 });
  });
});

describe('compare groups by the whole identity (case 1)', () => {
  it('never averages different recipes, and counts a seed once', () => {
    const out = tempDir();
    const lr05 = completeRecipe({ iterations: 12, evalEvery: 3, lr: 0.05 });
    writeRun(settings(path.join(out, 'a')), 6);
    writeRun(settings(path.join(out, 'a'), { seed: 2 }), 6);
    writeRun(settings(path.join(out, 'b'), { recipe: lr05 }), 6);
    writeRun(settings(path.join(out, 'c'), { recipe: { ...lr05, batch: 64 } }), 6);
    writeRun(settings(path.join(out, 'c'), { recipe: { ...lr05, batch: 64 }, seed: 5 }), 6);
    fs.cpSync(path.join(out, 'a'), path.join(out, 'copy-of-a'), { recursive: true });
    const report = compareRuns(loadRuns(out, () => {}));
    const rows = report.rows.map((r) => `${r.label}: ${r.seeds.join(',')}`).sort();
    assert.deepEqual(rows, ['resnet-8 lr=0.05 batch=64: 1,5', 'resnet-8 lr=0.05: 1', 'resnet-8: 1,2']);
    assert.ok(report.notes.some((n) => /seed 1 is in both/.test(n)));
  });
});

describe('experiment files (case 11)', () => {
  const load = (json: string) => {
    const file = path.join(tempDir(), 'e.json');
    fs.writeFileSync(file, json);
    return () => loadExperiment(file);
  };
  const runs = '"runs": [{ "depth": 8 }]';
  for (const [json, message] of [
    [`{ "description": "x", "recipe": { "iteration": 20 }, ${runs} }`, /recipe\.iteration: unknown key/],
    [`{ "description": "x", "runs": [{ "depth": 8, "plian": true }] }`, /runs\[0\]\.plian: unknown key/],
    [`{ "description": "x", "recipe": { "lr": "0.1" }, ${runs} }`, /recipe\.lr: .*expected number, received string/],
    [`{ "description": "x", "runs": [{ "depth": null }] }`, /runs\[0\]\.depth: .*expected number, received null/],
    [`{ "description": "x", "runs": null }`, /runs: .*expected array, received null/],
    [`null`, /\(top level\): .*expected object/],
  ] as const) {
    it(`refuses ${json}`, () => {
      assert.throws(
        load(json),
        (e: Error) => e instanceof SettingsError && message.test(e.message) && !e.message.includes('\n'),
      );
    });
  }
  it('accepts a good one', () => {
    const exp = load(
      `{ "description": "x", "recipe": { "iterations": 20 }, "runs": [{ "depth": 8, "seeds": [1, 2] }] }`,
    )();
    assert.equal(exp.recipe.iterations, 20);
    assert.equal(exp.runs.length, 2);
  });
});

describe('limits (case 12)', () => {
  it('depth has an upper bound', () => {
    assert.throws(
      () => checkNet({ depth: 600000002, plain: false, shortcut: 'A' }),
      /depth 600000002 is above the limit/,
    );
  });
});
