// Resources and stop times of one run, from measurements on this project's machine
// (README, "Running on a cluster"; scripts/measure-stop-latency.ts). A task honours a stop
// signal between steps; the step that is running may end on an evaluation of the 10,000
// test images, so the longest stop is one step plus one evaluation (the checkpoint itself,
// at most ~20 MB, is written in well under a second).

/** Measured seconds at batch 128, native engine, 2 threads: the slowest of a few steps, one evaluation. */
export const MEASURED: Record<number, { step: number; evaluation: number }> = {
  20: { step: 0.5, evaluation: 5 },
  56: { step: 1.2, evaluation: 12 },
  110: { step: 2.3, evaluation: 24 },
};

/** Worst time from stop signal to checkpoint for a net of this depth, scaled by depth (cost ~ layers). */
function worstStop(depth: number): number {
  const known = Object.keys(MEASURED).map(Number);
  const nearest = known.reduce((a, b) => (Math.abs(b - depth) < Math.abs(a - depth) ? b : a));
  const m = MEASURED[nearest];
  return ((m.step + m.evaluation) * depth) / nearest;
}

/**
 * Seconds to allow between a stop signal and the task's exit: twice the worst measured
 * stop (a shared or slower node swings by that much), rounded up to 10 s, at least 30 s.
 * Runs that never evaluate within the window still get it: the margin is cheap.
 */
export function stopSeconds(depth: number): number {
  return Math.max(30, Math.ceil((2 * worstStop(depth)) / 10) * 10);
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
