// Progress through one evaluation (the test split, then the validation split if any), for
// the reporter's "evaluating" state: an evaluation of the 10000 test images takes long
// enough (about 20 s for ResNet-56 on 2 cores) that a frozen bar looks like a hang.
import type { RunReporter } from './run';

/**
 * Returns a wrapper for the evaluation's batch iterables that reports the images done so
 * far, over all of them, to `report.evaluating`.
 */
export function evalProgress(
  report: RunReporter,
  total: number,
): <T extends { count: number }>(batches: Iterable<T>) => Iterable<T> {
  let done = 0;
  report.evaluating?.(0, total);
  return function* <T extends { count: number }>(batches: Iterable<T>): Iterable<T> {
    for (const b of batches) {
      yield b;
      done += b.count;
      report.evaluating?.(done, total);
    }
  };
}
