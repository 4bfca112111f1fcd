// Loading the CIFAR-10 binary version (see docs/PROTOCOL.md, "Data").
//
// File format: records of 3073 bytes, a label byte 0..9 followed by 1024 red,
// 1024 green and 1024 blue bytes, each plane row-major 32x32 (CHW). The engines
// want NHWC, so the images are transposed once here, at load time, and
// everything downstream indexes pixel (y, x) channel c of image i at
// i*3072 + (y*32 + x)*3 + c.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const IMAGE_SIZE = 32;
export const CHANNELS = 3;
/** Values per image: 32 * 32 * 3. */
export const IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * CHANNELS;
/** Bytes per record in the file: one label byte, then the image. */
export const RECORD_BYTES = 1 + IMAGE_BYTES;
export const NUM_CLASSES = 10;
/** Records per file in the official distribution. */
export const RECORDS_PER_FILE = 10000;

export const TRAIN_FILES = [
  'data_batch_1.bin',
  'data_batch_2.bin',
  'data_batch_3.bin',
  'data_batch_4.bin',
  'data_batch_5.bin',
] as const;
export const TEST_FILE = 'test_batch.bin';

/** Where the data lives when neither --data-dir nor CIFAR10_DIR says otherwise. */
export const DEFAULT_DATA_DIR = path.join('data', 'cifar-10-batches-bin');

/**
 * A problem with the data set the user can fix. The message is one line, printed
 * by the CLI as `error: <message>`, so it names the file and what is wrong.
 */
export class DataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DataError';
  }
}

export interface Cifar10Split {
  /** count * 3072 bytes, image i at [i*3072, (i+1)*3072), HWC inside an image. */
  images: Uint8Array;
  /** count labels, 0..9. */
  labels: Uint8Array;
  count: number;
}

export interface DataFileInfo {
  name: string;
  bytes: number;
  sha256: string;
}

const HOW_TO_GET =
  'run `resnet-exp download` (or pass --data-dir / set CIFAR10_DIR to where the files are)';

/** --data-dir, else $CIFAR10_DIR, else ./data/cifar-10-batches-bin; always absolute. */
export function resolveDataDir(flag?: string): string {
  const env = process.env.CIFAR10_DIR;
  // An empty flag or variable counts as unset: `CIFAR10_DIR= resnet-exp ...` should not mean cwd.
  const chosen = flag !== undefined && flag !== '' ? flag : env !== undefined && env !== '' ? env : DEFAULT_DATA_DIR;
  return path.resolve(chosen);
}

/** The size problem of one batch file, or undefined if its size is right. */
function sizeProblem(file: string, bytes: number, expectedRecords?: number): string | undefined {
  if (bytes === 0) return `${file} is empty (0 bytes); it is truncated or not a CIFAR-10 binary batch`;
  if (bytes % RECORD_BYTES !== 0) {
    return `${file} is truncated or not a CIFAR-10 binary batch: ${bytes} bytes is not a multiple of ${RECORD_BYTES}`;
  }
  if (expectedRecords !== undefined && bytes !== expectedRecords * RECORD_BYTES) {
    return (
      `${file} has ${bytes / RECORD_BYTES} records (${bytes} bytes), expected ${expectedRecords} ` +
      `(${expectedRecords * RECORD_BYTES} bytes); the file is truncated or not from CIFAR-10`
    );
  }
  return undefined;
}

function missingMessage(file: string): string {
  return `missing CIFAR-10 file ${file}; ${HOW_TO_GET}`;
}

/**
 * What is wrong with the six batch files in dataDir, judged by existence and size
 * only (no reading), or undefined if nothing. Cheap: used by the downloader before
 * and after extracting.
 */
export function findCifar10Problem(dataDir: string, recordsPerFile = RECORDS_PER_FILE): string | undefined {
  if (!fs.existsSync(dataDir)) return `${dataDir} does not exist`;
  for (const name of [...TRAIN_FILES, TEST_FILE]) {
    const file = path.join(dataDir, name);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(file);
    } catch {
      return `${file} is missing`;
    }
    if (!stat.isFile()) return `${file} is not a regular file`;
    const problem = sizeProblem(file, stat.size, recordsPerFile);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/** Reads a whole file, turning "not there" into a DataError for the user. */
function readWhole(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DataError(missingMessage(file));
    if (code === 'EISDIR') throw new DataError(`${file} is a directory, not a CIFAR-10 batch file`);
    throw new DataError(`cannot read ${file}: ${(err as Error).message}`);
  }
}

/**
 * Parses an in-memory batch file into out (at record offset `at`), transposing
 * CHW planes to HWC. Throws DataError naming `file` on a bad label.
 */
