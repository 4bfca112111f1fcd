// The settings of one run, from command-line flags or an experiment file, with the
// paper's recipe as the defaults (PROTOCOL.md, "Training").
import * as os from 'node:os';
import type { EngineChoice, Precision } from '../engine/engine';
import { blocksPerStage, type NetConfig, type Shortcut } from '../model/resnet';
import { defaultMilestones } from '../train/schedule';

export class SettingsError extends Error {}

/** What defines the experiment: a resumed run must have the same. */
export interface Recipe {
  iterations: number;
  milestones: number[];
  lr: number;
  batch: number;
  momentum: number;
  weightDecay: number;
  warmup: 'auto' | 'on' | 'off';
  /** Training images held out (the last ones) as a validation set; 0 = none. */
  val: number;
  evalEvery: number;
  /**
   * --clip-grad-norm, the largest global gradient norm (not the paper's recipe).
   * Absent when off, so that the identity of runs made without it is unchanged.
   */
  clipGradNorm?: number;
}

export const PAPER_RECIPE: Recipe = {
  iterations: 64000,
  milestones: [32000, 48000],
  lr: 0.1,
  batch: 128,
  momentum: 0.9,
  weightDecay: 1e-4,
  warmup: 'auto',
  val: 0,
  evalEvery: 500,
};

export interface RunSettings {
  net: NetConfig;
  seed: number;
  recipe: Recipe;
  dataDir: string;
  /** Records per data file: 10,000 in CIFAR-10; smaller only for synthetic test data. */
  recordsPerFile: number;
  out: string;
  engine: EngineChoice;
  threads?: number;
  /** Convolution arithmetic; part of the run's identity (bf16 runs get their own folder). */
  precision: Precision;
  fresh: boolean;
  /**
   * A held run.lock is waited for (a scheduler task, e.g. a replacement pod beside a
   * terminating one) instead of being an error (a plain `run`).
   */
  waitForLock?: boolean;
  // Part of the run's identity, like the data-parallel world size.
  /** Training BN statistics over this many equal sub-batches of each (rank's) batch. */
  bnShards?: number;
}

// The folder's name belongs to the run folder's owner; re-exported for existing callers.
export { runDir, runName } from './run-folder';

/** Warm-up as the paper: only the 110-layer (and deeper) nets need it. */
export function warmupEnabled(recipe: Recipe, depth: number): boolean {
  return recipe.warmup === 'on' || (recipe.warmup === 'auto' && depth >= 110);
}

export function integer(name: string, value: string | number, min: number): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new SettingsError(`${name} must be a whole number >= ${min}, got '${value}'`);
  return n;
}

export function positive(name: string, value: string | number, allowZero = false): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
    throw new SettingsError(`${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got '${value}'`);
  }
  return n;
}

export function parseMilestones(value: string): number[] {
  const list = value.split(',').map((v) => integer('--milestones', v.trim(), 1));
  for (let i = 1; i < list.length; i++) {
    if (list[i] <= list[i - 1]) throw new SettingsError(`--milestones must increase, got '${value}'`);
  }
  return list;
}

export function parseShortcut(value: string): Shortcut {
  const v = value.toUpperCase();
  if (v !== 'A' && v !== 'B') throw new SettingsError(`--shortcut must be A or B, got '${value}'`);
  return v;
}

export function parseWarmup(value: string): Recipe['warmup'] {
  if (value !== 'auto' && value !== 'on' && value !== 'off') {
    throw new SettingsError(`--warmup must be auto, on or off, got '${value}'`);
  }
  return value;
}

/**
 * Completes a recipe from partial settings: milestones scale with --iterations when only
 * that is given (50% and 75%, the paper's 32k/48k of 64k), and everything is checked.
 */
export function completeRecipe(partial: Partial<Recipe>): Recipe {
  const r: Recipe = { ...PAPER_RECIPE, ...partial };
  if (partial.iterations !== undefined && partial.milestones === undefined)
    r.milestones = defaultMilestones(r.iterations);
  integer('--iterations', r.iterations, 1);
  integer('--batch', r.batch, 1);
  integer('--eval-every', r.evalEvery, 1);
  integer('--val', r.val, 0);
  positive('--lr', r.lr);
  positive('--momentum', r.momentum, true);
  positive('--weight-decay', r.weightDecay, true);
  if (r.clipGradNorm !== undefined) positive('--clip-grad-norm', r.clipGradNorm);
  return r;
}

/**
 * The deepest net accepted: the paper's deepest is 1202 layers (about 19.4M parameters and
 * several GB of activations at batch 128); far deeper ones only end in an out-of-memory crash.
 */
export const MAX_DEPTH = 2000;

export function checkNet(net: NetConfig): NetConfig {
  if (net.depth > MAX_DEPTH) {
    throw new SettingsError(
      `depth ${net.depth} is above the limit of ${MAX_DEPTH} (the paper's deepest net has 1202 layers)`,
    );
  }
  blocksPerStage(net.depth);
  return net;
}

/** --threads: at most the cores of this machine (more only slows every thread down). */
export function checkThreads(value: string | number): number {
  const n = integer('--threads', value, 1);
  const cores = os.availableParallelism();
  if (n > cores)
    throw new SettingsError(`--threads ${n} is more than the ${cores} cores of this machine; use at most ${cores}`);
  return n;
}
