// The lesion study of Veit, Wilber and Belongie 2016 ("Residual networks behave like
// ensembles of relatively shallow networks"): at test time, delete blocks of a trained
// net and measure the test error.
//
// Deleting a block of a ResNet deletes its residual branch: y = x instead of
// y = relu(x + F(x)) (x is already a ReLU output, so relu(x) = x). At a downsampling block
// x and y differ in shape; there "y = x" means the shortcut alone: with option A, x
// subsampled by 2 and zero-padded to the new width; with option B, relu(projection(x)).
// Those blocks are marked. In a plain net a block's output becomes its input, which is
// possible only where the block keeps the shape: its downsampling blocks are never deleted.
import * as tf from '@tensorflow/tfjs-core';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mulberry32 } from '../data/batches';
import type { Block } from '../model/resnet';
import { countErrors } from '../train/step';
import { RUN_FILES } from '../experiment/run-folder';
import { readCsv, writeCsv } from './csv';
import { ANALYSIS_BATCH, forEachTestBatch, type TrainedRun } from './trained-run';

export const LESION_FILE = RUN_FILES.lesion;
const COLUMNS = ['kind', 'k', 'block', 'downsampling', 'draws', 'error_mean', 'error_std', 'images'];

export interface LesionRow {
  /** none: the intact net; single: one named block deleted; random: k random blocks, `draws` times. */
  kind: 'none' | 'single' | 'random';
  k: number;
  block: string;
  downsampling: boolean;
  draws: number;
  /** Test error (%), mean over the draws. */
  errorMean: number;
  /** Standard deviation over the draws (0 for one draw). */
  errorStd: number;
  images: number;
}

export function isDownsampling(b: Block): boolean {
  return b.conv1.stride === 2 || b.conv1.inChannels !== b.conv1.outChannels;
}

/** Blocks that can be deleted: every block of a ResNet; those that keep the shape in a plain net. */
export function deletableBlocks(run: TrainedRun): Block[] {
  return run.net.arch.blocks.filter((b) => b.shortcut !== 'none' || !isDownsampling(b));
}

/** Test error (%) with the given blocks deleted. */
export function lesionError(run: TrainedRun, deleted: ReadonlySet<string>, batchSize = ANALYSIS_BATCH): number {
  let errors = 0;
  let seen = 0;
  forEachTestBatch(
    run,
    (x, labels) => {
      const logits = tf.tidy(() => run.net.forward(x, false, undefined, { deleted }));
      errors += countErrors(logits.dataSync() as Float32Array, labels, run.net.arch.classes);
      logits.dispose();
      seen += labels.length;
    },
    batchSize,
  );
  return (100 * errors) / seen;
}

function meanStd(values: number[]): { mean: number; std: number } {
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / Math.max(1, values.length - 1);
  return { mean, std: values.length > 1 ? Math.sqrt(variance) : 0 };
}

/** k distinct items of `items`, by a partial Fisher-Yates shuffle. */
function sample<T>(items: T[], k: number, rand: () => number): T[] {
  const a = [...items];
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (a.length - i));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, k);
}

export interface LesionOptions {
  /** Random draws per k. */
  draws: number;
  /** Seed of the random block choices (the study is repeatable). */
  seed: number;
  batchSize?: number;
  /** Called after each evaluation: progress on slow nets. */
  progress?: (done: number, total: number) => void;
}

export function lesionStudy(run: TrainedRun, o: LesionOptions): LesionRow[] {
  const blocks = deletableBlocks(run);
  const images = run.test.count;
  const total = 1 + blocks.length + blocks.length * o.draws;
  let done = 0;
  const error = (deleted: Block[]) => {
    const e = lesionError(run, new Set(deleted.map((b) => b.name)), o.batchSize);
    o.progress?.(++done, total);
    return e;
  };
  const base = { draws: 1, errorStd: 0, images };
  const rows: LesionRow[] = [{ ...base, kind: 'none', k: 0, block: '', downsampling: false, errorMean: error([]) }];
  for (const b of blocks) {
    rows.push({ ...base, kind: 'single', k: 1, block: b.name, downsampling: isDownsampling(b), errorMean: error([b]) });
  }
  const rand = mulberry32(o.seed);
  for (let k = 1; k <= blocks.length; k++) {
    const errors = Array.from({ length: o.draws }, () => error(sample(blocks, k, rand)));
    const { mean, std } = meanStd(errors);
    rows.push({
      kind: 'random',
      k,
      block: '',
      downsampling: false,
      draws: o.draws,
      errorMean: mean,
      errorStd: std,
      images,
    });
  }
  return rows;
}

export function writeLesion(dir: string, rows: LesionRow[]): string {
  const file = path.join(dir, LESION_FILE);
  const r3 = (v: number) => Number(v.toFixed(3));
  writeCsv(
    file,
    COLUMNS,
    rows.map((r) => ({
      kind: r.kind,
      k: r.k,
      block: r.block,
      downsampling: r.downsampling ? 1 : 0,
      draws: r.draws,
      error_mean: r3(r.errorMean),
      error_std: r3(r.errorStd),
      images: r.images,
    })),
  );
  return file;
}

export function readLesion(dir: string): LesionRow[] | undefined {
  const file = path.join(dir, LESION_FILE);
  if (!fs.existsSync(file)) return undefined;
  return readCsv(file).map((r) => ({
    kind: r.kind as LesionRow['kind'],
    k: Number(r.k),
    block: r.block,
    downsampling: r.downsampling === '1',
    draws: Number(r.draws),
    errorMean: Number(r.error_mean),
    errorStd: Number(r.error_std),
    images: Number(r.images),
  }));
}
