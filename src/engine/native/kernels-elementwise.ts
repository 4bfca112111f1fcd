// Elementwise arithmetic, ReLU, reductions and slicing/padding on native loops
// (native/elementwise.cc). These are the ops a training step runs on full activation
// tensors (gradient accumulation in the tape, the option-A shortcut, global average
// pooling and their gradients); the JS cpu kernels cost milliseconds each on them.
import * as tf from '@tensorflow/tfjs-core';

import type { BinaryOp } from './addon';
import { addon, alloc, allF32, type Backend, f32, fallback, need, output, size, stridesOf } from './util';

/**
 * Output shape plus per-input element strides (0 on broadcast dims), with size-1 dims
 * dropped and adjacent dims merged wherever both inputs stay linear across them, so the
 * native loop sees as few, as long, dims as possible.
 */
function broadcastPlan(
  aShape: number[],
  bShape: number[],
  outShape = tf.backend_util.assertAndGetBroadcastShape(aShape, bShape),
) {
  const rank = outShape.length;
  const stridesFor = (shape: number[]) => {
    const own = stridesOf(shape);
    const pad = rank - shape.length;
    return outShape.map((_d, i) => (i < pad || shape[i - pad] === 1 ? 0 : own[i - pad]));
  };
  const sa = stridesFor(aShape);
  const sb = stridesFor(bShape);
  const dims: number[] = [];
  const da: number[] = [];
  const db: number[] = [];
  for (let i = 0; i < rank; i++) {
    if (outShape[i] === 1) continue;
    const last = dims.length - 1;
    if (last >= 0 && da[last] === sa[i] * outShape[i] && db[last] === sb[i] * outShape[i]) {
      dims[last] *= outShape[i];
      da[last] = sa[i];
      db[last] = sb[i];
    } else {
      dims.push(outShape[i]);
      da.push(sa[i]);
      db.push(sb[i]);
    }
  }
  if (dims.length === 0) {
    dims.push(1);
    da.push(0);
    db.push(0);
  }
  return { outShape, dims: Int32Array.from(dims), sa: Int32Array.from(da), sb: Int32Array.from(db) };
}

function binaryKernel(name: string, op: BinaryOp): tf.KernelFunc {
  return (args) => {
    const b = args.backend as Backend;
    const [a, other] = need(args.inputs, 'a', 'b');
    if (!allF32(b, a, other) || a.shape.length > 6 || other.shape.length > 6) {
      return fallback(name, args);
    }
    const plan = broadcastPlan(a.shape, other.shape);
    const out = alloc(b, size(plan.outShape));
    if (out.length > 0) {
      addon().binary({
        op,
        a: f32(b, a),
        b: f32(b, other),
        out,
        shape: plan.dims,
        aStrides: plan.sa,
        bStrides: plan.sb,
      });
    }
    return output(b, plan.outShape, out);
  };
}

function reluKernel(name: string, step: boolean): tf.KernelFunc {
  return (args) => {
    const b = args.backend as Backend;
    const [x] = need(args.inputs, 'x');
    if (!allF32(b, x)) return fallback(name, args);
    const n = size(x.shape);
    const out = alloc(b, n);
    const alpha = step ? ((args.attrs?.alpha as number | undefined) ?? 0) : 0;
    if (step) addon().step({ x: f32(b, x), out, n, alpha });
    else addon().relu({ x: f32(b, x), out, n, alpha: 0 });
    return output(b, x.shape, out);
  };
}

/** Mean/Sum over a contiguous block of axes as [outer, reduce, inner]. */
function reduceKernel(name: string, mean: boolean): tf.KernelFunc {
  return (args) => {
    const b = args.backend as Backend;
    const [x] = need(args.inputs, 'x');
    if (!allF32(b, x)) return fallback(name, args);
    const axes = tf.util.parseAxisParam(args.attrs?.axis as number | number[], x.shape).sort((p, q) => p - q);
    const contiguous = axes.every((ax, i) => i === 0 || ax === axes[i - 1] + 1);
    if (axes.length === 0 || !contiguous) return fallback(name, args);
    const first = axes[0];
    const last = axes[axes.length - 1];
    const outer = size(x.shape.slice(0, first));
    const reduce = size(x.shape.slice(first, last + 1));
    const inner = size(x.shape.slice(last + 1));
    if (reduce === 0) return fallback(name, args);
    const keep = Boolean(args.attrs?.keepDims);
    const outShape = keep
      ? x.shape.map((d, i) => (i >= first && i <= last ? 1 : d))
      : x.shape.filter((_, i) => i < first || i > last);
    const out = alloc(b, outer * inner);
    addon().reduceMiddle({ x: f32(b, x), out, outer, reduce, inner, mean });
    return output(b, outShape, out);
  };
}

