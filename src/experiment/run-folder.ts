// One run folder, one owner: this module. It knows the folder's name, its files, the run's
// identity, and checks the folder whole before any training step, so that a damaged,
// edited or foreign file is one line naming it (exit 1, nothing deleted), not wrong
// figures or a run that trains and then fails for ever.
//
//   config.json     every setting (the identity among them), versions, engine, data
//   metrics.csv     one row per evaluation (metrics-csv.ts)
//   checkpoint.bin  the state after the last row (or at an interrupt), with the identity
//   summary.json    written when the run is finished
//   failed.json     the last failure (for `grid --list`), removed when training starts again
//   gradients.csv   per conv layer gradient norms at each row (src/analysis/gradients-csv.ts)
//   run.lock        the writer (lock.ts)
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GRADIENTS_FILE, startGradients } from '../analysis/gradients-csv';
import { netName } from '../model/resnet';
import { defaultMilestones } from '../train/schedule';
import type { LoopState, Row } from '../train/trainer';
import { CheckpointError, peekCheckpointMeta, readCheckpoint, type TensorEntry } from './checkpoint';
import { OutputError, outputError, TEMP_MARK, writeFileAtomic } from './files';
import { acquireLock, holdReason, LOCK_FILE, readLock, type RunLock } from './lock';
import { createMetrics, parseMetricsCsv, readMetricsStrict, truncateMetrics } from './metrics-csv';
import { PAPER_RECIPE, SettingsError, type Recipe, type RunSettings } from './settings';

/**
 * The files a run folder owns (--fresh removes them). Extension point: a new per-run file
 * (e.g. gradients.csv) is added here and, if it must agree with the checkpoint, to check().
 */
export const RUN_FILES = {
  config: 'config.json',
  metrics: 'metrics.csv',
  checkpoint: 'checkpoint.bin',
  summary: 'summary.json',
  failed: 'failed.json',
  gradients: GRADIENTS_FILE,
  // Analyses of the trained weights (src/analysis/): stale once the run starts over.
  responses: 'responses.csv',
  lesion: 'lesion.csv',
} as const;
export type RunFile = keyof typeof RUN_FILES;

/** A file of the folder is damaged, missing or from another run. */
export class FolderError extends Error {}

export interface Summary {
  finished: true;
  iterations: number;
  final_train_error: number;
  final_test_error: number;
  best_test_error: number;
  final_val_error: number | null;
  wall_s: number;
}

// ---- name -------------------------------------------------------------------------------

/** `<plain|resnet>-<depth>[-B]-s<seed>[-bf16]`: the name without the schedule. */
export function runName(s: Pick<RunSettings, 'net' | 'seed' | 'precision'>): string {
  return `${netName(s.net)}-s${s.seed}${s.precision === 'bf16' ? '-bf16' : ''}`;
}

/**
 * The schedule in the name when it is not the paper's (`-it400`, `-it400-m100-300` for
 * other milestones), so runs of different schedules never share a folder.
 */
export function scheduleSuffix(recipe: Pick<Recipe, 'iterations' | 'milestones'>): string {
  let out = '';
  if (recipe.iterations !== PAPER_RECIPE.iterations) out += `-it${recipe.iterations}`;
  if (recipe.milestones.join(',') !== defaultMilestones(recipe.iterations).join(','))
    out += `-m${recipe.milestones.join('-')}`;
  return out;
}

/**
 * Folder of a run: <out>/<run name><schedule suffix>. A folder made before the suffix
 * existed (<out>/<run name>) is kept when it holds this very run, so it still resumes.
 */
export function runDir(
  s: Pick<RunSettings, 'net' | 'seed' | 'out' | 'precision' | 'recipe' | 'recordsPerFile'>,
): string {
  const dir = path.join(s.out, runName(s) + scheduleSuffix(s.recipe));
  const legacy = path.join(s.out, runName(s));
  if (dir !== legacy && !fs.existsSync(dir)) {
    const cfg = readJsonIfValid(path.join(legacy, RUN_FILES.config));
    if (cfg !== undefined && identityDifference(identityOfConfig(cfg), identityOf(s)) === null) return legacy;
  }
  return dir;
}

// ---- identity ---------------------------------------------------------------------------

/**
 * What a resumed run must share with the run it continues. Built from one object so that a
 * new part (world size, a recipe field) is one line here and in identityOfConfig.
 */
export function identityOf(
  s: Pick<RunSettings, 'net' | 'seed' | 'recipe' | 'precision' | 'recordsPerFile' | 'bnShards'> & {
    worldSize?: number;
  },
) {
  return {
    net: s.net,
    seed: s.seed,
    recipe: s.recipe,
    precision: s.precision,
    recordsPerFile: s.recordsPerFile,
    // Data-parallel processes and BN sub-batches change the function computed.
    worldSize: s.worldSize ?? 1,
    bnShards: s.bnShards ?? 1,
  };
}
export type Identity = ReturnType<typeof identityOf>;

