// `resnet-exp run`: one network, trained with the paper's recipe, in its own folder (the
// folder, its files and their checks belong to run-folder.ts). Running the same command
// again resumes from the checkpoint; the CSV keeps exactly the rows the checkpoint accounts
// for, so no row is ever lost or written twice.
import * as tf from '@tensorflow/tfjs-core';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GradientFlow } from '../analysis/gradient-flow';
import { appendGradientRows } from '../analysis/gradients-csv';
import { evalBatches, TrainBatches } from '../data/batches';
import { checkShards, DataParallel } from '../distributed/data-parallel';
import { SOLO, threadsPerRank, type World } from '../distributed/world';
import { holdOut, loadCifar10, pixelMean } from '../data/cifar10';
import { selectEngine } from '../engine/select';
import { CifarNet } from '../model/resnet';
import type { ScheduleConfig } from '../train/schedule';
import { Sgd } from '../train/sgd';
import { evaluate } from '../train/step';
import { initialLoopState, trainLoop, type LoopState, type Row } from '../train/trainer';
import { CheckpointError, writeCheckpoint, type TensorEntry } from './checkpoint';
import { evalProgress } from './eval-progress';
import { LockError } from './lock';
import { appendMetricsRow, parseMetricsCsv } from './metrics-csv';
import { identityOf, RunFolder, runDir, type Plan, type Summary } from './run-folder';
import { SettingsError, warmupEnabled, type RunSettings } from './settings';

export { OutputError } from './files';
export type { Summary } from './run-folder';

/** Evaluation batch size: larger than training batches, it only has to fit in memory. */
const EVAL_BATCH = 500;

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

export function packageVersion(): string {
  const file = path.resolve(__dirname, '../../package.json');
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
}

export async function runExperiment(
  s: RunSettings,
  report: RunReporter,
  shouldStop: () => boolean,
  world: World = SOLO,
): Promise<RunOutcome> {
  const id = identityOf({ ...s, worldSize: world.size });
  // Data-parallel: only rank 0 touches the run folder (not even its lock); the
  // other ranks learn from rank 0 whether there is anything to train, and its state.
  if (world.rank !== 0) {
    const verdict = Float32Array.of(0);
    world.broadcast(verdict);
    if (verdict[0] === 1) return { status: 'already-finished', dir: runDir(s) };
    return train(s, undefined, { kind: 'new' }, report, shouldStop, { iteration: 0 }, world);
  }
  const folder = await RunFolder.open(runDir(s), { wait: s.waitForLock, log: (l) => report.log(l) });
  const progress = { iteration: 0 };
  try {
    if (s.fresh) folder.clear();
    const plan = folder.check(id);
    world.broadcast(Float32Array.of(plan.kind === 'finished' ? 1 : 0));
    if (plan.kind === 'finished') {
      const sum = plan.summary;
      report.log(
        `${folder.dir} is already finished (${sum.iterations} iterations, test error ${sum.final_test_error.toFixed(2)}%); ` +
          'pass --fresh to train it again',
      );
      return { status: 'already-finished', dir: folder.dir };
    }
    return await train(s, folder, plan, report, shouldStop, progress, world);
  } catch (e) {
    // Not for another run's folder (other settings) or a lock we no longer hold.
    if (!(e instanceof SettingsError || e instanceof LockError)) folder.recordFailure(e, progress.iteration);
    throw e;
  } finally {
    folder.close();
  }
}

