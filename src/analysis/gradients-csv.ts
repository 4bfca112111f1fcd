// gradients.csv, beside metrics.csv: one row per conv layer per evaluation,
//   iteration,layer,name,grad_norm
// (layer: 1-based forward position among the conv layers; grad_norm: mean over the
// interval's steps of the L2 norm of the layer's weight gradient). Kept exact across a
// resume by metrics.csv's rule: rows after the checkpoint's iteration are dropped and
// computed again (see src/experiment/metrics-csv.ts).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../experiment/files';
import { truncateMetrics } from '../experiment/metrics-csv';
import { csvHeader, csvRecords, parseCsv } from './csv';
import type { GradientMeans } from './gradient-flow';

export const GRADIENTS_FILE = 'gradients.csv';
const COLUMNS = ['iteration', 'layer', 'name', 'grad_norm'];

export interface GradientRow {
  iteration: number;
  layer: number;
  name: string;
  gradNorm: number;
}

export function gradientsFile(dir: string): string {
  return path.join(dir, GRADIENTS_FILE);
}

export function createGradients(file: string): void {
  writeFileAtomic(file, csvHeader(COLUMNS));
}

/** At the start of a run or a resume: the file with the rows the checkpoint at `iteration` accounts for. */
export function startGradients(file: string, iteration: number): void {
  if (!fs.existsSync(file) || iteration === 0) createGradients(file);
  else truncateMetrics(file, iteration);
}

export function appendGradientRows(file: string, iteration: number, means: GradientMeans): void {
  const rows = means.names.map((name, i) => ({
    iteration,
    layer: i + 1,
    name,
    grad_norm: Number(means.norms[i].toPrecision(6)),
  }));
  writeFileAtomic(file, fs.readFileSync(file, 'utf8') + csvRecords(COLUMNS, rows));
}

export function readGradients(dir: string): GradientRow[] | undefined {
  const file = gradientsFile(dir);
  if (!fs.existsSync(file)) return undefined;
  return parseCsv(fs.readFileSync(file, 'utf8')).map((r) => ({
    iteration: Number(r.iteration),
    layer: Number(r.layer),
    name: r.name,
    gradNorm: Number(r.grad_norm),
  }));
}
