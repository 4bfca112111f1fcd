// The training step on the engines: the native engine follows the reference (tfjs's own
// CPU kernels) step by step, and memory stays flat over a thousand iterations.
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';
import { ADDON_PATH } from '../src/engine/native/addon';
import { selectEngine } from '../src/engine/select';
import { conv2d } from '../src/engine/ops';
import { CifarNet, convUnits } from '../src/model/resnet';
import { Sgd } from '../src/train/sgd';
import { trainStep } from '../src/train/step';

const skip = fs.existsSync(ADDON_PATH) ? false : 'the native engine is not built';

function batchOf(n: number, seed: number) {
  let s = seed;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  return {
    x: new Float32Array(n * 3072).map(() => rnd() * 120 - 60),
    labels: new Int32Array(n).map(() => Math.floor(rnd() * 10)),
  };
}

async function lossCurve(
  engineName: 'native' | 'cpu',
  steps: number,
  batch: number,
  plain: boolean,
): Promise<number[]> {
  const engine = await selectEngine(engineName);
  const net = new CifarNet({ depth: 8, plain, shortcut: 'A' }, 7);
  const sgd = new Sgd(net.params, (n) => net.decayed(n), { momentum: 0.9, weightDecay: 1e-4 }, engine);
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    const { x, labels } = batchOf(batch, 100 + i);
    losses.push(trainStep(net, sgd, x, labels, 0.1).loss);
  }
  sgd.dispose();
  net.dispose();
  return losses;
}

describe('native engine against the reference', { skip }, () => {
  for (const plain of [false, true]) {
    it(`${plain ? 'plain' : 'residual'} net: the same loss curve as tfjs's CPU kernels for the first steps`, async () => {
      const steps = 3;
      const reference = await lossCurve('cpu', steps, 2, plain);
      const native = await lossCurve('native', steps, 2, plain);
      for (let i = 0; i < steps; i++) {
        // Float32 with other summation orders: agree to ~1e-4 relative, not bit for bit.
        assert.ok(
          Math.abs(native[i] - reference[i]) <= 2e-3 * Math.max(1, Math.abs(reference[i])),
          `step ${i}: native ${native[i]} vs cpu ${reference[i]}`,
        );
      }
      assert.ok(reference[steps - 1] !== reference[0], 'the weights changed');
    });
  }
});

describe('memory', { skip }, () => {
  it('numTensors is the same after iteration 10 and 1,000 (native engine)', async () => {
    const engine = await selectEngine('native');
    const net = new CifarNet({ depth: 8, plain: false, shortcut: 'A' }, 1);
    const sgd = new Sgd(net.params, (n) => net.decayed(n), { momentum: 0.9, weightDecay: 1e-4 }, engine);
    const { x, labels } = batchOf(4, 1);
    let at10 = -1;
    let bytesAt10 = -1;
    for (let i = 1; i <= 1000; i++) {
      trainStep(net, sgd, x, labels, 0.01);
      if (i === 10) {
        at10 = tf.memory().numTensors;
        bytesAt10 = tf.memory().numBytes;
      }
    }
    assert.equal(tf.memory().numTensors, at10);
    assert.equal(tf.memory().numBytes, bytesAt10);
    sgd.dispose();
    net.dispose();
  });
});

describe('BN running statistics', { skip }, () => {
  it('after two steps: m <- 0.9 m + 0.1 batch mean, v <- 0.9 v + 0.1 unbiased batch variance', async () => {
    const engine = await selectEngine('native');
    const net = new CifarNet({ depth: 8, plain: false, shortcut: 'A' }, 3);
    const sgd = new Sgd(net.params, (n) => net.decayed(n), { momentum: 0.9, weightDecay: 1e-4 }, engine);
    const first = convUnits(net.arch)[0];
    const w = net.params.get(first.name + '/w') as tf.Tensor4D;
    let mean = new Float64Array(first.outChannels); // the initial running values
    let variance = new Float64Array(first.outChannels).fill(1);
    for (let step = 0; step < 2; step++) {
      const { x, labels } = batchOf(6, 300 + step);
      // The stem's BN input for this batch, with the weights before this step's update.
      const z = tf.tidy(() => conv2d(tf.tensor4d(x, [6, 32, 32, 3]), w, 1));
      const zs = z.dataSync();
      const n = zs.length / first.outChannels;
      const next = { mean: new Float64Array(mean.length), variance: new Float64Array(mean.length) };
      for (let c = 0; c < first.outChannels; c++) {
        let s = 0;
        for (let i = c; i < zs.length; i += first.outChannels) s += zs[i];
        const mu = s / n;
        let q = 0;
        for (let i = c; i < zs.length; i += first.outChannels) q += (zs[i] - mu) ** 2;
        next.mean[c] = 0.9 * mean[c] + 0.1 * mu;
        next.variance[c] = 0.9 * variance[c] + 0.1 * (q / (n - 1));
      }
      z.dispose();
      trainStep(net, sgd, x, labels, 0.1);
      ({ mean, variance } = next);
    }
    const got = {
      mean: net.runningStats.get(first.name + '/running_mean')!.dataSync(),
      variance: net.runningStats.get(first.name + '/running_var')!.dataSync(),
    };
    for (let c = 0; c < first.outChannels; c++) {
      assert.ok(
        Math.abs(got.mean[c] - mean[c]) <= 1e-4 * (1 + Math.abs(mean[c])),
        `mean[${c}]: ${got.mean[c]} vs ${mean[c]}`,
      );
      assert.ok(
        Math.abs(got.variance[c] - variance[c]) <= 1e-4 * (1 + variance[c]),
        `variance[${c}]: ${got.variance[c]} vs ${variance[c]}`,
      );
    }
    sgd.dispose();
    net.dispose();
  });
});
