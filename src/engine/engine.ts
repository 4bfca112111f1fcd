// What the rest of the program needs to know about the engine that runs the tensors.
import type * as tf from '@tensorflow/tfjs-core';

/** Names accepted by --engine. */
export const ENGINE_CHOICES = ['auto', 'tensorflow', 'native', 'cpu'] as const;
export type EngineChoice = (typeof ENGINE_CHOICES)[number];

/**
 * Names accepted by --precision. fp32 everywhere, or bf16 multiplications in the
 * convolutions (f32 accumulation, f32 everything else, f32 master weights): native only.
 */
export const PRECISIONS = ['fp32', 'bf16'] as const;
export type Precision = (typeof PRECISIONS)[number];

/** One parameter of an SGD step: weights, their gradient and velocity, and its decay. */
export interface SgdParam {
  w: tf.Variable;
  g: tf.Tensor;
  v: tf.Variable;
  weightDecay: number;
}

export interface Engine {
  /** The tfjs backend that is active: 'tensorflow' (tfjs-node), 'native' (oneDNN) or 'cpu'. */
  name: 'tensorflow' | 'native' | 'cpu';
  /** One line for the user: why this engine was chosen. */
  reason: string;
  /** e.g. "oneDNN 2.6.3 (avx512_core_amx)" or "tfjs-node 4.22.0". */
  version: string;
  /** Threads the engine computes with. */
  threads: number;
  /** Arithmetic of the convolutions (see PRECISIONS). */
  precision: Precision;
  /** One line the user should read before a long run (e.g. a precision slower on this CPU). */
  warning?: string;
  /**
   * Optional fused, in-place SGD update of every parameter of a step, in one call:
   *   v = momentum * v + (g + weightDecay * w);  w = w - lr * v
   * Engines without it get the same update written with tf ops (src/train/sgd.ts).
   */
  sgdUpdate?(params: SgdParam[], lr: number, momentum: number): void;
}
