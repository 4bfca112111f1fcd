// The analyses on tiny nets, against direct computations, on the native engine the
// analysis commands use by default.
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { before, describe, it } from 'node:test';
import { GradientFlow } from '../src/analysis/gradient-flow';
import { deletableBlocks, isDownsampling, lesionError, lesionStudy } from '../src/analysis/lesion';
import { computeResponses } from '../src/analysis/responses';
import type { TrainedRun } from '../src/analysis/trained-run';
import { IMAGE_BYTES, type Cifar10Split } from '../src/data/cifar10';
import { ADDON_PATH } from '../src/engine/native/addon';
import { BN_EPSILON } from '../src/engine/ops';
import { selectEngine } from '../src/engine/select';
import { CifarNet, convUnits, shortcutA, type NetConfig } from '../src/model/resnet';
import { Sgd } from '../src/train/sgd';
import { trainStep } from '../src/train/step';
import { initialLoopState, trainLoop, type LoopState } from '../src/train/trainer';

// Native when built (as in CI): tfjs's pure-JavaScript cpu backend gives the same answers
// but took ~5 minutes for this file on the Xeon (its Conv2DBackpropFilter alone ~5 s a
// depth-8 step at batch 2).
before(async () => {
  await selectEngine(fs.existsSync(ADDON_PATH) ? 'native' : 'cpu');
});

/** Deterministic pseudo-random numbers in [0, 1). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomSplit(count: number, seed: number): Cifar10Split {
  const rand = lcg(seed);
  const images = new Uint8Array(count * IMAGE_BYTES).map(() => Math.floor(rand() * 256));
  const labels = new Uint8Array(count).map(() => Math.floor(rand() * 10));
  return { images, labels, count } as unknown as Cifar10Split;
}

/** A net with non-trivial BN statistics and affine parameters, as after training. */
export function fakeTrainedRun(cfg: NetConfig, count = 40, seed = 3): TrainedRun {
  const net = new CifarNet(cfg, seed);
  const rand = lcg(seed * 31);
  tf.tidy(() => {
    for (const [name, v] of net.runningStats) {
      const values = Array.from({ length: v.size }, () => (name.endsWith('var') ? 0.5 + rand() : rand() - 0.5));
      v.assign(tf.tensor1d(values));
    }
    for (const [name, v] of net.params) {
      if (name.endsWith('/gamma')) v.assign(tf.tensor1d(Array.from({ length: v.size }, () => 0.5 + rand())));
      if (name.endsWith('/beta')) v.assign(tf.tensor1d(Array.from({ length: v.size }, () => rand() - 0.5)));
    }
  });
  return {
    dir: '/nowhere',
    name: 'fake',
    net,
    config: cfg,
    iteration: 0,
    test: randomSplit(count, seed),
    mean: new Float32Array(IMAGE_BYTES).fill(120),
    dispose: () => net.dispose(),
  };
}

function stdOf(values: Float32Array | number[]): number {
  let mean = 0;
  for (const v of values) mean += v;
  mean /= values.length;
  let ss = 0;
  for (const v of values) ss += (v - mean) ** 2;
  return Math.sqrt(ss / values.length);
}

