// Conv2D and its two gradients on oneDNN (native/conv.cc). NHWC float32, no dilation;
// anything else (NCHW, dilations, other dtypes) runs the cpu reference kernel.
import * as tf from '@tensorflow/tfjs-core';

import type { ConvGeometry, NativeAddon } from './addon';
import type { NativeBackend } from './backend';
import { addon, alloc, allF32, type Attrs, type Backend, bf16CopyOf, f32, fallback, need, output, size } from './util';

type ExplicitPad = [[number, number], [number, number], [number, number], [number, number]];
type Pad = 'valid' | 'same' | number | ExplicitPad;
type Rounding = 'floor' | 'round' | 'ceil' | undefined;

/** The geometry native/conv.cc takes, or null when oneDNN cannot express the conv. */
function geometry(info: tf.backend_util.Conv2DInfo): ConvGeometry | null {
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1) return null;
  if (info.dataFormat !== 'channelsLast') return null;
  const { top, left } = info.padInfo;
  if (top < 0 || left < 0) return null;
  // oneDNN requires the right/bottom padding to match the output size exactly; tfjs's
  // 'same' may ask for padding no output uses, so derive it from the output size.
  const bottom = (info.outHeight - 1) * info.strideHeight + info.filterHeight - info.inHeight - top;
  const right = (info.outWidth - 1) * info.strideWidth + info.filterWidth - info.inWidth - left;
  if (bottom < 0 || right < 0) return null;
  return {
    batch: info.batchSize,
    inHeight: info.inHeight,
    inWidth: info.inWidth,
    inChannels: info.inChannels,
    outHeight: info.outHeight,
    outWidth: info.outWidth,
    outChannels: info.outChannels,
    filterHeight: info.filterHeight,
    filterWidth: info.filterWidth,
    strideHeight: info.strideHeight,
    strideWidth: info.strideWidth,
    padTop: top,
    padLeft: left,
    padBottom: bottom,
    padRight: right,
  };
}

function convInfo(
  xShape: number[],
  filterShape: number[],
  attrs: Attrs,
  dilations: number | [number, number] = 1,
): tf.backend_util.Conv2DInfo {
  const dataFormat = (attrs.dataFormat as 'NHWC' | 'NCHW' | undefined) ?? 'NHWC';
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides as number | [number, number],
    dilations,
    attrs.pad as Pad,
    attrs.dimRoundingMode as Rounding,
    false,
    tf.backend_util.convertConv2DDataFormat(dataFormat),
  );
}

/**
 * The geometry of the model's convs (src/engine/ops.ts conv2d: k x k, symmetric padding
 * (k - 1) / 2, no dilation) for kernels that call the addon directly (kernels-body.ts).
 */
export function conv2dGeometry(xShape: number[], filterShape: number[], stride: number): ConvGeometry {
  // Computed once per shape: the body kernel asks for every unit's on every step, and tfjs's
  // computeConv2DInfo cost ~0.6 ms of a ResNet-20 step (19 calls; a CPU profile of 20 steps).
  const key = `${xShape.join()}|${filterShape.join()}|${stride}`;
  let geom = geometries.get(key);
  if (!geom) {
    geom = computeGeometry(xShape, filterShape, stride);
    geometries.set(key, geom);
  }
  return geom;
}

/** conv2dGeometry's cache: a few shapes per net (one per unit shape and batch size). */
const geometries = new Map<string, ConvGeometry>();

function computeGeometry(xShape: number[], filterShape: number[], stride: number): ConvGeometry {
  const p = (filterShape[0] - 1) / 2;
  const pad: ExplicitPad = [
    [0, 0],
    [p, p],
    [p, p],
    [0, 0],
  ];
  const geom = geometry(convInfo(xShape, filterShape, { strides: stride, pad }));
  if (!geom)
    throw new Error(`native engine: no oneDNN geometry for a ${filterShape.join('x')} conv of ${xShape.join('x')}`);
  return geom;
}

/**
 * Which of a conv's inputs its passes read from the caller's bf16 copy, and whether its
 * forward writes bf16. Asked of the addon once per geometry, as its kernel choices are fixed
 * for the process; in bf16 mode only (writeBf16Copies), so the cache holds bf16 answers
 * only. Keyed by the geometry object itself: conv2dGeometry hands out one object per shape.
 */
