// The body kernel (src/engine/native/kernels-body.ts): the whole stem + blocks of a CIFAR
// net in training mode as one kernel, against the same net run unit by unit on the same
// engine. It makes the same native calls in the same order, so every gradient, batch
// statistic and loss must be bit-identical, in fp32 and in bf16; plus the cases it must
// leave to the unit path, and memory (tensors and pooled storage) flat over steps.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';

import { loadAddon } from '../src/engine/native/addon';
import * as nativeEngine from '../src/engine/native';
import { BODY_TRAIN_KERNEL } from '../src/engine/ops';
import { type BatchStats, CifarNet, type NetConfig } from '../src/model/resnet';
import { Sgd } from '../src/train/sgd';
import { trainStep } from '../src/train/step';

let skipReason: string | false = false;
try {
  loadAddon();
} catch (e) {
  skipReason = `native addon not built: ${(e as Error).message}`;
}
const bf16Cpu =
  fs.existsSync('/proc/cpuinfo') && / (avx512_bf16|amx_bf16) /.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));

tf.env().set('PROD', true);

function images(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n * 32 * 32 * 3 }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 100 - 50;
  });
}

interface Pass {
  loss: Float32Array;
  grads: Map<string, Float32Array>;
  stats: Map<string, Float32Array[]>;
  kernels: Set<string>;
}

/** Loss, every parameter's gradient and every BN layer's batch statistics of one batch. */
async function pass(cfg: NetConfig, fuseBody: boolean, batch: number): Promise<Pass> {
  const net = new CifarNet(cfg, 7);
  net.fuseBody = fuseBody;
  const x = images(batch, 11);
  const labels = tf.tensor1d(
    Int32Array.from({ length: batch }, (_, i) => (i * 3) % 10),
    'int32',
  );
  const stats: BatchStats[] = [];
  let out: Pass | undefined;
  const prof = await tf.profile(() => {
    const { value, grads } = tf.variableGrads(() => {
      const logits = net.forward(tf.tensor4d(x, [batch, 32, 32, 3]), true, stats);
      for (const s of stats) {
        tf.keep(s.mean);
        tf.keep(s.variance);
      }
      return tf.losses.softmaxCrossEntropy(tf.oneHot(labels, 10), logits) as tf.Scalar;
    }, [...net.params.values()]);
    out = {
      loss: value.dataSync() as Float32Array,
      grads: new Map([...net.params].map(([name, v]) => [name, grads[v.name].dataSync() as Float32Array])),
      // Mean, variance and count (the values behind them: the running variance's n / (n - 1)).
      stats: new Map(
        stats.map((s) => [
          s.name,
          [s.mean.dataSync(), s.variance.dataSync(), Float32Array.of(s.count)] as Float32Array[],
        ]),
      ),
      kernels: new Set(),
    };
    tf.dispose([value, ...Object.values(grads)]);
  });
  for (const s of stats) tf.dispose([s.mean, s.variance]);
  labels.dispose();
  net.dispose();
  return { ...out!, kernels: new Set(prof.kernels.map((k) => k.name)) };
}

function assertSame(fused: Pass, units: Pass, what: string): void {
  assert.ok(fused.kernels.has(BODY_TRAIN_KERNEL), `${what}: the body kernel did not run`);
  assert.ok(!units.kernels.has(BODY_TRAIN_KERNEL), `${what}: the unit path ran the body kernel`);
  assert.deepEqual(fused.loss, units.loss, `${what}: loss`);
  assert.deepEqual([...fused.stats.keys()], [...units.stats.keys()], `${what}: BN layers`);
  for (const [name, [m, v, n]] of units.stats) {
    assert.deepEqual(fused.stats.get(name), [m, v, n], `${what}: batch statistics of ${name}`);
  }
  // Every unit's statistics cover the batch's images times its map's pixels (32x32 for the
  // stem, 8x8 for the last unit).
  const counts = [...units.stats.values()].map(([, , n]) => n[0]);
  const batch = counts[0] / (32 * 32);
  assert.ok(Number.isInteger(batch) && counts.at(-1) === batch * 8 * 8, `${what}: counts ${counts}`);
  assert.equal(fused.grads.size, units.grads.size);
  for (const [name, g] of units.grads) {
    const f = fused.grads.get(name)!;
    const differ = g.findIndex((v, i) => !Object.is(v, f[i]));
    assert.equal(differ, -1, `${what}: gradient of ${name} differs at ${differ}: ${f[differ]} vs ${g[differ]}`);
  }
}