describe('responses (Fig. 7)', () => {
  it("gives each 3x3 layer's BN-output std, equal to a direct computation over all test images", () => {
    const cfg: NetConfig = { depth: 8, plain: false, shortcut: 'B' };
    const run = fakeTrainedRun(cfg);
    // batches of 16: 16 + 16 + 8 images, so the batch merging is exercised
    const rows = computeResponses(run, 16);
    // 3x3 layers only: the stem and two per block; not option B's 1x1 projections
    assert.deepEqual(
      rows.map((r) => r.name),
      ['stem', ...['stage1', 'stage2', 'stage3'].flatMap((s) => [`${s}/block1/conv1`, `${s}/block1/conv2`])],
    );
    assert.deepEqual(
      rows.map((r) => r.layer),
      [1, 2, 3, 4, 5, 6, 7],
    );

    // Direct: all 40 images at once, conv -> BN with the running statistics, by hand.
    const p = (n: string) => run.net.params.get(n) as tf.Tensor;
    const s = (n: string) => run.net.runningStats.get(n) as tf.Tensor;
    const bn = (z: tf.Tensor, u: string) =>
      tf.add(
        tf.mul(
          tf.div(tf.sub(z, s(`${u}/running_mean`)), tf.sqrt(tf.add(s(`${u}/running_var`), BN_EPSILON))),
          p(`${u}/gamma`),
        ),
        p(`${u}/beta`),
      );
    const [stemStd, conv1Std] = tf.tidy(() => {
      const x = new Float32Array(40 * IMAGE_BYTES);
      for (let i = 0; i < x.length; i++) x[i] = run.test.images[i] - 120;
      const input = tf.tensor4d(x, [40, 32, 32, 3]);
      const stem = bn(tf.conv2d(input, p('stem/w') as tf.Tensor4D, 1, 'same'), 'stem');
      const conv1 = bn(
        tf.conv2d(tf.relu(stem) as tf.Tensor4D, p('stage1/block1/conv1/w') as tf.Tensor4D, 1, 'same'),
        'stage1/block1/conv1',
      );
      return [stdOf(stem.dataSync() as Float32Array), stdOf(conv1.dataSync() as Float32Array)];
    });
    assert.ok(Math.abs(rows[0].std - stemStd) < 1e-4 * stemStd, `stem ${rows[0].std} vs ${stemStd}`);
    assert.ok(Math.abs(rows[1].std - conv1Std) < 1e-4 * conv1Std, `conv1 ${rows[1].std} vs ${conv1Std}`);
    // and the batch size does not matter
    const whole = computeResponses(run, 40);
    rows.forEach((r, i) => assert.ok(Math.abs(r.std - whole[i].std) < 1e-4 * r.std, r.name));
    run.dispose();
  });

  it('leaks no tensors', () => {
    const run = fakeTrainedRun({ depth: 8, plain: true, shortcut: 'A' }, 8);
    const before = tf.memory().numTensors;
    computeResponses(run, 4);
    assert.equal(tf.memory().numTensors, before);
    run.dispose();
  });
});

describe('lesion (Veit et al.)', () => {
  /** Copies every weight and statistic the smaller net has from the bigger one (same names). */
  function copyInto(from: CifarNet, to: CifarNet): void {
    tf.tidy(() => {
      for (const [n, v] of to.params) v.assign(from.params.get(n) as tf.Variable);
      for (const [n, v] of to.runningStats) v.assign(from.runningStats.get(n) as tf.Variable);
    });
  }

  for (const plain of [false, true]) {
    it(`deleting blocks of a ${plain ? 'plain net' : 'ResNet'} equals the net built without them`, () => {
      // depth 14 (2 blocks a stage) minus each stage's second block = depth 8 (1 block a stage)
      const run = fakeTrainedRun({ depth: 14, plain, shortcut: 'A' }, 12);
      const small = new CifarNet({ depth: 8, plain, shortcut: 'A' }, 99);
      copyInto(run.net, small);
      const deleted = new Set(['stage1/block2', 'stage2/block2', 'stage3/block2']);
      const [a, b, intact] = tf.tidy(() => {
        const x = tf.randomNormal([4, 32, 32, 3], 0, 50, 'float32', 5) as tf.Tensor4D;
        return [
          run.net.forward(x, false, undefined, { deleted }).arraySync(),
          small.forward(x, false).arraySync(),
          run.net.forward(x, false).arraySync(),
        ];
      });
      a.flat().forEach((v, i) => assert.ok(Math.abs(v - b.flat()[i]) < 1e-4 * (1 + Math.abs(v)), `logit ${i}`));
      assert.ok(
        intact.flat().some((v, i) => Math.abs(v - a.flat()[i]) > 1e-3),
        'deletion changes the output',
      );
      small.dispose();
      run.dispose();
    });
  }

  it('deletes a downsampling block of a ResNet as its option-A shortcut, never one of a plain net', () => {
    const res = fakeTrainedRun({ depth: 8, plain: false, shortcut: 'A' }, 4);
    const plain = fakeTrainedRun({ depth: 8, plain: true, shortcut: 'A' }, 4);
    assert.deepEqual(
      deletableBlocks(res).map((b) => [b.name, isDownsampling(b)]),
      [
        ['stage1/block1', false],
        ['stage2/block1', true],
        ['stage3/block1', true],
      ],
    );
    assert.deepEqual(
      deletableBlocks(plain).map((b) => b.name),
      ['stage1/block1'],
    );
    // Every block deleted: the stem's ReLU output through two option-A shortcuts
    // (subsample, zero-pad to 32 then 64 channels), pooled, then the FC layer.
    const [logits, direct] = tf.tidy(() => {
      const x = tf.randomNormal([2, 32, 32, 3], 0, 50, 'float32', 6) as tf.Tensor4D;
      const all = new Set(res.net.arch.blocks.map((b) => b.name));
      let stem: tf.Tensor4D | undefined;
      const got = res.net.forward(x, false, undefined, {
        deleted: all,
        response: (u, y) => {
          if (u.name === 'stem') stem = y;
        },
      });
      const h = shortcutA(shortcutA(tf.relu(stem as tf.Tensor4D), 32), 64);
      const p = (n: string) => res.net.params.get(n) as tf.Tensor2D;
      const expected = tf.add(tf.matMul(tf.mean(h, [1, 2]) as tf.Tensor2D, p('fc/w')), p('fc/b'));
      return [got.arraySync() as number[][], expected.arraySync() as number[][]];
    });
    logits.flat().forEach((v, i) => assert.ok(Math.abs(v - direct.flat()[i]) < 1e-5, `logit ${i}`));
    res.dispose();
    plain.dispose();
  });

  it('measures error with deletions, and k random blocks for k = 1..n, repeatably', () => {
    const run = fakeTrainedRun({ depth: 14, plain: false, shortcut: 'A' }, 12);
    const rows = lesionStudy(run, { draws: 3, seed: 7, batchSize: 6 });
    assert.equal(rows[0].kind, 'none');
    assert.equal(rows[0].errorMean, lesionError(run, new Set()));
    const single = rows.filter((r) => r.kind === 'single');
    assert.equal(single.length, 6);
    assert.deepEqual(
      single.filter((r) => r.downsampling).map((r) => r.block),
      ['stage2/block1', 'stage3/block1'],
    );
    assert.equal(single[1].errorMean, lesionError(run, new Set(['stage1/block2'])));
    const random = rows.filter((r) => r.kind === 'random');
    assert.deepEqual(
      random.map((r) => r.k),
      [1, 2, 3, 4, 5, 6],
    );
    // all six deleted: one possible choice, so no spread
    assert.equal(random[5].errorStd, 0);
    assert.equal(random[5].errorMean, lesionError(run, new Set(run.net.arch.blocks.map((b) => b.name))));
    assert.deepEqual(lesionStudy(run, { draws: 3, seed: 7, batchSize: 6 }), rows);
    run.dispose();
  });
});

