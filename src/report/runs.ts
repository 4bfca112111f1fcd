// Reads the run directories the trainer writes, so `compare` and `plot` work on
// plain records instead of files. A run may still be in progress (no summary.json,
// a metrics.csv that is growing), and a results tree may hold debris; neither
// should stop a report, so a bad run becomes one warning line and is skipped.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseMetricsCsv } from '../experiment/metrics-csv';
import { identityKey, identityOfConfig } from '../experiment/run-folder';
import { PAPER_RECIPE } from '../experiment/settings';
import type { Row } from '../train/trainer';

export { parseMetricsCsv };

/** One row of metrics.csv, as the training loop makes it. Errors are in percent. */
export type MetricsRow = Row;

export interface RunRecord {
  /** Absolute path of the run directory. */
  dir: string;
  name: string;
  variant: 'plain' | 'resnet';
  depth: number;
  shortcut: 'A' | 'B';
  seed: number;
  params: number;
  /** recipe.iterations: the length of the schedule the run was started with. */
  plannedIterations: number;
  /** recipe.milestones: the iterations where the learning rate drops (none if absent). */
  milestones: number[];
  /**
   * Everything of the run's identity but the net and the seed (recipe, precision, data):
   * runs are seeds of one configuration only when this is equal (compare, plot).
   */
  recipeKey: string;
  /** What of the recipe differs from the paper's, besides the schedule: e.g. "lr=0.05 batch=64". */
  recipeTag: string;
  /** summary.json exists and says finished: true. */
  finished: boolean;
  rows: MetricsRow[];
}

/**
 * One run per seed of each configuration (same net and recipeKey): a run folder copied to
 * two places must not count twice. Keeps the run with the most rows; says which it dropped.
 */
export function dedupeSeeds(runs: RunRecord[], note: (msg: string) => void): RunRecord[] {
  const bySeed = new Map<string, RunRecord>();
  for (const r of runs) {
    const key = `${r.variant}|${r.depth}|${r.shortcut}|${r.recipeKey}|${r.seed}`;
    const other = bySeed.get(key);
    if (other === undefined) bySeed.set(key, r);
    else {
      const [keep, drop] = r.rows.length > other.rows.length ? [r, other] : [other, r];
      bySeed.set(key, keep);
      note(`${keep.name}: seed ${r.seed} is in both ${keep.dir} and ${drop.dir}; counted once, from the first`);
    }
  }
  return runs.filter((r) => [...bySeed.values()].includes(r));
}

/**
 * Finds every run directory under resultsDir, at any depth, sorted by
 * (variant, depth, shortcut, plannedIterations, seed). A directory is a run when it
 * holds both config.json and metrics.csv; the scan does not descend into runs.
 */