/** The identity a config.json records (runs before --precision were fp32). */
export function identityOfConfig(cfg: unknown): Record<string, unknown> {
  const c = (cfg ?? {}) as Record<string, unknown>;
  const data = (c.data ?? {}) as Record<string, unknown>;
  return {
    net: c.net,
    seed: c.seed,
    recipe: c.recipe,
    precision: c.precision ?? 'fp32',
    recordsPerFile: data.recordsPerFile,
    // Runs before data-parallel training were one process with one BN shard.
    worldSize: (c.world as { size?: unknown } | undefined)?.size ?? 1,
    bnShards: c.bn_shards ?? 1,
  };
}

function flatten(v: unknown, prefix: string, out: Map<string, string>): Map<string, string> {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else if (v !== undefined) out.set(prefix, JSON.stringify(v));
  return out;
}

/** null when equal, else the first difference: `recipe.lr 0.1 (folder) vs 0.05 (now)`. */
export function identityDifference(folder: unknown, now: unknown): string | null {
  const a = flatten(folder, '', new Map());
  const b = flatten(now, '', new Map());
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    if (a.get(key) !== b.get(key)) return `${key} ${a.get(key) ?? 'absent'} there, ${b.get(key) ?? 'absent'} now`;
  }
  return null;
}

/** Stable text of an identity, for grouping runs (compare, plot). */
export function identityKey(identity: unknown): string {
  return JSON.stringify([...flatten(identity, '', new Map())].sort());
}

// ---- reading helpers --------------------------------------------------------------------

function readJsonIfValid(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

function readJson(file: string, todo: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
  } catch (e) {
    const why =
      e instanceof SyntaxError
        ? `is not valid JSON (${e.message.split('\n')[0]})`
        : `is unreadable (${(e as Error).message})`;
    throw new FolderError(`${file} ${why}; ${todo}`);
  }
}

function isSummary(v: unknown): v is Summary {
  const s = v as Summary;
  return (
    typeof s === 'object' &&
    s !== null &&
    s.finished === true &&
    Number.isInteger(s.iterations) &&
    typeof s.final_test_error === 'number'
  );
}

/** Evaluation iterations of a run up to `upTo`: every evalEvery, and the last iteration. */
function evalPoints(recipe: Recipe, upTo: number): number[] {
  const out: number[] = [];
  for (let i = recipe.evalEvery; i <= Math.min(upTo, recipe.iterations); i += recipe.evalEvery) out.push(i);
  if (upTo >= recipe.iterations && out[out.length - 1] !== recipe.iterations) out.push(recipe.iterations);
  return out;
}

// ---- the folder -------------------------------------------------------------------------

export type Plan =
  | { kind: 'new' }
  | { kind: 'finished'; summary: Summary }
  | { kind: 'resume'; state: LoopState; tensors: Map<string, TensorEntry> };

export interface FolderStatus {
  state: 'not-started' | 'in-progress' | 'finished' | 'failed';
  iteration: number;
  plannedIterations?: number;
  error?: string;
  lockedBy?: { host: string; pid: number };
}

/** A run folder, locked by this process. Open with RunFolder.open, close in a finally. */
export class RunFolder {
  private constructor(
    readonly dir: string,
    private readonly lock: RunLock,
    /** The first folder this process created (mkdir -p), to remove it if the run never starts. */
    private readonly created: string | undefined,
  ) {}

  static async open(dir: string, o: { wait?: boolean; log?: (line: string) => void } = {}): Promise<RunFolder> {
    const created = makeDirs(dir);
    let lock: RunLock;
    try {
      lock = await acquireLock(dir, { wait: o.wait, log: o.log });
    } catch (e) {
      removeIfEmpty(dir, created);
      throw outputError(dir, e);
    }
    const folder = new RunFolder(dir, lock, created);
    folder.removeTempFiles();
    return folder;
  }

  path(file: RunFile): string {
    return path.join(this.dir, RUN_FILES[file]);
  }

  has(file: RunFile): boolean {
    return fs.existsSync(this.path(file));
  }

  /** Keeps the lock fresh; cheap, call it between steps. Throws if the lock was lost. */
  heartbeat(): void {
    this.lock.heartbeat();
  }

  /** Before each write of rows/checkpoint: the folder must still be ours. */
  verifyOwner(): void {
    this.lock.verify();
  }

