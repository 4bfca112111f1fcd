// --bn-shards: batch-norm statistics over K equal sub-batches, the function K data-parallel
// ranks compute. Checked against a direct computation on the reference engine (tfjs's own
// CPU kernels) and, when built, on the native engine.
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';
import { ADDON_PATH } from '../src/engine/native/addon';
import { batchNormTrain, BN_EPSILON } from '../src/engine/ops';
import { selectEngine } from '../src/engine/select';
import { CifarNet } from '../src/model/resnet';

const engines: ('cpu' | 'native')[] = fs.existsSync(ADDON_PATH) ? ['cpu', 'native'] : ['cpu'];

function values(n: number, seed: number): Float32Array {
  let s = seed;
  return new Float32Array(n).map(() => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 4 - 1);
}

/** BN of each consecutive sub-batch with its own biased statistics, in plain JavaScript. */
function direct(x: Float32Array, shape: number[], gamma: Float32Array, beta: Float32Array, k: number, relu: boolean) {
  const [n, h, w, c] = shape;
  const per = (n / k) * h * w;
  const y = new Float32Array(x.length);
  const means = new Float64Array(c);
  const vars = new Float64Array(c);
  for (let s = 0; s < k; s++) {
    for (let ch = 0; ch < c; ch++) {
      let sum = 0;
      for (let r = 0; r < per; r++) sum += x[(s * per + r) * c + ch];
      const mean = sum / per;
      let sq = 0;
      for (let r = 0; r < per; r++) sq += (x[(s * per + r) * c + ch] - mean) ** 2;
      const variance = sq / per;
      means[ch] += mean / k;
      vars[ch] += variance / k;
      for (let r = 0; r < per; r++) {
        const i = (s * per + r) * c + ch;
        const v = ((x[i] - mean) / Math.sqrt(variance + BN_EPSILON)) * gamma[ch] + beta[ch];
        y[i] = relu ? Math.max(0, v) : v;
      }
    }
  }
  return { y, means, vars };
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string) {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

for (const engine of engines) {
  describe(`--bn-shards on the ${engine} engine`, () => {
    it('batchNormTrain with K shards normalizes each sub-batch with its own statistics', async () => {
      await selectEngine(engine);
      const shape = [8, 3, 3, 5];
      const x = values(8 * 3 * 3 * 5, 3);
      const gamma = values(5, 4);
      const beta = values(5, 5);
      for (const [k, relu] of [
        [2, false],
        [4, true],
        [1, true],
      ] as const) {
        const want = direct(x, shape, gamma, beta, k, relu);
        const out = tf.tidy(() => {
          const r = batchNormTrain(
            tf.tensor4d(x, shape as [number, number, number, number]),
            tf.tensor1d(gamma),
            tf.tensor1d(beta),
            relu,
            BN_EPSILON,
            k,
          );
          return [r.y, r.mean, r.variance].map((t) => t.dataSync().slice());
        });
        assertClose(out[0], want.y, 1e-4, `y (K=${k})`);
        assertClose(out[1], want.means, 1e-5, `mean (K=${k})`);
        assertClose(out[2], want.vars, 1e-5, `variance (K=${k})`);
      }
    });

    it('a net with bnShards 2 on a batch = the net on each half with one shard', async () => {
      await selectEngine(engine);
      const net = new CifarNet({ depth: 8, plain: false, shortcut: 'A' }, 3);
      const x = values(4 * 32 * 32 * 3, 9);
      const half = 2 * 32 * 32 * 3;
      const [whole, a, b] = tf.tidy(() => {
        net.bnShards = 2;
        const whole = net
          .forward(tf.tensor4d(x, [4, 32, 32, 3]), true)
          .dataSync()
          .slice();
        net.bnShards = 1;
        const a = net
          .forward(tf.tensor4d(x.subarray(0, half), [2, 32, 32, 3]), true)
          .dataSync()
          .slice();
        const b = net
          .forward(tf.tensor4d(x.subarray(half), [2, 32, 32, 3]), true)
          .dataSync()
          .slice();
        return [whole, a, b];
      });
      assertClose(whole, [...a, ...b], 1e-4, 'logits');
      // And not what one set of statistics over the whole batch gives.
      const one = tf.tidy(() =>
        net
          .forward(tf.tensor4d(x, [4, 32, 32, 3]), true)
          .dataSync()
          .slice(),
      );
      assert.ok(
        one.some((v, i) => Math.abs(v - whole[i]) > 1e-3),
        'sharded BN should differ from whole-batch BN',
      );
      net.dispose();
    });
  });
}
