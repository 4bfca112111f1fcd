// Tests of the input pipeline (src/data/batches.ts) on in-memory synthetic images.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { pixelMean, type Cifar10Split } from '../src/data/cifar10';
import { TrainBatches, augmentationAt, epochOf, epochPermutation, evalBatches } from '../src/data/batches';

const IMG = 3072;

/**
 * count images whose channel-0 value at pixel (0,0) is the image index (count <= 256)
 * and whose other values are random, so crops/flips of different images never coincide.
 */
function makeSplit(count: number): Cifar10Split {
  const images = new Uint8Array(count * IMG);
  randomFillSync(images);
  for (let i = 0; i < count; i++) images[i * IMG] = i;
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = (i * 3) % 10;
  return { images, labels, count };
}

/** The index of the image an unaugmented output came from, read back through the mean. */
function recoverIndex(x: Float32Array, b: number, mean: Float32Array): number {
  return Math.round(x[b * IMG] + mean[0]);
}

function image(x: Float32Array, b: number): Float32Array {
  return x.subarray(b * IMG, (b + 1) * IMG);
}

/** The reference pipeline, written the obvious way: image - mean, inside a 40x40 zero border. */
function padded(split: Cifar10Split, mean: Float32Array, i: number): Float32Array {
  const out = new Float32Array(40 * 40 * 3); // zeros = padding, in mean-subtracted space
  for (let y = 0; y < 32; y++)
    for (let x = 0; x < 32; x++)
      for (let c = 0; c < 3; c++) {
        const j = (y * 32 + x) * 3 + c;
        out[((y + 4) * 40 + (x + 4)) * 3 + c] = split.images[i * IMG + j] - mean[j];
      }
  return out;
}

/** Whether img is the 32x32 crop of pad at (dy, dx), mirrored left-right if flip. */
function isCrop(img: Float32Array, pad: Float32Array, dy: number, dx: number, flip: boolean): boolean {
  for (let y = 0; y < 32; y++)
    for (let x = 0; x < 32; x++)
      for (let c = 0; c < 3; c++) {
        const cx = flip ? 31 - x : x;
        if (img[(y * 32 + x) * 3 + c] !== pad[((y + dy) * 40 + (cx + dx)) * 3 + c]) return false;
      }
  return true;
}

function equalArrays(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) return false;
  return true;
}

test('batches are a pure function of (seed, iteration)', () => {
  const split = makeSplit(50);
  const mean = pixelMean(split);
  const a = new TrainBatches(split, mean, 16, 42);
  const b = new TrainBatches(split, mean, 16, 42);
  // Asking in a different order (as a resumed run would) must not change anything.
  const late = b.batch(17);
  const first = b.batch(0);
  assert.deepEqual(a.batch(0), first);
  assert.deepEqual(a.batch(17), late);
  assert.deepEqual(a.batch(17), new TrainBatches(split, mean, 16, 42).batch(17));
  assert.equal(a.batch(3).x.length, 16 * IMG);
  assert.equal(a.batch(3).labels.length, 16);
  const other = new TrainBatches(split, mean, 16, 43);
  assert.notDeepEqual(other.batch(0).x, first.x);
  assert.notDeepEqual(Array.from(other.indices(0)), Array.from(a.indices(0)));
  assert.notDeepEqual(a.batch(1).x, first.x);
});

test('each epoch visits every image exactly once (indices recovered from x, augment off)', () => {
  const count = 50;
  const split = makeSplit(count);
  const mean = pixelMean(split);
  const B = 15; // does not divide 50, so batches straddle epochs
  const tb = new TrainBatches(split, mean, B, 7, { augment: false });
  const stream: number[] = [];
  for (let i = 0; i < 10; i++) {
    const { x, labels } = tb.batch(i);
    const idx = tb.indices(i);
    for (let b = 0; b < B; b++) {
      const k = recoverIndex(x, b, mean);
      assert.equal(k, idx[b], 'indices() agrees with the pixels');
      assert.equal(labels[b], split.labels[k], 'label travels with its image');
      stream.push(k);
    }
  }
  assert.equal(stream.length, 3 * count);
  const epochs = [0, 1, 2].map((e) => stream.slice(e * count, (e + 1) * count));
  for (const ep of epochs) {
    assert.deepEqual(
      [...ep].sort((p, q) => p - q),
      Array.from({ length: count }, (_, i) => i),
    );
  }
  assert.notDeepEqual(epochs[0], epochs[1], 'epochs are shuffled differently');
  assert.notDeepEqual(epochs[1], epochs[2]);
  assert.notDeepEqual(
    epochs[0],
    Array.from({ length: count }, (_, i) => i),
    'shuffled at all',
  );
});

