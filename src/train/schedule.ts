// The paper's learning-rate schedule: 0.1, divided by 10 at 32k and 48k iterations,
// and for very deep nets a warm-up at 0.01 until training has "started".

export interface ScheduleConfig {
  lr: number;
  milestones: number[];
  /** Warm up at lr/10 until the running training error is below WARMUP_ERROR. */
  warmup: boolean;
}

/** Paper: "we use 0.01 to warm up the training until the training error is below 80%". */
export const WARMUP_ERROR = 80;
/** How many recent mini-batches make up the "running" training error for the warm-up. */
export const WARMUP_WINDOW = 20;

/** Milestones at 50% and 75% of the run, the paper's 32k/48k of 64k. */
export function defaultMilestones(iterations: number): number[] {
  return [Math.round(iterations * 0.5), Math.round(iterations * 0.75)];
}

/** Learning rate for the step with 0-based index `iteration`. */
export function learningRate(cfg: ScheduleConfig, iteration: number, warmingUp: boolean): number {
  const drops = cfg.milestones.filter((m) => iteration >= m).length;
  // Divisions, not products with 0.1: 0.1 / 10 prints as 0.01, 0.1 * 0.1 as 0.010000000000000002.
  const scheduled = cfg.lr / 10 ** drops;
  return warmingUp ? Math.min(scheduled, cfg.lr / 10) : scheduled;
}

/**
 * Tracks the running training error during warm-up. The state is plain data so that a
 * resumed run continues exactly where it stopped.
 */
export interface WarmupState {
  active: boolean;
  recentErrors: number[];
}

export function initialWarmup(cfg: ScheduleConfig): WarmupState {
  return { active: cfg.warmup, recentErrors: [] };
}

/** Records one mini-batch's error (%); returns true when this ends the warm-up. */
export function recordWarmup(state: WarmupState, batchError: number): boolean {
  if (!state.active) return false;
  state.recentErrors.push(batchError);
  if (state.recentErrors.length > WARMUP_WINDOW) state.recentErrors.shift();
  const mean = state.recentErrors.reduce((s, e) => s + e, 0) / state.recentErrors.length;
  if (state.recentErrors.length === WARMUP_WINDOW && mean < WARMUP_ERROR) {
    state.active = false;
    state.recentErrors = [];
    return true;
  }
  return false;
}
