// The CIFAR-10 plain and residual networks of He et al. 2016, section 4.2.
//
//   input 32x32x3 (per-pixel mean subtracted)
//   conv3x3, 16 -> BN -> ReLU
//   stage 1: n blocks, 16 filters, 32x32
//   stage 2: n blocks, 32 filters, 16x16   (the first conv of the stage has stride 2)
//   stage 3: n blocks, 64 filters,  8x8    (idem)
//   block: conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> (+ shortcut) -> ReLU
//   global average pool -> 10-way fully connected -> softmax
//   depth = 6n + 2 weighted layers.
//
// A plain net is the same stack without the "+ shortcut". The residual shortcut is the
// identity, except where a stage starts (map halved, width doubled): option A subsamples
// and zero-pads the new channels (no parameters), option B uses a 1x1 stride-2 conv + BN.
//
// Every conv -> BN (-> + shortcut) (-> ReLU) unit goes through src/engine/ops.ts, so that
// an engine can run it as one fused kernel.
import * as tf from '@tensorflow/tfjs-core';
import {
  addRelu,
  batchNormAddRelu,
  batchNormInfer,
  batchNormTrain,
  type BodyShortcut,
  conv2d,
  convBnInfer,
  headLoss,
  poolDense,
  shortcutA,
  trainBody,
} from '../engine/ops';

export type Shortcut = 'A' | 'B';

export interface NetConfig {
  depth: number;
  plain: boolean;
  shortcut: Shortcut;
}

/** A user-facing error: its message is one line. */
export class DepthError extends Error {}

/** n, the number of blocks per stage, for a depth of 6n + 2. */
export function blocksPerStage(depth: number): number {
  if (!Number.isInteger(depth) || depth < 8 || (depth - 2) % 6 !== 0) {
    throw new DepthError(`depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, 1202, ...), got ${depth}`);
  }
  return (depth - 2) / 6;
}

/** The run's short name: resnet-56, plain-20, resnet-110-B. */
export function netName(cfg: NetConfig): string {
  return `${cfg.plain ? 'plain' : 'resnet'}-${cfg.depth}${cfg.shortcut === 'B' && !cfg.plain ? '-B' : ''}`;
}

/** One conv -> BN unit (the ReLU, if any, is decided where it is applied). */
export interface ConvBn {
  name: string;
  /** 7 only in the ImageNet stem (src/model/imagenet.ts). */
  kernel: 1 | 3 | 7;
  stride: 1 | 2;
  inChannels: number;
  outChannels: number;
  /** Output map size (square). */
  outSize: number;
}

export interface Block {
  name: string;
  conv1: ConvBn;
  conv2: ConvBn;
  /** 'identity', 'A' (subsample + zero-pad), 'B' (projection), or 'none' in a plain net. */
  shortcut: 'identity' | 'A' | 'B' | 'none';
  projection?: ConvBn;
}

/** The architecture as data: what the summary prints and what the weights are made for. */
export interface Architecture {
  config: NetConfig;
  stem: ConvBn;
  blocks: Block[];
  classes: number;
}

/** One conv -> BN unit as data (shared by the CIFAR and ImageNet architectures). */
export function convBn(
  name: string,
  kernel: ConvBn['kernel'],
  stride: 1 | 2,
  cin: number,
  cout: number,
  size: number,
): ConvBn {
  return { name, kernel, stride, inChannels: cin, outChannels: cout, outSize: size };
}

export function architecture(cfg: NetConfig): Architecture {
  const n = blocksPerStage(cfg.depth);
  const unit = convBn;
  const stem = unit('stem', 3, 1, 3, 16, 32);
  const blocks: Block[] = [];
  let cin = 16;
  [16, 32, 64].forEach((cout, stage) => {
    const size = 32 >> stage;
    for (let b = 0; b < n; b++) {
      const stride = stage > 0 && b === 0 ? 2 : 1;
      const name = `stage${stage + 1}/block${b + 1}`;
      const changes = stride !== 1 || cin !== cout;
      const block: Block = {
        name,
        conv1: unit(`${name}/conv1`, 3, stride, cin, cout, size),
        conv2: unit(`${name}/conv2`, 3, 1, cout, cout, size),
        shortcut: cfg.plain ? 'none' : changes ? cfg.shortcut : 'identity',
      };
      if (block.shortcut === 'B') block.projection = unit(`${name}/proj`, 1, stride, cin, cout, size);
      blocks.push(block);
      cin = cout;
    }
  });
  return { config: cfg, stem, blocks, classes: 10 };
}

/** Every conv -> BN unit of the net, in forward order. */
export function convUnits(arch: Architecture): ConvBn[] {
  const units = [arch.stem];
  for (const b of arch.blocks) {
    units.push(b.conv1, b.conv2);
    if (b.projection) units.push(b.projection);
  }
  return units;
}

