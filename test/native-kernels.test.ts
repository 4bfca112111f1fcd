// The native (oneDNN) backend against tfjs's reference 'cpu' kernels: every native kernel
// forward and through its gradient, on small random tensors (odd batches, non-square maps,
// stride 2, 1x1 stride 2, 3/16/32 channels), plus memory flatness, fused-kernel use,
// determinism and the in-place SGD. Skipped (with the reason) when the addon is not built.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';

import { type ConvGeometry, loadAddon } from '../src/engine/native/addon';
import * as nativeEngine from '../src/engine/native';
import { convImplementations } from '../src/engine/native/kernels-conv';
import {
  addRelu,
  batchNormAddRelu,
  batchNormInfer,
  batchNormTrain,
  conv2d,
  convBnInfer,
  headLoss,
  shortcutA,
} from '../src/engine/ops';
import { CifarNet } from '../src/model/resnet';
import { Sgd } from '../src/train/sgd';
import { trainStep } from '../src/train/step';

// Importing the engine's modules loads nothing native; only loadAddon() does.
let skipReason: string | false = false;
try {
  loadAddon();
} catch (e) {
  skipReason = `native addon not built: ${(e as Error).message}`;
}
const native = () => nativeEngine;

tf.env().set('PROD', true);

/** Deterministic uniform(-1, 1) values. */
function rand(n: number, seed: number): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return out;
}

/** bf16 values as the upper halves of f32 ones (truncated), and bf16 widened back to f32 (exact). */
const truncBf16 = (f: Float32Array) => new Uint16Array(new Uint32Array(f.buffer).map((u) => u >>> 16));
const widen = (b: Uint16Array) => new Float32Array(new Uint32Array(b.length).map((_, i) => b[i] << 16).buffer);

const tensor = (shape: number[], seed: number, scale = 1): tf.Tensor =>
  tf.tensor(
    rand(
      shape.reduce((a, b) => a * b, 1),
      seed,
    ).map((v) => v * scale),
    shape,
  );

async function onBackend(name: string, f: () => tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(name);
  const before = tf.memory().numTensors;
  const out = tf.tidy(f);
  const values = out.map((t) => t.dataSync() as Float32Array);
  tf.dispose(out);
  assert.equal(tf.memory().numTensors, before, `${name}: the computation leaked tensors`);
  return values;
}

/** Runs f on 'cpu' and 'native' and asserts each output agrees within tol * scale. */
async function agree(label: string, f: () => tf.Tensor[], tol = 1e-4): Promise<void> {
  const ref = await onBackend('cpu', f);
  const got = await onBackend('native', f);
  assert.equal(got.length, ref.length);
  ref.forEach((r, i) => {
    assert.equal(got[i].length, r.length, `${label}[${i}]: size`);
    let scale = 1;
    for (const v of r) scale = Math.max(scale, Math.abs(v));
    let worst = 0;
    for (let j = 0; j < r.length; j++) {
      assert.ok(Number.isFinite(got[i][j]), `${label}[${i}]: non-finite value at ${j}`);
      worst = Math.max(worst, Math.abs(got[i][j] - r[j]));
    }
    assert.ok(worst <= tol * scale, `${label}[${i}]: max |native - cpu| = ${worst} > ${tol} * ${scale}`);
  });
}

/** The geometry of a 3x3 stride-1 conv with padding 1 and as many channels out as in. */
function same3x3(batch: number, hw: number, channels: number): ConvGeometry {
  const map = { inHeight: hw, inWidth: hw, outHeight: hw, outWidth: hw };
  const pad = { padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 };
  return {
    batch,
    ...map,
    inChannels: channels,
    outChannels: channels,
    filterHeight: 3,
    filterWidth: 3,
    strideHeight: 1,
    strideWidth: 1,
    ...pad,
  };
}

/**
 * Inference-mode conv -> BN units (ReLU, none, a block's end with a residual; stride 1 and
 * 2) as convBnInfer ('fused': one kernel where the engine has it) or as conv2d ->
 * batchNormInfer -> addRelu ('composed').
 */
function inferenceUnits(how: 'fused' | 'composed'): tf.Tensor[] {
  const x = tensor([5, 10, 10, 16], 30) as tf.Tensor4D;
  const [gamma, beta, mean] = [31, 32, 33].map((s) => tensor([32], s) as tf.Tensor1D);
  const variance = tf.add(tf.abs(tensor([32], 34)), 0.5) as tf.Tensor1D;
  const bn = { gamma, beta, mean, variance };
  const out: tf.Tensor[] = [];
  for (const stride of [1, 2] as const) {
    const w = tensor([3, 3, 16, 32], 35 + stride, 0.3) as tf.Tensor4D;
    const residual = tensor([5, 10 / stride, 10 / stride, 32], 37 + stride) as tf.Tensor4D;
    for (const [relu, r] of [
      [true, undefined],
      [false, undefined],
      [true, residual],
    ] as const) {
      if (how === 'fused') out.push(convBnInfer(x, w, stride, bn, relu, r));
      else {
        const y = batchNormInfer(conv2d(x, w, stride), gamma, beta, mean, variance, relu && !r);
        out.push(r ? addRelu(y, r) : y);
      }
    }
  }
  return out;
}

/** Value and gradients of sum(f(xs) * r) for a fixed random r, w.r.t. every x. */
function withGrads(xs: tf.Tensor[], f: (...xs: tf.Tensor[]) => tf.Tensor, seed: number): tf.Tensor[] {
  const y = f(...xs);
  const r = tensor(y.shape, seed);
  const g = tf.grads((...a: tf.Tensor[]) => tf.sum(tf.mul(f(...a), r)))(xs);
  return [y, ...g];
}

