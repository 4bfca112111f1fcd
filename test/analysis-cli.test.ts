// The analysis commands end to end, as a user runs them, on tiny synthetic runs: the
// gradients.csv a run writes (and its exact resume), --clip-grad-norm, responses, lesion,
// plot --gradients.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { ADDON_PATH } from '../src/engine/native/addon';
import { cli, cliUntil, readCsv, tempDir, writeSyntheticCifar } from './helpers';

const RECORDS = 64;
const work = tempDir('resnet-exp-analysis-');
const data = path.join(work, 'data');
const results = path.join(work, 'results');
const native = fs.existsSync(ADDON_PATH);
if (!native && process.env.CI) throw new Error('CI: the native engine must be built (npm run build:native)');
const skip = native ? false : 'the native engine is not built (install libdnnl-dev, then npm run build:native)';

/** depth 8, batch 16, 12 iterations, a row every 3: seconds. */
const runArgs = (out: string, extra: string[] = []) => [
  'run',
  ...['--depth', '8', '--iterations', '12', '--eval-every', '3', '--batch', '16'],
  ...['--data-dir', data, '--records-per-file', String(RECORDS), '--out', out],
  ...extra,
];
const resnet = path.join(results, 'resnet-8-s1-it12');
const plain = path.join(results, 'plain-8-s1-it12');

before(() => writeSyntheticCifar(data, RECORDS));

describe('analysis commands on tiny runs', { skip }, () => {
  it('a run writes gradients.csv: every conv layer at every row', () => {
    for (const extra of [[], ['--plain']]) {
      const r = cli(runArgs(results, extra));
      assert.equal(r.status, 0, r.stderr);
    }
    const rows = readCsv(path.join(resnet, 'gradients.csv'));
    assert.deepEqual(rows[0], ['iteration', 'layer', 'name', 'grad_norm']);
    // 7 conv layers (stem + 2 per block, option A: no projections) x 4 rows
    assert.equal(rows.length - 1, 7 * 4);
    assert.deepEqual([...new Set(rows.slice(1).map((r) => r[0]))], ['3', '6', '9', '12']);
    assert.deepEqual(
      rows.slice(1, 8).map((r) => r[2]),
      [
        'stem',
        'stage1/block1/conv1',
        'stage1/block1/conv2',
        'stage2/block1/conv1',
        'stage2/block1/conv2',
        'stage3/block1/conv1',
        'stage3/block1/conv2',
      ],
    );
    assert.ok(rows.slice(1).every((r) => Number(r[3]) > 0 && Number.isFinite(Number(r[3]))));
  });

  it('SIGTERM midway and resume: gradients.csv is the same as an uninterrupted run', async () => {
    // SIGTERM after the row at 6 stops before the next step or after it (timing): the
    // latter is a checkpoint in the middle of an interval, whose gradient sums the
    // checkpoint must carry. Either way the resumed file must equal the straight one.
    const out = path.join(work, 'killed');
    const p = cliUntil(runArgs(out), (o) => /iter 6\//.test(o));
    await p.reached;
    p.child.kill('SIGTERM');
    assert.equal(await p.exited, 143);
    assert.match(p.output(), /interrupted at iteration \d+/);
    const resumed = cli(runArgs(out));
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming/);
    assert.equal(
      fs.readFileSync(path.join(out, 'resnet-8-s1-it12', 'gradients.csv'), 'utf8'),
      fs.readFileSync(path.join(resnet, 'gradients.csv'), 'utf8'),
    );
  });

  it('--clip-grad-norm is part of the recipe and of the NaN message', () => {
    const out = path.join(work, 'clipped');
    const r = cli(runArgs(out, ['--clip-grad-norm', '0.5', '--iterations', '3']));
    assert.equal(r.status, 0, r.stderr);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'resnet-8-s1-it3', 'config.json'), 'utf8'));
    assert.equal(config.recipe.clipGradNorm, 0.5);
    const unclipped = cli(runArgs(out, ['--iterations', '3']));
    assert.equal(unclipped.status, 1);
    assert.match(unclipped.stderr, /other settings/);
    const bad = cli(runArgs(out, ['--clip-grad-norm', '-1']));
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^error: --clip-grad-norm must be a positive number, got '-1'$/m);
    const nan = cli(runArgs(path.join(work, 'diverge'), ['--lr', '1e30', '--iterations', '3']));
    assert.equal(nan.status, 1);
    assert.match(nan.stderr, /training loss is .* --clip-grad-norm/);
  });

  it('responses writes responses.csv per run and the Fig. 7 figure', () => {
    const r = cli(['responses', '--results', results, '--data-dir', data]);
    assert.equal(r.status, 0, r.stderr);
    for (const dir of [resnet, plain]) {
      const rows = readCsv(path.join(dir, 'responses.csv'));
      assert.deepEqual(rows[0], ['layer', 'name', 'std', 'iteration']);
      assert.equal(rows.length - 1, 7);
      assert.ok(rows.slice(1).every((row) => Number(row[2]) > 0 && row[3] === '12'));
    }
    assert.ok(fs.statSync(path.join(results, 'fig7.png')).size > 5000);
    assert.match(fs.readFileSync(path.join(results, 'fig7.svg'), 'utf8'), /sorted by magnitude/);
  });

  it('lesion writes lesion.csv and its figure; a plain net has fewer deletable blocks', () => {
    const r = cli(['lesion', resnet, plain, '--draws', '2', '--images', '32', '--out', path.join(results, 'lesion')]);
    assert.equal(r.status, 0, r.stderr);
    const res = readCsv(path.join(resnet, 'lesion.csv'));
    assert.deepEqual(res[0], ['kind', 'k', 'block', 'downsampling', 'draws', 'error_mean', 'error_std', 'images']);
    assert.deepEqual(
      res.slice(1).map((row) => row[0]),
      ['none', 'single', 'single', 'single', 'random', 'random', 'random'],
    );
    assert.deepEqual(
      res.filter((row) => row[0] === 'single').map((row) => row[3]),
      ['0', '1', '1'],
    );
    assert.ok(res.slice(1).every((row) => row[7] === '32'));
    const pl = readCsv(path.join(plain, 'lesion.csv'));
    assert.deepEqual(
      pl.slice(1).map((row) => `${row[0]}:${row[2]}`),
      ['none:', 'single:stage1/block1', 'random:'],
    );
    assert.ok(fs.statSync(path.join(results, 'lesion.png')).size > 5000);
  });

  it('bad input: one line, non-zero exit', () => {
    const r = cli(['lesion', path.join(work, 'nowhere')]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^error: .*nowhere is not a run folder/m);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    const d = cli(['lesion', resnet, '--draws', '0']);
    assert.match(d.stderr, /^error: --draws must be a whole number >= 1/m);
  });
});