/** Batch statistics of one BN layer from a training forward pass. */
export interface BatchStats {
  name: string;
  mean: tf.Tensor1D;
  variance: tf.Tensor1D;
  /** Values per channel the statistics were taken over (N*H*W). */
  count: number;
}

/**
 * Optional instrumentation of an inference-mode forward pass (src/analysis/): read each
 * unit's response, or delete blocks. Training passes take none, so they stay as fast.
 */
export interface ForwardHooks {
  /** Each unit's BN output before its ReLU or the addition (Fig. 7). */
  response?: (unit: ConvBn, y: tf.Tensor4D) => void;
  /**
   * Names of blocks whose residual branch is deleted (Veit et al.): the block outputs its
   * shortcut alone (x, or option A's subsampled, zero-padded x; relu(projection) for B).
   * In a plain net the block outputs its input; callers only delete where shapes allow.
   */
  deleted?: ReadonlySet<string>;
}

/**
 * The weights of a network and its forward pass. Trainable variables are named
 * `<unit>/w`, `<unit>/gamma`, `<unit>/beta`, `fc/w`, `fc/b`; the BN running statistics
 * (not trained, used for evaluation) `<unit>/running_mean` and `<unit>/running_var`.
 */
let nextNetId = 0;

export class CifarNet {
  readonly arch: Architecture;
  readonly params = new Map<string, tf.Variable>();
  readonly runningStats = new Map<string, tf.Variable>();
  /** Training-mode BN statistics over this many equal sub-batches (--bn-shards). */
  bnShards = 1;
  /**
   * Train the body as one kernel where the engine has one (see trainBody). Off: unit by
   * unit, which gives the same numbers (the tests compare the two).
   */
  fuseBody = true;

  constructor(cfg: NetConfig, seed: number) {
    this.arch = architecture(cfg);
    nextNetId++;
    tf.tidy(() => {
      convUnits(this.arch).forEach((u, i) => {
        // He et al. 2015 ("MSRA") init: N(0, 2 / fan_in), fan_in = k*k*in_channels.
        const std = Math.sqrt(2 / (u.kernel * u.kernel * u.inChannels));
        this.add(
          u.name + '/w',
          tf.randomNormal([u.kernel, u.kernel, u.inChannels, u.outChannels], 0, std, 'float32', seed * 7919 + i),
        );
        this.add(u.name + '/gamma', tf.ones([u.outChannels]));
        this.add(u.name + '/beta', tf.zeros([u.outChannels]));
        this.runningStats.set(u.name + '/running_mean', tf.variable(tf.zeros([u.outChannels]), false));
        this.runningStats.set(u.name + '/running_var', tf.variable(tf.ones([u.outChannels]), false));
      });
      // The usual default for a linear layer: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
      const bound = 1 / Math.sqrt(64);
      this.add('fc/w', tf.randomUniform([64, this.arch.classes], -bound, bound, 'float32', seed * 7919 + 7907));
      this.add('fc/b', tf.randomUniform([this.arch.classes], -bound, bound, 'float32', seed * 7919 + 7901));
    });
  }

  private add(name: string, value: tf.Tensor): void {
    // tfjs variable names are global: make them unique per net, readable in errors.
    this.params.set(name, tf.variable(value, true, `${name}#${nextNetId}`));
  }

  /** Names of the parameters that weight decay applies to: conv and FC weights. */
  decayed(name: string): boolean {
    return name.endsWith('/w');
  }

  parameterCount(): number {
    let total = 0;
    for (const v of this.params.values()) total += v.size;
    return total;
  }

  /**
   * Forward pass to logits. In training mode BN uses the batch statistics and reports
   * them in `stats` (for the running averages); in inference mode it uses the running ones.
   */
  forward(x: tf.Tensor4D, training: boolean, stats?: BatchStats[], hooks?: ForwardHooks): tf.Tensor2D {
    const { w, b } = this.fc();
    return poolDense(this.features(x, training, stats, hooks), w, b);
  }

  /**
   * Training mode to the mean cross-entropy against `labels`, and the logits (to count
   * errors): the forward whose gradient a training step takes.
   */
  trainLoss(x: tf.Tensor4D, labels: tf.Tensor1D, stats?: BatchStats[]): { loss: tf.Scalar; logits: tf.Tensor2D } {
    const { w, b } = this.fc();
    return headLoss(this.features(x, true, stats), w, b, labels);
  }

  /** The fully connected layer: weights [64, classes] and bias [classes]. */
  private fc(): { w: tf.Tensor2D; b: tf.Tensor1D } {
    return { w: this.params.get('fc/w') as tf.Tensor2D, b: this.params.get('fc/b') as tf.Tensor1D };
  }