export function loadRuns(
  resultsDir: string,
  warn: (msg: string) => void = (msg) => process.stderr.write(`warning: ${msg}\n`),
): RunRecord[] {
  const root = path.resolve(resultsDir);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) {
    throw new Error(`no results in ${resultsDir}: run \`resnet-exp run ...\` first`);
  }
  const runs: RunRecord[] = [];
  const seen = new Set<string>(); // real paths, so a symlink loop cannot recurse forever
  const visit = (dir: string): void => {
    let real: string;
    let entries: fs.Dirent[];
    try {
      real = fs.realpathSync(dir);
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      warn(`${dir}: cannot read (${(e as Error).message})`);
      return;
    }
    if (seen.has(real)) return;
    seen.add(real);
    const files = new Set(entries.filter((e) => e.isFile()).map((e) => e.name));
    const hasConfig = files.has('config.json');
    const hasMetrics = files.has('metrics.csv');
    if (hasConfig && hasMetrics) {
      try {
        runs.push(readRun(dir, warn));
      } catch (e) {
        warn(`${path.relative(process.cwd(), dir) || dir}: skipped, ${(e as Error).message}`);
      }
      return;
    }
    // A run that has just started may have config.json and no metrics yet: say so,
    // since the user may be wondering where it went.
    if (hasConfig !== hasMetrics) {
      const missing = hasConfig ? 'metrics.csv' : 'config.json';
      warn(`${path.relative(process.cwd(), dir) || dir}: skipped, no ${missing}`);
    }
    for (const e of entries) {
      if (e.name.startsWith('.') || e.name === 'node_modules') continue;
      const child = path.join(dir, e.name);
      if (e.isDirectory() || (e.isSymbolicLink() && isDir(child))) visit(child);
    }
  };
  visit(root);
  return runs.sort(
    (a, b) =>
      a.variant.localeCompare(b.variant) ||
      a.depth - b.depth ||
      a.shortcut.localeCompare(b.shortcut) ||
      a.plannedIterations - b.plannedIterations ||
      a.seed - b.seed,
  );
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Reads one run directory; throws with a short reason if it is malformed. */
function readRun(dir: string, warn: (msg: string) => void): RunRecord {
  let config: unknown;
  try {
    config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  } catch (e) {
    throw new Error(`config.json is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(config)) throw new Error('config.json is not an object');
  const recipe = isObject(config.recipe) ? config.recipe : {};

  const variant = config.variant;
  if (variant !== 'plain' && variant !== 'resnet') {
    throw new Error(`config.json: variant ${JSON.stringify(variant)} is not plain|resnet`);
  }
  // Plain nets have no shortcut; a trainer may leave the field out for them.
  const shortcut = config.shortcut ?? 'A';
  if (shortcut !== 'A' && shortcut !== 'B') {
    throw new Error(`config.json: shortcut ${JSON.stringify(shortcut)} is not A|B`);
  }
  // The paper's numbers are fp32; a bf16 run is a speed option, kept out of the tables so
  // that it never counts as another seed of the fp32 net. Its metrics.csv is there to read.
  if (config.precision !== undefined && config.precision !== 'fp32') {
    throw new Error(`a --precision ${String(config.precision)} run; compare and plot read fp32 runs only`);
  }
  const depth = positiveInt(config.depth, 'depth');
  const seed = int(config.seed, 'seed');
  const params = positiveInt(config.params, 'params');
  const plannedIterations = positiveInt(recipe.iterations, 'recipe.iterations');
  const milestones = Array.isArray(recipe.milestones)
    ? (recipe.milestones as unknown[]).filter((m): m is number => typeof m === 'number' && m > 0)
    : [];
  const name = typeof config.name === 'string' ? config.name : path.basename(dir);
  const recipeKey = identityKey({ ...identityOfConfig(config), net: undefined, seed: undefined });
  const recipeTag = (['lr', 'batch', 'momentum', 'weightDecay', 'warmup', 'val'] as const)
    .filter((k) => recipe[k] !== undefined && recipe[k] !== PAPER_RECIPE[k])
    .map((k) => `${k}=${String(recipe[k])}`)
    .join(' ');

  const rows = parseMetricsCsv(fs.readFileSync(path.join(dir, 'metrics.csv'), 'utf8'));

  let finished = false;
  const summaryFile = path.join(dir, 'summary.json');
  if (fs.existsSync(summaryFile)) {
    try {
      const summary: unknown = JSON.parse(fs.readFileSync(summaryFile, 'utf8'));
      finished = isObject(summary) && summary.finished === true;
    } catch {
      // The metrics are still good; only the finished flag is in doubt.
      warn(`${name}: summary.json is not valid JSON, treating the run as unfinished`);
    }
  }
  return {
    dir: path.resolve(dir),
    name,
    variant,
    depth,
    shortcut,
    seed,
    params,
    plannedIterations,
    milestones,
    recipeKey,
    recipeTag,
    finished,
    rows,
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function int(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new Error(`config.json: ${field} ${JSON.stringify(v)} is not an integer`);
  }
  return v;
}

function positiveInt(v: unknown, field: string): number {
  const n = int(v, field);
  if (n <= 0) throw new Error(`config.json: ${field} ${n} is not positive`);
  return n;
}
