// Runs batch norm's three native functions (bnTrainForward, bnTrainBackward, bnInfer) over
// a fixed set of argument combinations on deterministic inputs and prints, as JSON, the
// addon's version string, a SHA-256 of every call's outputs, and how many calls each copy
// of the loops ran, of how many with a bf16 array. test/native-build.test.ts runs it with
// RESNET_EXP_LOOPS set to each copy and to the mixed rule, and compares: both copies of
// native/batchnorm-loops.cc must compute the same bits.
import { createHash } from 'node:crypto';

import { loadAddon, type NativeAddon } from '../src/engine/native/addon';

const addon = loadAddon();
// Reductions depend on the team size; both runs use the same.
addon.setThreads({ threads: 2 });

let seed = 12345;
/** mulberry32: the same values in every process. */
function random(): number {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const f32 = (n: number, lo = -1, hi = 1) => Float32Array.from({ length: n }, () => lo + (hi - lo) * random());
/** bf16 values: the upper halves of f32 ones. */
const bf16 = (n: number) => new Uint16Array(new Uint32Array(f32(n).buffer).map((u) => u >>> 16));

const hashes: Record<string, string> = {};
// Calls made, and those with a bf16 array among their arguments.
const made = { all: 0, bf16: 0 };
function counted<A extends object>(f: (args: A) => void): (args: A) => void {
  return (args) => {
    made.all++;
    if (Object.values(args).some((v) => v instanceof Uint16Array)) made.bf16++;
    f(args);
  };
}
type Args<K extends 'bnTrainForward' | 'bnTrainBackward' | 'bnInfer'> = Parameters<NativeAddon[K]>[0];
const bn = {
  trainForward: counted<Args<'bnTrainForward'>>((a) => addon.bnTrainForward(a)),
  trainBackward: counted<Args<'bnTrainBackward'>>((a) => addon.bnTrainBackward(a)),
  infer: counted<Args<'bnInfer'>>((a) => addon.bnInfer(a)),
};
function record(name: string, outputs: ArrayBufferView[]): void {
  const h = createHash('sha256');
  for (const o of outputs) h.update(new Uint8Array(o.buffer, o.byteOffset, o.byteLength));
  hashes[name] = h.digest('hex');
}

// [rows, channels, layout]: the CIFAR widths (compile-time widths in the loops) and one
// run-time width; row counts with tails; nChw16c at 32 channels (8x8 images).
const shapes: [number, number, 'nhwc' | 'nChw16c'][] = [
  [4099, 16, 'nhwc'],
  [2053, 32, 'nhwc'],
  [1031, 64, 'nhwc'],
  [1501, 48, 'nhwc'],
  [64 * 33, 32, 'nChw16c'],
];
for (const [rows, channels, layout] of shapes) {
  const n = rows * channels;
  const blocked = layout === 'nChw16c';
  const geometry = { rows, channels, epsilon: 1e-5, ...(blocked ? { layout, imageSize: 64 } : {}) };
  const gamma = f32(channels, 0.5, 1.5),
    beta = f32(channels);
  // Inputs offset from 0 (the forward's shifted sums) in f32, and in bf16 where allowed.
  const inputs: [string, { x: Float32Array } | { xBf16: Uint16Array }][] = [['x', { x: f32(n, 2, 4) }]];
  if (!blocked) inputs.push(['xBf16', { xBf16: bf16(n) }]);
  for (const [inName, input] of inputs) {
    for (const relu of [false, true]) {
      for (const residual of [undefined, f32(n)]) {
        const tag = `${rows}x${channels} ${layout} ${inName} relu=${relu} residual=${!!residual}`;
        const y = new Float32Array(n),
          mean = new Float32Array(channels),
          variance = new Float32Array(channels);
        const yBf16 = blocked ? undefined : new Uint16Array(n);
        bn.trainForward({ ...geometry, ...input, gamma, beta, y, yBf16, mean, variance, relu, residual });
        record(`forward ${tag}`, [y, mean, variance, ...(yBf16 ? [yBf16] : [])]);

        // The backward from this forward: every optional input and output once.
        const dy = f32(n),
          dyAdd = residual ? f32(n) : undefined;
        const dx = new Float32Array(n),
          dgamma = new Float32Array(channels),
          dbeta = new Float32Array(channels);
        const g = relu ? new Float32Array(n) : undefined;
        const dxBf16 = blocked ? undefined : new Uint16Array(n);
        // The ReLU mask from y, or (nhwc, bf16 input) from the forward's bf16 copy only.
        const mask = relu ? (yBf16 && inName === 'xBf16' ? { yBf16 } : { y }) : {};
        bn.trainBackward({
          ...geometry,
          ...input,
          ...mask,
          dy,
          dyAdd,
          gamma,
          mean,
          variance,
          dx,
          dgamma,
          dbeta,
          relu,
          g,
          dxBf16,
        });
        record(`backward ${tag}`, [dx, dgamma, dbeta, ...(g ? [g] : []), ...(dxBf16 ? [dxBf16] : [])]);
        if (dxBf16) {
          // dy in bf16 (a bf16 backward data's output), g written over dyAdd where there is one.
          const add = dyAdd?.slice();
          const over = relu ? (add ?? new Float32Array(n)) : undefined;
          bn.trainBackward({
            ...geometry,
            ...input,
            ...mask,
            dyBf16: bf16(n),
            dyAdd: add,
            gamma,
            mean,
            variance,
            dgamma,
            dbeta,
            relu,
            g: over,
            dxBf16,
          });
          record(`backward dyBf16 ${tag}`, [dgamma, dbeta, ...(over ? [over] : []), dxBf16]);
        }

        if (!blocked) {
          const yi = new Float32Array(n);
          bn.infer({
            rows,
            channels,
            epsilon: 1e-3,
            ...input,
            mean,
            variance,
            scale: gamma,
            offset: beta,
            y: yi,
            relu,
            residual,
          });
          record(`infer ${tag}`, [yi]);
        }
      }
    }
  }
}
process.stdout.write(JSON.stringify({ version: addon.version(), hashes, made, ran: addon.bnLoopsCalls() }));
