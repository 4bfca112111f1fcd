// Fig. 7 of He et al. 2016: the standard deviation of each 3x3 layer's response, "the
// output of each 3x3 layer, after BN and before other nonlinearity (ReLU/addition)",
// over the test set in inference mode. ResNets respond less than plain nets, and deeper
// ResNets less still: the residual functions are closer to zero.
//
// What "std" is here: over every value of the layer's output (all test images, positions
// and channels), one number per layer. Batches are combined exactly in float64 from each
// batch's mean and variance (Chan et al.'s pairwise formula), so the batch size does not
// change the result.
import * as tf from '@tensorflow/tfjs-core';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ConvBn } from '../model/resnet';
import { RUN_FILES } from '../experiment/run-folder';
import { readCsv, writeCsv } from './csv';
import { ANALYSIS_BATCH, forEachTestBatch, type TrainedRun } from './trained-run';

export const RESPONSES_FILE = RUN_FILES.responses;
const COLUMNS = ['layer', 'name', 'std', 'iteration'];

export interface LayerResponse {
  /** 1-based index among the 3x3 layers, in forward order (the stem is 1). */
  layer: number;
  name: string;
  std: number;
}

/** Running count, mean and sum of squared deviations (M2). */
interface Moments {
  n: number;
  mean: number;
  m2: number;
}

function merge(a: Moments, n: number, mean: number, variance: number): Moments {
  if (a.n === 0) return { n, mean, m2: variance * n };
  const total = a.n + n;
  const delta = mean - a.mean;
  return {
    n: total,
    mean: a.mean + (delta * n) / total,
    m2: a.m2 + variance * n + (delta * delta * a.n * n) / total,
  };
}

export function computeResponses(run: TrainedRun, batchSize = ANALYSIS_BATCH): LayerResponse[] {
  const acc = new Map<string, Moments>();
  forEachTestBatch(
    run,
    (x) => {
      tf.tidy(() => {
        const batch: { unit: ConvBn; mean: tf.Tensor; variance: tf.Tensor; size: number }[] = [];
        run.net.forward(x, false, undefined, {
          response: (unit, y) => {
            if (unit.kernel !== 3) return; // the 1x1 projections of option B are not in Fig. 7
            const { mean, variance } = tf.moments(y);
            batch.push({ unit, mean, variance, size: y.size });
          },
        });
        for (const b of batch) {
          const old = acc.get(b.unit.name) ?? { n: 0, mean: 0, m2: 0 };
          acc.set(b.unit.name, merge(old, b.size, b.mean.dataSync()[0], b.variance.dataSync()[0]));
        }
      });
    },
    batchSize,
  );
  return [...acc.entries()].map(([name, m], i) => ({ layer: i + 1, name, std: Math.sqrt(m.m2 / m.n) }));
}

export function writeResponses(dir: string, rows: LayerResponse[], iteration: number): string {
  const file = path.join(dir, RESPONSES_FILE);
  writeCsv(
    file,
    COLUMNS,
    rows.map((r) => ({ layer: r.layer, name: r.name, std: Number(r.std.toPrecision(6)), iteration })),
  );
  return file;
}

/** responses.csv of a run folder, or undefined if there is none. */
export function readResponses(dir: string): LayerResponse[] | undefined {
  const file = path.join(dir, RESPONSES_FILE);
  if (!fs.existsSync(file)) return undefined;
  return readCsv(file).map((r) => ({ layer: Number(r.layer), name: r.name, std: Number(r.std) }));
}