/** Dense copy of a strided window of x: out[i] = x[begin + i * step]. */
function gather(
  b: Backend,
  x: tf.TensorInfo,
  begin: number[],
  steps: number[],
  shape: number[],
  outShape: number[],
): tf.TensorInfo {
  const xs = stridesOf(x.shape);
  let offset = 0;
  for (let i = 0; i < x.shape.length; i++) offset += begin[i] * xs[i];
  const out = alloc(b, size(shape));
  if (out.length > 0) {
    addon().stridedCopy({
      src: f32(b, x),
      srcOffset: offset,
      srcStrides: Int32Array.from(xs.map((s, i) => s * steps[i])),
      dst: out,
      dstOffset: 0,
      dstStrides: Int32Array.from(stridesOf(shape)),
      shape: Int32Array.from(shape),
    });
  }
  return output(b, outShape, out);
}

const slice: tf.KernelFunc = (args) => {
  const b = args.backend as Backend;
  const [x] = need(args.inputs, 'x');
  if (!allF32(b, x) || x.shape.length === 0) return fallback('Slice', args);
  const [begin, sz] = tf.slice_util.parseSliceParams(
    x,
    args.attrs!.begin as number | number[],
    args.attrs!.size as number | number[],
  );
  tf.slice_util.assertParamsValid(x, begin, sz);
  return gather(
    b,
    x,
    begin,
    begin.map(() => 1),
    sz,
    sz,
  );
};

const stridedSlice: tf.KernelFunc = (args) => {
  const b = args.backend as Backend;
  const [x] = need(args.inputs, 'x');
  const at = args.attrs!;
  if (!allF32(b, x) || x.shape.length === 0) return fallback('StridedSlice', args);
  const info = tf.slice_util.sliceInfo(
    x.shape,
    at.begin as number[],
    at.end as number[],
    at.strides as number[],
    at.beginMask as number,
    at.endMask as number,
    at.ellipsisMask as number,
    at.newAxisMask as number,
    at.shrinkAxisMask as number,
  );
  if (info.isIdentity || info.strides.some((s) => s <= 0)) return fallback('StridedSlice', args);
  const shape = info.finalShapeSparse;
  if (shape.length !== x.shape.length) return fallback('StridedSlice', args);
  return gather(b, x, info.begin, info.strides, shape, info.finalShape);
};

const padV2: tf.KernelFunc = (args) => {
  const b = args.backend as Backend;
  const [x] = need(args.inputs, 'x');
  if (!allF32(b, x) || x.shape.length === 0) return fallback('PadV2', args);
  const paddings = args.attrs!.paddings as [number, number][];
  const value = (args.attrs!.constantValue as number | undefined) ?? 0;
  if (paddings.some(([lo, hi]) => lo < 0 || hi < 0)) return fallback('PadV2', args);
  const outShape = x.shape.map((d, i) => paddings[i][0] + d + paddings[i][1]);
  const out = alloc(b, size(outShape));
  addon().fill({ out, value, n: out.length }); // pooled storage is not zeroed
  const os = stridesOf(outShape);
  let offset = 0;
  for (let i = 0; i < outShape.length; i++) offset += paddings[i][0] * os[i];
  if (size(x.shape) > 0) {
    addon().stridedCopy({
      src: f32(b, x),
      srcOffset: 0,
      srcStrides: Int32Array.from(stridesOf(x.shape)),
      dst: out,
      dstOffset: offset,
      dstStrides: Int32Array.from(os),
      shape: Int32Array.from(x.shape),
    });
  }
  return output(b, outShape, out);
};

