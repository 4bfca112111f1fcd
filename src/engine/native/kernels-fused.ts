// The model's fused units (see src/engine/ops.ts) and inference batch norm, on native
// loops (native/batchnorm.cc, native/elementwise.cc), with their gradients.
import * as tf from '@tensorflow/tfjs-core';

import { ADD_RELU_KERNEL, BN_ADD_RELU_KERNEL, BN_TRAIN_KERNEL, CONV_BN_INFER_KERNEL, SHORTCUT_A_KERNEL } from '../ops';
import type { BinaryOp } from './addon';
import type { NativeBackend } from './backend';
import { bf16OutputFor, conv2dGeometry } from './kernels-conv';
import { addon, alloc, allF32, type Backend, bf16CopyFor, bf16CopyOf, f32, fallback, need, output, size } from './util';

/** [dx, dgamma, dbeta] of ResnetBatchNormTrain; inputs {dy, x, y, gamma, mean, variance}. */
export const BN_TRAIN_GRAD_KERNEL = 'ResnetBatchNormTrainGrad';
/**
 * [dx, dgamma, dbeta, dresidual] of ResnetBatchNormAddRelu; inputs {dy, x, y, gamma, mean,
 * variance}: BN's gradient with the ReLU mask, which is also the residual's gradient.
 */
export const BN_ADD_RELU_GRAD_KERNEL = 'ResnetBatchNormAddReluGrad';
/** dx = dy * (y > 0); inputs {dy, y}: the gradient through a ReLU given its output. */
export const RELU_MASK_GRAD_KERNEL = 'ResnetReluMaskGrad';
/** dx of ResnetShortcutA; inputs {dy}; attrs {outChannels, inShape}. */
export const SHORTCUT_A_GRAD_KERNEL = 'ResnetShortcutAGrad';

function channelsOf(x: tf.TensorInfo): { rows: number; channels: number } {
  const channels = x.shape[x.shape.length - 1];
  return { rows: size(x.shape) / channels, channels };
}

/** BN in training mode, then the ReLU, and before it the residual if there is one. */
function runBnTrain(b: Backend, inputs: tf.NamedTensorInfoMap, epsilon: number, relu: boolean, withResidual: boolean) {
  const [x, gamma, beta] = need(inputs, 'x', 'gamma', 'beta');
  const residual = withResidual ? need(inputs, 'residual')[0] : undefined;
  const { rows, channels } = channelsOf(x);
  const shapesOk =
    size(gamma.shape) === channels &&
    size(beta.shape) === channels &&
    (!residual || tf.util.arraysEqual(residual.shape, x.shape));
  if (!allF32(b, x, gamma, beta, residual) || !shapesOk) {
    const name = withResidual ? BN_ADD_RELU_KERNEL : BN_TRAIN_KERNEL;
    throw new Error(`${name}: needs float32 x [..., C], gamma and beta of size C (and a residual like x)`);
  }
  const y = alloc(b, size(x.shape));
  const mean = alloc(b, channels);
  const variance = alloc(b, channels);
  addon().bnTrainForward({
    x: f32(b, x),
    gamma: f32(b, gamma),
    beta: f32(b, beta),
    y,
    mean,
    variance,
    rows,
    channels,
    epsilon,
    relu,
    residual: residual ? f32(b, residual) : null,
    yBf16: bf16CopyFor(b, y), // y is the next convolution's input
  });
  return [output(b, x.shape, y), output(b, [channels], mean), output(b, [channels], variance)];
}

const bnTrain: tf.KernelFunc = ({ inputs, backend, attrs }) =>
  runBnTrain(backend as Backend, inputs, attrs!.epsilon as number, Boolean(attrs!.relu), false);

const bnAddRelu: tf.KernelFunc = ({ inputs, backend, attrs }) =>
  runBnTrain(backend as Backend, inputs, attrs!.epsilon as number, true, true);

/** [dx, dgamma, dbeta] of BN (+ ReLU), and with `emitMasked` also the masked dy. */
function runBnTrainGrad(
  b: Backend,
  inputs: tf.NamedTensorInfoMap,
  epsilon: number,
  relu: boolean,
  emitMasked: boolean,
) {
  const [dy, x, y, gamma, mean, variance] = need(inputs, 'dy', 'x', 'y', 'gamma', 'mean', 'variance');
  const { rows, channels } = channelsOf(x);
  const dx = alloc(b, size(x.shape));
  const dgamma = alloc(b, channels);
  const dbeta = alloc(b, channels);
  const g = emitMasked ? alloc(b, size(x.shape)) : null;
  addon().bnTrainBackward({
    dy: f32(b, dy),
    x: f32(b, x),
    y: relu ? f32(b, y) : null,
    gamma: f32(b, gamma),
    mean: f32(b, mean),
    variance: f32(b, variance),
    dx,
    dgamma,
    dbeta,
    rows,
    channels,
    epsilon,
    relu,
    g,
    dxBf16: bf16CopyFor(b, dx), // dx is the incoming gradient of the convolution before
  });
  const out = [output(b, x.shape, dx), output(b, [channels], dgamma), output(b, [channels], dbeta)];
  return g ? [...out, output(b, x.shape, g)] : out;
}