type ImplInfo = ReturnType<NativeAddon['convImplInfo']>;
const implInfoCache = new WeakMap<ConvGeometry, ImplInfo>();
export function implInfo(geometry: ConvGeometry): ImplInfo {
  let t = implInfoCache.get(geometry);
  if (!t) implInfoCache.set(geometry, (t = addon().convImplInfo({ geometry })));
  return t;
}

/**
 * Where a conv pass writes its output in bf16 (bf16 mode; writesBf16: the forward's z, the
 * backward data's dx), the pooled bf16 array it writes instead of `a` (which then only keys
 * it); else null: it writes `a` itself.
 */
export function bf16OutputFor(
  b: NativeBackend,
  geometry: ConvGeometry,
  a: Float32Array,
  pass: keyof ImplInfo['writesBf16'] = 'forwardY',
): Uint16Array | null {
  return b.writeBf16Copies && implInfo(geometry).writesBf16[pass] ? b.bf16CopyFor(a) : null;
}

const conv2d: tf.KernelFunc = (args) => {
  const backend = args.backend as Backend;
  const [x, filter] = need(args.inputs, 'x', 'filter');
  const attrs = args.attrs ?? {};
  if (!allF32(backend, x, filter)) return fallback('Conv2D', args);
  const info = convInfo(x.shape, filter.shape, attrs, attrs.dilations as number | [number, number]);
  const geom = geometry(info);
  if (!geom) return fallback('Conv2D', args);
  const y = alloc(backend, size(info.outShape));
  const xs = f32(backend, x);
  addon().convForward({ x: xs, filter: f32(backend, filter), y, geometry: geom, xBf16: bf16CopyOf(backend, xs) });
  return output(backend, info.outShape, y);
};

const conv2dBackpropInput: tf.KernelFunc = (args) => {
  const backend = args.backend as Backend;
  const [dy, filter] = need(args.inputs, 'dy', 'filter');
  const attrs = args.attrs ?? {};
  if (!allF32(backend, dy, filter)) return fallback('Conv2DBackpropInput', args);
  const inputShape = attrs.inputShape as number[];
  const info = convInfo(inputShape, filter.shape, attrs);
  const geom = geometry(info);
  if (!geom) return fallback('Conv2DBackpropInput', args);
  const dx = alloc(backend, size(inputShape));
  const dys = f32(backend, dy);
  addon().convBackwardData({
    dy: dys,
    filter: f32(backend, filter),
    dx,
    geometry: geom,
    dyBf16: bf16CopyOf(backend, dys),
  });
  return output(backend, inputShape, dx);
};

const conv2dBackpropFilter: tf.KernelFunc = (args) => {
  const backend = args.backend as Backend;
  const [x, dy] = need(args.inputs, 'x', 'dy');
  const attrs = args.attrs ?? {};
  if (!allF32(backend, x, dy)) return fallback('Conv2DBackpropFilter', args);
  const filterShape = attrs.filterShape as number[];
  const info = convInfo(x.shape, filterShape, attrs);
  const geom = geometry(info);
  if (!geom) return fallback('Conv2DBackpropFilter', args);
  const df = alloc(backend, size(filterShape));
  const [xs, dys] = [f32(backend, x), f32(backend, dy)];
  addon().convBackwardWeights({
    x: xs,
    dy: dys,
    dfilter: df,
    geometry: geom,
    xBf16: bf16CopyOf(backend, xs),
    dyBf16: bf16CopyOf(backend, dys),
  });
  return output(backend, filterShape, df);
};

export const convKernels: Record<string, tf.KernelFunc> = {
  Conv2D: conv2d,
  Conv2DBackpropInput: conv2dBackpropInput,
  Conv2DBackpropFilter: conv2dBackpropFilter,
};

/** The oneDNN implementations chosen for a conv (bench diagnostics: "ref" would be slow). */
export function convImplementations(
  xShape: number[],
  filterShape: number[],
  stride: number,
  pad: Pad,
): { forward: string; backwardData: string; backwardWeights: string } | null {
  const geom = geometry(convInfo(xShape, filterShape, { strides: stride, pad }));
  if (!geom) return null;
  const { forward, backwardData, backwardWeights } = addon().convImplInfo({ geometry: geom });
  return { forward, backwardData, backwardWeights };
}
