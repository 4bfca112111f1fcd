import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { CheckpointError, readCheckpoint, writeCheckpoint } from '../src/experiment/checkpoint';
import { loadExperiment, listExperiments } from '../src/experiment/grid';
import { appendMetricsRow, createMetrics, CSV_HEADER, truncateMetrics } from '../src/experiment/metrics-csv';
import type { Row } from '../src/train/trainer';
import { tempDir } from './helpers';

const row = (iteration: number, val: number | null = null): Row => ({
  iteration,
  epoch: iteration / 390.625,
  lr: 0.1,
  trainLoss: 1.23456789,
  trainError: 40.123456,
  testError: 45.5,
  valError: val,
  elapsedS: iteration * 0.5,
  imagesPerS: 612.345,
});

describe('metrics.csv', () => {
  it('has the documented columns', () => {
    assert.equal(
      CSV_HEADER.trim(),
      'iteration,epoch,lr,train_loss,train_error,test_error,val_error,elapsed_s,images_per_s',
    );
  });

  it('appends rows, leaves val_error empty without a validation set, and truncates after a checkpoint', () => {
    const file = path.join(tempDir(), 'metrics.csv');
    createMetrics(file);
    for (const it of [500, 1000, 1500]) appendMetricsRow(file, row(it));
    appendMetricsRow(file, row(2000, 12.5));
    let lines = fs.readFileSync(file, 'utf8').trim().split('\n');
    assert.equal(lines.length, 5);
    assert.equal(lines[1], '500,1.28,0.1,1.23457,40.123,45.5,,250,612.3');
    assert.equal(lines[4].split(',')[6], '12.5');
    assert.equal(truncateMetrics(file, 1000), 2);
    lines = fs.readFileSync(file, 'utf8').trim().split('\n');
    assert.deepEqual(
      lines.map((l) => l.split(',')[0]),
      ['iteration', '500', '1000'],
    );
    assert.equal(truncateMetrics(file, 0), 0);
    assert.equal(fs.readFileSync(file, 'utf8'), CSV_HEADER);
  });
});

describe('checkpoint', () => {
  const tensors = () =>
    new Map([
      ['a', { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
      ['b', { shape: [1], data: Float32Array.from([-0.5]) }],
    ]);

  it('round-trips tensors and state exactly', () => {
    const file = path.join(tempDir(), 'checkpoint.bin');
    writeCheckpoint(file, { state: { iteration: 42 } }, tensors());
    const back = readCheckpoint(file);
    assert.deepEqual(back.meta, { state: { iteration: 42 } });
    assert.deepEqual([...(back.tensors.get('a')?.data ?? [])], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(back.tensors.get('b')?.shape, [1]);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['checkpoint.bin'], 'no temp file left behind');
  });

  it('detects a truncated, damaged or foreign file with a one-line error', () => {
    const dir = tempDir();
    const file = path.join(dir, 'checkpoint.bin');
    writeCheckpoint(file, { state: { iteration: 1 } }, tensors());
    const good = fs.readFileSync(file);
    const cases: [string, Buffer][] = [
      ['truncated', good.subarray(0, good.length - 3)],
      ['flipped', Buffer.concat([good.subarray(0, good.length - 1), Buffer.from([good[good.length - 1] ^ 1])])],
      ['foreign', Buffer.from('hello world, not a checkpoint')],
      ['empty', Buffer.alloc(0)],
    ];
    for (const [what, bytes] of cases) {
      fs.writeFileSync(file, bytes);
      assert.throws(
        () => readCheckpoint(file),
        (e: Error) => e instanceof CheckpointError && !e.message.includes('\n') && e.message.includes('--fresh'),
        what,
      );
    }
  });
});

describe('experiment files', () => {
  it('ships fig6-plain, fig6-resnet, table6 and quick, all valid', () => {
    assert.deepEqual(listExperiments(), ['fig6-plain', 'fig6-resnet', 'quick', 'table6']);
    const plain = loadExperiment('fig6-plain');
    assert.deepEqual(
      plain.runs.map((r) => [r.net.depth, r.net.plain]),
      [
        [20, true],
        [32, true],
        [44, true],
        [56, true],
      ],
    );
    assert.equal(plain.recipe.iterations, 64000);
    const resnet = loadExperiment('fig6-resnet');
    assert.deepEqual(
      resnet.runs.map((r) => r.net.depth),
      [20, 32, 44, 56, 110],
    );
    assert.ok(resnet.runs.every((r) => !r.net.plain && r.net.shortcut === 'A'));
    const quick = loadExperiment('quick');
    assert.ok(quick.recipe.iterations < 64000);
    assert.equal(quick.out, 'quick');
    assert.deepEqual(
      new Set(quick.runs.map((r) => `${r.net.plain ? 'plain' : 'resnet'}-${r.net.depth}`)),
      new Set(['plain-20', 'plain-56', 'resnet-20', 'resnet-56']),
    );
    assert.ok(loadExperiment('table6').runs.some((r) => r.net.depth === 1202));
  });
  it('names the available experiments when one is missing', () => {
    assert.throws(() => loadExperiment('nope'), /available: fig6-plain/);
  });
});
