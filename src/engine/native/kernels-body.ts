// A CIFAR net's whole body in training mode -- the stem unit and every block up to the
// last block's output -- as one kernel, and its gradient as one kernel.
//
// Why: a ResNet-20 step spends 15-18 ms (12-14 %) outside native code, in tfjs's per-kernel
// dispatch, its tape, and the Identity clone of every tensor the tape keeps for the
// backward pass (bench/profile.ts measures it). Here the body's kernels (about 5 forward and
// 7 backward per block) become plain calls of the addon, its activations are scratch arrays
// instead of tensors, and the two gradients of a block's input (through conv1 and through
// the shortcut) are summed by the batch-norm backward that reads them.
//
// The same native calls, on the same inputs, in the same order as the per-unit kernels
// (kernels-conv.ts, kernels-fused.ts), so the results are bit-identical to theirs
// (test/native-body.test.ts checks every gradient); the one change, that sum, is the same
// float addition the tape's Add does. The model uses it only where it applies (src/engine/ops.ts:
// trainBody): training mode, shortcuts identity / A / none, one BN shard, no hooks.
//
// Inside, the activations are in oneDNN's blocked layout nChw16c (Layout in addon.ts), the
// one its convolutions at 32 and 64 channels compute in: the per-unit kernels hand them
// nhwc and pay a reorder in and out of every such conv (ResNet-56: 170 reorders, 20-38 ms
// a step on an AMD EPYC Zen 5). Only the body's output and incoming gradient cross back
// to nhwc. The convolutions run the same primitives either way, and batch norm adds the
// same numbers in the same order, so the results stay bit-identical. In bf16 mode the
// convolutions read nhwc bf16 copies, so there the body stays nhwc.
import * as tf from '@tensorflow/tfjs-core';

import { BODY_SHORTCUTS, BODY_TRAIN_KERNEL, type BodyShortcut } from '../ops';
import type { ConvGeometry, Layout } from './addon';
import type { NativeBackend } from './backend';
import { bf16OutputFor, conv2dGeometry, implInfo } from './kernels-conv';
import { addon, alloc, allF32, bf16CopyFor, bf16CopyOf, f32, need, output, size } from './util';

/** Gradients of ResnetTrainBody: inputs {dy, h}; attrs as the forward; outputs one per param. */
export const BODY_TRAIN_GRAD_KERNEL = 'ResnetTrainBodyGrad';

/** One conv -> BN unit's tensors, kept from the forward for the backward. */
interface UnitState {
  input: Float32Array;
  inShape: number[];
  w: Float32Array;
  wShape: number[];
  geometry: ConvGeometry;
  /** Of the conv's input and output: the body's, but nhwc for the stem, whose input is the images. */
  convLayout: Layout;
  gamma: Float32Array;
  z: Float32Array;
  y: Float32Array;
  outShape: number[];
  mean: Float32Array;
  variance: Float32Array;
}

/** What the backward pass needs of one forward, attached to the body's output storage. */
interface BodyState {
  units: UnitState[];
  /** Of every activation after the stem's input (see the top of this file). */
  layout: Layout;
  /** Per block: shortcut kind. Units are [stem, block 1 conv1, block 1 conv2, ...]. */
  shortcuts: BodyShortcut[];
  epsilon: number;
  /** Scratch arrays to hand back to the pool (everything but the output). */
  scratch: Float32Array[];
  /**
   * Arrays written in bf16 only (bf16 mode: a bf16 conv's output z, and a block's inner
   * activation when every reader takes its bf16 copy); the f32 array is unwritten and only
   * keys the copy.
   */
  bf16Only: Set<Float32Array>;
  released: boolean;
}

const states = new WeakMap<Float32Array, BodyState>();

/**
 * The body's activation layout when the convolutions run in f32: nChw16c (see the top of
 * this file); `bench/profile.ts --layouts N` sets nhwc on every other step to measure it.
 */
export const bodyLayout: { f32: Layout } = { f32: 'nChw16c' };

function release(b: NativeBackend, s: BodyState): void {
  if (s.released) return;
  s.released = true;
  for (const a of s.scratch) b.releaseScratch(a);
  s.scratch.length = 0;
}

function readAttrs(attrs: tf.NamedAttrMap) {
  const strides = attrs.strides as number[];
  const shortcuts = (attrs.shortcuts as number[]).map((c): BodyShortcut | undefined => BODY_SHORTCUTS[c]);
  if (strides.length !== 1 + 2 * shortcuts.length || shortcuts.some((s) => s === undefined)) {
    throw new Error(`${BODY_TRAIN_KERNEL}: attrs need one stride per unit (1 + 2 per block) and shortcut codes 0-2`);
  }
  return { strides, shortcuts: shortcuts as BodyShortcut[], epsilon: attrs.epsilon as number };
}

