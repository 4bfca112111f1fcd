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
 * kill, before their checkpoint) will be computed again, identically. For every per-row
 * file of a run whose first column is the iteration (metrics.csv, gradients.csv).
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

/**
 * Parses metrics.csv (for the run's own check and for the reports). Columns are looked up
 * by the titles above, so a file with reordered or extra columns still parses. Throws on a
 * missing column, a non-numeric cell or iterations that do not increase. An incomplete last
 * line (fewer cells, no final newline: a copy taken mid-write by a non-atomic tool) is
 * ignored; so is an empty file.
 *
 * Not a general CSV library on purpose: this file only ever holds what appendMetricsRow
 * writes (numbers and empty cells, never quotes or commas inside a cell), and anything
 * else is damage to report, which a lenient general parser would hide.
 */
export function parseMetricsCsv(text: string): Row[] {
  if (text.trim() === '') return [];
  const lines = text.split(/\r?\n/);
  const endsWithNewline = /\n$/.test(text);
  const header = (lines.shift() ?? '').split(',').map((h) => h.trim());
  const index = new Map(header.map((h, i) => [h, i]));
  for (const c of COLUMNS) {
    if (!index.has(c.title)) throw new Error(`metrics.csv: no "${c.title}" column`);
  }
  let lastLine = lines.length - 1;
  while (lastLine >= 0 && lines[lastLine].trim() === '') lastLine--;
  const rows: Row[] = [];
  for (let i = 0; i <= lastLine; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    const cells = line.split(',');
    if (i === lastLine && !endsWithNewline && cells.length < header.length) break;
    const lineNo = i + 2; // 1-based, after the header
    const row = {} as Record<keyof Row, number | null>;
    for (const c of COLUMNS) {
      const s = (cells[index.get(c.title)!] ?? '').trim();
      const v = Number(s);
      if (c.id === 'valError' && s === '') row[c.id] = null;
      else if (s === '' || !Number.isFinite(v))
        throw new Error(`metrics.csv line ${lineNo}: ${c.title} is "${s}", not a number`);
      else row[c.id] = v;
    }
    const prev = rows[rows.length - 1];
    if (prev && (row.iteration as number) <= prev.iteration) {
      throw new Error(`metrics.csv line ${lineNo}: iteration ${row.iteration} after ${prev.iteration}`);
    }
    rows.push(row as Row);
  }
  return rows;
}

/**
 * The strict reading a run does before it resumes: exactly our header, whole lines only.
 * Throws with the reason (the caller names the file and what to do).
 */
export function readMetricsStrict(file: string): Row[] {
  const text = fs.readFileSync(file, 'utf8');
  if (text === '') throw new Error('it is empty (no header)');
  if (!text.startsWith(CSV_HEADER)) throw new Error(`its first line is not the header "${CSV_HEADER.trim()}"`);
  if (!text.endsWith('\n')) throw new Error('its last line is incomplete');
  return parseMetricsCsv(text);
}