describe('native kernels vs cpu', { skip: skipReason }, () => {
  it('registers and selects the native backend', async () => {
    const engine = await native().loadNativeEngine(2);
    assert.equal(engine.name, 'native');
    assert.equal(engine.threads, 2);
    assert.match(
      engine.version,
      /^oneDNN \d+\.\d+\.\d+ \(ISA \w+\), batch-norm loops (avx512|generic( \(avx512 for bf16\))?)$/,
    );
    assert.equal(tf.getBackend(), 'native');
    // every cpu kernel is available on native too
    for (const k of tf.getKernelsForBackend('cpu')) {
      assert.ok(tf.getKernel(k.kernelName, 'native'), `kernel ${k.kernelName} missing on native`);
    }
  });

  // [batch, height, width, in, out, kernel, stride]
  const convCases: [number, number, number, number, number, 1 | 3, 1 | 2][] = [
    [3, 7, 9, 3, 16, 3, 1],
    [5, 8, 8, 16, 16, 3, 1],
    [3, 8, 6, 16, 32, 3, 2],
    [5, 7, 9, 16, 32, 3, 2],
    [3, 8, 8, 16, 32, 1, 2],
    [5, 7, 5, 3, 16, 1, 2],
    // 64 channels, 3x3 stride 1: the Winograd kernels (see native/conv.cc)
    [3, 8, 8, 64, 64, 3, 1],
    [5, 6, 10, 64, 64, 3, 1],
  ];
  for (const [n, h, w, cin, cout, k, s] of convCases) {
    it(`conv2d ${k}x${k} stride ${s} [${n},${h},${w},${cin}] -> ${cout}: forward, dx, dw`, async () => {
      await agree('conv', () =>
        withGrads(
          [tensor([n, h, w, cin], 1), tensor([k, k, cin, cout], 2, 0.3)],
          (x, f) => conv2d(x as tf.Tensor4D, f as tf.Tensor4D, s),
          3,
        ),
      );
    });
  }

  for (const pad of ['same', 'valid'] as const) {
    it(`conv2d with '${pad}' padding, stride 2, odd map`, async () => {
      await agree('conv', () =>
        withGrads(
          [tensor([3, 9, 7, 16], 4), tensor([3, 3, 16, 32], 5, 0.3)],
          (x, f) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 2, pad),
          6,
        ),
      );
    });
  }

  for (const shape of [
    [3, 7, 9, 16],
    [5, 4, 4, 3],
  ]) {
    it(`batchNormAddRelu [${shape}] (ResnetBatchNormAddRelu): y, mean, variance and the gradients of x, gamma, beta and the residual`, async () => {
      const c = shape[3];
      // On cpu: batchNormTrain then addRelu; on native: one kernel each way.
      await agree(
        'bn+add+relu',
        () => {
          const x = tf.add(tensor(shape, 13, 2), 0.5);
          const gamma = tf.add(tensor([c], 14), 1.5);
          const beta = tensor([c], 15);
          const res = tensor(shape, 16);
          const f = (a: tf.Tensor, g: tf.Tensor, b: tf.Tensor, r: tf.Tensor) =>
            batchNormAddRelu(a as tf.Tensor4D, g as tf.Tensor1D, b as tf.Tensor1D, r as tf.Tensor4D);
          const out = f(x, gamma, beta, res);
          return [out.mean, out.variance, ...withGrads([x, gamma, beta, res], (a, g, b, r) => f(a, g, b, r).y, 17)];
        },
        2e-4,
      );
    });
  }

  it('conv2d with dilation falls back to the cpu kernel and still agrees', async () => {
    await agree('dilated conv', () => [
      tf.conv2d(tensor([2, 9, 9, 3], 7) as tf.Tensor4D, tensor([3, 3, 3, 4], 8) as tf.Tensor4D, 1, 'same', 'NHWC', 2),
    ]);
  });

  for (const relu of [true, false]) {
    for (const shape of [
      [3, 7, 9, 16],
      [5, 4, 4, 3],
      [3, 5, 3, 32],
    ]) {
      it(`batchNormTrain relu=${relu} [${shape}]: y, mean, variance, dx, dgamma, dbeta`, async () => {
        const c = shape[3];
        await agree(
          'bn',
          () => {
            const x = tf.add(tensor(shape, 9, 2), 0.5);
            const gamma = tf.add(tensor([c], 10), 1.5);
            const beta = tensor([c], 11);
            const out = batchNormTrain(x as tf.Tensor4D, gamma as tf.Tensor1D, beta as tf.Tensor1D, relu);
            const grads = withGrads(
              [x, gamma, beta],
              (a, g, b) => batchNormTrain(a as tf.Tensor4D, g as tf.Tensor1D, b as tf.Tensor1D, relu).y,
              12,
            );
            return [out.mean, out.variance, ...grads];
          },
          2e-4,
        );
      });
    }
  }

  it('batchNormInfer (FusedBatchNorm) with and without ReLU', async () => {
    await agree('bn infer', () => {
      const x = tensor([3, 5, 7, 16], 13);
      const [g, b, m] = [14, 15, 16].map((s) => tensor([16], s));
      const v = tf.add(tf.abs(tensor([16], 17)), 0.5);
      return [true, false].map((relu) =>
        batchNormInfer(x as tf.Tensor4D, g as tf.Tensor1D, b as tf.Tensor1D, m as tf.Tensor1D, v as tf.Tensor1D, relu),
      );
    });
  });

  it('the fused inference unit (ResnetConvBnInfer): with and without ReLU, with a residual, stride 1 and 2', async () => {
    await agree('conv bn infer', () => inferenceUnits('fused'));
  });

  it('addRelu forward and gradients', async () => {
    await agree('addRelu', () =>
      withGrads(
        [tensor([3, 5, 7, 16], 18), tensor([3, 5, 7, 16], 19)],
        (a, b) => addRelu(a as tf.Tensor4D, b as tf.Tensor4D),
        20,
      ),
    );
  });

  it('broadcasting add, sub, mul, div and their gradients', async () => {
    const pairs: [number[], number[]][] = [
      [
        [3, 5, 7, 6],
        [3, 5, 7, 6],
      ],
      [[3, 5, 7, 6], [6]],
      [
        [3, 1, 1, 6],
        [3, 5, 7, 6],
      ],
      [[5, 10], [10]],
      [[3, 5, 7, 6], []],
    ];
    for (const [sa, sb] of pairs) {
      await agree(`binary ${sa} ${sb}`, () => {
        const a = tensor(sa, 21);
        const b = tf.add(tf.abs(tensor(sb, 22)), 0.5);
        return [
          ...withGrads([a, b], (p, q) => tf.add(p, q), 23),
          ...withGrads([a, b], (p, q) => tf.sub(p, q), 24),
          ...withGrads([a, b], (p, q) => tf.mul(p, q), 25),
          ...withGrads([a, b], (p, q) => tf.div(p, q), 26),
        ];
      });
    }
  });

  it('matMul (BatchMatMul) with transposes and batch broadcasting, and its gradients', async () => {
    await agree('matmul', () => [
      ...withGrads([tensor([5, 7], 51), tensor([7, 3], 52)], (a, b) => tf.matMul(a, b), 53),
      ...withGrads([tensor([7, 5], 54), tensor([3, 7], 55)], (a, b) => tf.matMul(a, b, true, true), 56),
      // (tfjs's own BatchMatMul gradient rejects a broadcast batch: forward only)
      tf.matMul(tensor([2, 5, 7], 57), tensor([7, 3], 58)),
      ...withGrads([tensor([4, 5, 7], 60), tensor([4, 3, 7], 61)], (a, b) => tf.matMul(a, b, false, true), 62),
    ]);
  });

  it('relu and its gradient (Step)', async () => {
    await agree('relu', () => withGrads([tensor([5, 7, 9, 16], 27)], (x) => tf.relu(x), 28));
  });

  it('mean and sum over contiguous axes, with gradients (global average pool)', async () => {
    await agree('reduce', () => {
      const x = tensor([5, 4, 3, 16], 29);
      return [
        ...withGrads([x], (t) => tf.mean(t, [1, 2]), 30),
        ...withGrads([x], (t) => tf.sum(t, 0), 31),
        ...withGrads([x], (t) => tf.sum(t, -1, true), 32),
        tf.mean(x, [0, 1, 2, 3]),
      ];
    });
  });

  it('the fused head and loss (ResnetHeadLoss): loss, logits and the gradients of h, w and b, also through the logits', async () => {
    const labels = () => tf.tensor1d([3, 0, 9, 9, 4], 'int32');
    const head = () => {
      const h = tensor([5, 3, 2, 16], 80, 2);
      const w = tensor([16, 10], 81, 0.5);
      const b = tensor([10], 82);
      const r = tensor([5, 10], 83);
      const f = (...a: tf.Tensor[]) =>
        headLoss(a[0] as tf.Tensor4D, a[1] as tf.Tensor2D, a[2] as tf.Tensor1D, labels());
      const { loss, logits } = f(h, w, b);
      return [
        loss,
        logits,
        ...tf.grads((...a: tf.Tensor[]) => f(...a).loss)([h, w, b]),
        // A step only counts errors with the logits; were they differentiated, their
        // gradient must arrive too.
        ...tf.grads((...a: tf.Tensor[]) => {
          const o = f(...a);
          return tf.add(tf.mul(o.loss, 3), tf.sum(tf.mul(o.logits, r)));
        })([h, w, b]),
      ];
    };
    await agree('head', head);
    // ('cpu' ran tfjs's composition; make sure 'native' ran the kernels, not the same.)
    const prof = await tf.profile(() => {
      tf.tidy(() => {
        head();
      });
    });
    const names = new Set(prof.kernels.map((k) => k.name));
    assert.ok(names.has('ResnetHeadLoss') && names.has('ResnetHeadLossGrad'), [...names].join(', '));
    assert.ok(!names.has('OneHot') && !names.has('BatchMatMul'), [...names].join(', '));
    tf.tidy(() => {
      const [h, w, b] = [tensor([5, 3, 2, 16], 80), tensor([16, 10], 81), tensor([10], 82)];
      const bad = tf.tensor1d([3, 0, 10, 9, 4], 'int32');
      assert.throws(
        () => headLoss(h as tf.Tensor4D, w as tf.Tensor2D, b as tf.Tensor1D, bad),
        (e: Error) =>
          !e.message.includes('\n') && /headLoss: labels must lie in \[0, classes\), not 10/.test(e.message),
      );
    });
  });

  it('option-A shortcut (reshape, slice, pad) and its gradient', async () => {
    await agree('shortcut', () =>
      withGrads(
        [tensor([3, 8, 6, 16], 33)],
        (x) => {
          const [n, h, w, c] = x.shape;
          const pairs = tf.reshape(x, [n, h / 2, 2, w / 2, 2 * c]);
          const sub = tf.reshape(tf.slice(pairs, [0, 0, 0, 0, 0], [n, h / 2, 1, w / 2, c]), [n, h / 2, w / 2, c]);
          return tf.pad(sub, [
            [0, 0],
            [0, 0],
            [0, 0],
            [8, 8],
          ]);
        },
        34,
      ),
    );
  });

  it('the fused option-A shortcut (ResnetShortcutA) and its gradient equal the reshape/slice/pad composition', async () => {
    // ops.shortcutA runs the fused kernel on native and the composition above on cpu.
    for (const [shape, out, seed] of [
      [[3, 8, 6, 16], 32, 35], // the nets' case: width doubles, 8 zero channels each side
      [[2, 4, 10, 3], 8, 36], // odd padding: 2 before, 3 after
      [[1, 2, 2, 5], 5, 37], // no new channels
    ] as [number[], number, number][]) {
      await agree(`shortcutA ${shape} -> ${out}`, () =>
        withGrads([tensor(shape, seed)], (x) => shortcutA(x as tf.Tensor4D, out), seed + 10),
      );
    }
    await tf.setBackend('native');
    const calls: string[] = [];
    const x = tensor([2, 4, 4, 3], 38);
    const profile = await tf.profile(() => tf.grad((t: tf.Tensor) => tf.sum(shortcutA(t as tf.Tensor4D, 6)))(x));
    for (const k of profile.kernels) calls.push(k.name);
    tf.dispose([x, profile.result as tf.Tensor]);
    assert.ok(calls.includes('ResnetShortcutA') && calls.includes('ResnetShortcutAGrad'), calls.join(','));
    assert.ok(!calls.some((k) => ['Slice', 'PadV2'].includes(k)), calls.join(','));
    const odd = tf.zeros([1, 3, 4, 2]) as tf.Tensor4D;
    assert.throws(() => shortcutA(odd, 4), /even height and width/);
    odd.dispose();
  });

  it('slice, strided slice and pad with a constant', async () => {
    await agree('slicing', () => {
      const x = tensor([5, 7, 9, 6], 35);
      return [
        tf.slice(x, [1, 2, 0, 1], [3, 4, 9, 4]),
        tf.stridedSlice(x, [0, 0, 0, 0], [5, 7, 9, 6], [1, 2, 2, 1]),
        tf.stridedSlice(x, [1, 1, 0, 0], [4, 7, 9, 6], [2, 3, 1, 2]),
        tf.stridedSlice(x, [0, 0, 0, 0], [5, 7, 9, 6], [1, -1, 1, 1]),
        tf.pad(
          x,
          [
            [0, 1],
            [2, 0],
            [1, 1],
            [0, 3],
          ],
          1.5,
        ),
      ];
    });
  });

  it('a small residual net (conv, BN+ReLU, option A, pool, FC, loss): loss and all gradients', async () => {
    const params = () => ({
      w1: tensor([3, 3, 3, 16], 40, 0.3),
      w2: tensor([3, 3, 16, 32], 41, 0.15),
      w3: tensor([3, 3, 32, 32], 42, 0.1),
      g1: tf.add(tensor([16], 43), 1),
      b1: tensor([16], 44),
      g2: tf.add(tensor([32], 45), 1),
      b2: tensor([32], 46),
      g3: tf.add(tensor([32], 47), 1),
      b3: tensor([32], 48),
      fc: tensor([32, 10], 49, 0.2),
    });
    const forward = (x: tf.Tensor, p: Record<string, tf.Tensor>) => {
      const t4 = (t: tf.Tensor) => t as tf.Tensor4D;
      const t1 = (t: tf.Tensor) => t as tf.Tensor1D;
      const h = batchNormTrain(conv2d(t4(x), t4(p.w1), 1), t1(p.g1), t1(p.b1), true).y;
      const r = batchNormTrain(conv2d(h, t4(p.w2), 2), t1(p.g2), t1(p.b2), true).y;
      const f = batchNormTrain(conv2d(r, t4(p.w3), 1), t1(p.g3), t1(p.b3), false).y;
      const [n, hh, ww, c] = h.shape;
      const pairs = tf.reshape(h, [n, hh / 2, 2, ww / 2, 2 * c]);
      const sub = tf.reshape(tf.slice(pairs, [0, 0, 0, 0, 0], [n, hh / 2, 1, ww / 2, c]), [n, hh / 2, ww / 2, c]);
      const short = tf.pad(sub, [
        [0, 0],
        [0, 0],
        [0, 0],
        [8, 8],
      ]) as tf.Tensor4D;
      const pooled = tf.mean(addRelu(f, short), [1, 2]) as tf.Tensor2D;
      const logits = tf.matMul(pooled, p.fc as tf.Tensor2D);
      return tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d([1, 4, 9, 0, 3], 'int32'), 10), logits);
    };
    await agree(
      'net',
      () => {
        const x = tensor([5, 8, 6, 3], 50);
        const p = params();
        const names = Object.keys(p);
        const { value, grads } = tf.tidy(() => {
          const vars = names.map((k) => tf.variable(p[k as keyof typeof p], true, `net-${k}-${tf.getBackend()}`));
          const r = tf.variableGrads(
            () => forward(x, Object.fromEntries(names.map((k, i) => [k, vars[i]]))) as tf.Scalar,
            vars,
          );
          const out = { value: r.value, grads: vars.map((v) => r.grads[v.name]) };
          tf.dispose(vars);
          return out;
        });
        return [value, ...grads];
      },
      2e-4,
    );
  });
});

