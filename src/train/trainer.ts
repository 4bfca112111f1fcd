// The training loop: steps, learning-rate schedule, warm-up, periodic evaluation.
// It knows nothing of files: the caller (src/experiment/run.ts) turns each evaluation into
// a CSV row and a checkpoint, and decides when to stop.
import type { GradientFlow, GradientInterval } from '../analysis/gradient-flow';
import type { Tensor } from '@tensorflow/tfjs-core';
import type { CifarNet } from '../model/resnet';
import { initialWarmup, learningRate, recordWarmup, type ScheduleConfig, type WarmupState } from './schedule';
import type { Sgd } from './sgd';
import { trainStep, type GradientSync } from './step';

/** Raised when the loss stops being a finite number; the run keeps its last good checkpoint. */
export class NonFiniteLossError extends Error {
  constructor(
    readonly iteration: number,
    loss: number,
    clipGradNorm?: number,
  ) {
    super(
      `training loss is ${loss} at iteration ${iteration} (exploding gradients?); ` +
        'stopped and kept the last good checkpoint: try a lower --lr or --warmup on' +
        (clipGradNorm === undefined
          ? ", or clip gradients with --clip-grad-norm (e.g. 1; not the paper's recipe)"
          : `, or a lower --clip-grad-norm than ${clipGradNorm}`),
    );
  }
}

/** Everything the loop needs to continue exactly where it stopped; saved in checkpoints. */
export interface LoopState {
  /** Steps done so far. */
  iteration: number;
  warmup: WarmupState;
  /** Mini-batch figures since the last row: the paper's dashed training curves. */
  interval: { lossSum: number; errorSum: number; images: number; batches: number; trainSeconds: number };
  /** Wall-clock seconds spent on this run, over all its resumptions. */
  elapsedS: number;
  /** Gradient norms since the last row (src/analysis/gradient-flow.ts). */
  gradients?: GradientInterval;
}

export function initialLoopState(schedule: ScheduleConfig): LoopState {
  return {
    iteration: 0,
    warmup: initialWarmup(schedule),
    interval: { lossSum: 0, errorSum: 0, images: 0, batches: 0, trainSeconds: 0 },
    elapsedS: 0,
  };
}

/** One evaluation: a row of metrics.csv. Errors in percent. */
export interface Row {
  iteration: number;
  epoch: number;
  lr: number;
  /** Mean over the mini-batches since the previous row (the paper's dashed curves). */
  trainLoss: number;
  trainError: number;
  testError: number;
  /** null without a validation split (an empty cell). */
  valError: number | null;
  elapsedS: number;
  imagesPerS: number;
}

export interface LoopOptions {
  net: CifarNet;
  sgd: Sgd;
  batch: (iteration: number) => { x: Float32Array; labels: Int32Array };
  schedule: ScheduleConfig;
  iterations: number;
  evalEvery: number;
  /** Fractional epochs after `iteration` steps. */
  epochOf: (iteration: number) => number;
  evaluate: () => { test: number; val: number | null };
  state: LoopState;
  /** Called with each evaluation row, after which the state is a consistent checkpoint. */
  onRow: (row: Row, state: LoopState) => Promise<void>;
  /** Called after every step (progress display). */
  onStep?: (state: LoopState, step: { loss: number; error: number; lr: number; imagesPerS: number }) => void;
  onWarmupEnd?: (iteration: number) => void;
  /** Polled between steps: a pending SIGINT/SIGTERM. */
  shouldStop: () => boolean;
  /**
   * Data-parallel (src/distributed/): this rank's slice of each global batch, and the
   * gradient averaging. The stop request then travels with the gradients, so that every
   * rank stops after the same step even though signals reach them at different times.
   */
  parallel?: {
    shard(b: { x: Float32Array; labels: Int32Array }): { x: Float32Array; labels: Int32Array };
    reduce: GradientSync['reduce'];
  };
  /** Records gradient norms in state.gradients and clips (src/analysis/gradient-flow.ts). */
  gradients?: GradientFlow;
  /** --clip-grad-norm, for the NaN message. */
  clipGradNorm?: number;
}

/** Runs until `iterations` steps are done ('finished') or shouldStop() says so ('stopped'). */
export async function trainLoop(o: LoopOptions): Promise<'finished' | 'stopped'> {
  const s = o.state;
  let wallMark = performance.now();
  const tick = () => {
    const now = performance.now();
    s.elapsedS += (now - wallMark) / 1000;
    wallMark = now;
  };

  while (s.iteration < o.iterations) {
    // Let signal handlers run: the step itself is synchronous.
    await new Promise((resolve) => setImmediate(resolve));
    if (!o.parallel && o.shouldStop()) {
      tick();
      return 'stopped';
    }

    const lr = learningRate(o.schedule, s.iteration, s.warmup.active);
    const global = o.batch(s.iteration);
    // Counted over the global batch: the step's loss and errors are reduced over ranks.
    const labels = global.labels;
    const t0 = performance.now();
    const flow = o.gradients;
    const processGrads = flow && ((g: Map<string, Tensor>) => flow.process(g, (s.gradients ??= flow.emptyInterval())));
    const p = o.parallel;
    // Data-parallel: this rank's slice of the global batch; the stop request travels with
    // the gradients so that every rank stops after the same step.
    const mine = p ? p.shard(global) : global;
    const sync = p && { reduce: p.reduce.bind(p), stopRequested: o.shouldStop() };
    const { loss, errors, stop } = trainStep(o.net, o.sgd, mine.x, mine.labels, lr, { sync, processGrads });
    const seconds = (performance.now() - t0) / 1000;
    if (!Number.isFinite(loss)) throw new NonFiniteLossError(s.iteration + 1, loss, o.clipGradNorm);

    const error = (100 * errors) / labels.length;
    s.iteration++;
    s.interval.lossSum += loss * labels.length;
    s.interval.errorSum += errors;
    s.interval.images += labels.length;
    s.interval.batches++;
    s.interval.trainSeconds += seconds;
    if (recordWarmup(s.warmup, error)) o.onWarmupEnd?.(s.iteration);
    o.onStep?.(s, { loss, error, lr, imagesPerS: labels.length / seconds });

    if (s.iteration % o.evalEvery === 0 || s.iteration === o.iterations) {
      const { test, val } = o.evaluate();
      tick();
      const iv = s.interval;
      const row: Row = {
        iteration: s.iteration,
        epoch: o.epochOf(s.iteration),
        lr,
        trainLoss: iv.lossSum / iv.images,
        trainError: (100 * iv.errorSum) / iv.images,
        testError: test,
        valError: val,
        elapsedS: s.elapsedS,
        imagesPerS: iv.images / iv.trainSeconds,
      };
      s.interval = { lossSum: 0, errorSum: 0, images: 0, batches: 0, trainSeconds: 0 };
      await o.onRow(row, s);
    }
    if (stop && s.iteration < o.iterations) {
      tick();
      return 'stopped';
    }
  }
  tick();
  return 'finished';
}
