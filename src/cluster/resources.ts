// Resources and stop times of one run. A task honours a stop signal between steps; the
// step that is running may end on an evaluation of the 10,000 test images, so the longest
// stop is one step plus one evaluation (the checkpoint, at most ~20 MB, takes well under a
// second). The figures are measurements on this project's machine (README, "Running on a
// cluster"; scripts/measure-stop-latency.ts); depths in between scale with the layer count.

/** Training images/s at batch 128, native engine, 2 cores (AMD EPYC, `npm run bench`). */
export const THROUGHPUT: Record<number, number> = { 20: 930, 56: 320, 110: 150 };

/**
 * A full evaluation (10,000 images, forward only, batches of 500) costs about this many
 * training steps of batch 128: measured 22.3, 23.7, 24.5 and 25.6 at depths 20, 32, 44, 56
 * (CPU time, the machine being shared), and 27.2 s against 1.0 s a step at depth 110 (quiet,
 * once inference kept only each block's output; 42-50 s before), so 26: a forward pass costs
 * ~1/3.5 of a step.
 */
export const EVAL_STEPS = 26;

/** The slowest step over the median one: the spread seen on a machine shared with others. */
const SLOW_STEP = 1.5;

/** Median seconds of one training step of batch 128 at this depth. */
export function stepSeconds(depth: number): number {
  const known = Object.keys(THROUGHPUT).map(Number);
  const nearest = known.reduce((a, b) => (Math.abs(b - depth) < Math.abs(a - depth) ? b : a));
  return (128 / THROUGHPUT[nearest]) * (depth / nearest);
}

/** Worst time from a stop signal to the checkpoint: a slow step ending on an evaluation. */
export function worstStopSeconds(depth: number): number {
  return stepSeconds(depth) * (SLOW_STEP + EVAL_STEPS);
}

/**
 * Seconds to allow between a stop signal and the task's exit: twice the worst stop (a
 * busier or slower node), rounded up to 10 s, at least 30 s (Slurm's default KillWait).
 */
export function stopSeconds(depth: number): number {
  return Math.max(30, Math.ceil((2 * worstStopSeconds(depth)) / 10) * 10);
}

/** --signal lead: Slurm checks signal times about once a minute, so it may come 60 s late. */
export function signalLeadSeconds(stop: number): number {
  return stop + 60;
}

/**
 * Memory to request, GiB: peak RSS of training measured by `npm run bench` (ResNet-20 703 MiB,
 * ResNet-56 1623, ResNet-110 3046: about 180 MiB + 26 MiB per layer), plus 25% and the
 * data set (180 MB), rounded up.
 */
export function memoryGiB(depth: number): number {
  return Math.ceil((1.25 * (180 + 26 * depth) + 180) / 1024);
}