const bnTrainGrad: tf.KernelFunc = ({ inputs, backend, attrs }) =>
  runBnTrainGrad(backend as Backend, inputs, attrs!.epsilon as number, Boolean(attrs!.relu), false);

const bnAddReluGrad: tf.KernelFunc = ({ inputs, backend, attrs }) =>
  runBnTrainGrad(backend as Backend, inputs, attrs!.epsilon as number, true, true);

function sameShapeBinary(op: BinaryOp, backend: Backend, a: tf.TensorInfo, c: tf.TensorInfo): tf.TensorInfo {
  const n = size(a.shape);
  const out = alloc(backend, n);
  const one = Int32Array.of(1);
  addon().binary({
    op,
    a: f32(backend, a),
    b: f32(backend, c),
    out,
    shape: Int32Array.of(n),
    aStrides: one,
    bStrides: one,
  });
  return output(backend, a.shape, out);
}

const addRelu: tf.KernelFunc = ({ inputs, backend }) => {
  const b = backend as Backend;
  const [a, other] = need(inputs, 'a', 'b');
  if (!allF32(b, a, other) || !tf.util.arraysEqual(a.shape, other.shape)) {
    throw new Error(`${ADD_RELU_KERNEL}: needs two float32 tensors of the same shape`);
  }
  return sameShapeBinary('addRelu', b, a, other);
};

const reluMaskGrad: tf.KernelFunc = ({ inputs, backend }) =>
  sameShapeBinary('reluMask', backend as Backend, ...(need(inputs, 'dy', 'y') as [tf.TensorInfo, tf.TensorInfo]));

function runShortcutA(b: Backend, src: tf.TensorInfo, inShape: number[], outChannels: number, backward: boolean) {
  const [batch, height, width, channels] = inShape;
  const outShape = [batch, height / 2, width / 2, outChannels];
  if (!allF32(b, src) || inShape.length !== 4 || !tf.util.arraysEqual(src.shape, backward ? outShape : inShape)) {
    throw new Error(`${SHORTCUT_A_KERNEL}: needs float32 x [N, H, W, C] (dy [N, H/2, W/2, outChannels])`);
  }
  const dst = alloc(b, size(backward ? inShape : outShape));
  addon().shortcutA({ src: f32(b, src), dst, batch, height, width, channels, outChannels, backward });
  return output(b, backward ? inShape : outShape, dst);
}

const shortcutA: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const [x] = need(inputs, 'x');
  return runShortcutA(backend as Backend, x, x.shape, attrs!.outChannels as number, false);
};

const shortcutAGrad: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const [dy] = need(inputs, 'dy');
  return runShortcutA(backend as Backend, dy, attrs!.inShape as number[], attrs!.outChannels as number, true);
};

// tfjs FusedBatchNorm (tf.batchNorm): native when the statistics are per channel of the
// last axis, which is what batchNormInfer passes.
const fusedBatchNorm: tf.KernelFunc = (args) => {
  const b = args.backend as Backend;
  const [x, mean, variance] = need(args.inputs, 'x', 'mean', 'variance');
  const { offset, scale } = args.inputs;
  const { rows, channels } = channelsOf(x);
  const perChannel = [mean, variance, offset, scale].every(
    (t) => t == null || (t.shape.length <= 1 && size(t.shape) === channels),
  );
  if (!perChannel || !allF32(b, x, mean, variance, offset, scale)) {
    return fallback('FusedBatchNorm', args);
  }
  const y = alloc(b, size(x.shape));
  addon().bnInfer({
    x: f32(b, x),
    mean: f32(b, mean),
    variance: f32(b, variance),
    offset: offset ? f32(b, offset) : null,
    scale: scale ? f32(b, scale) : null,
    y,
    rows,
    channels,
    epsilon: (args.attrs?.varianceEpsilon as number | undefined) ?? 0.001,
    relu: false,
  });
  return output(b, x.shape, y);
};

