// Data-parallel training of one run: each rank takes its slice of the same global batch,
// gradients are averaged with one allreduce per step, every rank applies the same update.
// Everything that must be identical on every rank goes through here.
import * as tf from '@tensorflow/tfjs-core';
import type { CifarNet } from '../model/resnet';
import type { Sgd } from '../train/sgd';
import { evaluateCounts, IMAGE_SHAPE } from '../train/step';
import type { LoopState } from '../train/trainer';
import { WorldError, type World } from './world';

const IMAGE_VALUES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2];

/** The check made before training: the global batch splits into equal shards. */
export function checkShards(batch: number, worldSize: number, bnShards: number): void {
  if (batch % (worldSize * bnShards) !== 0) {
    const what = worldSize > 1 ? `${worldSize} processes` : '';
    const bn = bnShards > 1 ? `${what ? ' x ' : ''}--bn-shards ${bnShards}` : '';
    throw new WorldError(`--batch ${batch} does not split into equal shards over ${what}${bn}; choose a multiple`);
  }
}

export class DataParallel {
  constructor(
    readonly world: World,
    private readonly net: CifarNet,
  ) {}

  /** This rank's slice of a global batch (views, no copy). */
  shard<B extends { x: Float32Array; labels: Int32Array }>(b: B): { x: Float32Array; labels: Int32Array } {
    const per = b.labels.length / this.world.size;
    if (!Number.isInteger(per)) throw new WorldError(`batch ${b.labels.length} does not split over ${this.world.size}`);
    const r = this.world.rank;
    return {
      x: b.x.subarray(r * per * IMAGE_VALUES, (r + 1) * per * IMAGE_VALUES),
      labels: b.labels.subarray(r * per, (r + 1) * per),
    };
  }

  /**
   * Averages the gradients over ranks and sums `totals` (loss x images, errors, stop flag,
   * images), all packed in ONE buffer and one MPI_Allreduce: a ResNet-110 has 163
   * parameter tensors, and one call per tensor would pay the latency 163 times.
   * Returns new gradient tensors (the caller disposes them).
   */
  reduce(grads: Map<string, tf.Tensor>, totals: Float64Array): Map<string, tf.Tensor> {
    let n = totals.length;
    for (const g of grads.values()) n += g.size;
    const buf = new Float32Array(n);
    let o = 0;
    for (const g of grads.values()) {
      buf.set(g.dataSync() as Float32Array, o);
      o += g.size;
    }
    buf.set(totals, o);
    this.world.sumF32(buf);
    for (let i = 0; i < totals.length; i++) totals[i] = buf[o + i];
    const scale = 1 / this.world.size;
    for (let i = 0; i < o; i++) buf[i] *= scale;
    const out = new Map<string, tf.Tensor>();
    o = 0;
    for (const [name, g] of grads) {
      out.set(name, tf.tensor(buf.slice(o, o + g.size), g.shape));
      o += g.size;
    }
    return out;
  }

  /**
   * BN running statistics averaged over ranks (each rank folded in its own shard's
   * statistics). The running update is linear, so averaging them at each evaluation gives
   * what averaging at every step would. (PyTorch DDP keeps rank 0's instead.)
   */
  syncRunningStats(): void {
    const vars = [...this.net.runningStats.values()];
    const buf = pack(vars);
    this.world.sumF32(buf);
    for (let i = 0; i < buf.length; i++) buf[i] /= this.world.size;
    unpack(vars, buf);
  }

  /** Throws on every rank if the ranks' weights are not bit-for-bit the same. */
  checkSameWeights(iteration: number): void {
    const sum = checksum([...this.net.params.values(), ...this.net.runningStats.values()]);
    const lo = Float64Array.of(sum);
    const hi = Float64Array.of(sum);
    this.world.reduceF64(lo, 'min');
    this.world.reduceF64(hi, 'max');
    if (lo[0] !== hi[0]) {
      throw new WorldError(
        `the ${this.world.size} processes' weights differ at iteration ${iteration} (checksums ${lo[0]} to ${hi[0]}); ` +
          'stopped without writing: resume from the last checkpoint',
      );
    }
  }

  /** Error (%) over a split, its batches dealt round-robin to the ranks. */
  evaluate(batches: Iterable<{ x: Float32Array; labels: Int32Array; count: number }>): number {
    const mine = (function* (size: number, rank: number) {
      let k = 0;
      for (const b of batches) if (k++ % size === rank) yield b;
    })(this.world.size, this.world.rank);
    const { errors, seen } = evaluateCounts(this.net, mine);
    const counts = Float64Array.of(errors, seen);
    this.world.reduceF64(counts, 'sum');
    return counts[1] === 0 ? NaN : (100 * counts[0]) / counts[1];
  }

  /**
   * Rank 0's weights, BN statistics, velocities and loop state to every rank, at the start:
   * only rank 0 reads the run folder (a fresh start or its checkpoint).
   */
  broadcastStart(sgd: Sgd, state: LoopState): LoopState {
    const vars = [...this.net.params.values(), ...this.net.runningStats.values(), ...sgd.velocities.values()];
    const buf = pack(vars);
    this.world.broadcast(buf);
    unpack(vars, buf);
    const json = new TextEncoder().encode(JSON.stringify(state));
    const len = Float32Array.of(json.length);
    this.world.broadcast(len);
    const bytes = new Uint8Array(len[0]);
    if (this.world.rank === 0) bytes.set(json);
    this.world.broadcast(bytes);
    return JSON.parse(new TextDecoder().decode(bytes)) as LoopState;
  }
}

function pack(vars: tf.Variable[]): Float32Array {
  const buf = new Float32Array(vars.reduce((n, v) => n + v.size, 0));
  let o = 0;
  for (const v of vars) {
    buf.set(v.dataSync() as Float32Array, o);
    o += v.size;
  }
  return buf;
}

function unpack(vars: tf.Variable[], buf: Float32Array): void {
  let o = 0;
  for (const v of vars) {
    const part = buf.slice(o, o + v.size);
    tf.tidy(() => v.assign(tf.tensor(part, v.shape)));
    o += v.size;
  }
}

/** FNV-1a over the bytes' 32-bit words: exact, so any difference of one bit shows. */
export function checksum(vars: tf.Tensor[]): number {
  let h = 0x811c9dc5;
  for (const v of vars) {
    const words = new Uint32Array((v.dataSync() as Float32Array).slice().buffer);
    for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i], 0x01000193) >>> 0;
  }
  return h;
}