function parseInto(buf: Uint8Array, file: string, out: Cifar10Split, at: number): void {
  const n = buf.length / RECORD_BYTES;
  const plane = IMAGE_SIZE * IMAGE_SIZE;
  for (let r = 0; r < n; r++) {
    const src = r * RECORD_BYTES;
    const label = buf[src];
    if (label >= NUM_CLASSES) {
      throw new DataError(
        `${file}: record ${r} has label ${label}, expected 0..${NUM_CLASSES - 1}; the file is corrupt or not CIFAR-10`,
      );
    }
    out.labels[at + r] = label;
    const red = src + 1;
    const green = red + plane;
    const blue = green + plane;
    let dst = (at + r) * IMAGE_BYTES;
    const img = out.images;
    for (let p = 0; p < plane; p++) {
      img[dst] = buf[red + p];
      img[dst + 1] = buf[green + p];
      img[dst + 2] = buf[blue + p];
      dst += 3;
    }
  }
}

function emptySplit(count: number): Cifar10Split {
  return { images: new Uint8Array(count * IMAGE_BYTES), labels: new Uint8Array(count), count };
}

function checkedBuffer(file: string, expectedRecords?: number): Buffer {
  const buf = readWhole(file);
  const problem = sizeProblem(file, buf.length, expectedRecords);
  if (problem !== undefined) throw new DataError(problem);
  return buf;
}

/** Reads one CIFAR-10 binary batch file (images returned in HWC order). */
export function readBatchFile(file: string, expectedRecords?: number): Cifar10Split {
  const buf = checkedBuffer(file, expectedRecords);
  const split = emptySplit(buf.length / RECORD_BYTES);
  parseInto(buf, file, split, 0);
  return split;
}

/**
 * Loads the five training files (in order, 50,000 images) and the test file.
 * Also returns each file's size and sha256, which the run records in config.json
 * so that a result can be tied to the exact bytes it was trained on.
 */
export function loadCifar10(
  dataDir: string,
  opts: { recordsPerFile?: number } = {},
): { train: Cifar10Split; test: Cifar10Split; files: DataFileInfo[] } {
  const recordsPerFile = opts.recordsPerFile ?? RECORDS_PER_FILE;
  if (!fs.existsSync(dataDir)) {
    throw new DataError(`CIFAR-10 data not found: ${dataDir} does not exist; ${HOW_TO_GET}`);
  }
  const files: DataFileInfo[] = [];
  const load = (name: string, out: Cifar10Split, at: number): void => {
    const file = path.join(dataDir, name);
    const buf = checkedBuffer(file, recordsPerFile);
    parseInto(buf, file, out, at);
    files.push({ name, bytes: buf.length, sha256: createHash('sha256').update(buf).digest('hex') });
  };
  // Sizes are fixed by recordsPerFile, so the splits are allocated once and filled in place.
  const train = emptySplit(TRAIN_FILES.length * recordsPerFile);
  TRAIN_FILES.forEach((name, i) => load(name, train, i * recordsPerFile));
  const test = emptySplit(recordsPerFile);
  load(TEST_FILE, test, 0);
  return { train, test, files };
}

/**
 * Splits off the LAST n images as a validation set (the paper's 45k/5k split).
 * The halves are views of the original arrays, not copies; nothing mutates them.
 */
export function holdOut(split: Cifar10Split, n: number): { train: Cifar10Split; val: Cifar10Split } {
  if (!Number.isInteger(n) || n < 1 || n > split.count - 1) {
    throw new DataError(
      `cannot hold out ${n} of ${split.count} training images for validation: need a whole number in 1..${split.count - 1}`,
    );
  }
  const k = split.count - n;
  return {
    train: { images: split.images.subarray(0, k * IMAGE_BYTES), labels: split.labels.subarray(0, k), count: k },
    val: { images: split.images.subarray(k * IMAGE_BYTES), labels: split.labels.subarray(k), count: n },
  };
}

/**
 * Per-pixel mean (3072 values, HWC) over the images of `split`, accumulated in
 * float64 (50,000 * 255 sums are exact there; float32 would round).
 */
export function pixelMean(split: Cifar10Split): Float32Array {
  if (split.count < 1) throw new DataError('cannot compute the pixel mean of an empty set of images');
  const sum = new Float64Array(IMAGE_BYTES);
  const img = split.images;
  for (let i = 0; i < split.count; i++) {
    const base = i * IMAGE_BYTES;
    for (let j = 0; j < IMAGE_BYTES; j++) sum[j] += img[base + j];
  }
  const mean = new Float32Array(IMAGE_BYTES);
  for (let j = 0; j < IMAGE_BYTES; j++) mean[j] = sum[j] / split.count;
  return mean;
}