// ResnetConvBnInfer (src/engine/ops.ts convBnInfer): the conv writes its output into
// scratch that never becomes a tensor, so where a bf16 forward writes bf16 it stays bf16
// (the conv writes 2 bytes a value and the batch norm reads 2) instead of being widened to
// an f32 tensor for tfjs's FusedBatchNorm; then BN, the residual and the ReLU in one pass.
// The same float operations as conv2d -> batchNormInfer -> addRelu (the tests compare).
const convBnInfer: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as NativeBackend;
  const [x, w, gamma, beta, mean, variance] = need(inputs, 'x', 'w', 'gamma', 'beta', 'mean', 'variance');
  const residual = inputs.residual;
  if (!allF32(b, x, w, gamma, beta, mean, variance, residual)) {
    throw new Error(`${CONV_BN_INFER_KERNEL}: needs float32 tensors`);
  }
  const geometry = conv2dGeometry(x.shape, w.shape, attrs!.stride as number);
  const outShape = [geometry.batch, geometry.outHeight, geometry.outWidth, geometry.outChannels];
  const n = size(outShape);
  const xv = f32(b, x);
  const z = alloc(b, n);
  const zBf16 = bf16OutputFor(b, geometry, z);
  addon().convForward({
    x: xv,
    xBf16: bf16CopyOf(b, xv),
    filter: f32(b, w),
    y: zBf16 ? undefined : z,
    yBf16: zBf16,
    geometry,
  });
  const y = alloc(b, n);
  addon().bnInfer({
    x: zBf16 ? undefined : z,
    xBf16: zBf16,
    mean: f32(b, mean),
    variance: f32(b, variance),
    offset: f32(b, beta),
    scale: f32(b, gamma),
    residual: residual ? f32(b, residual) : null,
    y,
    rows: n / geometry.outChannels,
    channels: geometry.outChannels,
    epsilon: attrs!.epsilon as number,
    relu: Boolean(attrs!.relu),
  });
  b.releaseScratch(z);
  return output(b, outShape, y);
};

export const fusedKernels: Record<string, tf.KernelFunc> = {
  [BN_TRAIN_KERNEL]: bnTrain,
  [BN_TRAIN_GRAD_KERNEL]: bnTrainGrad,
  [BN_ADD_RELU_KERNEL]: bnAddRelu,
  [BN_ADD_RELU_GRAD_KERNEL]: bnAddReluGrad,
  [ADD_RELU_KERNEL]: addRelu,
  [RELU_MASK_GRAD_KERNEL]: reluMaskGrad,
  [SHORTCUT_A_KERNEL]: shortcutA,
  [SHORTCUT_A_GRAD_KERNEL]: shortcutAGrad,
  FusedBatchNorm: fusedBatchNorm,
  [CONV_BN_INFER_KERNEL]: convBnInfer,
};

/** BN's gradient; at a block's end (a residual input) the kernel's 4th output is its gradient. */
function bnGradient(kernelName: string, gradKernel: string): tf.GradConfig {
  return {
    kernelName,
    inputsToSave: ['x', 'gamma'],
    outputsToSave: [true, true, true],
    gradFunc: (dys, saved, attrs) => {
      // Only y feeds the loss; the mean/variance outputs' dy are unused zeros.
      const dy = (dys as tf.Tensor[])[0];
      const [x, gamma, y, mean, variance] = saved;
      const [dx, dgamma, dbeta, dresidual] = tf
        .engine()
        .runKernel(gradKernel, { dy, x, y, gamma, mean, variance }, attrs) as tf.Tensor[];
      const grads = { x: () => dx, gamma: () => dgamma, beta: () => dbeta };
      return dresidual ? { ...grads, residual: () => dresidual } : grads;
    },
  };
}

/**
 * Gradients of the fused kernels. The BN gradient kernel computes dx, dgamma and dbeta in
 * one pass over the activations, so it runs once, eagerly, when the tape reaches the node;
 * the per-input closures only hand out its results (the tape calls each exactly once).
 */
export const fusedGradients: tf.GradConfig[] = [
  bnGradient(BN_TRAIN_KERNEL, BN_TRAIN_GRAD_KERNEL),
  bnGradient(BN_ADD_RELU_KERNEL, BN_ADD_RELU_GRAD_KERNEL),
  {
    kernelName: ADD_RELU_KERNEL,
    outputsToSave: [true],
    gradFunc: (dy, saved) => {
      const [y] = saved;
      const g = tf.engine().runKernel(RELU_MASK_GRAD_KERNEL, { dy: dy as tf.Tensor, y }) as tf.Tensor;
      // Each input gets its own tensor handle (the tape may dispose them independently);
      // clone shares the storage, it copies nothing.
      return { a: () => g, b: () => tf.clone(g) };
    },
  },
  {
    kernelName: SHORTCUT_A_KERNEL,
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => {
      const [x] = saved;
      const inShape = x.shape;
      return {
        x: () =>
          tf.engine().runKernel(SHORTCUT_A_GRAD_KERNEL, { dy: dy as tf.Tensor }, { ...attrs, inShape }) as tf.Tensor,
      };
    },
  },
];