/** a (an activation of shape [N, H, W, C] in layout `from`) in layout `to`: a itself when
 * the bytes are the same, else a new pool array. */
function toLayout(b: NativeBackend, a: Float32Array, shape: number[], from: Layout, to: Layout): Float32Array {
  const [batch, height, width, channels] = shape;
  if (from === to || channels === 16) return a;
  const dst = alloc(b, a.length);
  const imageSize = height * width;
  addon().convertLayout({ src: a, dst, rows: batch * imageSize, channels, imageSize, to });
  return dst;
}

const takesBf16 = (geometry: ConvGeometry) => implInfo(geometry).takesBf16;

/** The f32 array to hand a kernel for activation a, or undefined if it holds no values. */
function f32Of(st: BodyState, a: Float32Array): Float32Array | undefined {
  return st.bf16Only.has(a) ? undefined : a;
}

const bodyForward: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as NativeBackend;
  const { strides, shortcuts, epsilon } = readAttrs(attrs!);
  const [x] = need(inputs, 'x');
  const params = strides.map((_, i) => need(inputs, `w${i}`, `gamma${i}`, `beta${i}`));
  if (!allF32(b, x, ...params.flat())) throw new Error(`${BODY_TRAIN_KERNEL}: needs float32 tensors`);
  const blocked = bodyLayout.f32 === 'nChw16c' && !b.writeBf16Copies && params.every(([w]) => w.shape[3] % 16 === 0);
  const layout: Layout = blocked ? 'nChw16c' : 'nhwc';
  const st: BodyState = { units: [], layout, shortcuts, epsilon, scratch: [], bf16Only: new Set(), released: false };
  const statsOut: tf.TensorInfo[] = [];

  // conv -> BN (-> + residual) -> ReLU, as batchNormTrain / batchNormAddRelu over conv2d.
  const unit = (i: number, input: Float32Array, inShape: number[], residual: Float32Array | null) => {
    const [w, gamma, beta] = params[i];
    const geometry = conv2dGeometry(inShape, w.shape, strides[i]);
    const outShape = [geometry.batch, geometry.outHeight, geometry.outWidth, geometry.outChannels];
    const n = size(outShape);
    const wv = f32(b, w);
    // z, the conv's output: a bf16 forward writes it in bf16 only, and the batch norm reads
    // it so, forward and backward (the f32 array then only keys the copy, as dz's below).
    const z = alloc(b, n);
    const zBf16 = bf16OutputFor(b, geometry, z);
    if (zBf16) st.bf16Only.add(z);
    // (The stem's 16-channel output is the same bytes in either layout.)
    const convLayout: Layout = i === 0 ? 'nhwc' : layout;
    addon().convForward({
      x: f32Of(st, input),
      filter: wv,
      y: zBf16 ? undefined : z,
      yBf16: zBf16,
      geometry,
      layout: convLayout,
      xBf16: bf16CopyOf(b, input),
    });
    const y = alloc(b, n);
    const yBf16 = bf16CopyFor(b, y);
    // A unit's output read only by the next conv (forward and weight gradient) and by its
    // own ReLU mask, which bnTrainBackward can take from the copy too: a block's inner
    // activation (units 1, 3, ...), and in a plain net the stem's and every block's output
    // but the body's last, since no shortcut reads them (plain-56 in bf16: the stem's and 16
    // of the 27 blocks' outputs, those whose next conv reads bf16 in both passes).
    const nextConvOnly = i % 2 === 1 || (i + 1 < strides.length && shortcuts[i / 2] === 'none');
    if (yBf16 && nextConvOnly) {
      const next = conv2dGeometry(outShape, params[i + 1][0].shape, strides[i + 1]);
      const takes = takesBf16(next);
      if (takes.forwardX && takes.backwardWeightsX) st.bf16Only.add(y);
    }
    const channels = geometry.outChannels;
    // Not pool storage: the backward pass reads them after the stats tensors may be gone.
    const mean = new Float32Array(channels);
    const variance = new Float32Array(channels);
    const gammaV = f32(b, gamma);
    addon().bnTrainForward({
      x: zBf16 ? undefined : z,
      xBf16: zBf16,
      gamma: gammaV,
      beta: f32(b, beta),
      y: f32Of(st, y),
      mean,
      variance,
      rows: n / channels,
      channels,
      epsilon,
      relu: true,
      residual,
      yBf16,
      layout,
      imageSize: outShape[1] * outShape[2],
    });
    st.scratch.push(z, y);
    st.units.push({
      input,
      inShape,
      w: wv,
      wShape: w.shape,
      geometry,
      convLayout,
      gamma: gammaV,
      z,
      y,
      outShape,
      mean,
      variance,
    });
    statsOut.push(output(b, [channels], mean), output(b, [channels], variance));
    return { y, shape: outShape };
  };

  let h = unit(0, f32(b, x), x.shape, null);
  shortcuts.forEach((shortcut, k) => {
    const r = unit(1 + 2 * k, h.y, h.shape, null);
    let residual: Float32Array | null = null;
    if (shortcut === 'identity') residual = h.y;
    else if (shortcut === 'A') {
      const [batch, height, width, channels] = h.shape;
      const outChannels = params[2 + 2 * k][0].shape[3];
      residual = alloc(b, batch * (height / 2) * (width / 2) * outChannels);
      addon().shortcutA({
        src: h.y,
        dst: residual,
        batch,
        height,
        width,
        channels,
        outChannels,
        backward: false,
        layout,
      });
      st.scratch.push(residual);
    }
    h = unit(2 + 2 * k, r.y, r.shape, residual);
  });
  // The output tensor's storage: the last activation itself, or its nhwc copy.
  const out = toLayout(b, h.y, h.shape, layout, 'nhwc');
  if (out === h.y) st.scratch.pop();
  states.set(out, st);
  // Scratch goes back to the pool after the backward pass, or with the output if that
  // never runs (a training forward outside a gradient computation).
  b.onRecycle(out, () => release(b, st));
  return [output(b, h.shape, out), ...statsOut];
};

