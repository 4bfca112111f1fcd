// The network's hot units, written once for every engine.
//
// The model calls only these functions for its conv -> BN (-> ReLU) units and for the
// residual addition. Each has a plain TensorFlow.js composition that any backend can run
// and differentiate; an engine that registers the fused kernel named below for its backend
// (see src/engine/native/) gets the fused kernel instead, with its own gradient.
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's CommonJS build (dist/tf-core.node.js) registers no gradients, and its
// dist/register_all_gradients.js is an ES module Node cannot require. tfjs-layers' CommonJS
// build registers all of core's gradients, at a fifth of the size of the @tensorflow/tfjs
// union (which adds WebGL, the converter and tfjs-data).
import '@tensorflow/tfjs-layers';

/**
 * Training-mode batch normalization over the N, H, W axes of an NHWC tensor, optionally
 * followed by ReLU. inputs {x, gamma, beta}; attrs {epsilon, relu};
 * outputs [y, mean, variance] (biased batch variance, as used for normalizing).
 */
export const BN_TRAIN_KERNEL = 'ResnetBatchNormTrain';
/**
 * The end of a residual block: y = relu(BN(x) + residual), BN in training mode. inputs
 * {x, gamma, beta, residual}; attrs {epsilon}; outputs [y, mean, variance] as BN_TRAIN_KERNEL.
 */
export const BN_ADD_RELU_KERNEL = 'ResnetBatchNormAddRelu';
/** y = relu(a + b) for two tensors of the same shape. inputs {a, b}; outputs [y]. */
export const ADD_RELU_KERNEL = 'ResnetAddRelu';

/**
 * Option A's shortcut (see shortcutA). inputs {x}; attrs {outChannels}; outputs [y]. Its
 * gradient kernel ResnetShortcutAGrad: inputs {dy}; attrs {outChannels, inShape}.
 */
export const SHORTCUT_A_KERNEL = 'ResnetShortcutA';

/**
 * A CIFAR net's body in training mode (src/engine/native/kernels-body.ts): the stem unit and
 * every block, each conv -> BN -> ReLU unit as conv2d + batchNormTrain / batchNormAddRelu.
 * inputs {x, w0, gamma0, beta0, w1, ...} (units in forward order: stem, then conv1 and
 * conv2 of each block); attrs {epsilon, strides (one per unit), shortcuts (one per block:
 * 0 identity, 1 option A, 2 none)}; outputs [h, mean0, variance0, mean1, ...].
 */
export const BODY_TRAIN_KERNEL = 'ResnetTrainBody';
/**
 * A conv -> BN unit in inference mode: relu(BN(conv(x, w)) + residual) with a residual (a
 * block's end), else relu?(BN(conv(x, w))), BN with the running statistics. inputs {x, w,
 * gamma, beta, mean, variance, residual?}; attrs {stride, relu, epsilon}; outputs [y]. No
 * gradient: evaluation and the analyses' inference passes only.
 */
export const CONV_BN_INFER_KERNEL = 'ResnetConvBnInfer';

/**
 * The head and the loss in training: global average pooling of h [N, H, W, C], the fully
 * connected layer (w [C, K], b [K]) and the mean softmax cross-entropy against int32
 * labels [N]. inputs {h, w, b, labels}; outputs [loss (a scalar), logits [N, K]].
 */
export const HEAD_LOSS_KERNEL = 'ResnetHeadLoss';

/** The shortcut kinds trainBody takes, in the order of their codes in its attrs. */
export const BODY_SHORTCUTS = ['identity', 'A', 'none'] as const;
export type BodyShortcut = (typeof BODY_SHORTCUTS)[number];

export const BN_EPSILON = 1e-5;

function fused(kernelName: string): boolean {
  return tf.getKernel(kernelName, tf.getBackend()) !== undefined;
}

/**
 * 3x3 (pad 1) or 1x1 (pad 0) convolution, NHWC, no bias. Explicit symmetric padding, as
 * the paper's Caffe/Torch nets: with stride 2 the output pixel i is centred on input 2i,
 * the same pixels the option-A shortcut keeps.
 */
export function conv2d(x: tf.Tensor4D, w: tf.Tensor4D, stride: 1 | 2): tf.Tensor4D {
  const p = (w.shape[0] - 1) / 2;
  return tf.conv2d(x, w, stride, [
    [0, 0],
    [p, p],
    [p, p],
    [0, 0],
  ]);
}

export interface BatchNormOutput {
  y: tf.Tensor4D;
  mean: tf.Tensor1D;
  variance: tf.Tensor1D;
}