test('a batch crossing the epoch boundary takes the tail of one permutation and the head of the next', () => {
  const split = makeSplit(50);
  const mean = pixelMean(split);
  const seed = 99;
  const p0 = epochPermutation(seed, 0, 50);
  const p1 = epochPermutation(seed, 1, 50);
  const p2 = epochPermutation(seed, 2, 50);
  // Fresh instance, first call straight at the straddling batch (a resumed run).
  const tb = new TrainBatches(split, mean, 15, seed, { augment: false });
  const idx = Array.from(tb.indices(3)); // positions 45..59
  assert.deepEqual(idx, [...Array.from(p0.subarray(45)), ...Array.from(p1.subarray(0, 10))]);
  const { x } = tb.batch(3);
  assert.deepEqual(
    Array.from({ length: 15 }, (_, b) => recoverIndex(x, b, mean)),
    idx,
  );
  // Positions 90..104 straddle epochs 1 and 2; then back to epoch 0 works too (cache eviction).
  assert.deepEqual(Array.from(tb.indices(6)), [...Array.from(p1.subarray(40)), ...Array.from(p2.subarray(0, 5))]);
  assert.deepEqual(Array.from(tb.indices(0)), Array.from(p0.subarray(0, 15)));
  assert.equal(tb.epochOf(10), 3);
  assert.equal(tb.epochOf(5), 1.5);
  assert.equal(epochOf(32000, 128, 45000), (32000 * 128) / 45000);
});

test('without augmentation x is exactly image - mean', () => {
  const split = makeSplit(40);
  const mean = pixelMean(split);
  const tb = new TrainBatches(split, mean, 8, 1, { augment: false });
  for (const it of [0, 4, 11]) {
    const { x } = tb.batch(it);
    const idx = tb.indices(it);
    for (let b = 0; b < 8; b++) {
      const expected = new Float32Array(IMG);
      for (let j = 0; j < IMG; j++) expected[j] = split.images[idx[b] * IMG + j] - mean[j];
      assert.ok(equalArrays(image(x, b), expected), `iteration ${it} image ${b}`);
    }
  }
  // Raw 0..255 scale, not divided by 255: values span far beyond [-1, 1].
  const { x } = tb.batch(0);
  assert.ok(Math.max(...x) > 50 && Math.min(...x) < -50);
});

test('with augmentation every image is a zero-padded crop (offsets 0..8), maybe flipped, of its source', () => {
  const split = makeSplit(30);
  const mean = pixelMean(split);
  const B = 10;
  const seed = 5;
  const tb = new TrainBatches(split, mean, B, seed);
  const plain = new TrainBatches(split, mean, B, seed, { augment: false });
  let identityCrops = 0;
  for (let it = 0; it < 30; it++) {
    const { x, labels } = tb.batch(it);
    assert.deepEqual(labels, plain.batch(it).labels, 'augmentation does not change which images or labels');
    const idx = tb.indices(it);
    for (let b = 0; b < B; b++) {
      const got = image(x, b);
      const pad = padded(split, mean, idx[b]);
      // Search all 162 crops/flips: the output must be one of them, and the one augmentationAt names.
      const matches: string[] = [];
      for (let dy = 0; dy <= 8; dy++)
        for (let dx = 0; dx <= 8; dx++)
          for (const flip of [false, true]) if (isCrop(got, pad, dy, dx, flip)) matches.push(`${dy},${dx},${flip}`);
      assert.ok(matches.length >= 1, `iteration ${it} image ${b} is no crop/flip of image ${idx[b]}`);
      const a = augmentationAt(seed, it * B + b);
      assert.ok(matches.includes(`${a.dy},${a.dx},${a.flip}`), `expected ${JSON.stringify(a)}, matched ${matches}`);
      if (a.dy === 4 && a.dx === 4 && !a.flip) identityCrops++;
    }
  }
  assert.ok(identityCrops < 30, 'not (almost) always the identity crop');
});

test('padded pixels are exactly 0 in the network input (padding after mean subtraction)', () => {
  const split = makeSplit(20);
  const mean = pixelMean(split);
  const tb = new TrainBatches(split, mean, 20, 3);
  let checked = 0;
  for (let it = 0; it < 20; it++) {
    const { x } = tb.batch(it);
    for (let b = 0; b < 20; b++) {
      const a = augmentationAt(3, it * 20 + b);
      if (a.dy !== 0) continue; // then the top 4 output rows are padding
      const img = image(x, b);
      for (let j = 0; j < 4 * 32 * 3; j++) assert.equal(img[j], 0);
      // Row 4 is real image (random bytes minus mean): not all 0. (One pixel alone can be
      // exactly its mean, about once in 5,000 checks: this assertion once failed on it.)
      assert.ok(
        img.subarray(4 * 32 * 3, 5 * 32 * 3).some((v) => v !== 0),
        'row 4 is all zeros',
      );
      checked++;
    }
  }
  assert.ok(checked > 5, `only ${checked} images had dy = 0`);
});

