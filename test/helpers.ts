// Shared by the tests: synthetic CIFAR-10 files, temp folders, the CLI as a user runs it.
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..');
export const BIN = path.join(ROOT, 'bin', 'resnet-exp');

export function tempDir(prefix = 'resnet-exp-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * Writes data_batch_1..5.bin and test_batch.bin with `records` records each, in the
 * official layout (label byte, then R, G, B planes). Each class gets a distinct colour
 * pattern plus noise, so a net can learn something in a few steps.
 */
export function writeSyntheticCifar(dir: string, records: number, seed = 1): void {
  fs.mkdirSync(dir, { recursive: true });
  let s = seed >>> 0;
  const rand = () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const files = [
    'data_batch_1.bin',
    'data_batch_2.bin',
    'data_batch_3.bin',
    'data_batch_4.bin',
    'data_batch_5.bin',
    'test_batch.bin',
  ];
  for (const f of files) {
    const buf = Buffer.alloc(records * 3073);
    for (let r = 0; r < records; r++) {
      const label = Math.floor(rand() * 10);
      const o = r * 3073;
      buf[o] = label;
      for (let c = 0; c < 3; c++) {
        for (let p = 0; p < 1024; p++) {
          const y = p >> 5;
          const x = p & 31;
          const pattern = ((label * 37 + c * 71) % 256) * (((x + y * label) & 7) < 4 ? 1 : 0.3);
          buf[o + 1 + c * 1024 + p] = Math.max(0, Math.min(255, Math.round(pattern + rand() * 40)));
        }
      }
    }
    fs.writeFileSync(path.join(dir, f), buf);
  }
  fs.writeFileSync(
    path.join(dir, 'batches.meta.txt'),
    'airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n',
  );
}

export function cli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [BIN, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
    encoding: 'utf8',
    timeout: 300_000,
  });
}

/** Starts the CLI and resolves when `until(stderr+stdout)` is true; returns the child. */
export function cliUntil(args: string[], until: (output: string) => boolean) {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const reached = new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      output += d.toString();
      if (until(output)) resolve();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', () => reject(new Error(`exited before the condition; output:\n${output}`)));
  });
  return { child, reached, exited, output: () => output };
}

export function readCsv(file: string): string[][] {
  return fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split(','));
}

/** Columns that are measured, not computed: they differ between any two runs. */
const TIMING = new Set(['elapsed_s', 'images_per_s']);

/** metrics.csv without its timing columns: the figures a repeat or a resume must reproduce. */
export function metricsWithoutTiming(file: string): string[][] {
  const rows = readCsv(file);
  const keep = rows[0].map((c, i) => (TIMING.has(c) ? -1 : i)).filter((i) => i >= 0);
  return rows.map((r) => keep.map((i) => r[i]));
}

/**
 * `run` of a tiny ResNet-8 on synthetic files (writeSyntheticCifar) on one thread: the
 * data-parallel tests' run, `--batch 16` so that 2 ranks get 8 images each.
 */
export function tinyDataParallelRun(o: {
  data: string;
  records: number;
  out: string;
  iterations: number;
  evalEvery: number;
}): string[] {
  return [
    'run',
    '--depth',
    '8',
    '--iterations',
    String(o.iterations),
    '--eval-every',
    String(o.evalEvery),
    '--batch',
    '16',
    '--threads',
    '1',
    '--data-dir',
    o.data,
    '--records-per-file',
    String(o.records),
    '--out',
    o.out,
  ];
}

/** The line-mark groups vega writes into the SVG: one per plotted series. */
export function lineSeries(svg: string): string[] {
  return svg.match(/<g class="mark-line role-mark[^"]*"[^>]*>\s*<path[^>]*>/g) ?? [];
}

export function pngSize(file: string): { width: number; height: number } {
  const buf = fs.readFileSync(file);
  assert.deepEqual([...buf.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.equal(buf.subarray(12, 16).toString('ascii'), 'IHDR');
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}
