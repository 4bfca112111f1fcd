// Gradient flow during training, and gradient-norm clipping.
//
// Each step, the L2 norm of every conv layer's weight gradient (the raw gradient of the
// loss, before weight decay, momentum and any clipping) is added to the interval's sums;
// each evaluation row turns the sums into means over the interval's steps: gradients.csv
// (see gradients-csv.ts). The sums live in the loop state, which checkpoints save, so a
// resumed run writes exactly the rows an uninterrupted one would.
//
// --clip-grad-norm X (off by default; not the paper's recipe): when the global norm of all
// parameters' gradients exceeds X, all are scaled by X / norm, as PyTorch's
// clip_grad_norm_ does (with its 1e-6 guard against a zero norm).
import * as tf from '@tensorflow/tfjs-core';
import { convUnits, type CifarNet } from '../model/resnet';

/** Per conv layer (forward order): the sum of gradient norms over the interval's steps. */
export interface GradientInterval {
  sums: number[];
  steps: number;
}

export interface GradientMeans {
  /** Conv unit names, forward order. */
  names: string[];
  /** Mean L2 norm of each one's weight gradient over the interval. */
  norms: number[];
}

export class GradientFlow {
  /** The conv weights' parameter names, forward order: what gradients.csv reports. */
  readonly layers: string[];
  private readonly all: string[];

  constructor(
    net: CifarNet,
    private readonly clipNorm?: number,
  ) {
    this.layers = convUnits(net.arch).map((u) => u.name);
    this.all = [...net.params.keys()];
  }

  emptyInterval(): GradientInterval {
    return { sums: this.layers.map(() => 0), steps: 0 };
  }

  /**
   * Records one step's gradients in `interval` and returns the gradients to apply: the
   * same map, or (clipping) a map of new tensors, all scaled, that the caller disposes.
   */
  process(grads: Map<string, tf.Tensor>, interval: GradientInterval): Map<string, tf.Tensor> {
    // Only what is needed: the conv weights, or every parameter when clipping needs the
    // global norm. One read back from the engine per step.
    const names = this.clipNorm === undefined ? this.layers.map((l) => `${l}/w`) : this.all;
    const squares = tf.tidy(() =>
      tf.stack(names.map((n) => tf.sum(tf.square(grads.get(n) as tf.Tensor)))).dataSync(),
    ) as Float32Array;
    const byName = new Map(names.map((n, i) => [n, squares[i]]));
    this.layers.forEach((l, i) => (interval.sums[i] += Math.sqrt(byName.get(`${l}/w`) as number)));
    interval.steps++;
    if (this.clipNorm === undefined) return grads;
    const total = Math.sqrt(squares.reduce((s, v) => s + v, 0));
    const scale = this.clipNorm / (total + 1e-6);
    if (scale >= 1) return grads;
    return new Map([...grads].map(([n, g]) => [n, tf.mul(g, scale)]));
  }

  /** The interval's means, and the interval emptied for the next one. */
  take(interval: GradientInterval): GradientMeans {
    const norms = interval.sums.map((s) => (interval.steps > 0 ? s / interval.steps : NaN));
    interval.sums = this.layers.map(() => 0);
    interval.steps = 0;
    return { names: this.layers, norms };
  }
}