describe('gradient flow and clipping', () => {
  /** tfjs's own gradients of the training loss of one batch, by parameter name. */
  function ownGradients(net: CifarNet, x: Float32Array, labels: Int32Array): Map<string, Float32Array> {
    const names = [...net.params.keys()];
    const { grads, value } = tf.variableGrads(() => {
      const logits = net.forward(tf.tensor4d(x, [labels.length, 32, 32, 3]), true);
      const oneHot = tf.oneHot(tf.tensor1d(labels, 'int32'), 10);
      return tf.neg(tf.mean(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1))) as tf.Scalar;
    }, [...net.params.values()]);
    const out = new Map(
      names.map((n) => [n, grads[(net.params.get(n) as tf.Variable).name].dataSync() as Float32Array]),
    );
    tf.dispose([value, ...Object.values(grads)]);
    return out;
  }
  const l2 = (a: Float32Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0));

  function batch(n: number, seed: number) {
    const rand = lcg(seed);
    return {
      x: Float32Array.from({ length: n * IMAGE_BYTES }, () => rand() * 2 - 1),
      labels: Int32Array.from({ length: n }, () => Math.floor(rand() * 10)),
    };
  }

  it("records each conv layer's weight-gradient norm, the mean over the interval's steps", () => {
    const cfg: NetConfig = { depth: 8, plain: false, shortcut: 'B' };
    const net = new CifarNet(cfg, 1);
    const twin = new CifarNet(cfg, 1); // same weights: the reference for each step
    const sgd = new Sgd(net.params, (n) => net.decayed(n), { momentum: 0.9, weightDecay: 1e-4 });
    const twinSgd = new Sgd(twin.params, (n) => twin.decayed(n), { momentum: 0.9, weightDecay: 1e-4 });
    const flow = new GradientFlow(net);
    assert.deepEqual(
      flow.layers,
      convUnits(net.arch).map((u) => u.name),
    );
    const interval = flow.emptyInterval();
    const expected = flow.layers.map(() => 0);
    for (let step = 0; step < 2; step++) {
      const { x, labels } = batch(4, step + 1);
      const own = ownGradients(twin, x, labels);
      flow.layers.forEach((l, i) => (expected[i] += l2(own.get(`${l}/w`) as Float32Array) / 2));
      trainStep(net, sgd, x, labels, 0.1, { processGrads: (g) => flow.process(g, interval) });
      trainStep(twin, twinSgd, x, labels, 0.1);
    }
    const means = flow.take(interval);
    means.norms.forEach((v, i) =>
      assert.ok(Math.abs(v - expected[i]) < 1e-4 * expected[i], `${means.names[i]}: ${v} vs ${expected[i]}`),
    );
    assert.ok(means.norms.every((v) => v > 0));
    assert.deepEqual(interval, flow.emptyInterval(), 'take() empties the interval');
    // logging only: the very same gradients are applied (both nets still agree)
    const [a, b] = [net, twin].map((n) => (n.params.get('stage3/block1/conv2/w') as tf.Variable).dataSync());
    assert.deepEqual(a, b);
    for (const t of [net, twin, sgd, twinSgd]) t.dispose();
  });

  it('--clip-grad-norm scales all gradients to the stated global norm, and leaves smaller ones alone', () => {
    const net = new CifarNet({ depth: 8, plain: true, shortcut: 'A' }, 2);
    const { x, labels } = batch(4, 9);
    const own = ownGradients(net, x, labels);
    const global = Math.sqrt([...own.values()].reduce((s, g) => s + l2(g) ** 2, 0));
    const grads = new Map([...own].map(([n, g]) => [n, tf.tensor(g, (net.params.get(n) as tf.Variable).shape)]));

    const clip = global / 4;
    const clipped = new GradientFlow(net, clip).process(grads, new GradientFlow(net).emptyInterval());
    assert.notEqual(clipped, grads);
    const after = Math.sqrt([...clipped.values()].reduce((s, g) => s + l2(g.dataSync() as Float32Array) ** 2, 0));
    assert.ok(Math.abs(after - clip) < 1e-4 * clip, `norm after clipping ${after}, wanted ${clip}`);
    // same direction: every gradient scaled by the same factor
    const w = 'stage2/block1/conv1/w';
    const ratio = (clipped.get(w) as tf.Tensor).dataSync()[0] / (own.get(w) as Float32Array)[0];
    assert.ok(Math.abs(ratio - clip / global) < 1e-4);
    tf.dispose([...clipped.values()]);

    const loose = new GradientFlow(net, global * 2).process(grads, new GradientFlow(net).emptyInterval());
    assert.equal(loose, grads, 'a norm under the limit is not touched');
    tf.dispose([...grads.values()]);
    net.dispose();
  });
});

