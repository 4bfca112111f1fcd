// `resnet-exp run`: one network, trained with the paper's recipe, in its own folder:
//   config.json   every setting, versions, engine, data checksums
//   metrics.csv   one row per evaluation (see src/experiment/metrics-csv.ts)
//   checkpoint.bin  the state after the last row (or at an interrupt)
//   summary.json  written when the run is finished
// Running the same command again resumes from the checkpoint; the CSV keeps exactly the
// rows the checkpoint accounts for, so no row is ever lost or written twice.
import * as tf from '@tensorflow/tfjs-core';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { evalBatches, TrainBatches } from '../data/batches';
import { holdOut, loadCifar10, pixelMean } from '../data/cifar10';
import { selectEngine } from '../engine/select';
import { CifarNet } from '../model/resnet';
import { parseMetricsCsv } from '../report/runs';
import type { ScheduleConfig } from '../train/schedule';
import { Sgd } from '../train/sgd';
import { evaluate } from '../train/step';
import { initialLoopState, trainLoop, type LoopState, type Row } from '../train/trainer';
import { CheckpointError, readCheckpoint, writeCheckpoint, type TensorEntry } from './checkpoint';
import { evalProgress } from './eval-progress';
import { lockRun, writeFileAtomic } from './files';
import { appendMetricsRow, createMetrics, truncateMetrics } from './metrics-csv';
import { runDir, runName, SettingsError, warmupEnabled, type RunSettings } from './settings';

/** Evaluation batch size: larger than training batches, it only has to fit in memory. */
const EVAL_BATCH = 500;

export class OutputError extends Error {}

/** How a run reports to the user (a progress bar on a TTY, plain lines elsewhere). */
export interface RunReporter {
  log(line: string): void;
  start(name: string, total: number, done: number): void;
  step(state: LoopState, info: { loss: number; error: number; lr: number; imagesPerS: number }): void;
  row(row: Row): void;
  stop(): void;
  /** Images evaluated so far out of `total`, during an evaluation (0 when it starts). */
  evaluating?(done: number, total: number): void;
}

export interface RunOutcome {
  status: 'finished' | 'already-finished' | 'stopped';
  dir: string;
}

export interface Summary {
  finished: true;
  iterations: number;
  final_train_error: number;
  final_test_error: number;
  best_test_error: number;
  final_val_error: number | null;
  wall_s: number;
}

/** The part of config.json that a resumed run must share with the run it continues. */
interface RunIdentity {
  net: unknown;
  seed: unknown;
  recipe: unknown;
  /** Absent in runs made before --precision existed: those are fp32. */
  precision?: unknown;
  data: { recordsPerFile: unknown };
}

function identity(cfg: RunIdentity | RunSettings): string {
  const records = 'data' in cfg ? cfg.data.recordsPerFile : cfg.recordsPerFile;
  const precision = cfg.precision ?? 'fp32';
  return JSON.stringify({ net: cfg.net, seed: cfg.seed, recipe: cfg.recipe, records, precision });
}

function prepareDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (e) {
    throw new OutputError(
      `cannot write to ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; choose another --out`,
    );
  }
}

export function packageVersion(): string {
  const file = path.resolve(__dirname, '../../package.json');
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
}

export async function runExperiment(
  s: RunSettings,
  report: RunReporter,
  shouldStop: () => boolean,
): Promise<RunOutcome> {
  const dir = runDir(s);
  prepareDir(dir);
  const unlock = lockRun(dir);
  try {
    return await runLocked(s, dir, report, shouldStop);
  } finally {
    unlock();
  }
}

