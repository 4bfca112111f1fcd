// The input pipeline: mean-subtracted NHWC float32 mini-batches.
//
// Training batches are STATELESS: batch i is a pure function of (seed, i), so a run
// resumed at iteration i sees exactly the batches it would have seen had it never
// stopped, and no pipeline state has to go into a checkpoint.
//
//   example stream = perm(0) ++ perm(1) ++ ...   (perm(e): Fisher-Yates shuffle of
//                                                 0..count-1 from a PRNG keyed by (seed, e))
//   batch i        = stream positions [i*B, (i+1)*B)  (may straddle two epochs)
//   augmentation of stream position k: crop offsets and flip from hash(seed, k)
import * as cifar from './cifar10';
import type { Cifar10Split } from './cifar10';

// Copied into module-local constants on purpose: under tsx/esbuild an imported
// binding compiles to a getter call, which in the pixel loops cost ~5x throughput.
const IMAGE_BYTES = cifar.IMAGE_BYTES;
const IMAGE_SIZE = cifar.IMAGE_SIZE;
const CHANNELS = cifar.CHANNELS;

// ---------------------------------------------------------------------------
// Seeded randomness, written here so that the stream never depends on a
// library's or Node's version. Both are 32-bit integer functions (Math.imul),
// so they give the same numbers on every platform.

/**
 * A strong 32-bit integer finalizer ("lowbias32", Chris Wellons' hash-prospector;
 * same shape as the murmur3 fmix32 step). Bijective on uint32, good avalanche.
 */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * Counter-based hash of up to four 32-bit words (e.g. seed, purpose, counter):
 * chained mix32 with a golden-ratio offset so that zeros do not stay zero.
 * Each argument is truncated to uint32.
 */
export function hash32(a: number, b = 0, c = 0, d = 0): number {
  let h = mix32((a ^ 0x9e3779b9) >>> 0);
  h = mix32((h ^ b) >>> 0);
  h = mix32((h + (c >>> 0) + 0x9e3779b9) >>> 0);
  h = mix32((h ^ d) >>> 0);
  return h;
}

/**
 * mulberry32 (Tommy Ettinger): a tiny 32-bit-state PRNG, ample for shuffling.
 * Returns floats in [0, 1) with 32 bits of resolution.
 */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Purposes, so the permutation and augmentation streams of one seed are unrelated.
const PURPOSE_PERMUTATION = 1;
const PURPOSE_AUGMENT = 2;

/** A seed as two uint32 words (seeds up to 2^53 keep all their bits). */
function seedWords(seed: number): [number, number] {
  return [seed >>> 0, Math.floor(seed / 4294967296) >>> 0];
}

/** Fisher-Yates shuffle of 0..n-1 from mulberry32 keyed by (seed, epoch). */
export function epochPermutation(seed: number, epoch: number, n: number): Uint32Array {
  const [lo, hi] = seedWords(seed);
  const rand = mulberry32(hash32(lo, hi, PURPOSE_PERMUTATION, epoch));
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = n - 1; i > 0; i--) {
    // floor(u * (i+1)) with 32-bit u: bias below 2^-16 for n <= 65536; irrelevant here.
    const j = Math.floor(rand() * (i + 1));
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm;
}

/** Crop offsets (0..8 each, into the 40x40 padded image) and flip for one stream position. */
export interface Augmentation {
  dy: number;
  dx: number;
  flip: boolean;
}

const PAD = 4;
const OFFSETS = 2 * PAD + 1; // 0..8

/** The augmentation of stream position k (k < 2^53) under `seed`; a pure function. */
export function augmentationAt(seed: number, k: number): Augmentation {
  const [lo, hi] = seedWords(seed);
  const h = hash32(lo, hi ^ PURPOSE_AUGMENT, k >>> 0, Math.floor(k / 4294967296));
  // Multiply-shift maps 15/16 random bits to 0..8 (bias ~1e-4 relative); the top bit is the flip.
  return {
    dx: ((h & 0xffff) * OFFSETS) >>> 16,
    dy: (((h >>> 16) & 0x7fff) * OFFSETS) >>> 15,
    flip: h >>> 31 === 1,
  };
}

// ---------------------------------------------------------------------------

export interface Batch {
  /** batchSize * 32*32*3, NHWC, raw 0..255 pixel values minus the per-pixel mean. */
  x: Float32Array;
  labels: Int32Array;
}

