// The analyses' CSV files (responses.csv, lesion.csv, gradients.csv): written with
// csv-writer, atomically; read back by header name. Their cells are numbers and names we
// made (no commas, quotes or newlines), so reading is a split, not a general CSV parser.
import { createObjectCsvStringifier } from 'csv-writer';
import * as fs from 'node:fs';
import { writeFileAtomic } from '../experiment/files';

export type CsvRecord = Record<string, string | number>;

function stringifier(columns: string[]) {
  return createObjectCsvStringifier({ header: columns.map((c) => ({ id: c, title: c })) });
}

/** The header line, with its newline. */
export function csvHeader(columns: string[]): string {
  return stringifier(columns).getHeaderString() as string;
}

/** The records' lines, each with its newline ('' for none). */
export function csvRecords(columns: string[], rows: CsvRecord[]): string {
  return rows.length === 0 ? '' : stringifier(columns).stringifyRecords(rows);
}

export function csvText(columns: string[], rows: CsvRecord[]): string {
  return csvHeader(columns) + csvRecords(columns, rows);
}

export function writeCsv(file: string, columns: string[], rows: CsvRecord[]): void {
  writeFileAtomic(file, csvText(columns, rows));
}

/** Rows as header -> cell; an incomplete last line (no final newline) is left out. */
export function parseCsv(text: string): Record<string, string>[] {
  // The last piece is '' after a final newline, or a line still being written: dropped.
  const complete = text.split('\n').slice(0, -1);
  const header = (complete.shift() ?? '').split(',');
  return complete
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const cells = l.split(',');
      return Object.fromEntries(header.map((h, i) => [h, cells[i] ?? '']));
    });
}

export function readCsv(file: string): Record<string, string>[] {
  return parseCsv(fs.readFileSync(file, 'utf8'));
}