async function runLocked(
  s: RunSettings,
  dir: string,
  report: RunReporter,
  shouldStop: () => boolean,
): Promise<RunOutcome> {
  const files = {
    config: path.join(dir, 'config.json'),
    metrics: path.join(dir, 'metrics.csv'),
    checkpoint: path.join(dir, 'checkpoint.bin'),
    summary: path.join(dir, 'summary.json'),
  };
  if (s.fresh) for (const f of Object.values(files)) fs.rmSync(f, { force: true });
  const started = fs.existsSync(files.checkpoint) || fs.existsSync(files.summary);
  if (started && fs.existsSync(files.config)) {
    const old = JSON.parse(fs.readFileSync(files.config, 'utf8')) as RunIdentity;
    if (identity(old) !== identity(s)) {
      throw new SettingsError(
        `${dir} was started with other settings (see its config.json); use the same flags to resume, --fresh to restart, or another --out`,
      );
    }
  }
  if (fs.existsSync(files.summary)) {
    const sum = JSON.parse(fs.readFileSync(files.summary, 'utf8')) as Summary;
    report.log(
      `${dir} is already finished (${sum.iterations} iterations, test error ${sum.final_test_error.toFixed(2)}%); ` +
        'pass --fresh to train it again',
    );
    return { status: 'already-finished', dir };
  }

  const data = loadCifar10(s.dataDir, { recordsPerFile: s.recordsPerFile });
  const { train, val } = s.recipe.val > 0 ? holdOut(data.train, s.recipe.val) : { train: data.train, val: undefined };
  if (s.recipe.batch > train.count)
    throw new SettingsError(`--batch ${s.recipe.batch} is larger than the ${train.count} training images`);
  const mean = pixelMean(train);

  const engine = await selectEngine(s.engine, s.threads, s.precision);
  report.log(`engine: ${engine.name}, ${engine.version}, ${engine.threads || 'default'} threads (${engine.reason})`);

  const net = new CifarNet(s.net, s.seed);
  const schedule: ScheduleConfig = {
    lr: s.recipe.lr,
    milestones: s.recipe.milestones,
    warmup: warmupEnabled(s.recipe, s.net.depth),
  };
  const config = {
    name: runName(s),
    variant: s.net.plain ? 'plain' : 'resnet',
    depth: s.net.depth,
    shortcut: s.net.shortcut,
    seed: s.seed,
    params: net.parameterCount(),
    net: s.net,
    recipe: s.recipe,
    precision: s.precision,
    warmup_enabled: schedule.warmup,
    engine: { name: engine.name, version: engine.version, threads: engine.threads, reason: engine.reason },
    versions: { 'resnet-exp': packageVersion(), node: process.version, 'tfjs-core': tf.version_core },
    data: {
      dir: path.resolve(s.dataDir),
      recordsPerFile: s.recordsPerFile,
      train: train.count,
      val: val?.count ?? 0,
      test: data.test.count,
      files: data.files,
    },
  };

  const sgd = new Sgd(
    net.params,
    (n) => net.decayed(n),
    { momentum: s.recipe.momentum, weightDecay: s.recipe.weightDecay },
    engine,
  );
  let state = initialLoopState(schedule);
  try {
    if (fs.existsSync(files.checkpoint)) {
      state = restore(files.checkpoint, net, sgd);
      report.log(`resuming ${dir} at iteration ${state.iteration}`);
      writeFileAtomic(files.config, JSON.stringify({ ...config, resumed_engine: engine.name }, null, 2) + '\n');
    } else {
      writeFileAtomic(files.config, JSON.stringify(config, null, 2) + '\n');
    }
    if (!fs.existsSync(files.metrics) || state.iteration === 0) createMetrics(files.metrics);
    else truncateMetrics(files.metrics, state.iteration);

    const batches = new TrainBatches(train, mean, s.recipe.batch, s.seed);
    const evalFn = () => {
      const seen = evalProgress(report, data.test.count + (val?.count ?? 0));
      return {
        test: evaluate(net, seen(evalBatches(data.test, mean, EVAL_BATCH))),
        val: val ? evaluate(net, seen(evalBatches(val, mean, EVAL_BATCH))) : null,
      };
    };
    const save = (st: LoopState) => writeCheckpoint(files.checkpoint, { version: 1, state: st }, snapshot(net, sgd));

    report.start(config.name, s.recipe.iterations, state.iteration);
    let outcome: 'finished' | 'stopped';
    try {
      outcome = await trainLoop({
        net,
        sgd,
        batch: (i) => batches.batch(i),
        schedule,
        iterations: s.recipe.iterations,
        evalEvery: s.recipe.evalEvery,
        epochOf: (i) => (i * s.recipe.batch) / train.count,
        evaluate: evalFn,
        state,
        onRow: async (row, st) => {
          // CSV first, then the checkpoint: a kill between the two leaves a row that the
          // resumed run drops (truncateMetrics) and computes again identically.
          appendMetricsRow(files.metrics, row);
          save(st);
          report.row(row);
        },
        onStep: (st, info) => report.step(st, info),
        onWarmupEnd: (i) =>
          report.log(`warm-up ended at iteration ${i}: training error below 80%, learning rate back to ${s.recipe.lr}`),
        shouldStop,
      });
    } finally {
      report.stop();
    }

    if (outcome === 'stopped') {
      save(state);
      report.log(`interrupted at iteration ${state.iteration}; checkpoint saved. Run the same command to resume.`);
      return { status: 'stopped', dir };
    }
    const summary = summarize(files.metrics, state);
    writeFileAtomic(files.summary, JSON.stringify(summary, null, 2) + '\n');
    report.log(
      `finished ${dir}: ${summary.iterations} iterations, training error ${summary.final_train_error.toFixed(2)}%, ` +
        `test error ${summary.final_test_error.toFixed(2)}% (best ${summary.best_test_error.toFixed(2)}%), ${(summary.wall_s / 3600).toFixed(2)} h`,
    );
    return { status: 'finished', dir };
  } finally {
    sgd.dispose();
    net.dispose();
  }
}

function snapshot(net: CifarNet, sgd: Sgd): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  const add = (name: string, v: tf.Variable) => out.set(name, { shape: v.shape, data: v.dataSync() as Float32Array });
  for (const [n, v] of net.params) add(`param/${n}`, v);
  for (const [n, v] of net.runningStats) add(`stat/${n}`, v);
  for (const [n, v] of sgd.velocities) add(`velocity/${n}`, v);
  return out;
}

function restore(file: string, net: CifarNet, sgd: Sgd): LoopState {
  const { meta, tensors } = readCheckpoint(file);
  const state = (meta as { state?: LoopState }).state;
  if (!state || typeof state.iteration !== 'number')
    throw new CheckpointError(`checkpoint ${file} has no training state; pass --fresh`);
  const load = (name: string, v: tf.Variable) => {
    const t = tensors.get(name);
    if (!t || t.shape.join('x') !== v.shape.join('x')) {
      throw new CheckpointError(`checkpoint ${file} does not match this network (${name}); pass --fresh to start over`);
    }
    tf.tidy(() => v.assign(tf.tensor(t.data, t.shape)));
  };
  for (const [n, v] of net.params) load(`param/${n}`, v);
  for (const [n, v] of net.runningStats) load(`stat/${n}`, v);
  for (const [n, v] of sgd.velocities) load(`velocity/${n}`, v);
  return state;
}

function summarize(metricsFile: string, state: LoopState): Summary {
  const rows = parseMetricsCsv(fs.readFileSync(metricsFile, 'utf8'));
  const last = rows[rows.length - 1];
  return {
    finished: true,
    iterations: state.iteration,
    final_train_error: last.trainError,
    final_test_error: last.testError,
    best_test_error: Math.min(...rows.map((r) => r.testError)),
    final_val_error: last.valError,
    wall_s: Math.round(state.elapsedS),
  };
}