function checkInputs(split: Cifar10Split, mean: Float32Array, batchSize: number): void {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batch size must be a positive integer, got ${batchSize}`);
  if (mean.length !== IMAGE_BYTES) throw new Error(`pixel mean must have ${IMAGE_BYTES} values, got ${mean.length}`);
  if (split.count < 1) throw new Error('cannot make batches from an empty set of images');
  if (split.images.length !== split.count * IMAGE_BYTES || split.labels.length !== split.count) {
    throw new Error(`split arrays do not match its count ${split.count}`);
  }
}

/** Writes image `src` minus the mean, unaugmented, at float offset `dst`. */
function writePlain(images: Uint8Array, src: number, mean: Float32Array, x: Float32Array, dst: number): void {
  for (let j = 0; j < IMAGE_BYTES; j++) x[dst + j] = images[src + j] - mean[j];
}

const ROW = IMAGE_SIZE * CHANNELS;

/**
 * Writes the augmented image: conceptually (image - mean), padded by 4 ZEROS on
 * each side, cropped 32x32 at (dy, dx) of the 40x40 result, then mirrored if flip.
 *
 * Padding choice: the zeros are added AFTER mean subtraction, i.e. padded pixels
 * are 0 in the network's input (= the mean colour in pixel space), as the common
 * Torch / PyTorch CIFAR recipes do (they pad the already-normalized tensor). The
 * alternative, black padding in pixel space, would give padded pixels -mean.
 *
 * `x` must be zero where this writes nothing (it is freshly allocated per batch).
 */
function writeAugmented(
  images: Uint8Array,
  src: number,
  mean: Float32Array,
  x: Float32Array,
  dst: number,
  a: Augmentation,
): void {
  for (let y = 0; y < IMAGE_SIZE; y++) {
    const sy = y + a.dy - PAD;
    if (sy < 0 || sy >= IMAGE_SIZE) continue; // a padding row: stays 0
    // Output columns whose source column sx lies inside the image; for a flip sx runs backwards.
    // non-flip: sx = x + dx - 4;  flip: sx = (31 - x) + dx - 4
    const rowSrc = src + sy * ROW;
    const rowMean = sy * ROW;
    const rowDst = dst + y * ROW;
    for (let ox = 0; ox < IMAGE_SIZE; ox++) {
      const sx = (a.flip ? IMAGE_SIZE - 1 - ox : ox) + a.dx - PAD;
      if (sx < 0 || sx >= IMAGE_SIZE) continue; // a padding column: stays 0
      const s = sx * CHANNELS;
      const o = rowDst + ox * CHANNELS;
      x[o] = images[rowSrc + s] - mean[rowMean + s];
      x[o + 1] = images[rowSrc + s + 1] - mean[rowMean + s + 1];
      x[o + 2] = images[rowSrc + s + 2] - mean[rowMean + s + 2];
    }
  }
}

/** Fractional epochs after `iteration` batches: iteration * batchSize / count. */
export function epochOf(iteration: number, batchSize: number, count: number): number {
  return (iteration * batchSize) / count;
}

export class TrainBatches {
  private readonly augment: boolean;
  /** At most two epochs' permutations: the current one and the next (a batch may straddle). */
  private readonly perms = new Map<number, Uint32Array>();

  constructor(
    private readonly split: Cifar10Split,
    private readonly mean: Float32Array,
    readonly batchSize: number,
    readonly seed: number,
    opts: { augment?: boolean } = {},
  ) {
    checkInputs(split, mean, batchSize);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seed must be a non-negative integer, got ${seed}`);
    this.augment = opts.augment ?? true;
  }

  /** Fractional epochs completed after `iteration` batches. */
  epochOf(iteration: number): number {
    return epochOf(iteration, this.batchSize, this.split.count);
  }

  /** The permutation of epoch e, from the cache or computed (evicting epochs not e or e+1). */
  private permutation(epoch: number): Uint32Array {
    let p = this.perms.get(epoch);
    if (p === undefined) {
      p = epochPermutation(this.seed, epoch, this.split.count);
      for (const e of this.perms.keys()) if (e !== epoch - 1 && e !== epoch + 1) this.perms.delete(e);
      this.perms.set(epoch, p);
    }
    return p;
  }

  /** Dataset indices of the images in batch `iteration` (stream positions [i*B, (i+1)*B)). */
  indices(iteration: number): Uint32Array {
    if (!Number.isSafeInteger(iteration) || iteration < 0) {
      throw new Error(`iteration must be a non-negative integer, got ${iteration}`);
    }
    const n = this.split.count;
    const out = new Uint32Array(this.batchSize);
    const start = iteration * this.batchSize;
    for (let b = 0; b < this.batchSize; b++) {
      const k = start + b;
      const epoch = Math.floor(k / n);
      out[b] = this.permutation(epoch)[k - epoch * n];
    }
    return out;
  }

  /** Batch number `iteration` (0-based); the same (seed, iteration) always gives the same batch. */
  batch(iteration: number): Batch {
    const idx = this.indices(iteration);
    const B = this.batchSize;
    const x = new Float32Array(B * IMAGE_BYTES);
    const labels = new Int32Array(B);
    const { images } = this.split;
    const start = iteration * B;
    for (let b = 0; b < B; b++) {
      const i = idx[b];
      labels[b] = this.split.labels[i];
      if (this.augment) {
        writeAugmented(images, i * IMAGE_BYTES, this.mean, x, b * IMAGE_BYTES, augmentationAt(this.seed, start + b));
      } else {
        writePlain(images, i * IMAGE_BYTES, this.mean, x, b * IMAGE_BYTES);
      }
    }
    return { x, labels };
  }
}

/**
 * All images of `split` in order, mean-subtracted, never augmented (testing uses the
 * single original image). The last batch holds the remainder and x is sized for it.
 */
export function* evalBatches(
  split: Cifar10Split,
  mean: Float32Array,
  batchSize: number,
): Generator<{ x: Float32Array; labels: Int32Array; count: number }> {
  checkInputs(split, mean, batchSize);
  for (let start = 0; start < split.count; start += batchSize) {
    const count = Math.min(batchSize, split.count - start);
    const x = new Float32Array(count * IMAGE_BYTES);
    const labels = new Int32Array(count);
    for (let b = 0; b < count; b++) {
      writePlain(split.images, (start + b) * IMAGE_BYTES, mean, x, b * IMAGE_BYTES);
      labels[b] = split.labels[start + b];
    }
    yield { x, labels, count };
  }
}