  /** The stem and the blocks: the last block's output, before pooling. */
  private features(x: tf.Tensor4D, training: boolean, stats?: BatchStats[], hooks?: ForwardHooks): tf.Tensor4D {
    // conv -> BN (-> + residual) (-> ReLU); a residual comes only with the ReLU (a block's end).
    const unit = (u: ConvBn, input: tf.Tensor4D, relu: boolean, residual?: tf.Tensor4D): tf.Tensor4D => {
      const { w, gamma, beta } = this.unitParams(u);
      if (!training) {
        const mean = this.runningStats.get(u.name + '/running_mean') as tf.Tensor1D;
        const variance = this.runningStats.get(u.name + '/running_var') as tf.Tensor1D;
        if (!hooks?.response) return convBnInfer(input, w, u.stride, { gamma, beta, mean, variance }, relu, residual);
        const y = batchNormInfer(conv2d(input, w, u.stride), gamma, beta, mean, variance, false);
        hooks.response(u, y);
        if (residual) return addRelu(y, residual);
        return relu ? tf.relu(y) : y;
      }
      const z = conv2d(input, w, u.stride);
      const out = residual
        ? batchNormAddRelu(z, gamma, beta, residual, undefined, this.bnShards)
        : batchNormTrain(z, gamma, beta, relu, undefined, this.bnShards);
      stats?.push({ name: u.name, mean: out.mean, variance: out.variance, count: this.bnCount(x, u) });
      return out.y;
    };

    const block = (b: Block, h: tf.Tensor4D): tf.Tensor4D => {
      if (hooks?.deleted?.has(b.name)) {
        // Option A's shortcut of a (non-negative) ReLU output needs no ReLU; a projection does.
        if (b.shortcut === 'B') return tf.relu(this.shortcut(b, h, unit));
        return b.shortcut === 'none' ? h : this.shortcut(b, h, unit);
      }
      const r = unit(b.conv1, h, true);
      if (b.shortcut === 'none') return unit(b.conv2, r, true);
      return unit(b.conv2, r, true, this.shortcut(b, h, unit));
    };

    if (training && !hooks && this.fuseBody) {
      const body = this.trainBody(x, stats);
      if (body) return body;
    }
    let h = unit(this.arch.stem, x, true);
    for (const b of this.arch.blocks) {
      if (training || hooks?.response) {
        h = block(b, h); // training: the tape needs every activation; responses read them
        continue;
      }
      // Inference keeps only each block's output: otherwise every activation of a 500-image
      // evaluation batch lives until the caller's tidy (8.7 GB peak at depth 110, where the
      // evaluation then took 42-50 s instead of 27 s).
      const next = tf.tidy(() => block(b, h));
      if (next !== h) h.dispose();
      h = next;
    }
    return h;
  }

  /**
   * The body (stem and blocks) in training mode as one engine kernel (src/engine/ops.ts
   * trainBody), where the engine has it and the net fits it: one BN shard and no
   * projection shortcuts. Same results as the unit-by-unit forward; null otherwise.
   */
  private trainBody(x: tf.Tensor4D, stats?: BatchStats[]): tf.Tensor4D | null {
    if (this.bnShards !== 1 || this.arch.blocks.some((b) => b.shortcut === 'B')) return null;
    const units = [this.arch.stem, ...this.arch.blocks.flatMap((b) => [b.conv1, b.conv2])];
    const body = trainBody(
      x,
      units.map((u) => ({ stride: u.stride, ...this.unitParams(u) })),
      this.arch.blocks.map((b) => b.shortcut as BodyShortcut),
    );
    if (!body) return null;
    units.forEach((u, i) => stats?.push({ name: u.name, ...body.stats[i], count: this.bnCount(x, u) }));
    return body.h;
  }

  /** A conv -> BN unit's parameters. */
  private unitParams(u: ConvBn): { w: tf.Tensor4D; gamma: tf.Tensor1D; beta: tf.Tensor1D } {
    const p = (what: string) => this.params.get(`${u.name}/${what}`) as tf.Tensor;
    return { w: p('w') as tf.Tensor4D, gamma: p('gamma') as tf.Tensor1D, beta: p('beta') as tf.Tensor1D };
  }

  /** Values behind each of a unit's BN statistics: one shard's images times the map's pixels. */
  private bnCount(x: tf.Tensor4D, u: ConvBn): number {
    return (x.shape[0] / this.bnShards) * u.outSize * u.outSize;
  }

  private shortcut(
    b: Block,
    x: tf.Tensor4D,
    unit: (u: ConvBn, input: tf.Tensor4D, relu: boolean) => tf.Tensor4D,
  ): tf.Tensor4D {
    if (b.shortcut === 'identity') return x;
    if (b.shortcut === 'B') return unit(b.projection as ConvBn, x, false);
    return shortcutA(x, b.conv2.outChannels);
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    for (const v of this.runningStats.values()) v.dispose();
  }
}

/** Option A's shortcut (subsample + zero-pad) lives with the other hot units in the engine's ops. */
export { shortcutA };
