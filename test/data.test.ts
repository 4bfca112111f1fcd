// Tests of src/data/cifar10.ts on small synthetic batch files written here, plus
// (when present) the real data set.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  DataError,
  TEST_FILE,
  TRAIN_FILES,
  holdOut,
  loadCifar10,
  pixelMean,
  readBatchFile,
  resolveDataDir,
  type Cifar10Split,
} from '../src/data/cifar10';

const REC = 3073;
const PER_FILE = 20;

/** The synthetic value of global record g at pixel (y, x), channel c. Asymmetric in y/x/c on purpose. */
function pixel(g: number, y: number, x: number, c: number): number {
  return (g * 31 + c * 85 + y * 8 + x) % 256;
}
function labelOf(g: number): number {
  return (g * 7 + 3) % 10;
}

/** One file in the CIFAR-10 layout (label, then R, G, B planes row-major) for records first..first+n-1. */
function makeBatch(first: number, n: number): Buffer {
  const buf = Buffer.alloc(n * REC);
  for (let r = 0; r < n; r++) {
    const g = first + r;
    const o = r * REC;
    buf[o] = labelOf(g);
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) buf[o + 1 + c * 1024 + y * 32 + x] = pixel(g, y, x, c);
  }
  return buf;
}

const tmpDirs: string[] = [];
after(() => tmpDirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cifar-test-'));
  tmpDirs.push(d);
  return d;
}

/** A data dir with the 6 files; train records are 0..99, test records 1000..1019. */
function makeDataDir(): string {
  const dir = tmpDir();
  TRAIN_FILES.forEach((name, i) => fs.writeFileSync(path.join(dir, name), makeBatch(i * PER_FILE, PER_FILE)));
  fs.writeFileSync(path.join(dir, TEST_FILE), makeBatch(1000, PER_FILE));
  return dir;
}

function assertOneLine(err: unknown): asserts err is DataError {
  assert.ok(err instanceof DataError, `expected a DataError, got ${String(err)}`);
  assert.ok(!err.message.includes('\n'), `message is not one line: ${JSON.stringify(err.message)}`);
}

/** Runs fn, expecting a one-line DataError, and returns its message. */
function dataErrorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assertOneLine(err);
    return err.message;
  }
  assert.fail('expected a DataError, nothing was thrown');
}

test('loadCifar10 round-trips synthetic files, transposing CHW to HWC pixel by pixel', () => {
  const dir = makeDataDir();
  const { train, test: testSplit, files } = loadCifar10(dir, { recordsPerFile: PER_FILE });
  assert.equal(train.count, 5 * PER_FILE);
  assert.equal(train.images.length, 5 * PER_FILE * 3072);
  assert.equal(testSplit.count, PER_FILE);
  const check = (split: Cifar10Split, firstG: number) => {
    for (let i = 0; i < split.count; i++) {
      const g = firstG + i;
      assert.equal(split.labels[i], labelOf(g), `label of image ${i}`);
      for (let y = 0; y < 32; y++)
        for (let x = 0; x < 32; x++)
          for (let c = 0; c < 3; c++) {
            const got = split.images[i * 3072 + (y * 32 + x) * 3 + c];
            if (got !== pixel(g, y, x, c))
              assert.fail(`image ${i} (y=${y}, x=${x}, c=${c}): ${got} != ${pixel(g, y, x, c)}`);
          }
    }
  };
  check(train, 0);
  check(testSplit, 1000);
  assert.deepEqual(
    files.map((f) => f.name),
    [...TRAIN_FILES, TEST_FILE],
  );
  for (const f of files) {
    const bytes = fs.readFileSync(path.join(dir, f.name));
    assert.equal(f.bytes, PER_FILE * REC);
    assert.equal(f.sha256, createHash('sha256').update(bytes).digest('hex'));
  }
});

test('readBatchFile reads any whole number of records, and checks the count when asked', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'b.bin');
  fs.writeFileSync(file, makeBatch(5, 3));
  const s = readBatchFile(file);
  assert.equal(s.count, 3);
  assert.deepEqual(Array.from(s.labels), [labelOf(5), labelOf(6), labelOf(7)]);
  assert.equal(s.images[2 * 3072 + (4 * 32 + 9) * 3 + 2], pixel(7, 4, 9, 2));
  assert.equal(readBatchFile(file, 3).count, 3);
  const msg = dataErrorOf(() => readBatchFile(file, 30));
  assert.match(msg, /b\.bin/);
  assert.match(msg, /3 records/);
  assert.match(msg, /expected 30/);
});

