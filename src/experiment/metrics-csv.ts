// metrics.csv: one row per evaluation. Every change rewrites the whole (small) file
// atomically, so a kill at any moment leaves either the old or the new file, never a
// half-written row.
import { createObjectCsvStringifier } from 'csv-writer';
import * as fs from 'node:fs';
import type { Row } from '../train/trainer';
import { writeFileAtomic } from './files';

const COLUMNS: { id: keyof Row; title: string; digits?: number }[] = [
  { id: 'iteration', title: 'iteration' },
  { id: 'epoch', title: 'epoch', digits: 3 },
  { id: 'lr', title: 'lr' },
  { id: 'trainLoss', title: 'train_loss', digits: 5 },
  { id: 'trainError', title: 'train_error', digits: 3 },
  { id: 'testError', title: 'test_error', digits: 3 },
  { id: 'valError', title: 'val_error', digits: 3 },
  { id: 'elapsedS', title: 'elapsed_s', digits: 1 },
  { id: 'imagesPerS', title: 'images_per_s', digits: 1 },
];

const stringifier = createObjectCsvStringifier({ header: COLUMNS.map(({ id, title }) => ({ id, title })) });

export const CSV_HEADER = stringifier.getHeaderString() as string;

function format(row: Row): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of COLUMNS) {
    const v = row[c.id];
    out[c.id] = v === null ? '' : c.digits === undefined ? String(v) : Number(v.toFixed(c.digits)).toString();
  }
  return out;
}

/** Creates the file with only the header. */
export function createMetrics(file: string): void {
  writeFileAtomic(file, CSV_HEADER);
}

export function appendMetricsRow(file: string, row: Row): void {
  const old = fs.readFileSync(file, 'utf8');
  writeFileAtomic(file, old + stringifier.stringifyRecords([format(row)]));
}

/**
 * Keeps the header and the rows with iteration <= `iteration`: the rows that a
 * checkpoint at `iteration` already accounts for. Rows after it (written just before a
 * kill, before their checkpoint) will be computed again, identically.
 */
export function truncateMetrics(file: string, iteration: number): number {
  const lines = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0);
  const kept = [lines[0], ...lines.slice(1).filter((l) => Number.parseInt(l.split(',')[0], 10) <= iteration)];
  writeFileAtomic(file, kept.join('\n') + '\n');
  return kept.length - 1;
}