describe('native body kernel', { skip: skipReason }, () => {
  // Depth 14: identity blocks in every stage and option A at both stage changes. Batch 5
  // keeps the last stage's arrays below the pool's size, batch 8 puts every array in it.
  const nets: [string, NetConfig][] = [
    ['resnet-14', { depth: 14, plain: false, shortcut: 'A' }],
    ['plain-14', { depth: 14, plain: true, shortcut: 'A' }],
  ];
  for (const precision of ['fp32', 'bf16'] as const) {
    for (const [label, cfg] of nets) {
      const skip = precision === 'bf16' && !bf16Cpu && 'this CPU has no AVX512-BF16 or AMX';
      it(`${label} in ${precision}: bit-identical to the unit-by-unit path`, { skip }, async () => {
        // Count the batch-norm calls that write their output in bf16 only (every reader
        // takes that copy): in bf16 mode the gradients and inner activations of stages 1
        // and 2, none in fp32; those that read the conv's output z in bf16 (every pooled z
        // in bf16 mode); those that read their incoming gradient in bf16 (a bf16 backward
        // data's output), and write the masked gradient over the second one.
        const addon = loadAddon();
        const [forward, backward] = [addon.bnTrainForward, addon.bnTrainBackward];
        let bf16Only = 0;
        let yBf16Only = 0;
        let zBf16 = 0;
        let dyBf16 = 0;
        let gOverAdd = 0;
        addon.bnTrainForward = (a) => {
          if (!a.y) yBf16Only++;
          if (a.xBf16) zBf16++;
          forward(a);
        };
        addon.bnTrainBackward = (a) => {
          if (!a.dx) bf16Only++;
          if (a.xBf16) zBf16++;
          if (a.dyBf16) dyBf16++;
          if (a.g && a.g === a.dyAdd) gOverAdd++;
          backward(a);
        };
        await nativeEngine.loadNativeEngine(2, precision);
        try {
          for (const batch of [5, 8]) {
            assertSame(await pass(cfg, true, batch), await pass(cfg, false, batch), `${label} batch ${batch}`);
          }
        } finally {
          [addon.bnTrainForward, addon.bnTrainBackward] = [forward, backward];
          await nativeEngine.loadNativeEngine(2);
        }
        if (precision === 'fp32') assert.deepEqual([bf16Only, yBf16Only, zBf16, dyBf16, gOverAdd], [0, 0, 0, 0, 0]);
        else {
          // Per batch size, at least the two stage-1 blocks' units and inner activations,
          // and stage 1's five units' z, forward and backward.
          assert.ok(bf16Only >= 2 * 4, `${bf16Only} batch-norm backwards wrote dx in bf16 only`);
          // y in bf16 only where the next conv reads bf16 in both its passes (stages 1 and
          // 2, stride 1): the inner activations of stages 1 and 2 (4), and in the plain net
          // also the stem's and the outputs of the first block of stages 1 and 2 (3 more).
          assert.equal(yBf16Only, 2 * (cfg.plain ? 7 : 4), 'batch-norm forwards that wrote y in bf16 only');
          assert.ok(zBf16 >= 2 * 2 * 5, `${zBf16} batch-norm passes read z in bf16`);
          // Stage 1's five units each get a backward data's output (its last unit from
          // stage 2's first conv); a residual block's conv2 unit writes g over the shortcut's
          // gradient where its own incoming one is bf16.
          assert.ok(dyBf16 >= 2 * 5, `${dyBf16} batch-norm backwards read dy in bf16`);
          if (!cfg.plain) assert.ok(gOverAdd >= 2, `${gOverAdd} batch-norm backwards wrote g over dyAdd`);
        }
      });
    }
  }

  it('leaves projection shortcuts and BN shards to the unit path', async () => {
    await nativeEngine.loadNativeEngine(2);
    const b = await pass({ depth: 8, plain: false, shortcut: 'B' }, true, 4);
    assert.ok(!b.kernels.has(BODY_TRAIN_KERNEL) && b.kernels.has('Conv2D'), 'option B ran the body kernel');
    const net = new CifarNet({ depth: 8, plain: false, shortcut: 'A' }, 1);
    net.bnShards = 2;
    const stats: BatchStats[] = [];
    const prof = await tf.profile(() => {
      tf.tidy(() => {
        net.forward(tf.tensor4d(images(4, 3), [4, 32, 32, 3]), true, stats);
      });
    });
    assert.ok(!prof.kernels.some((k) => k.name === BODY_TRAIN_KERNEL), 'BN shards ran the body kernel');
    // Each shard's statistics cover its 2 images: the stem's 2 x 32 x 32, the last unit's 2 x 8 x 8.
    assert.deepEqual([stats[0].count, stats.at(-1)!.count], [2 * 32 * 32, 2 * 8 * 8]);
    net.dispose();
  });

  it('keeps tensors and pooled storage flat over training steps, and after a forward without backward', async () => {
    const engine = await nativeEngine.loadNativeEngine(2);
    const net = new CifarNet({ depth: 14, plain: false, shortcut: 'A' }, 2);
    const sgd = new Sgd(net.params, (n: string) => net.decayed(n), { momentum: 0.9, weightDecay: 1e-4 }, engine);
    const x = images(8, 5);
    const labels = Int32Array.from([1, 5, 7, 2, 0, 9, 3, 3]);
    const poolBytes = () => (tf.backend() as unknown as { poolBytes(): number }).poolBytes();
    const seen: [number, number][] = [];
    for (let i = 0; i < 6; i++) {
      if (i === 3) {
        // A training-mode forward outside any gradient computation: its scratch goes back
        // to the pool with its output, so the pool ends as full as it started.
        const before = poolBytes();
        tf.tidy(() => {
          net.forward(tf.tensor4d(x, [8, 32, 32, 3]), true);
        });
        assert.equal(poolBytes(), before, 'a forward without backward kept pool storage');
      }
      const { loss } = trainStep(net, sgd, x, labels, 0.05);
      assert.ok(Number.isFinite(loss), `step ${i}: loss ${loss}`);
      seen.push([tf.memory().numTensors, poolBytes()]);
    }
    for (const [tensors, bytes] of seen.slice(2)) {
      assert.equal(tensors, seen[1][0], `tensors grew: ${JSON.stringify(seen)}`);
      assert.equal(bytes, seen[1][1], `pooled storage changed: ${JSON.stringify(seen)}`);
    }
    sgd.dispose();
    net.dispose();
  });
});
