// The head and the loss in training (HEAD_LOSS_KERNEL, src/engine/ops.ts) on native/head.cc:
// global average pooling, the fully connected layer and the softmax cross-entropy as one
// kernel, and its gradient as one more.
import * as tf from '@tensorflow/tfjs-core';

import { HEAD_LOSS_KERNEL } from '../ops';
import { addon, alloc, allF32, type Backend, f32, need, output, size } from './util';

/** [dh, dw, db] of ResnetHeadLoss; inputs {h, w, labels, logits, dloss, dlogits}. */
export const HEAD_LOSS_GRAD_KERNEL = 'ResnetHeadLossGrad';

/** The inputs both kernels read, checked: h [N, H, W, C], w [C, K], int32 labels [N]. */
function headInputs(b: Backend, inputs: tf.NamedTensorInfoMap, kernel: string) {
  const [h, w, labels] = need(inputs, 'h', 'w', 'labels');
  const labelValues = b.data.get(labels.dataId)?.values;
  const ok =
    h.shape.length === 4 &&
    w.shape.length === 2 &&
    w.shape[0] === h.shape[3] &&
    labelValues instanceof Int32Array &&
    tf.util.arraysEqual(labels.shape, [h.shape[0]]) &&
    allF32(b, h, w);
  if (!ok) throw new Error(`${kernel}: needs float32 h [N, H, W, C] and w [C, K] and int32 labels [N]`);
  return { h, w, labels: labelValues, rows: h.shape[0], pixels: h.shape[1] * h.shape[2], classes: w.shape[1] };
}

const headLoss: tf.KernelFunc = ({ inputs, backend }) => {
  const b = backend as Backend;
  const { h, w, labels, rows, pixels, classes } = headInputs(b, inputs, HEAD_LOSS_KERNEL);
  const [bias] = need(inputs, 'b');
  if (!allF32(b, bias) || size(bias.shape) !== classes) {
    throw new Error(`${HEAD_LOSS_KERNEL}: needs a float32 bias b of ${classes} values`);
  }
  const logits = alloc(b, rows * classes);
  const loss = addon().headLoss({
    h: f32(b, h),
    w: f32(b, w),
    b: f32(b, bias),
    labels,
    logits,
    rows,
    pixels,
    channels: h.shape[3],
    classes,
  });
  return [output(b, [], Float32Array.of(loss)), output(b, [rows, classes], logits)];
};

const headLossGrad: tf.KernelFunc = ({ inputs, backend }) => {
  const b = backend as Backend;
  const { h, w, labels, rows, pixels, classes } = headInputs(b, inputs, HEAD_LOSS_GRAD_KERNEL);
  const [logits, dloss, dlogits] = need(inputs, 'logits', 'dloss', 'dlogits');
  const dh = alloc(b, size(h.shape));
  const dw = alloc(b, size(w.shape));
  const db = alloc(b, classes);
  addon().headLossGrad({
    h: f32(b, h),
    w: f32(b, w),
    labels,
    logits: f32(b, logits),
    dloss: f32(b, dloss)[0],
    dlogits: f32(b, dlogits),
    dh,
    dw,
    db,
    rows,
    pixels,
    channels: h.shape[3],
    classes,
  });
  return [output(b, h.shape, dh), output(b, w.shape, dw), output(b, [classes], db)];
};

export const headKernels: Record<string, tf.KernelFunc> = {
  [HEAD_LOSS_KERNEL]: headLoss,
  [HEAD_LOSS_GRAD_KERNEL]: headLossGrad,
};

/**
 * The gradient of both outputs: the loss's, and the logits' if anything differentiated
 * them (a training step only counts errors with them: tfjs then passes zeros).
 */
export const headGradient: tf.GradConfig = {
  kernelName: HEAD_LOSS_KERNEL,
  inputsToSave: ['h', 'w', 'labels'],
  outputsToSave: [false, true],
  gradFunc: (dys, saved) => {
    const [dloss, dlogits] = dys as tf.Tensor[];
    const [h, w, labels, logits] = saved;
    const [dh, dw, db] = tf
      .engine()
      .runKernel(HEAD_LOSS_GRAD_KERNEL, { h, w, labels, logits, dloss, dlogits }) as tf.Tensor[];
    return { h: () => dh, w: () => dw, b: () => db, labels: () => tf.zeros(labels.shape) };
  },
};