  /** Temp files of writes a kill interrupted: a leftover could hold a full disk full. */
  private removeTempFiles(): void {
    for (const name of fs.readdirSync(this.dir)) {
      // run.lock.* temp files and takeover claims of other processes may be in use now: lock.ts's.
      if (name.startsWith(LOCK_FILE)) continue;
      if (name.includes(TEMP_MARK)) fs.rmSync(path.join(this.dir, name), { force: true });
    }
  }

  /** --fresh: removes the run's files (not the lock). */
  clear(): void {
    for (const f of Object.keys(RUN_FILES) as RunFile[]) fs.rmSync(this.path(f), { force: true });
  }

  /**
   * The whole-folder check, before any training step: what to do (start, resume, nothing),
   * or a FolderError/SettingsError naming the file, what is wrong and what to do.
   */
  check(identity: Identity): Plan {
    const recipe = identity.recipe;
    const fresh = 'or pass --fresh to start the run over (this deletes it)';
    const config = this.has('config') ? readJson(this.path('config'), `fix or restore it, ${fresh}`) : undefined;
    const summary = this.has('summary')
      ? readJson(this.path('summary'), `delete it to let the run finish again from its checkpoint, ${fresh}`)
      : undefined;
    const hasCheckpoint = this.has('checkpoint');
    const started = hasCheckpoint || summary !== undefined;

    if (started && config === undefined) {
      const beside = hasCheckpoint ? RUN_FILES.checkpoint : RUN_FILES.summary;
      throw new FolderError(
        `${this.path('config')} is missing beside ${beside}, so the run's settings cannot be checked; restore it, ${fresh}`,
      );
    }
    if (started) {
      const diff = identityDifference(identityOfConfig(config), identity);
      if (diff !== null) {
        throw new SettingsError(
          `${this.dir} was started with other settings (${diff}; see its config.json); use the same flags to resume, --fresh to restart, or another --out`,
        );
      }
    }
    if (summary !== undefined) {
      if (!isSummary(summary))
        throw new FolderError(
          `${this.path('summary')} is not a run summary (needs "finished": true, iterations, final_test_error); delete it, ${fresh}`,
        );
      return { kind: 'finished', summary };
    }

    if (!hasCheckpoint) {
      if (!this.has('metrics')) return { kind: 'new' };
      // A kill between the first row and the first checkpoint leaves one row: start over.
      const rows = this.metricsRows(fresh);
      if (rows.length > 1) {
        throw new FolderError(
          `${this.path('checkpoint')} is missing but metrics.csv has ${rows.length} rows; restore it, ${fresh}`,
        );
      }
      return { kind: 'new' };
    }

    const { meta, tensors } = readCheckpoint(this.path('checkpoint'));
    const m = meta as { state?: LoopState; identity?: unknown };
    if (!m.state || !Number.isInteger(m.state.iteration))
      throw new CheckpointError(`${this.path('checkpoint')} has no training state; ${fresh}`);
    if (m.identity !== undefined) {
      const diff = identityDifference(m.identity, identity);
      if (diff !== null)
        throw new FolderError(
          `${this.path('checkpoint')} belongs to another run (${diff}); restore this run's checkpoint, ${fresh}`,
        );
    }
    const iteration = m.state.iteration;
    if (!this.has('metrics')) {
      throw new FolderError(
        `${this.path('metrics')} is missing beside checkpoint.bin (iteration ${iteration}); restore it, ${fresh}`,
      );
    }
    const rows = this.metricsRows(fresh);
    const expected = evalPoints(recipe, iteration);
    const kept = rows.filter((r) => r.iteration <= iteration).map((r) => r.iteration);
    // At most one row after the checkpoint: written just before a kill, computed again.
    const after = rows.filter((r) => r.iteration > iteration).map((r) => r.iteration);
    const next = evalPoints(recipe, recipe.iterations).find((i) => i > iteration);
    if (
      kept.join(',') !== expected.join(',') ||
      after.length > 1 ||
      (after.length === 1 && after[0] !== next) ||
      iteration > recipe.iterations
    ) {
      throw new FolderError(
        `${this.path('metrics')} does not match checkpoint.bin at iteration ${iteration} ` +
          `(rows at ${kept.concat(after).join(',') || 'none'}, expected ${expected.join(',') || 'none'}); restore both, ${fresh}`,
      );
    }
    return { kind: 'resume', state: m.state, tensors };
  }

  private metricsRows(fresh: string): Row[] {
    try {
      return readMetricsStrict(this.path('metrics'));
    } catch (e) {
      throw new FolderError(`${this.path('metrics')} is damaged: ${(e as Error).message}; restore it, ${fresh}`);
    }
  }