/** BatchMatMul (tf.matMul) of float32 [..., M, K] x [..., K, N], batch dims broadcast. */
const batchMatMul: tf.KernelFunc = (args) => {
  const b = args.backend as Backend;
  const [a, c] = need(args.inputs, 'a', 'b');
  const ta = Boolean(args.attrs?.transposeA);
  const tb = Boolean(args.attrs?.transposeB);
  if (!allF32(b, a, c) || a.shape.length < 2 || c.shape.length < 2) return fallback('BatchMatMul', args);
  const ra = a.shape.length;
  const rc = c.shape.length;
  const [aRows, aCols] = a.shape.slice(ra - 2);
  const [cRows, cCols] = c.shape.slice(rc - 2);
  const M = ta ? aCols : aRows;
  const K = ta ? aRows : aCols;
  const N = tb ? cRows : cCols;
  if ((tb ? cCols : cRows) !== K) return fallback('BatchMatMul', args);
  const batchA = size(a.shape.slice(0, ra - 2));
  const batchC = size(c.shape.slice(0, rc - 2));
  const batch = Math.max(batchA, batchC);
  if (batchA !== batchC && batchA !== 1 && batchC !== 1) return fallback('BatchMatMul', args);
  const outBatchShape = batchA >= batchC ? a.shape.slice(0, ra - 2) : c.shape.slice(0, rc - 2);
  if (batchA === batchC && ra !== rc) return fallback('BatchMatMul', args);
  const out = alloc(b, batch * M * N);
  addon().matmul({
    a: f32(b, a),
    b: f32(b, c),
    out,
    batch,
    M,
    N,
    K,
    aBatch: batchA === 1 ? 0 : aRows * aCols,
    aM: ta ? 1 : aCols,
    aK: ta ? aCols : 1,
    bBatch: batchC === 1 ? 0 : cRows * cCols,
    bK: tb ? 1 : cCols,
    bN: tb ? cCols : 1,
  });
  return output(b, [...outBatchShape, M, N], out);
};

/**
 * The gradient of Mean: dy (with the reduced axes kept as 1s) broadcast to x's shape and
 * divided by the reduced count. inputs {dy}, attrs {shape, count}. One pass, where tfjs's
 * own gradient builds a ones(x.shape) array (in JS) and multiplies and divides by it.
 */
export const MEAN_GRAD_KERNEL = 'ResnetMeanGrad';

const meanGrad: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as Backend;
  const [dy] = need(inputs, 'dy');
  const shape = attrs!.shape as number[];
  const scale = Float32Array.of(1 / (attrs!.count as number));
  const plan = broadcastPlan(dy.shape, [], shape);
  const out = alloc(b, size(shape));
  if (out.length > 0) {
    addon().binary({ op: 'mul', a: f32(b, dy), b: scale, out, shape: plan.dims, aStrides: plan.sa, bStrides: plan.sb });
  }
  return output(b, shape, out);
};

export const elementwiseKernels: Record<string, tf.KernelFunc> = {
  Add: binaryKernel('Add', 'add'),
  Sub: binaryKernel('Sub', 'sub'),
  Multiply: binaryKernel('Multiply', 'mul'),
  RealDiv: binaryKernel('RealDiv', 'div'),
  Relu: reluKernel('Relu', false),
  Step: reluKernel('Step', true),
  Mean: reduceKernel('Mean', true),
  Sum: reduceKernel('Sum', false),
  Slice: slice,
  StridedSlice: stridedSlice,
  PadV2: padV2,
  [MEAN_GRAD_KERNEL]: meanGrad,
  BatchMatMul: batchMatMul,
};

/**
 * Mean's gradient on 'native' via MEAN_GRAD_KERNEL; on every other backend tfjs's own.
 * (Gradients are registered per kernel name for all backends, hence the dispatch.)
 */
export function meanGradient(original: tf.GradConfig): tf.GradConfig {
  return {
    ...original,
    gradFunc: (dy, saved, attrs) => {
      const [x] = saved;
      if (tf.getBackend() !== 'native' || x.dtype !== 'float32') {
        return original.gradFunc(dy, saved, attrs);
      }
      const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape);
      const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const count = axes.reduce((n, ax) => n * x.shape[ax], 1);
      return {
        x: () =>
          tf
            .engine()
            .runKernel(
              MEAN_GRAD_KERNEL,
              { dy: tf.reshape(dy as tf.Tensor, kept) },
              { shape: x.shape, count },
            ) as tf.Tensor,
      };
    },
  };
}