test('a truncated file is a one-line error naming the file and its size', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'data_batch_1.bin');
  fs.writeFileSync(file, makeBatch(0, PER_FILE).subarray(0, PER_FILE * REC - 5));
  const msg = dataErrorOf(() => readBatchFile(file));
  assert.ok(msg.includes(file), msg);
  assert.ok(msg.includes(`${PER_FILE * REC - 5} bytes is not a multiple of 3073`), msg);
  assert.match(msg, /truncated or not a CIFAR-10 binary batch/);
  fs.writeFileSync(file, Buffer.alloc(0));
  assert.match(
    dataErrorOf(() => readBatchFile(file)),
    /empty/,
  );
});

test('a label outside 0..9 names the record index and value', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'data_batch_3.bin');
  const buf = makeBatch(0, PER_FILE);
  buf[7 * REC] = 12;
  fs.writeFileSync(file, buf);
  const msg = dataErrorOf(() => readBatchFile(file));
  assert.ok(msg.includes(file), msg);
  assert.match(msg, /record 7 has label 12/);
  // 10 is already out of range; 9 is the largest valid label.
  buf[7 * REC] = 10;
  fs.writeFileSync(file, buf);
  assert.match(
    dataErrorOf(() => readBatchFile(file)),
    /record 7 has label 10/,
  );
  buf[7 * REC] = 9;
  fs.writeFileSync(file, buf);
  assert.equal(readBatchFile(file).labels[7], 9);
});

test('loadCifar10 rejects files with the wrong record count (default is the official 10000)', () => {
  const dir = makeDataDir();
  const msg = dataErrorOf(() => loadCifar10(dir));
  assert.ok(msg.includes(path.join(dir, TRAIN_FILES[0])), msg);
  assert.match(msg, /expected 10000/);
  // One short file among good ones is found too.
  fs.writeFileSync(path.join(dir, TRAIN_FILES[3]), makeBatch(0, PER_FILE - 1));
  const msg2 = dataErrorOf(() => loadCifar10(dir, { recordsPerFile: PER_FILE }));
  assert.ok(msg2.includes(TRAIN_FILES[3]), msg2);
  assert.match(msg2, new RegExp(`${PER_FILE - 1} records`));
});

test('a missing data dir or file says to run `resnet-exp download`', () => {
  const missing = path.join(tmpDir(), 'nope', 'cifar-10-batches-bin');
  const msg = dataErrorOf(() => loadCifar10(missing));
  assert.ok(msg.includes(missing), msg);
  assert.ok(msg.includes('resnet-exp download'), msg);
  assert.match(msg, /--data-dir/);
  assert.match(msg, /CIFAR10_DIR/);

  const dir = makeDataDir();
  fs.rmSync(path.join(dir, TEST_FILE));
  const msg2 = dataErrorOf(() => loadCifar10(dir, { recordsPerFile: PER_FILE }));
  assert.ok(msg2.includes(path.join(dir, TEST_FILE)), msg2);
  assert.ok(msg2.includes('resnet-exp download'), msg2);
  assert.match(
    dataErrorOf(() => readBatchFile(path.join(dir, TEST_FILE))),
    /^missing CIFAR-10 file/,
  );
});

test('holdOut makes the LAST n images the validation set', () => {
  const dir = makeDataDir();
  const { train } = loadCifar10(dir, { recordsPerFile: PER_FILE });
  const { train: tr, val } = holdOut(train, 10);
  assert.equal(tr.count, 90);
  assert.equal(val.count, 10);
  assert.equal(tr.images.length, 90 * 3072);
  assert.equal(tr.labels.length, 90);
  assert.equal(val.images.length, 10 * 3072);
  assert.deepEqual(val.images, train.images.slice(90 * 3072));
  assert.deepEqual(val.labels, train.labels.slice(90));
  assert.deepEqual(tr.images, train.images.slice(0, 90 * 3072));
  assert.equal(val.images[0], pixel(90, 0, 0, 0));
  assert.equal(holdOut(train, 1).val.count, 1);
  assert.equal(holdOut(train, 99).train.count, 1);
  for (const bad of [0, 100, -1, 2.5, Number.NaN]) {
    assert.throws(() => holdOut(train, bad), DataError, `n=${bad}`);
  }
});