describe('gradient flow across an interrupted loop', () => {
  it('a stop in the middle of an interval, state saved as JSON and resumed, gives the same interval means', async () => {
    const cfg: NetConfig = { depth: 8, plain: false, shortcut: 'A' };
    const batches = [1, 2, 3, 4].map((seed) => {
      const rand = lcg(seed);
      return {
        x: Float32Array.from({ length: 4 * IMAGE_BYTES }, () => rand() - 0.5),
        labels: Int32Array.from({ length: 4 }, () => Math.floor(rand() * 10)),
      };
    });
    const schedule = { lr: 0.1, milestones: [100], warmup: false };
    const loop = (net: CifarNet, sgd: Sgd, state: LoopState, stopAfter: number, means: number[][]) => {
      const flow = new GradientFlow(net);
      let steps = 0;
      return trainLoop({
        net,
        sgd,
        batch: (i) => batches[i],
        schedule,
        iterations: 4,
        evalEvery: 4,
        epochOf: (i) => i,
        evaluate: () => ({ test: 0, val: null }),
        state,
        onRow: async (_row, st) => {
          means.push(flow.take((st.gradients ??= flow.emptyInterval())).norms);
        },
        onStep: () => steps++,
        shouldStop: () => steps >= stopAfter,
        gradients: flow,
      });
    };
    const straight: number[][] = [];
    const a = new CifarNet(cfg, 1);
    const sgdA = new Sgd(a.params, (n) => a.decayed(n), { momentum: 0.9, weightDecay: 1e-4 });
    assert.equal(await loop(a, sgdA, initialLoopState(schedule), 99, straight), 'finished');

    const resumed: number[][] = [];
    const b = new CifarNet(cfg, 1);
    const sgdB = new Sgd(b.params, (n) => b.decayed(n), { momentum: 0.9, weightDecay: 1e-4 });
    const state = initialLoopState(schedule);
    assert.equal(await loop(b, sgdB, state, 2, resumed), 'stopped');
    assert.equal(state.iteration, 2);
    assert.equal(state.gradients?.steps, 2, 'the checkpointed state carries the interval so far');
    const saved = JSON.parse(JSON.stringify(state)) as LoopState; // as the checkpoint stores it
    assert.equal(await loop(b, sgdB, saved, 99, resumed), 'finished');
    assert.deepEqual(resumed, straight);
    for (const t of [a, b, sgdA, sgdB]) t.dispose();
  });
});