/**
 * Batch normalization with the mini-batch statistics (training mode). With `shards` K > 1
 * the batch is cut into K equal consecutive sub-batches, each normalized with its own
 * statistics: what K data-parallel ranks (or the paper's two GPUs) compute. mean and
 * variance are then the averages over the shards, which is what averaging the running
 * statistics over K ranks gives (the running update is linear in them).
 */
export function batchNormTrain(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  relu: boolean,
  epsilon = BN_EPSILON,
  shards = 1,
): BatchNormOutput {
  if (shards > 1) {
    const parts = tf.split(x, shards, 0).map((p) => batchNormTrain(p as tf.Tensor4D, gamma, beta, relu, epsilon));
    return {
      y: tf.concat(
        parts.map((p) => p.y),
        0,
      ),
      mean: tf.mean(tf.stack(parts.map((p) => p.mean)), 0) as tf.Tensor1D,
      variance: tf.mean(tf.stack(parts.map((p) => p.variance)), 0) as tf.Tensor1D,
    };
  }
  if (fused(BN_TRAIN_KERNEL)) {
    const [y, mean, variance] = tf
      .engine()
      .runKernel(BN_TRAIN_KERNEL, { x, gamma, beta }, { epsilon, relu }) as tf.Tensor[];
    return { y: y as tf.Tensor4D, mean: mean as tf.Tensor1D, variance: variance as tf.Tensor1D };
  }
  const { mean, variance } = tf.moments(x, [0, 1, 2]);
  const normed = tf.batchNorm(x, mean, variance, beta, gamma, epsilon) as tf.Tensor4D;
  return {
    y: relu ? tf.relu(normed) : normed,
    mean: mean as tf.Tensor1D,
    variance: variance as tf.Tensor1D,
  };
}

/**
 * relu(BN(x) + residual) with the mini-batch statistics: the end of a residual block. One
 * fused kernel where the engine has it (one pass fewer each way than BN, then addRelu).
 */
export function batchNormAddRelu(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  residual: tf.Tensor4D,
  epsilon = BN_EPSILON,
  shards = 1,
): BatchNormOutput {
  if (shards === 1 && fused(BN_ADD_RELU_KERNEL)) {
    const [y, mean, variance] = tf
      .engine()
      .runKernel(BN_ADD_RELU_KERNEL, { x, gamma, beta, residual }, { epsilon }) as tf.Tensor[];
    return { y: y as tf.Tensor4D, mean: mean as tf.Tensor1D, variance: variance as tf.Tensor1D };
  }
  const out = batchNormTrain(x, gamma, beta, false, epsilon, shards);
  return { ...out, y: addRelu(out.y, residual) };
}

/** Batch normalization with running statistics (inference mode). */
export function batchNormInfer(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  mean: tf.Tensor1D,
  variance: tf.Tensor1D,
  relu: boolean,
  epsilon = BN_EPSILON,
): tf.Tensor4D {
  const y = tf.batchNorm(x, mean, variance, beta, gamma, epsilon) as tf.Tensor4D;
  return relu ? tf.relu(y) : y;
}

/** Running statistics and affine parameters of one BN layer (inference mode). */
export interface BnInferParams {
  gamma: tf.Tensor1D;
  beta: tf.Tensor1D;
  mean: tf.Tensor1D;
  variance: tf.Tensor1D;
}

/**
 * A conv -> BN (-> + residual) (-> ReLU) unit in inference mode, as conv2d, batchNormInfer
 * and addRelu (a residual comes with the ReLU). One kernel where the engine has it: the
 * conv's output never becomes a tensor, so in bf16 mode it stays in bf16 (see
 * src/engine/native/kernels-fused.ts).
 */
export function convBnInfer(
  x: tf.Tensor4D,
  w: tf.Tensor4D,
  stride: 1 | 2,
  bn: BnInferParams,
  relu: boolean,
  residual?: tf.Tensor4D,
  epsilon = BN_EPSILON,
): tf.Tensor4D {
  const { gamma, beta, mean, variance } = bn;
  if (fused(CONV_BN_INFER_KERNEL)) {
    const inputs = { x, w, gamma, beta, mean, variance, ...(residual ? { residual } : {}) };
    const attrs = { stride, relu: relu || residual !== undefined, epsilon };
    return tf.engine().runKernel(CONV_BN_INFER_KERNEL, inputs, attrs) as tf.Tensor4D;
  }
  const z = conv2d(x, w, stride);
  if (residual) return addRelu(batchNormInfer(z, gamma, beta, mean, variance, false, epsilon), residual);
  return batchNormInfer(z, gamma, beta, mean, variance, relu, epsilon);
}

