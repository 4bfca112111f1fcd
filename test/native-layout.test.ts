// The blocked activation layout nChw16c (Layout in src/engine/native/addon.ts), which the
// body kernel keeps so that no reorder runs around oneDNN's blocked convolutions: every
// kernel that takes it must give, bit for bit, what it gives on the same tensor in NHWC
// (convolutions, batch norm forward and backward with a residual and the masked gradient,
// option A's shortcut; batch norm's second incoming gradient also against its sum), convertLayout must put each value where nChw16c says, and a wrong layout is
// a one-line error. Shapes include 48 channels (no compile-time width), odd batches whose
// rows split between two threads mid-image, and 16 channels (the same bytes either way).
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import { loadAddon, type ConvGeometry, type NativeAddon } from '../src/engine/native/addon';
import * as nativeEngine from '../src/engine/native';
import { CifarNet } from '../src/model/resnet';
import { Sgd } from '../src/train/sgd';
import { trainStep } from '../src/train/step';

let skipReason: string | false = false;
try {
  loadAddon();
} catch (e) {
  skipReason = `native addon not built: ${(e as Error).message}`;
}

function rand(n: number, seed: number): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 2 ** 32) * 2 - 1;
  });
}

/** The nChw16c copy of an NHWC tensor [n, h, w, c], written out index by index. */
function blocked(a: Float32Array, [n, h, w, c]: number[]): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < n; i++)
    for (let p = 0; p < h * w; p++)
      for (let ch = 0; ch < c; ch++)
        out[((i * (c / 16) + Math.floor(ch / 16)) * h * w + p) * 16 + (ch % 16)] = a[(i * h * w + p) * c + ch];
  return out;
}

