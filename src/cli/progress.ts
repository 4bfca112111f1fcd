// What a run shows while it trains: a progress bar on a terminal, and one plain line per
// evaluation elsewhere (CI logs, nohup, pipes), so that logs stay readable.
//
// The bar line is built and drawn here rather than by cli-progress: it must fit the terminal
// (the bar shrinks first, then the least useful fields are dropped; cli-progress would cut
// the line's end, lr and ETA, at the right margin), and lines printed while it runs (signal
// and warm-up messages) must stay: cli-progress restores the cursor to where the bar
// started when it stops, so whatever was printed in between was overwritten.
import type { RunReporter } from '../experiment/run';
import type { Row } from '../train/trainer';

export function duration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(Math.floor(seconds % 60)).padStart(2, '0')}s`;
}

/** What the bar line shows; undefined fields are not known yet. */
export interface BarState {
  name: string;
  iteration: number;
  total: number;
  loss?: number;
  /** Training error (%) of the mini-batches since the last evaluation. */
  trainError?: number;
  /** Test error (%) at the last evaluation. */
  testError?: number;
  lr?: number;
  imagesPerS?: number;
  /** Images evaluated so far while an evaluation runs. */
  evaluating?: { done: number; total: number };
  /** Seconds left, evaluations included; `lowerBound` before one evaluation was timed. */
  eta?: { seconds: number; lowerBound: boolean };
}

function bar(fraction: number, width: number): string {
  const full = Math.round(Math.max(0, Math.min(1, fraction)) * width);
  return '\u2588'.repeat(full) + '\u2591'.repeat(width - full);
}

const MIN_BAR = 10;
const MAX_BAR = 24;

/** One line of at most `columns` characters. */
export function formatBar(s: BarState, columns: number): string {
  const count = `${s.iteration}/${s.total}`;
  const fields: { text: string; drop: number }[] = [];
  // drop: the order in which fields go when the line is too long (1 goes first).
  if (s.evaluating) {
    const pct = s.evaluating.total > 0 ? (100 * s.evaluating.done) / s.evaluating.total : 0;
    fields.push({ text: `evaluating ${pct.toFixed(0)}%`, drop: 9 });
  } else {
    if (s.loss !== undefined) fields.push({ text: `loss ${s.loss.toFixed(3)}`, drop: 2 });
    if (s.trainError !== undefined) fields.push({ text: `train ${s.trainError.toFixed(1)}%`, drop: 3 });
  }
  fields.push({ text: `test ${s.testError === undefined ? '-' : s.testError.toFixed(1) + '%'}`, drop: 6 });
  if (s.imagesPerS !== undefined && !s.evaluating) fields.push({ text: `${s.imagesPerS.toFixed(0)} img/s`, drop: 1 });
  if (s.lr !== undefined) fields.push({ text: `lr ${s.lr}`, drop: 4 });
  if (s.eta) fields.push({ text: `ETA ${s.eta.lowerBound ? '>' : ''}${duration(s.eta.seconds)}`, drop: 5 });

  const length = (fs: typeof fields, barWidth: number) =>
    s.name.length +
    1 +
    (barWidth > 0 ? barWidth + 1 : 0) +
    count.length +
    fs.reduce((n, f) => n + 3 + f.text.length, 0);
  let kept = fields;
  while (kept.length > 0 && length(kept, MIN_BAR) > columns) {
    const first = Math.min(...kept.map((f) => f.drop));
    kept = kept.filter((f) => f.drop !== first);
  }
  const barWidth = Math.max(0, Math.min(MAX_BAR, columns - length(kept, 0) - 1));
  const line = [
    s.name,
    barWidth >= MIN_BAR ? bar(s.iteration / s.total, barWidth) + ' ' + count : count,
    ...kept.map((f) => '| ' + f.text),
  ].join(' ');
  return line.length > columns ? line.slice(0, columns) : line;
}

/**
 * Seconds left: the training steps at the measured wall-clock pace, plus one measured
 * evaluation per row still to come (the last iteration always gets one).
 */
export function estimateSeconds(o: {
  iteration: number;
  total: number;
  secondsPerIteration: number;
  evalEvery: number | undefined;
  secondsPerEval: number | undefined;
}): { seconds: number; lowerBound: boolean } {
  const train = (o.total - o.iteration) * o.secondsPerIteration;
  if (o.evalEvery === undefined || o.secondsPerEval === undefined) return { seconds: train, lowerBound: true };
  const evals =
    Math.floor(o.total / o.evalEvery) - Math.floor(o.iteration / o.evalEvery) + (o.total % o.evalEvery === 0 ? 0 : 1);
  return { seconds: train + evals * o.secondsPerEval, lowerBound: false };
}

function plainRow(name: string, total: number, row: Row): string {
  return (
    `${name} iter ${row.iteration}/${total} epoch ${row.epoch.toFixed(1)} lr ${row.lr} ` +
    `train loss ${row.trainLoss.toFixed(4)} train err ${row.trainError.toFixed(2)}% test err ${row.testError.toFixed(2)}%` +
    (row.valError === null ? '' : ` val err ${row.valError.toFixed(2)}%`) +
    ` ${row.imagesPerS.toFixed(1)} img/s elapsed ${duration(row.elapsedS)}\n`
  );
}

/** One status line redrawn in place at most every `everyMs`, with whole lines printed above it. */
class StatusLine {
  private line = '';
  private drawnAt = 0;
  private visible = false;
  constructor(
    private readonly stream: NodeJS.WriteStream,
    private readonly everyMs = 100,
  ) {}

  draw(line: string, force = false): void {
    this.line = line;
    const t = Date.now();
    if (!force && t - this.drawnAt < this.everyMs) return;
    this.drawnAt = t;
    this.stream.write('\r' + line + '\x1b[K');
    this.visible = true;
  }

  print(text: string): void {
    this.stream.write((this.visible ? '\r\x1b[K' : '') + text + '\n');
    this.visible = false;
    if (this.line) this.draw(this.line, true);
  }

  /** Leaves the last state on screen and moves below it. */
  end(): void {
    if (this.line) this.draw(this.line, true);
    if (this.visible) this.stream.write('\n');
    this.visible = false;
    this.line = '';
  }
}

export function createReporter(stream: NodeJS.WriteStream = process.stderr): RunReporter {
  const tty = stream.isTTY === true;
  let bar: StatusLine | undefined;
  let s: BarState = { name: '', iteration: 0, total: 0 };
  // Wall-clock pace, measured between steps that no evaluation separates.
  let lastStepAt: number | undefined;
  let secondsPerIteration = 0;
  let evalStartedAt: number | undefined;
  let secondsPerEval: number | undefined;
  let lastRowIteration: number | undefined;
  let evalEvery: number | undefined;
  const now = () => performance.now() / 1000;
  const eta = () =>
    secondsPerIteration > 0
      ? estimateSeconds({ iteration: s.iteration, total: s.total, secondsPerIteration, evalEvery, secondsPerEval })
      : undefined;
  const show = (force = false) => bar?.draw(formatBar({ ...s, eta: eta() }, stream.columns || 80), force);

  return {
    log(line) {
      if (bar) bar.print(line);
      else stream.write(line + '\n');
    },
    start(runName, iterations, done) {
      s = { name: runName, iteration: done, total: iterations };
      // A grid reuses the reporter: the pace of the previous net says nothing of this one.
      lastRowIteration = done;
      lastStepAt = undefined;
      secondsPerIteration = 0;
      secondsPerEval = undefined;
      evalStartedAt = undefined;
      evalEvery = undefined;
      if (!tty) {
        stream.write(`${runName}: training from iteration ${done} to ${iterations}\n`);
        return;
      }
      bar = new StatusLine(stream);
      show(true);
    },
    step(state, info) {
      const t = now();
      if (lastStepAt !== undefined && evalStartedAt === undefined) {
        const dt = t - lastStepAt;
        // A running average keeps the displayed ETA steady.
        secondsPerIteration = secondsPerIteration === 0 ? dt : 0.98 * secondsPerIteration + 0.02 * dt;
      }
      lastStepAt = t;
      const iv = state.interval;
      const ips = s.imagesPerS === undefined ? info.imagesPerS : 0.95 * s.imagesPerS + 0.05 * info.imagesPerS;
      s = {
        ...s,
        iteration: state.iteration,
        loss: iv.lossSum / iv.images,
        trainError: (100 * iv.errorSum) / iv.images,
        imagesPerS: ips,
        lr: info.lr,
        evaluating: undefined,
      };
      show();
    },
    evaluating(done, total) {
      if (evalStartedAt === undefined) evalStartedAt = now();
      s = { ...s, evaluating: { done, total } };
      // An evaluation's first and last updates always show: it may take only two batches.
      show(done === 0 || done === total);
    },
    row(row) {
      if (evalStartedAt !== undefined) {
        const took = now() - evalStartedAt;
        secondsPerEval = secondsPerEval === undefined ? took : 0.5 * secondsPerEval + 0.5 * took;
        evalStartedAt = undefined;
      }
      if (lastRowIteration !== undefined && row.iteration > lastRowIteration && row.iteration < s.total) {
        evalEvery = row.iteration - lastRowIteration;
      }
      lastRowIteration = row.iteration;
      // The next step's pace must not include this evaluation.
      lastStepAt = undefined;
      s = { ...s, evaluating: undefined, testError: row.testError, trainError: row.trainError };
      if (tty) {
        show(true);
        return;
      }
      stream.write(plainRow(s.name, s.total, row));
    },
    stop() {
      bar?.end();
      bar = undefined;
    },
  };
}