/** A few steps of a depth-8 ResNet repeating one batch: losses, tensor counts, pool bytes. */
async function smallTraining(
  steps: number,
  precision: 'fp32' | 'bf16' = 'fp32',
  withoutKernels: string[] = [],
  bf16Copies = true,
) {
  const engine = await native().loadNativeEngine(2, precision);
  if (!bf16Copies) (tf.backend() as unknown as { writeBf16Copies: boolean }).writeBf16Copies = false;
  // Kernels taken away make ops.ts use its tfjs composition instead (restored below).
  const removed = withoutKernels.map((k) => tf.getKernel(k, 'native')!);
  for (const k of removed) tf.unregisterKernel(k.kernelName, 'native');
  const net = new CifarNet({ depth: 8, plain: false, shortcut: 'A' }, 3);
  const sgd = new Sgd(net.params, (n: string) => net.decayed(n), { momentum: 0.9, weightDecay: 1e-4 }, engine);
  const x = rand(4 * 32 * 32 * 3, 70);
  const labels = Int32Array.from([1, 5, 7, 2]);
  const losses: number[] = [];
  const tensors: number[] = [];
  const pool: number[] = [];
  for (let i = 0; i < steps; i++) {
    losses.push(trainStep(net, sgd, x, labels, 0.05).loss);
    tensors.push(tf.memory().numTensors);
    pool.push((tf.backend() as unknown as { poolBytes(): number }).poolBytes());
  }
  for (const k of removed) tf.registerKernel(k);
  const weights = [...net.params.values()].map((v) => Array.from(v.dataSync()));
  sgd.dispose();
  net.dispose();
  await native().loadNativeEngine(2); // back to fp32 for the other tests
  return { losses, tensors, pool, weights };
}