function sameBits(label: string, got: Float32Array, want: Float32Array): void {
  assert.equal(got.length, want.length, `${label}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== w[i]) assert.fail(`${label}: differs at ${i} (${got[i]} vs ${want[i]})`);
  }
}

// [batch, height, width, channels]: 2 threads split 5 x 16 x 16 and 7 x 12 x 12 rows
// inside an image (threads get 640 and 504 rows); 48 channels have no specialised loop.
const SHAPES = [
  [5, 16, 16, 32],
  [7, 12, 12, 48],
  [3, 8, 8, 64],
  [4, 8, 8, 16],
];

/** A 3x3 convolution's geometry on square maps (padding 1, or 0 before with stride 2, as tfjs's 'same'). */
function geometry3x3(
  batch: number,
  size: number,
  inChannels: number,
  outChannels: number,
  stride: number,
): ConvGeometry {
  const out = size / stride;
  const before = stride === 1 ? 1 : 0;
  return {
    batch,
    inHeight: size,
    inWidth: size,
    inChannels,
    outHeight: out,
    outWidth: out,
    outChannels,
    filterHeight: 3,
    filterWidth: 3,
    strideHeight: stride,
    strideWidth: stride,
    padTop: before,
    padLeft: before,
    padBottom: 1,
    padRight: 1,
  };
}

describe('nChw16c, the body kernel layout', { skip: skipReason }, () => {
  const addon = (): NativeAddon => loadAddon();

  it('convertLayout puts every value where nChw16c says, and back', () => {
    for (const shape of SHAPES) {
      const [n, h, w, c] = shape;
      const x = rand(n * h * w * c, c);
      const there = new Float32Array(x.length);
      addon().convertLayout({ src: x, dst: there, rows: n * h * w, channels: c, imageSize: h * w, to: 'nChw16c' });
      sameBits(`to nChw16c ${shape}`, there, blocked(x, shape));
      const back = new Float32Array(x.length);
      addon().convertLayout({ src: there, dst: back, rows: n * h * w, channels: c, imageSize: h * w, to: 'nhwc' });
      sameBits(`back ${shape}`, back, x);
    }
  });

  it('batch norm forward and backward (ReLU, residual, masked gradient) give the same bits in both layouts', () => {
    for (const shape of SHAPES) {
      const [n, h, w, c] = shape;
      const size = n * h * w * c;
      const rows = n * h * w;
      const x = rand(size, 1).map((v) => 3 + 2 * v); // mean far from 0: the shifted sums matter
      const residual = rand(size, 2);
      const dy = rand(size, 3);
      const gamma = rand(c, 4).map((v) => 1 + v / 2);
      const beta = rand(c, 5);
      const run = (layout: 'nhwc' | 'nChw16c') => {
        const conv = layout === 'nhwc' ? (a: Float32Array) => a : (a: Float32Array) => blocked(a, shape);
        const y = new Float32Array(size);
        const mean = new Float32Array(c);
        const variance = new Float32Array(c);
        const common = { rows, channels: c, epsilon: 1e-5, relu: true, layout, imageSize: h * w };
        addon().bnTrainForward({ x: conv(x), gamma, beta, y, mean, variance, residual: conv(residual), ...common });
        const dx = new Float32Array(size);
        const g = new Float32Array(size);
        const dgamma = new Float32Array(c);
        const dbeta = new Float32Array(c);
        addon().bnTrainBackward({
          dy: conv(dy),
          x: conv(x),
          y,
          gamma,
          mean,
          variance,
          dx,
          dgamma,
          dbeta,
          g,
          ...common,
        });
        return { y, mean, variance, dx, g, dgamma, dbeta };
      };
      const a = run('nhwc');
      const b = run('nChw16c');
      for (const k of ['mean', 'variance', 'dgamma', 'dbeta'] as const) sameBits(`${k} ${shape}`, b[k], a[k]);
      for (const k of ['y', 'dx', 'g'] as const) sameBits(`${k} ${shape}`, b[k], blocked(a[k], shape));
    }
  });

  it("batch norm backward with a second incoming gradient (dyAdd, a block input's) gives the bits it gives on their float sum, in both layouts", () => {
    for (const shape of SHAPES) {
      const [n, h, w, c] = shape;
      const size = n * h * w * c;
      const x = rand(size, 6).map((v) => 1 + v);
      const dy = rand(size, 7);
      const dyAdd = rand(size, 8);
      const sum = dy.map((v, i) => v + dyAdd[i]); // stored as float32: IEEE single addition
      const gamma = rand(c, 9).map((v) => 1 + v / 2);
      const beta = rand(c, 10);
      for (const layout of ['nhwc', 'nChw16c'] as const) {
        const conv = layout === 'nhwc' ? (a: Float32Array) => a : (a: Float32Array) => blocked(a, shape);
        const common = { rows: n * h * w, channels: c, epsilon: 1e-5, relu: true, layout, imageSize: h * w };
        const y = new Float32Array(size);
        const [mean, variance] = [new Float32Array(c), new Float32Array(c)];
        addon().bnTrainForward({ x: conv(x), gamma, beta, y, mean, variance, ...common });
        const backward = (grads: { dy: Float32Array; dyAdd?: Float32Array }) => {
          const out = {
            dx: new Float32Array(size),
            g: new Float32Array(size),
            dgamma: new Float32Array(c),
            dbeta: new Float32Array(c),
          };
          addon().bnTrainBackward({ ...grads, x: conv(x), y, gamma, mean, variance, ...out, ...common });
          return out;
        };
        const fused = backward({ dy: conv(dy), dyAdd: conv(dyAdd) });
        const summed = backward({ dy: conv(sum) });
        for (const k of ['dx', 'g', 'dgamma', 'dbeta'] as const)
          sameBits(`${k} ${layout} ${shape}`, fused[k], summed[k]);
      }
    }
  });

  it("option A's shortcut, forward and backward, gives the same bits in both layouts", () => {
    for (const [n, h, w, c, co] of [
      [3, 8, 8, 16, 32],
      [2, 6, 6, 32, 64],
    ]) {
      const inShape = [n, h, w, c];
      const outShape = [n, h / 2, w / 2, co];
      const x = rand(n * h * w * c, 7);
      const dy = rand(n * (h / 2) * (w / 2) * co, 8);
      const call = (src: Float32Array, dst: Float32Array, backward: boolean, layout: 'nhwc' | 'nChw16c') =>
        addon().shortcutA({ src, dst, batch: n, height: h, width: w, channels: c, outChannels: co, backward, layout });
      const fwdN = new Float32Array(dy.length);
      const fwdB = new Float32Array(dy.length);
      call(x, fwdN, false, 'nhwc');
      call(blocked(x, inShape), fwdB, false, 'nChw16c');
      sameBits(`forward ${c}->${co}`, fwdB, blocked(fwdN, outShape));
      const bwdN = new Float32Array(x.length);
      const bwdB = new Float32Array(x.length).fill(NaN); // every value must be written
      call(dy, bwdN, true, 'nhwc');
      call(blocked(dy, outShape), bwdB, true, 'nChw16c');
      sameBits(`backward ${c}->${co}`, bwdB, blocked(bwdN, inShape));
    }
  });

  it('convolutions (Winograd, stride 2, 16 channels) give the same bits in both layouts, all three passes', () => {
    // [batch, size, in channels, out channels, stride]
    for (const [n, s, ic, oc, stride] of [
      [3, 8, 32, 32, 1],
      [2, 8, 16, 32, 2],
      [2, 8, 32, 64, 2],
      [2, 8, 16, 16, 1],
    ]) {
      const o = s / stride;
      const geometry = geometry3x3(n, s, ic, oc, stride);
      const inShape = [n, s, s, ic];
      const outShape = [n, o, o, oc];
      const x = rand(n * s * s * ic, 9);
      const filter = rand(9 * ic * oc, 10);
      const dy = rand(n * o * o * oc, 11);
      const run = (layout: 'nhwc' | 'nChw16c') => {
        const conv = (a: Float32Array, shape: number[]) => (layout === 'nhwc' ? a : blocked(a, shape));
        const y = new Float32Array(dy.length);
        const dx = new Float32Array(x.length);
        const dfilter = new Float32Array(filter.length);
        addon().convForward({ x: conv(x, inShape), filter, y, geometry, layout });
        addon().convBackwardData({ dy: conv(dy, outShape), filter, dx, geometry, layout });
        addon().convBackwardWeights({ x: conv(x, inShape), dy: conv(dy, outShape), dfilter, geometry, layout });
        return { y, dx, dfilter };
      };
      const a = run('nhwc');
      const b = run('nChw16c');
      const label = `${ic}->${oc} stride ${stride}`;
      sameBits(`y ${label}`, b.y, blocked(a.y, outShape));
      sameBits(`dx ${label}`, b.dx, blocked(a.dx, inShape));
      sameBits(`dfilter ${label}`, b.dfilter, a.dfilter);
    }
  });

  it('a wrong layout is a one-line error naming the kernel and the field', () => {
    const loose = addon() as unknown as Record<string, (a: unknown) => unknown>;
    const x = new Float32Array(4 * 32);
    const c = new Float32Array(32);
    const bn = { x, gamma: c, beta: c, y: x, mean: c, variance: c, rows: 4, channels: 32, epsilon: 1e-5, relu: false };
    const fails = (fn: string, args: unknown, message: string) =>
      assert.throws(
        () => loose[fn](args),
        (e: Error) => e.message === `resnet_native: ${message}`,
        message,
      );
    fails(
      'bnTrainForward',
      { ...bn, layout: 'nchw' },
      'bnTrainForward: layout must be "nhwc" or "nChw16c", not "nchw"',
    );
    fails('bnTrainForward', { ...bn, layout: 'nChw16c' }, 'bnTrainForward: imageSize must be a number');
    fails(
      'bnTrainForward',
      { ...bn, layout: 'nChw16c', imageSize: 3 },
      'bnTrainForward: layout nChw16c needs channels divisible by 16 and imageSize (H*W) dividing the rows',
    );
    fails(
      'convertLayout',
      { src: x, dst: x, rows: 4, channels: 32, imageSize: 4, to: 'NHWC' },
      'convertLayout: to must be "nhwc" or "nChw16c", not "NHWC"',
    );
    fails(
      'convForward',
      { x, filter: x, y: x, layout: 'nChw16c', geometry: geometry3x3(1, 4, 3, 16, 1) },
      'convForward: layout nChw16c needs input and output channels divisible by 16',
    );
    // bf16 arrays are nhwc only: the batch-norm loops are not compiled for them in nChw16c
    // (batchnorm-loops.cc), so each must be refused here rather than do nothing there.
    const blocked = { layout: 'nChw16c', imageSize: 4 };
    const b16 = new Uint16Array(4 * 32);
    fails('bnTrainForward', { ...bn, ...blocked, yBf16: b16 }, 'bnTrainForward: yBf16 is only written in layout nhwc');
    const back = { ...bn, ...blocked, relu: true, dy: x, dx: x, dgamma: c, dbeta: c };
    fails('bnTrainBackward', { ...back, dxBf16: b16 }, 'bnTrainBackward: dxBf16 is only written in layout nhwc');
    fails('bnTrainBackward', { ...back, yBf16: b16 }, 'bnTrainBackward: yBf16 is only read in layout nhwc');
    fails(
      'bnTrainBackward',
      { ...back, dy: undefined, dyBf16: b16, dxBf16: b16 },
      'bnTrainBackward: dyBf16 is only read in layout nhwc',
    );
  });

  it('the body kernel keeps nChw16c in fp32: its output and incoming gradient cross to NHWC, one conversion each', async () => {
    const engine = await nativeEngine.loadNativeEngine(2);
    const net = new CifarNet({ depth: 14, plain: false, shortcut: 'A' }, 1);
    const sgd = new Sgd(net.params, (n: string) => net.decayed(n), { momentum: 0.9, weightDecay: 1e-4 }, engine);
    const x = rand(4 * 32 * 32 * 3, 12);
    const labels = Int32Array.from([1, 2, 3, 4]);
    const a = addon();
    const original = a.convertLayout;
    const calls: string[] = [];
    a.convertLayout = (args) => {
      calls.push(args.to);
      original(args);
    };
    try {
      trainStep(net, sgd, x, labels, 0.1);
    } finally {
      a.convertLayout = original;
      sgd.dispose();
      net.dispose();
    }
    assert.deepEqual(calls, ['nhwc', 'nChw16c']);
  });
});