test('pixelMean is the exact per-pixel mean over the images', () => {
  const images = new Uint8Array(3 * 3072);
  images.fill(1, 0, 3072);
  images.fill(2, 3072, 6144);
  images.fill(4, 6144);
  images[5] = 255; // image 0, pixel (0,1) channel 2
  images[3072 + 5] = 254;
  images[6144 + 5] = 255;
  images[6144 + 3071] = 0;
  const split: Cifar10Split = { images, labels: new Uint8Array(3), count: 3 };
  const m = pixelMean(split);
  assert.equal(m.length, 3072);
  assert.equal(m[0], Math.fround(7 / 3));
  assert.equal(m[5], Math.fround(764 / 3));
  assert.equal(m[3071], Math.fround(3 / 3));
  assert.equal(m[100], Math.fround(7 / 3));
  // The mean is taken in HWC layout: index (y*32+x)*3+c.
  const one = new Uint8Array(3072);
  one[(2 * 32 + 3) * 3 + 1] = 200;
  const m1 = pixelMean({ images: one, labels: new Uint8Array(1), count: 1 });
  assert.equal(m1[(2 * 32 + 3) * 3 + 1], 200);
  assert.equal(
    m1.reduce((a, b) => a + b, 0),
    200,
  );
  assert.throws(() => pixelMean({ images: new Uint8Array(0), labels: new Uint8Array(0), count: 0 }), DataError);
});

test('resolveDataDir: flag, else CIFAR10_DIR, else ./data/cifar-10-batches-bin', () => {
  const saved = process.env.CIFAR10_DIR;
  try {
    delete process.env.CIFAR10_DIR;
    assert.equal(resolveDataDir(), path.resolve('data/cifar-10-batches-bin'));
    assert.equal(resolveDataDir(''), path.resolve('data/cifar-10-batches-bin'));
    process.env.CIFAR10_DIR = '/tmp/from-env';
    assert.equal(resolveDataDir(), '/tmp/from-env');
    assert.equal(resolveDataDir('rel/flag'), path.resolve('rel/flag'));
    process.env.CIFAR10_DIR = '';
    assert.equal(resolveDataDir(), path.resolve('data/cifar-10-batches-bin'));
  } finally {
    if (saved === undefined) delete process.env.CIFAR10_DIR;
    else process.env.CIFAR10_DIR = saved;
  }
});

const REAL_DIR = path.resolve(__dirname, '../../shared/cifar-10-batches-bin');
const realPresent = fs.existsSync(path.join(REAL_DIR, TEST_FILE));

test(
  'the real CIFAR-10 loads 50000/10000 with the known first labels',
  { skip: realPresent ? false : `real CIFAR-10 not found at ${REAL_DIR}; skipping` },
  (t) => {
    const t0 = Date.now();
    const { train, test: testSplit, files } = loadCifar10(REAL_DIR);
    const ms = Date.now() - t0;
    t.diagnostic(`loaded real CIFAR-10 (${files.length} files, sha256 included) in ${ms} ms`);
    assert.equal(train.count, 50000);
    assert.equal(testSplit.count, 10000);
    assert.deepEqual(Array.from(train.labels.subarray(0, 10)), [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    assert.deepEqual(Array.from(testSplit.labels.subarray(0, 10)), [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    const perClass = new Array<number>(10).fill(0);
    for (const l of train.labels) perClass[l]++;
    assert.deepEqual(perClass, new Array<number>(10).fill(5000));
    // Transposition spot check against the raw file: record 2345 of data_batch_2 = train image 12345.
    const raw = fs.readFileSync(path.join(REAL_DIR, TRAIN_FILES[1]));
    const r = 2345;
    for (const [y, x, c] of [
      [0, 0, 0],
      [5, 17, 1],
      [31, 30, 2],
      [16, 2, 0],
    ]) {
      assert.equal(train.images[(10000 + r) * 3072 + (y * 32 + x) * 3 + c], raw[r * 3073 + 1 + c * 1024 + y * 32 + x]);
    }
    const mean = pixelMean(holdOut(train, 5000).train);
    // Plausible natural-image means (roughly 110..140 per channel value).
    for (let j = 0; j < 3072; j++) assert.ok(mean[j] > 90 && mean[j] < 160, `mean[${j}] = ${mean[j]}`);
  },
);