/** relu(a + b): the end of a residual block. */
export function addRelu(a: tf.Tensor4D, b: tf.Tensor4D): tf.Tensor4D {
  if (fused(ADD_RELU_KERNEL)) {
    return tf.engine().runKernel(ADD_RELU_KERNEL, { a, b }) as tf.Tensor4D;
  }
  return tf.relu(tf.add(a, b)) as tf.Tensor4D;
}

/**
 * Option A shortcut: keep every second pixel (the ones the stride-2 conv is centred on)
 * and zero-pad the new channels, half before and half after the old ones. No parameters.
 */
export function shortcutA(x: tf.Tensor4D, outChannels: number): tf.Tensor4D {
  if (fused(SHORTCUT_A_KERNEL)) {
    return tf.engine().runKernel(SHORTCUT_A_KERNEL, { x }, { outChannels }) as tf.Tensor4D;
  }
  // (tfjs has no gradient for stridedSlice: the subsampling is a reshape and a slice.)
  const [batch, height, width, channels] = x.shape;
  const pairs = tf.reshape(x, [batch, height / 2, 2, width / 2, 2 * channels]);
  const sub = tf.reshape(tf.slice(pairs, [0, 0, 0, 0, 0], [batch, height / 2, 1, width / 2, channels]), [
    batch,
    height / 2,
    width / 2,
    channels,
  ]) as tf.Tensor4D;
  const extra = outChannels - channels;
  const lo = Math.floor(extra / 2);
  return tf.pad(sub, [
    [0, 0],
    [0, 0],
    [0, 0],
    [lo, extra - lo],
  ]);
}

/** One conv -> BN unit of trainBody: its stride and parameters. */
export interface BodyUnit {
  stride: 1 | 2;
  w: tf.Tensor4D;
  gamma: tf.Tensor1D;
  beta: tf.Tensor1D;
}

/**
 * The whole body in training mode as one kernel where the engine has it (one tape node
 * instead of ~10 kernel calls and their saved-tensor clones per block), else null and the
 * model runs its units one by one. Returns the last block's output and each unit's batch
 * statistics, in `units` order.
 */
export function trainBody(
  x: tf.Tensor4D,
  units: BodyUnit[],
  shortcuts: BodyShortcut[],
  epsilon = BN_EPSILON,
): { h: tf.Tensor4D; stats: { mean: tf.Tensor1D; variance: tf.Tensor1D }[] } | null {
  if (!fused(BODY_TRAIN_KERNEL)) return null;
  const inputs: tf.NamedTensorMap = { x };
  units.forEach((u, i) => Object.assign(inputs, { [`w${i}`]: u.w, [`gamma${i}`]: u.gamma, [`beta${i}`]: u.beta }));
  const codes = shortcuts.map((s) => BODY_SHORTCUTS.indexOf(s));
  const attrs = { epsilon, strides: units.map((u) => u.stride), shortcuts: codes };
  const [h, ...stats] = tf.engine().runKernel(BODY_TRAIN_KERNEL, inputs, attrs) as tf.Tensor[];
  return {
    h: h as tf.Tensor4D,
    stats: units.map((_, i) => ({ mean: stats[2 * i] as tf.Tensor1D, variance: stats[2 * i + 1] as tf.Tensor1D })),
  };
}

/** Global average pooling of h [N, H, W, C] and the fully connected layer: logits [N, K]. */
export function poolDense(h: tf.Tensor4D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D {
  const pooled = tf.mean(h, [1, 2]) as tf.Tensor2D;
  return tf.add(tf.matMul(pooled, w), b) as tf.Tensor2D;
}

/** Mean softmax cross-entropy of logits [N, K] against int32 labels [N]. */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  const oneHot = tf.oneHot(labels, logits.shape[1]);
  return tf.neg(tf.mean(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1))) as tf.Scalar;
}

/**
 * The training loss: crossEntropy(poolDense(h, w, b), labels), and the logits (to count
 * errors). One kernel each way where the engine has it: as tfjs ops the head is some 25
 * kernel calls, forward and backward 1.6-1.8 ms at batch 128 on the AMX Xeon, against 0.7.
 */
export function headLoss(
  h: tf.Tensor4D,
  w: tf.Tensor2D,
  b: tf.Tensor1D,
  labels: tf.Tensor1D,
): { loss: tf.Scalar; logits: tf.Tensor2D } {
  if (fused(HEAD_LOSS_KERNEL)) {
    const [loss, logits] = tf.engine().runKernel(HEAD_LOSS_KERNEL, { h, w, b, labels }) as tf.Tensor[];
    return { loss: loss as tf.Scalar, logits: logits as tf.Tensor2D };
  }
  const logits = poolDense(h, w, b);
  return { loss: crossEntropy(logits, labels), logits };
}