/** `folder` is undefined on the ranks other than 0 of a data-parallel run: they write nothing. */
async function train(
  s: RunSettings,
  folder: RunFolder | undefined,
  plan: Exclude<Plan, { kind: 'finished' }>,
  report: RunReporter,
  shouldStop: () => boolean,
  progress: { iteration: number },
  world: World,
): Promise<RunOutcome> {
  const dir = folder?.dir ?? runDir(s);
  const bnShards = s.bnShards ?? 1;
  checkShards(s.recipe.batch, world.size, bnShards);
  const data = loadCifar10(s.dataDir, { recordsPerFile: s.recordsPerFile });
  const { train, val } = s.recipe.val > 0 ? holdOut(data.train, s.recipe.val) : { train: data.train, val: undefined };
  if (s.recipe.batch > train.count)
    throw new SettingsError(`--batch ${s.recipe.batch} is larger than the ${train.count} training images`);
  const mean = pixelMean(train);

  // Ranks on one machine share its cores; the collectives live in the native addon.
  const threads = s.threads ?? (world.size > 1 ? threadsPerRank(world, os.availableParallelism()) : undefined);
  const choice = world.size > 1 && s.engine === 'auto' ? 'native' : s.engine;
  const engine = await selectEngine(choice, threads, s.precision);
  report.log(`engine: ${engine.name}, ${engine.version}, ${engine.threads || 'default'} threads (${engine.reason})`);
  if (engine.warning) report.log(`warning: ${engine.warning}`);

  const net = new CifarNet(s.net, s.seed);
  net.bnShards = bnShards;
  const parallel = world.size > 1 ? new DataParallel(world, net) : undefined;
  const schedule: ScheduleConfig = {
    lr: s.recipe.lr,
    milestones: s.recipe.milestones,
    warmup: warmupEnabled(s.recipe, s.net.depth),
  };
  const config = {
    name: path.basename(dir),
    variant: s.net.plain ? 'plain' : 'resnet',
    depth: s.net.depth,
    shortcut: s.net.shortcut,
    seed: s.seed,
    params: net.parameterCount(),
    net: s.net,
    recipe: s.recipe,
    precision: s.precision,
    world: { size: world.size, hosts: world.size > 1 ? world.hosts : [os.hostname()], launcher: world.launcher },
    bn_shards: bnShards,
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
    if (plan.kind === 'resume' && folder) {
      state = restore(folder.path('checkpoint'), plan.tensors, plan.state, net, sgd);
      report.log(`resuming ${dir} at iteration ${state.iteration}`);
      folder.startTraining({ ...config, resumed_engine: engine.name }, state.iteration);
    } else {
      folder?.startTraining(config, 0);
    }
    // Rank 0's weights, statistics, velocities and loop state to every rank.
    if (parallel) state = parallel.broadcastStart(sgd, state);
    progress.iteration = state.iteration;
    const flow = new GradientFlow(net, s.recipe.clipGradNorm);

    const batches = new TrainBatches(train, mean, s.recipe.batch, s.seed);
    // Data-parallel: each rank evaluates its part of a split and the error counts are summed.
    const evalOn = (split: typeof data.test, seen: ReturnType<typeof evalProgress>) => {
      const b = seen(evalBatches(split, mean, EVAL_BATCH));
      return parallel ? parallel.evaluate(b) : evaluate(net, b);
    };
    // The lock's heartbeat around each evaluation too: one can take minutes on a deep net.
    const evalFn = () => {
      parallel?.syncRunningStats();
      parallel?.checkSameWeights(state.iteration);
      folder?.heartbeat();
      // The reporter's "evaluating" state: an evaluation can take tens of seconds.
      const seen = evalProgress(report, data.test.count + (val?.count ?? 0));
      const test = evalOn(data.test, seen);
      folder?.heartbeat();
      const valError = val ? evalOn(val, seen) : null;
      folder?.heartbeat();
      return { test, val: valError };
    };
    const identity = identityOf({ ...s, worldSize: world.size });
    const save = (st: LoopState) => {
      if (!folder) return;
      folder.verifyOwner();
      writeCheckpoint(folder.path('checkpoint'), { version: 2, state: st, identity }, snapshot(net, sgd));
    };

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
        parallel,
        onRow: async (row, st) => {
          // CSV first, then the checkpoint: a kill between the two leaves a row that the
          // resumed run drops (truncateMetrics) and computes again identically.
          const gradientMeans = flow.take((st.gradients ??= flow.emptyInterval()));
          if (folder) {
            folder.verifyOwner();
            appendMetricsRow(folder.path('metrics'), row);
            appendGradientRows(folder.path('gradients'), row.iteration, gradientMeans);
          }
          save(st);
          report.row(row);
        },
        onStep: (st, info) => {
          progress.iteration = st.iteration;
          folder?.heartbeat();
          report.step(st, info);
        },
        onWarmupEnd: (i) =>
          report.log(`warm-up ended at iteration ${i}: training error below 80%, learning rate back to ${s.recipe.lr}`),
        shouldStop,
        gradients: flow,
        clipGradNorm: s.recipe.clipGradNorm,
      });
    } finally {
      report.stop();
    }

    if (outcome === 'stopped') {
      parallel?.syncRunningStats(); // every rank takes part, before rank 0 saves
      save(state);
      report.log(`interrupted at iteration ${state.iteration}; checkpoint saved. Run the same command to resume.`);
      return { status: 'stopped', dir };
    }
    if (!folder) return { status: 'finished', dir };
    const summary = summarize(folder.path('metrics'), state);
    folder.writeSummary(summary);
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

function restore(
  file: string,
  tensors: Map<string, TensorEntry>,
  state: LoopState,
  net: CifarNet,
  sgd: Sgd,
): LoopState {
  const load = (name: string, v: tf.Variable) => {
    const t = tensors.get(name);
    if (!t || t.shape.join('x') !== v.shape.join('x')) {
      throw new CheckpointError(`${file} does not match this network (${name}); pass --fresh to start over`);
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
