// One training step (forward, loss, backward, SGD update, BN running statistics) and the
// evaluation pass. Everything made here is disposed here: memory stays flat.
import * as tf from '@tensorflow/tfjs-core';
import type { BatchStats, CifarNet } from '../model/resnet';
import type { Sgd } from './sgd';

/** Running statistics: running = (1 - m) * running + m * batch, as Torch/PyTorch (m = 0.1). */
export const BN_MOMENTUM = 0.1;
export const IMAGE_SHAPE = [32, 32, 3] as const;

export interface StepResult {
  /** Mean cross-entropy of the mini-batch. */
  loss: number;
  /** Misclassified images in the mini-batch. */
  errors: number;
  /** Data-parallel: some rank asked to stop (all ranks see the same). */
  stop?: boolean;
}

/**
 * Data-parallel hook (src/distributed/data-parallel.ts): returns the gradients averaged over
 * ranks (new tensors) and sums `totals` over ranks in place.
 */
export interface GradientSync {
  reduce(grads: Map<string, tf.Tensor>, totals: Float64Array): Map<string, tf.Tensor>;
  /** This rank's pending stop request, reduced with the gradients. */
  stopRequested: boolean;
}

/** Counts rows of `logits` (n x classes, flat) whose arg-max is not the label. */
export function countErrors(
  logits: Float32Array | Int32Array | Uint8Array,
  labels: ArrayLike<number>,
  classes: number,
): number {
  let errors = 0;
  for (let i = 0; i < labels.length; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[i * classes + c] > logits[i * classes + best]) best = c;
    if (best !== labels[i]) errors++;
  }
  return errors;
}

export interface StepOptions {
  /** Data-parallel: averages the gradients (and sums the step's figures) over the ranks. */
  sync?: GradientSync;
  /**
   * Gradient norms and --clip-grad-norm (src/analysis/gradient-flow.ts), on the gradients
   * that will be applied (averaged over ranks first). Returns the same map or new tensors.
   */
  processGrads?: (grads: Map<string, tf.Tensor>) => Map<string, tf.Tensor>;
}

export function trainStep(
  net: CifarNet,
  sgd: Sgd,
  x: Float32Array,
  labels: Int32Array,
  lr: number,
  o: StepOptions = {},
): StepResult {
  const { sync, processGrads } = o;
  const batch = labels.length;
  const stats: BatchStats[] = [];
  let logits: tf.Tensor2D | undefined;

  const { value, grads } = tf.variableGrads(() => {
    const input = tf.tensor4d(x, [batch, ...IMAGE_SHAPE]);
    const out = net.trainLoss(input, tf.tensor1d(labels, 'int32'), stats);
    // Kept past the gradient computation's tidy: the error count and running statistics need them.
    logits = tf.keep(out.logits);
    for (const s of stats) {
      tf.keep(s.mean);
      tf.keep(s.variance);
    }
    return out.loss;
  }, [...net.params.values()]);

  const byName = new Map<string, tf.Tensor>();
  for (const [name, v] of net.params) byName.set(name, grads[v.name]);
  let loss = value.dataSync()[0];
  let errors = countErrors((logits as tf.Tensor2D).dataSync() as Float32Array, labels, net.arch.classes);
  let stop: boolean | undefined;
  let averaged = byName;
  if (sync) {
    // [loss x images, errors, stop, images] summed over ranks with the gradients.
    const totals = Float64Array.of(loss * batch, errors, sync.stopRequested ? 1 : 0, batch);
    averaged = sync.reduce(byName, totals);
    [loss, errors, stop] = [totals[0] / totals[3], totals[1], totals[2] > 0];
  }
  const update = processGrads ? processGrads(averaged) : averaged;
  sgd.step(update, lr);
  if (update !== averaged) tf.dispose([...update.values()]);
  if (averaged !== byName) tf.dispose([...averaged.values()]);

  updateRunningStats(net, stats);

  tf.dispose([value, logits as tf.Tensor, ...Object.values(grads)]);
  for (const s of stats) tf.dispose([s.mean, s.variance]);
  return { loss, errors, stop };
}

/**
 * Folds one batch's statistics into the running ones used for evaluation. A few dozen
 * numbers per layer: computed in JavaScript and assigned, rather than as five tiny tensor
 * ops per BN layer (about 280 kernel calls per ResNet-56 step, each costing more in
 * dispatch than in arithmetic).
 */
function updateRunningStats(net: CifarNet, stats: BatchStats[]): void {
  for (const s of stats) {
    const mean = net.runningStats.get(s.name + '/running_mean') as tf.Variable;
    const variance = net.runningStats.get(s.name + '/running_var') as tf.Variable;
    const [bm, bv, rm, rv] = [s.mean, s.variance, mean, variance].map((t) => t.dataSync() as Float32Array);
    // The running variance is the unbiased estimate, as Torch keeps it.
    const unbiased = s.count / Math.max(1, s.count - 1);
    const m = new Float32Array(bm.length);
    const v = new Float32Array(bv.length);
    for (let c = 0; c < m.length; c++) {
      m[c] = (1 - BN_MOMENTUM) * rm[c] + BN_MOMENTUM * bm[c];
      v[c] = (1 - BN_MOMENTUM) * rv[c] + BN_MOMENTUM * unbiased * bv[c];
    }
    tf.tidy(() => {
      mean.assign(tf.tensor1d(m));
      variance.assign(tf.tensor1d(v));
    });
  }
}

/** Error (%) of the net in inference mode over batches of a whole split. */
export function evaluate(
  net: CifarNet,
  batches: Iterable<{ x: Float32Array; labels: Int32Array; count: number }>,
): number {
  const { errors, seen } = evaluateCounts(net, batches);
  return seen === 0 ? NaN : (100 * errors) / seen;
}

/** Misclassified and seen images of the net in inference mode over some batches. */
export function evaluateCounts(
  net: CifarNet,
  batches: Iterable<{ x: Float32Array; labels: Int32Array; count: number }>,
): { errors: number; seen: number } {
  let errors = 0;
  let seen = 0;
  for (const b of batches) {
    const logits = tf.tidy(() => net.forward(tf.tensor4d(b.x, [b.count, ...IMAGE_SHAPE]), false));
    errors += countErrors(logits.dataSync() as Float32Array, b.labels, net.arch.classes);
    logits.dispose();
    seen += b.count;
  }
  return { errors, seen };
}