  /** Training starts (or resumes) at `iteration`: metrics.csv holds exactly the rows before it. */
  startTraining(config: unknown, iteration: number): void {
    fs.rmSync(this.path('failed'), { force: true });
    writeFileAtomic(this.path('config'), JSON.stringify(config, null, 2) + '\n');
    if (iteration === 0 || !this.has('metrics')) createMetrics(this.path('metrics'));
    else truncateMetrics(this.path('metrics'), iteration);
    startGradients(this.path('gradients'), iteration); // the same rule as metrics.csv
  }

  writeSummary(summary: Summary): void {
    writeFileAtomic(this.path('summary'), JSON.stringify(summary, null, 2) + '\n');
  }

  /** Records a failure for `grid --list`; never hides the failure itself. */
  recordFailure(error: unknown, iteration: number): void {
    if (this.isEmpty()) return; // a run that never started leaves no folder at all
    try {
      const line = String((error as Error)?.message ?? error).split('\n')[0];
      writeFileAtomic(
        this.path('failed'),
        JSON.stringify({ error: line, iteration, time: new Date().toISOString() }, null, 2) + '\n',
      );
    } catch {
      // A full or read-only disk: the error itself is still reported by the caller.
    }
  }

  private isEmpty(): boolean {
    return fs.readdirSync(this.dir).every((n) => n.startsWith(LOCK_FILE));
  }

  /** Releases the lock; removes the folder (and parents made for it) if nothing was written. */
  close(): void {
    this.lock.release();
    removeIfEmpty(this.dir, this.created);
  }
}

/**
 * mkdir -p that reports the real reason (EROFS, EACCES) and returns the first folder it
 * made. Not fs.mkdirSync({recursive}): it says ENOENT on some read-only trees and loops
 * for ever under /proc (Node 20).
 */
function makeDirs(dir: string): string | undefined {
  const missing: string[] = [];
  let d = path.resolve(dir);
  while (!fs.existsSync(d)) {
    missing.unshift(d);
    const parent = path.dirname(d);
    if (parent === d) break;
    d = parent;
  }
  try {
    if (!fs.statSync(d).isDirectory()) throw Object.assign(new Error('not a folder'), { code: 'ENOTDIR' });
    for (const m of missing) fs.mkdirSync(m);
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (e) {
    removeIfEmpty(dir, missing[0]);
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new OutputError(`cannot write to ${dir}: ${code}; choose another --out`);
  }
  return missing[0];
}

function removeIfEmpty(dir: string, created: string | undefined): void {
  if (created === undefined) return;
  let d = path.resolve(dir);
  for (;;) {
    try {
      fs.rmdirSync(d); // only succeeds when empty
    } catch {
      return;
    }
    if (d === path.resolve(created)) return;
    d = path.dirname(d);
  }
}

// ---- status without loading a model (grid --list) -----------------------------------------

/** A folder's state from its files alone; cheap enough to call for every run of a grid. */
export function runStatus(dir: string): FolderStatus {
  const file = (f: RunFile) => path.join(dir, RUN_FILES[f]);
  const config = readJsonIfValid(file('config')) as { recipe?: { iterations?: unknown } } | undefined;
  const planned = config?.recipe?.iterations;
  const out: FolderStatus = { state: 'not-started', iteration: 0 };
  if (typeof planned === 'number') out.plannedIterations = planned;
  const lock = readLock(path.join(dir, LOCK_FILE));
  if (lock && holdReason(lock) !== null) out.lockedBy = { host: lock.host, pid: lock.pid };

  const summary = readJsonIfValid(file('summary'));
  if (isSummary(summary)) return { ...out, state: 'finished', iteration: summary.iterations };
  if (fs.existsSync(file('checkpoint'))) {
    try {
      const meta = peekCheckpointMeta(file('checkpoint')) as { state?: { iteration?: unknown } };
      if (typeof meta.state?.iteration === 'number') out.iteration = meta.state.iteration;
    } catch {
      // Damaged: the run's own check names it; the status stays what the other files say.
    }
  } else if (fs.existsSync(file('metrics'))) {
    // Rows before the first checkpoint (or a checkpoint lost): the last row says how far.
    try {
      out.iteration = parseMetricsCsv(fs.readFileSync(file('metrics'), 'utf8')).at(-1)?.iteration ?? 0;
    } catch {
      // Damaged: as above.
    }
  }
  const failed = readJsonIfValid(file('failed')) as { error?: unknown; iteration?: unknown } | undefined;
  if (failed !== undefined) {
    return {
      ...out,
      state: 'failed',
      error: String(failed.error),
      iteration: typeof failed.iteration === 'number' ? failed.iteration : out.iteration,
    };
  }
  const started = fs.existsSync(file('checkpoint')) || fs.existsSync(file('metrics')) || config !== undefined;
  return started ? { ...out, state: 'in-progress' } : out;
}