describe('native engine behaviour', { skip: skipReason }, () => {
  it('uses the fused kernels on native', async () => {
    await native().loadNativeEngine(2);
    const x = tf.variable(tensor([3, 6, 6, 16], 60));
    const w = tf.variable(tensor([3, 3, 16, 16], 61, 0.2));
    const gamma = tf.variable(tf.ones([16]));
    const beta = tf.variable(tf.zeros([16]));
    const prof = await tf.profile(() => {
      const { value, grads } = tf.variableGrads(() => {
        const y = batchNormTrain(
          conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1),
          gamma as tf.Tensor1D,
          beta as tf.Tensor1D,
          false,
        ).y;
        const end = batchNormAddRelu(
          conv2d(y, w as tf.Tensor4D, 1),
          gamma as tf.Tensor1D,
          beta as tf.Tensor1D,
          x as tf.Tensor4D,
        ).y;
        return tf.sum(addRelu(end, x as tf.Tensor4D)) as tf.Scalar;
      });
      tf.dispose([value, ...Object.values(grads)]);
    });
    const names = new Set(prof.kernels.map((k) => k.name));
    for (const k of [
      'Conv2D',
      'Conv2DBackpropInput',
      'Conv2DBackpropFilter',
      'ResnetBatchNormTrain',
      'ResnetBatchNormTrainGrad',
      'ResnetAddRelu',
      'ResnetReluMaskGrad',
      'ResnetBatchNormAddRelu',
      'ResnetBatchNormAddReluGrad',
    ]) {
      assert.ok(names.has(k), `kernel ${k} not used (used: ${[...names].join(', ')})`);
    }
    tf.dispose([x, w, gamma, beta]);
  });

  it('runs Winograd where the rule says (3x3 stride 1: forward and backward data from 32 channels, weights from 64)', async () => {
    await native().loadNativeEngine(2);
    const stage3 = convImplementations([128, 8, 8, 64], [3, 3, 64, 64], 1, 1);
    const stage2 = convImplementations([128, 16, 16, 32], [3, 3, 32, 32], 1, 1);
    const stage1 = convImplementations([128, 32, 32, 16], [3, 3, 16, 16], 1, 1);
    const down = convImplementations([128, 16, 16, 32], [3, 3, 32, 64], 2, 1);
    assert.ok(stage3 && stage2 && stage1 && down);
    for (const impl of [stage1, down]) {
      assert.ok(!Object.values(impl).some((s) => s.includes('wino')), JSON.stringify(impl));
    }
    // oneDNN has Winograd convs only for AVX-512; elsewhere the rule falls back to direct.
    const avx512 = fs.readFileSync('/proc/cpuinfo', 'utf8').includes(' avx512f');
    for (const s of Object.values(stage3)) assert.equal(s.includes('wino'), avx512, JSON.stringify(stage3));
    assert.equal(stage2.forward.includes('wino'), avx512, JSON.stringify(stage2));
    assert.equal(stage2.backwardData.includes('wino'), avx512, JSON.stringify(stage2));
    assert.ok(!stage2.backwardWeights.includes('wino'), JSON.stringify(stage2));
  });

  it("on AMD's AVX-512 CPUs runs stage 1's forward as backward data and the stem's on oneDNN's jit kernel (native/conv.cc)", async () => {
    await native().loadNativeEngine(2);
    const stage1 = convImplementations([128, 32, 32, 16], [3, 3, 16, 16], 1, 1);
    const stem = convImplementations([128, 32, 32, 3], [3, 3, 3, 16], 1, 1);
    const down = convImplementations([128, 32, 32, 16], [3, 3, 16, 32], 2, 1);
    assert.ok(stage1 && stem && down);
    const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const amd512 = cpuinfo.includes('AuthenticAMD') && cpuinfo.includes(' avx512f');
    assert.equal(stage1.forward.endsWith('(backward data)'), amd512, JSON.stringify(stage1));
    assert.equal(stem.forward.startsWith('jit:'), amd512, JSON.stringify(stem));
    // Only the 16 -> 16 stride-1 forward: never the stride-2 conv, never the other passes.
    for (const s of [stage1.backwardData, stage1.backwardWeights, ...Object.values(down)]) {
      assert.doesNotMatch(s, /backward data\)/);
    }
    // Its numbers are checked against tfjs's cpu kernel by the 16 -> 16 case of the conv tests above.
  });

  it('training steps keep the tensor count and the storage pool flat, and learn', async () => {
    const { losses, tensors, pool } = await smallTraining(6);
    assert.ok(
      tensors.every((n) => n === tensors[1]),
      `tensor counts drift: ${tensors}`,
    );
    assert.ok(
      pool.slice(2).every((b) => b === pool[2]),
      `pool grows: ${pool}`,
    );
    assert.ok(losses.every(Number.isFinite), `losses: ${losses}`);
    assert.ok(losses[5] < losses[0], `repeating one batch should lower its loss: ${losses}`);
  });

  it('is deterministic: the same steps give bit-identical losses', async () => {
    const a = await smallTraining(3);
    const b = await smallTraining(3);
    assert.deepEqual(a.losses, b.losses);
  });

  it('the fused block end (BN + shortcut + ReLU) and option-A kernels change no bit of training', async () => {
    // Same float operations in the same order as BN, then addRelu, and slice + pad: so runs
    // started before these kernels existed resume with identical figures.
    const fused = await smallTraining(3);
    const composed = await smallTraining(3, 'fp32', ['ResnetBatchNormAddRelu', 'ResnetShortcutA']);
    assert.deepEqual(fused.losses, composed.losses);
    assert.deepEqual(fused.weights, composed.weights);
  });

  it('sgdUpdate updates every parameter in place in one call, with the float arithmetic of the formula', async () => {
    const engine = await native().loadNativeEngine(2);
    // Sizes of a net's parameters (a 3x3x64x64 filter, BN vectors, the FC layer), one
    // undecayed; the threads' shares of the 77,000 values end inside parameters.
    const sizes = [40000, 16, 36864, 10, 3, 640];
    const decays = [1e-4, 0, 1e-4, 1e-4, 0, 1e-4];
    const [lr, m] = [0.1, 0.9];
    const init = sizes.map((n, j) => ({ w: rand(n, 80 + j), g: rand(n, 90 + j), v: rand(n, 100 + j) }));
    // tf.tensor keeps the typed array it is given as storage: pass copies.
    const params = init.map(({ w, g, v }, j) => ({
      w: tf.variable(tf.tensor(w.slice())),
      g: tf.tensor(g),
      v: tf.variable(tf.tensor(v.slice())),
      weightDecay: decays[j],
    }));
    engine.sgdUpdate!(params, lr, m);
    const f = Math.fround;
    init.forEach(({ w, g, v }, j) => {
      const wd = params[j].w.dataSync();
      const vd = params[j].v.dataSync();
      for (let i = 0; i < w.length; i++) {
        // v = m * v + (g + wd * w); w -= lr * v, each operation rounded to float
        const vi = f(f(f(m) * v[i]) + f(g[i] + f(f(decays[j]) * w[i])));
        assert.equal(vd[i], vi, `v of param ${j} at ${i}`);
        assert.equal(wd[i], f(w[i] - f(f(lr) * vi)), `w of param ${j} at ${i}`);
      }
    });
    tf.dispose(params.flatMap(({ w, g, v }) => [w, g, v]));
  });

  it('takes named arguments: a missing, mistyped or short field is a one-line error naming kernel and field', () => {
    const addon = loadAddon();
    // Deliberately wrong calls, past the types.
    const loose = addon as unknown as Record<string, (...args: unknown[]) => unknown>;
    const x = Float32Array.of(-1, 2, -3, 4);
    const out = new Float32Array(4);
    addon.relu({ x, out, n: 4, alpha: 0.5 });
    assert.deepEqual([...out], [-0.5, 2, -1.5, 4]);
    const fails = (fn: string, args: unknown[], message: string) =>
      assert.throws(
        () => loose[fn](...args),
        (e: Error) => e.message === `resnet_native: ${message}`,
        `${fn}: expected "${message}"`,
      );
    fails('relu', [x, out, 4, 0], 'relu: takes one object of named arguments');
    fails('relu', [{ x, out, n: 4 }], 'relu: alpha must be a number');
    fails('relu', [{ x, out, n: 4.5, alpha: 0 }], 'relu: n must be an integer');
    fails('relu', [{ x, out, n: NaN, alpha: 0 }], 'relu: n must be an integer');
    fails('relu', [{ x: Float64Array.of(1, 2, 3, 4), out, n: 4, alpha: 0 }], 'relu: x must be a Float32Array');
    fails(
      'relu',
      [{ x, out: new Float32Array(2), n: 4, alpha: 0 }],
      'relu: out must be a Float32Array of at least 4 elements (it has 2)',
    );
    fails(
      'reduceMiddle',
      [{ x, out, outer: 1, reduce: 4, inner: 1, mean: 1 }],
      'reduceMiddle: mean must be true or false',
    );
    const one = Int32Array.of(1);
    fails(
      'binary',
      [{ op: 'pow', a: x, b: x, out, shape: Int32Array.of(4), aStrides: one, bStrides: one }],
      'binary: unknown op "pow"',
    );
    const geometry: Partial<ConvGeometry> = same3x3(1, 4, 1);
    delete geometry.padRight; // the first error below
    const [img, filter, y] = [new Float32Array(16), new Float32Array(9), new Float32Array(16)];
    fails('convForward', [{ x: img, filter, y, geometry }], 'convForward geometry: padRight must be a number');
    fails(
      'convForward',
      [{ x: img, filter, y, geometry: { ...geometry, padRight: 1, inChannels: 0 } }],
      'convForward geometry: inChannels must be positive',
    );
    fails(
      'convForward',
      [{ x: img, filter, y, geometry: { ...geometry, padRight: 1 }, xBf16: new Float32Array(16) }],
      'convForward: xBf16 must be a Uint16Array (or null)',
    );
    // The process-wide calls too (checked before MPI is initialized, so no MPI is started).
    fails('setThreads', [2], 'setThreads: takes one object of named arguments');
    fails('setThreads', [{ threads: 0 }], 'setThreads: threads must be in 1..1024');
    fails('alignedFloat32', [{ length: 0 }], 'alignedFloat32: length must be positive');
    if (addon.hasMpi) {
      const counts = Float64Array.of(1, 2);
      fails('mpiAllreduceF64', [counts, 'sum'], 'mpiAllreduceF64: takes one object of named arguments');
      fails('mpiAllreduceF64', [{ buffer: counts, op: 0 }], 'mpiAllreduceF64: op must be a string');
      fails(
        'mpiAllreduceF64',
        [{ buffer: counts, op: 'prod' }],
        "mpiAllreduceF64: op must be 'sum', 'min' or 'max' (got 'prod')",
      );
      fails('mpiAllreduceF64', [{ buffer: x, op: 'sum' }], 'mpiAllreduceF64: buffer must be a Float64Array');
      fails('mpiAllreduceF32', [{ buffer: counts }], 'mpiAllreduceF32: buffer must be a Float32Array');
      fails('mpiBcast', [{ buffer: [1, 2], root: 0 }], 'mpiBcast: buffer must be a typed array');
      fails('mpiAbort', [{ code: 256 }], 'mpiAbort: code must be an exit status in 0..255');
    }
  });

  it('fmaPeak measures the FP32 FMA peak with the widest vectors the CPU has (the bench divides by it)', () => {
    const addon = loadAddon();
    const threads = addon.getThreads();
    addon.setThreads({ threads: 1 });
    try {
      const p = addon.fmaPeak({ seconds: 0.2 });
      const isa = /ISA (\w+)/.exec(addon.version())![1];
      // oneDNN names the same CPU's widest ISA: an AVX-512 one must give 16-lane FMAs.
      assert.equal(p.isa, /avx512/.test(isa) ? 'avx512' : /avx2/.test(isa) ? 'avx2' : 'sse', isa);
      assert.equal(p.threads, 1);
      // 2 x lanes FLOP per FMA: any x86 core of the last 15 years does at least one FMA (or
      // mul + add) a cycle at 1 GHz (a quarter of that is allowed for a busy machine), and
      // none more than four 16-lane FMAs a cycle at 6 GHz.
      const lanes = { avx512: 16, avx2: 8, sse: 4 }[p.isa]!;
      assert.ok(p.gflops > 2 * lanes * 0.25 && p.gflops < 2 * 16 * 4 * 6, `${p.gflops} GFLOP/s`);
      assert.ok(p.seconds > 0 && p.seconds < 1, `${p.seconds} s a slice`);
      assert.throws(() => addon.fmaPeak({ seconds: 0 }), /seconds must be in \(0, 60\]/);
    } finally {
      addon.setThreads({ threads });
    }
  });

  it('arrays returned by dataSync stay valid after the tensor is disposed and storage reused', async () => {
    await native().loadNativeEngine(2);
    const a = tf.tensor(rand(40000, 90));
    const b = tf.tensor(rand(40000, 91));
    const sum = tf.add(a, b);
    const read = sum.dataSync();
    const copy = Float32Array.from(read);
    sum.dispose();
    const again = tf.mul(a, b); // reuses the pooled storage of `sum`
    assert.deepEqual(read, copy);
    tf.dispose([a, b, again]);
  });

  it('pool storage comes from the addon (64-byte aligned), holds its values and frees with GC', async () => {
    const addon = loadAddon();
    const fresh = addon.alignedFloat32({ length: 1001 });
    assert.equal(fresh.length, 1001);
    assert.equal(fresh.byteOffset, 0);
    fresh.fill(2.5);
    assert.equal(fresh[1000], 2.5);
    await native().loadNativeEngine(2);
    const backend = tf.backend() as unknown as { alloc(n: number): Float32Array };
    const pooled = backend.alloc(20001);
    assert.equal(pooled.length, 20001);
    // The addon rounds its buffers up to whole 64-byte lines (V8's own would be 80004 bytes).
    assert.equal(pooled.buffer.byteLength, 80064);
  });

  it('a missing or broken addon is a one-line error that says how to build it', async () => {
    assert.throws(
      () => loadAddon('/nonexistent/resnet_native.node'),
      (e: Error) => !e.message.includes('\n') && /npm run build:native/.test(e.message),
    );
    const bogus = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'native-test-')), 'bogus.node');
    fs.writeFileSync(bogus, 'not a shared object');
    assert.throws(
      () => loadAddon(bogus),
      (e: Error) => !e.message.includes('\n') && /cannot be loaded/.test(e.message),
    );
    fs.rmSync(path.dirname(bogus), { recursive: true, force: true });
  });
});