test('flips occur about half the time and crop offsets cover 0..8 evenly', () => {
  const N = 20000;
  let flips = 0;
  const dys = new Array<number>(9).fill(0);
  const dxs = new Array<number>(9).fill(0);
  for (let k = 0; k < N; k++) {
    const a = augmentationAt(12345, k);
    if (a.flip) flips++;
    dys[a.dy]++;
    dxs[a.dx]++;
  }
  // 5 sigma bounds: flips sd = sqrt(N/4) ~ 71; per-offset sd ~ sqrt(N*(1/9)*(8/9)) ~ 44.
  assert.ok(Math.abs(flips - N / 2) < 360, `flips ${flips} of ${N}`);
  for (const counts of [dys, dxs]) {
    assert.equal(
      counts.reduce((p, q) => p + q, 0),
      N,
    );
    for (const c of counts) assert.ok(Math.abs(c - N / 9) < 230, `offset counts ${counts}`);
  }
  // dy and dx are not tied together.
  let same = 0;
  for (let k = 0; k < N; k++) {
    const a = augmentationAt(12345, k);
    if (a.dy === a.dx) same++;
  }
  assert.ok(Math.abs(same - N / 9) < 230, `dy == dx ${same} times`);
  // Different seeds give different augmentations.
  let differ = 0;
  for (let k = 0; k < 100; k++)
    if (JSON.stringify(augmentationAt(1, k)) !== JSON.stringify(augmentationAt(2, k))) differ++;
  assert.ok(differ > 80);
});

test('evalBatches yields every image in order, unaugmented, with a smaller last batch', () => {
  const split = makeSplit(50);
  const mean = pixelMean(split);
  const got = [...evalBatches(split, mean, 16)];
  assert.deepEqual(
    got.map((g) => g.count),
    [16, 16, 16, 2],
  );
  let i = 0;
  for (const { x, labels, count } of got) {
    assert.equal(x.length, count * IMG);
    assert.equal(labels.length, count);
    for (let b = 0; b < count; b++, i++) {
      assert.equal(labels[b], split.labels[i]);
      const expected = new Float32Array(IMG);
      for (let j = 0; j < IMG; j++) expected[j] = split.images[i * IMG + j] - mean[j];
      assert.ok(equalArrays(image(x, b), expected), `image ${i}`);
    }
  }
  assert.equal(i, 50);
  assert.deepEqual(
    [...evalBatches(split, mean, 50)].map((g) => g.count),
    [50],
  );
  assert.deepEqual(
    [...evalBatches(split, mean, 1000)].map((g) => g.count),
    [50],
  );
});

test('bad arguments are rejected', () => {
  const split = makeSplit(10);
  const mean = pixelMean(split);
  assert.throws(() => new TrainBatches(split, mean, 0, 1), /batch size/);
  assert.throws(() => new TrainBatches(split, mean, 2.5, 1), /batch size/);
  assert.throws(() => new TrainBatches(split, new Float32Array(10), 4, 1), /pixel mean/);
  assert.throws(() => new TrainBatches(split, mean, 4, -1), /seed/);
  assert.throws(() => new TrainBatches(split, mean, 4, 1).batch(-1), /iteration/);
  assert.throws(() => [...evalBatches(split, mean, 0)], /batch size/);
});

test('throughput of the input pipeline (printed, not asserted)', (t) => {
  const count = 5000;
  const images = new Uint8Array(count * IMG);
  randomFillSync(images);
  const split: Cifar10Split = { images, labels: new Uint8Array(count), count };
  const mean = pixelMean(split);
  for (const augment of [true, false]) {
    const tb = new TrainBatches(split, mean, 128, 1, { augment });
    for (let i = 0; i < 20; i++) tb.batch(i); // warm up the JIT
    const n = 200;
    const t0 = process.hrtime.bigint();
    for (let i = 20; i < 20 + n; i++) tb.batch(i);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    t.diagnostic(`${augment ? 'augmented' : 'plain'} batches of 128: ${Math.round((n * 128) / s)} images/s (one core)`);
  }
  let evalN = 0;
  const t0 = process.hrtime.bigint();
  for (const b of evalBatches(split, mean, 500)) evalN += b.count;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  t.diagnostic(`evalBatches of 500: ${Math.round(evalN / s)} images/s`);
});