const bodyBackward: tf.KernelFunc = ({ inputs, backend }) => {
  const b = backend as NativeBackend;
  const [dy, h] = need(inputs, 'dy', 'h');
  const st = states.get(f32(b, h));
  if (!st || st.released) throw new Error(`${BODY_TRAIN_GRAD_KERNEL}: no forward state for this output`);
  const grads: tf.TensorInfo[][] = [];

  const dyOut = f32(b, dy);
  // Input gradients that a bf16 backward data wrote in bf16 only (writesBf16): the f32 array
  // then only keys the copy, which the batch norm before reads (as autocast: conv gradients
  // in bf16, batch-norm arithmetic in f32).
  const bf16Only = new Set<Float32Array>();
  const done = (a: Float32Array) => {
    bf16Only.delete(a);
    if (a !== dyOut) b.releaseScratch(a);
  };

  // BN (-> + residual) -> ReLU backward, then the conv's weight gradient and, unless this
  // is the stem, its input gradient. The incoming gradient is g, or g + gAdd (a block
  // input's: see below). emit: also the masked dy (the residual's gradient), written over an
  // incoming gradient where it may be (not the incoming tensor's own storage, not a bf16-only
  // array): one array fewer to write, see bnTrainBackward. The caller releases the incoming
  // arrays that did not become `masked`; every other gradient array goes back to the pool as
  // soon as it has been used.
  const unitBackward = (i: number, g: Float32Array, gAdd: Float32Array | null, emit: boolean, needDx: boolean) => {
    const u = st.units[i];
    const n = size(u.outShape);
    const channels = u.outShape[3];
    const gBf16 = bf16Only.has(g) ? bf16CopyOf(b, g) : null;
    // dz, the conv's incoming gradient: in bf16 mode, when both of the conv's backward
    // passes read only its bf16 copy, the f32 array is never written (it only keys the copy).
    const dz = alloc(b, n);
    const dzBf16 = bf16CopyFor(b, dz);
    const takes = dzBf16 && takesBf16(u.geometry);
    const dzF32 = takes && takes.backwardWeightsDy && (!needDx || takes.backwardDataDy) ? undefined : dz;
    const dgamma = alloc(b, channels);
    const dbeta = alloc(b, channels);
    const masked = !emit ? null : g !== dyOut && !gBf16 ? g : (gAdd ?? alloc(b, n));
    const yF32 = f32Of(st, u.y); // (else the ReLU mask comes from y's bf16 copy)
    const zBf16Only = st.bf16Only.has(u.z); // z then exists only as its bf16 copy
    addon().bnTrainBackward({
      dy: gBf16 ? undefined : g,
      dyBf16: gBf16,
      dyAdd: gAdd,
      x: zBf16Only ? undefined : u.z,
      xBf16: zBf16Only ? bf16CopyOf(b, u.z) : null,
      y: yF32,
      yBf16: yF32 ? null : bf16CopyOf(b, u.y),
      gamma: u.gamma,
      mean: u.mean,
      variance: u.variance,
      dx: dzF32,
      dgamma,
      dbeta,
      rows: n / channels,
      channels,
      epsilon: st.epsilon,
      relu: true,
      g: masked,
      dxBf16: dzBf16,
      layout: st.layout,
      imageSize: u.outShape[1] * u.outShape[2],
    });
    const { geometry, convLayout: layout } = u;
    let dx: Float32Array | null = null;
    if (needDx) {
      dx = alloc(b, size(u.inShape));
      const dxBf16 = bf16OutputFor(b, geometry, dx, 'backwardDataDx');
      if (dxBf16) bf16Only.add(dx);
      addon().convBackwardData({
        dy: dzF32,
        filter: u.w,
        dx: dxBf16 ? undefined : dx,
        dxBf16,
        geometry,
        layout,
        dyBf16: dzBf16,
      });
    }
    const dw = alloc(b, size(u.wShape));
    addon().convBackwardWeights({
      x: f32Of(st, u.input),
      dfilter: dw,
      geometry,
      layout,
      xBf16: bf16CopyOf(b, u.input),
      dy: dzF32,
      dyBf16: dzBf16,
    });
    b.releaseScratch(dz);
    grads[i] = [output(b, u.wShape, dw), output(b, [channels], dgamma), output(b, [channels], dbeta)];
    return { dx, masked };
  };

  let g = toLayout(b, dyOut, st.units[st.units.length - 1].outShape, 'nhwc', st.layout);
  // A block's input feeds its conv1 and its shortcut, so its gradient is the sum of the
  // two (the tape would add them with Add): the sum is formed by the batch-norm backward
  // that reads it next (dyAdd), instead of by a separate pass over the tensor.
  let gAdd: Float32Array | null = null;
  for (let k = st.shortcuts.length - 1; k >= 0; k--) {
    const shortcut = st.shortcuts[k];
    const second = unitBackward(2 + 2 * k, g, gAdd, shortcut !== 'none', true);
    for (const a of [g, gAdd]) if (a && a !== second.masked) done(a);
    const first = unitBackward(1 + 2 * k, second.dx!, null, false, true);
    done(second.dx!);
    gAdd = second.masked;
    if (shortcut === 'A') {
      const inShape = st.units[1 + 2 * k].inShape;
      const [batch, height, width, channels] = inShape;
      const outChannels = st.units[2 + 2 * k].outShape[3];
      gAdd = alloc(b, size(inShape));
      addon().shortcutA({
        src: second.masked!,
        dst: gAdd,
        batch,
        height,
        width,
        channels,
        outChannels,
        backward: true,
        layout: st.layout,
      });
      done(second.masked!);
    }
    g = first.dx!;
  }
  unitBackward(0, g, gAdd, false, false);
  done(g);
  if (gAdd) done(gAdd);
  release(b, st);
  return grads.flat();
};

export const bodyKernels: Record<string, tf.KernelFunc> = {
  [BODY_TRAIN_KERNEL]: bodyForward,
  [BODY_TRAIN_GRAD_KERNEL]: bodyBackward,
};

/**
 * The body's gradient: one kernel computes every parameter's, eagerly, when the tape
 * reaches the node; the per-input closures hand them out. Nothing is saved through the
 * tape but the output (the key of the forward's state) and the input image.
 */
export const bodyGradient: tf.GradConfig = {
  kernelName: BODY_TRAIN_KERNEL,
  inputsToSave: ['x'],
  outputsToSave: [true],
  gradFunc: (dys, saved, attrs) => {
    const dy = (dys as tf.Tensor[])[0];
    const h = saved[1];
    const grads = tf.engine().runKernel(BODY_TRAIN_GRAD_KERNEL, { dy, h }, attrs) as tf.Tensor[];
    const map: Record<string, () => tf.Tensor> = {
      x: () => {
        throw new Error(`${BODY_TRAIN_KERNEL}: no gradient for the input images`);
      },
    };
    grads.forEach((t, j) => {
      const i = Math.floor(j / 3);
      map[`${['w', 'gamma', 'beta'][j % 3]}${i}`] = () => t;
    });
    return map;
  },
};