// --precision bf16: the convolutions multiply bf16 copies of their inputs and accumulate
// in f32. bf16 keeps 8 significant bits (relative rounding 2^-9 per input), so results are
// compared with the f32 reference at 1e-2 of the output's scale: a wrong layout, type or
// pass gives errors of the order of the scale itself.
const bf16Cpu =
  fs.existsSync('/proc/cpuinfo') && / (avx512_bf16|amx_bf16) /.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
describe('native bf16 convolutions', { skip: skipReason || (!bf16Cpu && 'this CPU has no AVX512-BF16 or AMX') }, () => {
  const cases: [number, number, number, number, number, 1 | 3, 1 | 2][] = [
    [5, 8, 8, 16, 16, 3, 1],
    [3, 9, 7, 16, 32, 3, 2],
    [3, 6, 10, 64, 64, 3, 1],
    [3, 7, 9, 3, 16, 3, 1], // the stem: 3 channels in
  ];
  for (const [n, h, w, cin, cout, k, s] of cases) {
    it(`conv2d ${k}x${k} stride ${s} [${n},${h},${w},${cin}] -> ${cout} in bf16: forward, dx, dw`, async () => {
      await native().loadNativeEngine(2, 'bf16');
      try {
        await agree(
          'bf16 conv',
          () =>
            withGrads(
              [tensor([n, h, w, cin], 11), tensor([k, k, cin, cout], 12, 0.3)],
              (x, f) => conv2d(x as tf.Tensor4D, f as tf.Tensor4D, s),
              13,
            ),
          1e-2,
        );
      } finally {
        await native().loadNativeEngine(2);
      }
    });
  }

  it('runs bf16 kernels in bf16 mode and f32 kernels again after switching back', async () => {
    await native().loadNativeEngine(2, 'bf16');
    const bf = convImplementations([128, 32, 32, 16], [3, 3, 16, 16], 1, 1);
    await native().loadNativeEngine(2);
    const f32 = convImplementations([128, 32, 32, 16], [3, 3, 16, 16], 1, 1);
    assert.ok(bf && f32);
    for (const impl of Object.values(bf)) assert.match(impl, /bf16/, JSON.stringify(bf));
    for (const impl of Object.values(f32)) assert.doesNotMatch(impl, /bf16/, JSON.stringify(f32));
  });

  it("batch norm's bf16 copies, which the convolutions take instead of converting, change no bit of training", async () => {
    // Count the conv calls that receive a ready bf16 input (the optional Uint16Array args).
    const addon = loadAddon() as unknown as Record<string, (args: Record<string, unknown>) => unknown>;
    const names = ['convForward', 'convBackwardData', 'convBackwardWeights'];
    const originals = names.map((n) => addon[n]);
    let calls = 0;
    let withCopy = 0;
    names.forEach((n, i) => {
      addon[n] = (args) => {
        calls++;
        if ([args.xBf16, args.dyBf16].some((a) => a instanceof Uint16Array)) withCopy++;
        return originals[i](args);
      };
    });
    let copied;
    try {
      copied = await smallTraining(3, 'bf16');
    } finally {
      names.forEach((n, i) => (addon[n] = originals[i]));
    }
    const converted = await smallTraining(3, 'bf16', [], false);
    // Every conv input but the images (the stem's forward) comes from a batch norm.
    assert.ok(withCopy >= calls / 2, `${withCopy} of ${calls} conv calls got a bf16 copy`);
    assert.deepEqual(copied.losses, converted.losses);
    assert.deepEqual(copied.weights, converted.weights);
  });

  it('drops a bf16 copy when its tensor is disposed (the storage may be reused)', async () => {
    await native().loadNativeEngine(2, 'bf16');
    try {
      const backend = tf.backend() as unknown as {
        data: { get(id: unknown): { values: Float32Array } };
        bf16CopyOf(a: Float32Array): Uint16Array | null;
      };
      const x = tensor([8, 16, 16, 16], 21) as tf.Tensor4D; // large enough for the storage pool
      const [gamma, beta] = [tf.ones([16]) as tf.Tensor1D, tf.zeros([16]) as tf.Tensor1D];
      const { y, mean, variance } = batchNormTrain(x, gamma, beta, true);
      const values = backend.data.get(y.dataId).values;
      const copy = backend.bf16CopyOf(values);
      assert.ok(copy, 'batch norm wrote no bf16 copy in bf16 mode');
      // The copy is y rounded to bf16: its upper 16 bits, up to one unit of rounding.
      const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
      for (let i = 0; i < values.length; i += 97) {
        assert.ok(Math.abs(copy[i] - (bits[i] >>> 16)) <= 1, `element ${i}: ${copy[i]} vs ${bits[i] >>> 16}`);
      }
      tf.dispose([y, mean, variance]);
      assert.equal(backend.bf16CopyOf(values), null);
      tf.dispose([x, gamma, beta]);
    } finally {
      await native().loadNativeEngine(2);
    }
  });

  it('writes an activation or gradient only in bf16 where every reader takes that copy, with the same bits', async () => {
    const addon = loadAddon();
    // Batch 8 of stage 1 (32x32x16): 131072 values, enough for both threads.
    const stage1 = same3x3(8, 32, 16);
    const stage3 = same3x3(8, 8, 64); // f32 backward weights in bf16 mode (native/conv.cc, bf16Pays)
    const n = 8 * 32 * 32 * 16;
    const rows = { rows: n / 16, channels: 16, epsilon: 1e-5, relu: true };
    const [gamma, beta] = [rand(16, 5), rand(16, 6)];
    const z = rand(n, 3);
    const stats = { mean: new Float32Array(16), variance: new Float32Array(16) };
    const forward = (y: Float32Array | undefined, yBf16: Uint16Array | undefined) =>
      addon.bnTrainForward({ x: z, gamma, beta, y, ...stats, ...rows, yBf16 });
    const backward = (
      y: { y?: Float32Array; yBf16?: Uint16Array },
      dx: Float32Array | undefined,
      dxBf16: Uint16Array | undefined,
    ) =>
      addon.bnTrainBackward({
        dy: rand(n, 1),
        dyAdd: rand(n, 2),
        x: z,
        ...y,
        gamma,
        ...stats,
        dx,
        dgamma: new Float32Array(16),
        dbeta: new Float32Array(16),
        ...rows,
        dxBf16,
      });
    await native().loadNativeEngine(2, 'bf16');
    try {
      assert.deepEqual(addon.convImplInfo({ geometry: stage1 }).takesBf16, {
        forwardX: true,
        backwardDataDy: true,
        backwardWeightsDy: true,
        backwardWeightsX: true,
      });
      assert.equal(addon.convImplInfo({ geometry: stage3 }).takesBf16.backwardWeightsDy, false);

      // Batch norm forward: y in bf16 alone, the same bits as beside y.
      const y = new Float32Array(n);
      const yBf16 = new Uint16Array(n);
      const yAlone = new Uint16Array(n).fill(0xffff);
      forward(y, yBf16);
      forward(undefined, yAlone);
      assert.deepEqual(yAlone, yBf16, 'yBf16 without y');
      const zeros = y.filter((v) => v === 0).length;
      assert.ok(zeros > n / 5 && zeros < n - n / 5, `${zeros} of ${n} outputs are 0 after the ReLU`);
      assert.throws(
        () => forward(undefined, undefined),
        /^Error: resnet_native: bnTrainForward: needs y, yBf16 or both$/,
      );

      // Batch norm backward: dx in bf16 alone, and the ReLU mask from the bf16 copy of y.
      const dx = new Float32Array(n);
      const dxBf16 = new Uint16Array(n);
      backward({ y }, dx, dxBf16);
      for (const [what, from, alone] of [
        ['dxBf16 without dx', { y }, new Uint16Array(n).fill(0xffff)],
        ['dxBf16 with the mask from yBf16', { yBf16 }, new Uint16Array(n).fill(0xffff)],
      ] as const) {
        backward(from, undefined, alone);
        assert.deepEqual(alone, dxBf16, what);
      }
      const dx16 = new Float32Array(n);
      backward({ yBf16 }, dx16, undefined);
      assert.deepEqual(dx16, dx, 'dx with the mask from yBf16');
      assert.throws(
        () => backward({ y }, undefined, undefined),
        /^Error: resnet_native: bnTrainBackward: needs dx, dxBf16 or both$/,
      );

      // The convolutions read the copies alone and give the same bits as with x and dy beside them.
      const filter = rand(9 * 16 * 16, 8);
      const run = (f32: boolean) => {
        const out = [new Float32Array(n), new Float32Array(n), new Float32Array(9 * 16 * 16)];
        const x = f32 ? y : undefined;
        const dy = f32 ? dx : undefined;
        addon.convForward({ x, xBf16: yBf16, filter, y: out[0], geometry: stage1 });
        addon.convBackwardData({ dy, dyBf16: dxBf16, filter, dx: out[1], geometry: stage1 });
        addon.convBackwardWeights({ x, dy, xBf16: yBf16, dyBf16: dxBf16, dfilter: out[2], geometry: stage1 });
        return out;
      };
      assert.deepEqual(run(false), run(true));
      // Where a pass reads dy in f32, leaving it out is an error, not garbage read.
      const m = 8 * 8 * 8 * 64;
      assert.throws(
        () =>
          addon.convBackwardWeights({
            x: rand(m, 10),
            dyBf16: new Uint16Array(m),
            dfilter: new Float32Array(9 * 64 * 64),
            geometry: stage3,
          }),
        /^Error: resnet_native: convBackwardWeights: needs dy: this pass reads it in f32, not its bf16 copy$/,
      );
    } finally {
      await native().loadNativeEngine(2);
    }
    const f32 = addon.convImplInfo({ geometry: stage1 }).takesBf16;
    assert.deepEqual(Object.values(f32), [false, false, false, false], 'fp32 mode takes bf16 copies');
    assert.throws(
      () =>
        addon.convForward({
          xBf16: new Uint16Array(n),
          filter: rand(9 * 16 * 16, 8),
          y: new Float32Array(n),
          geometry: stage1,
        }),
      /^Error: resnet_native: convForward: needs x: this pass reads it in f32, not its bf16 copy$/,
    );
  });

  it('a bf16 forward writes its output in bf16, which the four batch-norm passes read with the same bits as widened to f32', async () => {
    const addon = loadAddon();
    const stage1 = same3x3(8, 32, 16);
    const n = 8 * 32 * 32 * 16;
    const image = rand(n, 9);
    const conv = { xBf16: truncBf16(image), filter: rand(9 * 16 * 16, 8), geometry: stage1 };
    await native().loadNativeEngine(2, 'bf16');
    try {
      assert.equal(addon.convImplInfo({ geometry: stage1 }).writesBf16.forwardY, true);
      // The conv: yBf16, or the same values widened into an f32 y.
      const zb = new Uint16Array(n).fill(0xffff);
      const zf = new Float32Array(n);
      addon.convForward({ ...conv, yBf16: zb });
      addon.convForward({ ...conv, y: zf });
      assert.deepEqual(zf, widen(zb), 'f32 y is the bf16 output widened');
      assert.ok(new Set(zb).size > n / 100, 'the conv wrote its output');
      assert.throws(
        () => addon.convForward({ ...conv, y: zf, yBf16: zb }),
        /^Error: resnet_native: convForward: takes y or yBf16, not both$/,
      );

      // Batch norm forward (with a residual, y in f32 and bf16) and backward (with a second
      // gradient and the masked gradient g): xBf16 gives the bits x = widened xBf16 gives.
      const common = { rows: n / 16, channels: 16, epsilon: 1e-5, relu: true };
      const [gamma, beta, residual] = [rand(16, 5), rand(16, 6), rand(n, 7)];
      const [dy, dyAdd] = [rand(n, 1), rand(n, 2)];
      const run = (input: { x: Float32Array } | { xBf16: Uint16Array }) => {
        const f = {
          y: new Float32Array(n),
          yBf16: new Uint16Array(n),
          mean: new Float32Array(16),
          variance: new Float32Array(16),
        };
        addon.bnTrainForward({ ...common, ...input, gamma, beta, residual, ...f });
        const b = {
          dx: new Float32Array(n),
          dxBf16: new Uint16Array(n),
          g: new Float32Array(n),
          dgamma: new Float32Array(16),
          dbeta: new Float32Array(16),
        };
        addon.bnTrainBackward({
          ...common,
          ...input,
          dy,
          dyAdd,
          y: f.y,
          gamma,
          mean: f.mean,
          variance: f.variance,
          ...b,
        });
        return { ...f, ...b };
      };
      const from16 = run({ xBf16: zb });
      const from32 = run({ x: zf });
      for (const k of Object.keys(from16) as (keyof typeof from16)[]) assert.deepEqual(from16[k], from32[k], k);
      assert.ok(from16.dgamma.some((v) => v !== 0) && from16.y.some((v) => v > 0), 'batch norm computed');
      const fwd = {
        ...common,
        gamma,
        beta,
        y: new Float32Array(n),
        mean: new Float32Array(16),
        variance: new Float32Array(16),
      };
      assert.throws(
        () => addon.bnTrainForward({ ...fwd, x: zf, xBf16: zb }),
        /^Error: resnet_native: bnTrainForward: takes x or xBf16, not both$/,
      );
      // (At 16 channels nChw16c is nhwc's bytes; at 32 it is not.)
      const wide = { ...fwd, rows: n / 32, channels: 32, gamma: rand(32, 5), beta: rand(32, 6) };
      const stats32 = { mean: new Float32Array(32), variance: new Float32Array(32) };
      assert.throws(
        () => addon.bnTrainForward({ ...wide, ...stats32, xBf16: zb, layout: 'nChw16c', imageSize: 256 }),
        /^Error: resnet_native: bnTrainForward: xBf16 is only read in layout nhwc$/,
      );
    } finally {
      await native().loadNativeEngine(2);
    }
    // In fp32 the forward writes f32 only.
    assert.equal(addon.convImplInfo({ geometry: stage1 }).writesBf16.forwardY, false);
    assert.throws(
      () => addon.convForward({ ...conv, x: image, yBf16: new Uint16Array(n) }),
      /^Error: resnet_native: convForward: yBf16: this forward writes f32 \(see convImplInfo's writesBf16\)$/,
    );
  });

  it("a bf16 backward data writes its output in bf16, which batch norm's backward reads with the same bits as widened to f32", async () => {
    const addon = loadAddon();
    const stage1 = same3x3(8, 32, 16);
    const n = 8 * 32 * 32 * 16;
    const conv = { dyBf16: truncBf16(rand(n, 9)), filter: rand(9 * 16 * 16, 8), geometry: stage1 };
    await native().loadNativeEngine(2, 'bf16');
    try {
      assert.equal(addon.convImplInfo({ geometry: stage1 }).writesBf16.backwardDataDx, true);
      // The conv: dxBf16, or the same values widened into an f32 dx.
      const gb = new Uint16Array(n).fill(0xffff);
      const gf = new Float32Array(n);
      addon.convBackwardData({ ...conv, dxBf16: gb });
      addon.convBackwardData({ ...conv, dx: gf });
      assert.deepEqual(gf, widen(gb), 'f32 dx is the bf16 output widened');
      assert.ok(new Set(gb).size > n / 100, 'the conv wrote its output');
      assert.throws(
        () => addon.convBackwardData({ ...conv, dx: gf, dxBf16: gb }),
        /^Error: resnet_native: convBackwardData: takes dx or dxBf16, not both$/,
      );

      // Batch norm backward (bf16 x and mask, with and without a second gradient, g in its
      // own array or over dyAdd): dyBf16 gives the bits dy = widened dyBf16 gives.
      const common = { rows: n / 16, channels: 16, epsilon: 1e-5, relu: true };
      const stats = { gamma: rand(16, 5), mean: rand(16, 6), variance: rand(16, 7).map((v) => v + 1) };
      const [xBf16, yBf16] = [truncBf16(rand(n, 1)), truncBf16(rand(n, 2))];
      const dyAdd = rand(n, 3);
      const run = (dy: { dy: Float32Array } | { dyBf16: Uint16Array }, add: boolean, overAdd: boolean) => {
        const out = {
          dyAdd: add ? dyAdd.slice() : null,
          dxBf16: new Uint16Array(n),
          dgamma: new Float32Array(16),
          dbeta: new Float32Array(16),
        };
        const g = overAdd ? out.dyAdd! : new Float32Array(n);
        addon.bnTrainBackward({ ...common, ...stats, ...dy, ...out, xBf16, yBf16, g });
        return { ...out, g };
      };
      for (const [add, overAdd] of [
        [false, false],
        [true, false],
        [true, true],
      ]) {
        const from16 = run({ dyBf16: gb }, add, overAdd);
        const from32 = run({ dy: gf }, add, false);
        const what = `dyAdd=${add} g over dyAdd=${overAdd}`;
        for (const k of ['dxBf16', 'dgamma', 'dbeta', 'g'] as const)
          assert.deepEqual(from16[k], from32[k], `${k}, ${what}`);
        assert.ok(
          from16.dgamma.some((v) => v !== 0),
          'batch norm computed',
        );
      }
      const refused = (args: object, message: RegExp) =>
        assert.throws(
          () =>
            addon.bnTrainBackward({
              ...common,
              ...stats,
              xBf16,
              yBf16,
              dgamma: new Float32Array(16),
              dbeta: new Float32Array(16),
              ...args,
            }),
          message,
        );
      refused(
        { dy: gf, dyBf16: gb, dxBf16: new Uint16Array(n) },
        /^Error: resnet_native: bnTrainBackward: takes dy or dyBf16, not both$/,
      );
      refused(
        { dyBf16: gb, dx: new Float32Array(n) },
        /^Error: resnet_native: bnTrainBackward: dyBf16 is only read with dxBf16 \(the bf16 body\)$/,
      );
      refused(
        { dyBf16: new Uint16Array(gf.buffer, 0, n), dxBf16: new Uint16Array(n), g: gf },
        /^Error: resnet_native: bnTrainBackward: g must be dy or dyAdd itself, or an array of its own$/,
      );
    } finally {
      await native().loadNativeEngine(2);
    }
    // In fp32 the backward data writes f32 only.
    assert.equal(addon.convImplInfo({ geometry: stage1 }).writesBf16.backwardDataDx, false);
    assert.throws(
      () => addon.convBackwardData({ ...conv, dy: widen(conv.dyBf16), dxBf16: new Uint16Array(n) }),
      /^Error: resnet_native: convBackwardData: dxBf16: this backward data writes f32 \(see convImplInfo's writesBf16\)$/,
    );
  });

  it('the fused inference unit gives the bits of conv2d -> batchNormInfer -> addRelu, reading the conv output in bf16 in bf16 mode', async () => {
    const addon = loadAddon();
    const bnInfer = addon.bnInfer;
    let fromBf16 = 0;
    addon.bnInfer = (a) => {
      if (a.xBf16) fromBf16++;
      bnInfer(a);
    };
    try {
      for (const precision of ['fp32', 'bf16'] as const) {
        await native().loadNativeEngine(2, precision);
        const before = fromBf16;
        const fused = await onBackend('native', () => inferenceUnits('fused'));
        // (At batch 5 every array is pool-sized, so each of the six units reads its z in bf16.)
        const read = fromBf16 - before;
        assert.ok(precision === 'bf16' ? read === 6 : read === 0, `${precision}: ${read} units read z in bf16`);
        const composed = await onBackend('native', () => inferenceUnits('composed'));
        assert.equal(fromBf16, before + read, 'the composition read a bf16 z');
        fused.forEach((f, i) => {
          const differ = f.findIndex((v, j) => v !== composed[i][j]);
          assert.equal(differ, -1, `${precision} unit ${i}: ${f[differ]} vs ${composed[i][differ]} at ${differ}`);
        });
      }
    } finally {
      addon.bnInfer = bnInfer;
      await native().loadNativeEngine(2);
    }
  });

  it("batch norm backward's masked gradient g, in its own array or written over dy or dyAdd, with the same bits", () => {
    const addon = loadAddon();
    // Batch 8 of 16x16x32 (both threads), in both layouts, with and without a second gradient.
    const n = 8 * 16 * 16 * 32;
    const common = { rows: n / 32, channels: 32, epsilon: 1e-5, relu: true, imageSize: 256 };
    const [x, y, dy, dyAdd] = [rand(n, 1), rand(n, 2), rand(n, 3), rand(n, 4)];
    const [gamma, mean, variance] = [rand(32, 5), rand(32, 6), rand(32, 7).map((v) => v + 1)];
    for (const layout of ['nhwc', 'nChw16c'] as const) {
      for (const add of [null, dyAdd]) {
        const run = (where: 'own' | 'dy' | 'dyAdd') => {
          const out = {
            dy: dy.slice(),
            dyAdd: add?.slice() ?? null,
            dx: new Float32Array(n),
            dgamma: new Float32Array(32),
            dbeta: new Float32Array(32),
          };
          const g = where === 'own' ? new Float32Array(n) : out[where]!;
          addon.bnTrainBackward({ ...common, ...out, x, y, gamma, mean, variance, g, layout });
          return { ...out, g };
        };
        const own = run('own');
        const what = `${layout}${add ? ' with dyAdd' : ''}`;
        for (const over of add ? [run('dy'), run('dyAdd')] : [run('dy')]) {
          assert.deepEqual(over.g, own.g, `g over dy or dyAdd, ${what}`);
          for (const k of ['dx', 'dgamma', 'dbeta'] as const) assert.deepEqual(over[k], own[k], `${k}, ${what}`);
        }
        // g is (dy [+ dyAdd]) where y > 0, else 0 (the same float addition)
        const expected = dy.map((v, i) => (y[i] > 0 ? (add ? v + add[i] : v) : 0));
        assert.deepEqual(own.g, expected, `g, ${what}`);
        assert.deepEqual(own.dy, dy, 'dy untouched when g has its own array');
      }
    }
    // Any other overlap would read values already overwritten, or overwrite g: refused.
    const refused = (arrays: { dy: Float32Array; x: Float32Array; dx: Float32Array; g: Float32Array }) =>
      assert.throws(
        () =>
          addon.bnTrainBackward({
            ...common,
            ...arrays,
            y,
            gamma,
            mean,
            variance,
            dgamma: new Float32Array(32),
            dbeta: new Float32Array(32),
          }),
        /^Error: resnet_native: bnTrainBackward: g must be dy or dyAdd itself, or an array of its own$/,
      );
    const dyItself = dy.slice();
    refused({ dy: dyItself, x, dx: dyItself, g: dyItself });
    const shared = new Float32Array(2 * n);
    refused({ dy, x: shared.subarray(0, n), dx: new Float32Array(n), g: shared.subarray(n / 2, n / 2 + n) });
  });

  it('is deterministic in bf16 too: the same steps give bit-identical losses', async () => {
    const a = await smallTraining(3, 'bf16');
    const b = await smallTraining(3, 'bf16');
    assert.deepEqual(a.losses, b.losses);
  });

  it('trains: the loss of a small net follows the fp32 curve within 2% and falls', async () => {
    const f32 = await smallTraining(6);
    const bf = await smallTraining(6, 'bf16');
    assert.notDeepEqual(bf.losses, f32.losses, 'bf16 gave bit-identical losses: not in use?');
    bf.losses.forEach((l, i) => {
      assert.ok(Math.abs(l - f32.losses[i]) <= 0.02 * f32.losses[i], `step ${i}: bf16 ${l} vs fp32 ${f32.losses[i]}`);
    });
    assert.ok(bf.losses[5] < bf.losses[0], `bf16 losses: ${bf.losses}`);
    assert.ok(
      bf.tensors.every((t) => t === bf.tensors[1]),
      `tensor counts drift: ${bf.tensors}`,
    );
  });
});
