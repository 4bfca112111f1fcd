// SGD with momentum and weight decay, the update of Torch/PyTorch (fb.resnet.torch):
//   g' = g + weightDecay * w      (conv and FC weights only)
//   v  = momentum * v + g'
//   w  = w - lr * v
import * as tf from '@tensorflow/tfjs-core';
import type { Engine, SgdParam } from '../engine/engine';

export interface SgdConfig {
  momentum: number;
  weightDecay: number;
}

export class Sgd {
  /** Velocity per parameter name; saved in checkpoints. */
  readonly velocities = new Map<string, tf.Variable>();

  constructor(
    private readonly params: Map<string, tf.Variable>,
    private readonly decayed: (name: string) => boolean,
    private readonly cfg: SgdConfig,
    private readonly engine?: Engine,
  ) {
    for (const [name, w] of params)
      this.velocities.set(
        name,
        tf.tidy(() => tf.variable(tf.zerosLike(w), false)),
      );
  }

  /** Applies one update; `grads` is keyed by parameter name. Disposes nothing it did not make. */
  step(grads: Map<string, tf.Tensor>, lr: number): void {
    const params: SgdParam[] = [...this.params].map(([name, w]) => {
      const g = grads.get(name);
      if (!g) throw new Error(`no gradient for ${name}`);
      const v = this.velocities.get(name) as tf.Variable;
      return { w, g, v, weightDecay: this.decayed(name) ? this.cfg.weightDecay : 0 };
    });
    if (this.engine?.sgdUpdate) {
      this.engine.sgdUpdate(params, lr, this.cfg.momentum);
      return;
    }
    for (const { w, g, v, weightDecay: wd } of params) {
      tf.tidy(() => {
        const decayedGrad = wd > 0 ? tf.add(g, tf.mul(w, wd)) : g;
        const vNew = tf.add(tf.mul(v, this.cfg.momentum), decayedGrad);
        v.assign(vNew);
        w.assign(tf.sub(w, tf.mul(vNew, lr)));
      });
    }
  }

  dispose(): void {
    for (const v of this.velocities.values()) v.dispose();
  }
}
