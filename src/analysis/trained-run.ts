// A trained run, loaded back for the analyses (responses, lesion): its network with the
// weights and BN statistics of its last checkpoint, and the test set normalized the way
// the run normalized it (the per-pixel mean of its own training split).
import * as tf from '@tensorflow/tfjs-core';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { evalBatches } from '../data/batches';
import { holdOut, loadCifar10, pixelMean, type Cifar10Split } from '../data/cifar10';
import { readCheckpoint } from '../experiment/checkpoint';
import { CifarNet, type NetConfig } from '../model/resnet';
import { IMAGE_SHAPE } from '../train/step';

/** Raised for a folder that is not a usable trained run: a one-line message. */
export class RunFolderError extends Error {}

/** Evaluation batch size, as in training's evaluations. */
export const ANALYSIS_BATCH = 500;

export interface TrainedRun {
  dir: string;
  name: string;
  net: CifarNet;
  config: NetConfig;
  /** Iterations the loaded checkpoint has trained. */
  iteration: number;
  /** The test split (an analysis may narrow it to its first images). */
  test: Cifar10Split;
  mean: Float32Array;
  dispose(): void;
}

interface RunConfig {
  name?: string;
  net: NetConfig;
  recipe: { val: number };
  data: { dir: string; recordsPerFile: number };
}

function readConfig(dir: string): RunConfig {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new RunFolderError(`${dir} is not a run folder (no config.json)`);
  try {
    const c = JSON.parse(fs.readFileSync(file, 'utf8')) as RunConfig;
    if (typeof c.net?.depth !== 'number' || typeof c.data?.dir !== 'string') throw new Error('missing net or data');
    return c;
  } catch (e) {
    throw new RunFolderError(`${file} cannot be read (${(e as Error).message}); is this a resnet-exp run?`);
  }
}

/** Loads a run's network from its checkpoint; `dataDir` overrides the data folder in config.json. */
export function loadTrainedRun(dir: string, dataDir?: string): TrainedRun {
  const config = readConfig(dir);
  const checkpoint = path.join(dir, 'checkpoint.bin');
  if (!fs.existsSync(checkpoint))
    throw new RunFolderError(`${dir} has no checkpoint.bin yet: train it (resnet-exp run) before analysing it`);
  const { meta, tensors } = readCheckpoint(checkpoint);
  const data = loadCifar10(dataDir ?? config.data.dir, { recordsPerFile: config.data.recordsPerFile });
  const train = config.recipe.val > 0 ? holdOut(data.train, config.recipe.val).train : data.train;

  const net = new CifarNet(config.net, 0);
  const load = (key: string, v: tf.Variable) => {
    const t = tensors.get(key);
    if (!t || t.shape.join('x') !== v.shape.join('x')) {
      net.dispose();
      throw new RunFolderError(`${checkpoint} does not match the network of its config.json (${key})`);
    }
    tf.tidy(() => v.assign(tf.tensor(t.data, t.shape)));
  };
  for (const [n, v] of net.params) load(`param/${n}`, v);
  for (const [n, v] of net.runningStats) load(`stat/${n}`, v);
  return {
    dir,
    name: config.name ?? path.basename(dir),
    net,
    config: config.net,
    iteration: (meta as { state?: { iteration?: number } }).state?.iteration ?? 0,
    test: data.test,
    mean: pixelMean(train),
    dispose: () => net.dispose(),
  };
}

/** Runs `fn` on each test batch as a tensor (disposed after), in order. */
export function forEachTestBatch(
  run: TrainedRun,
  fn: (x: tf.Tensor4D, labels: Int32Array) => void,
  batchSize = ANALYSIS_BATCH,
): void {
  for (const b of evalBatches(run.test, run.mean, batchSize)) {
    const x = tf.tensor4d(b.x, [b.count, ...IMAGE_SHAPE]);
    try {
      fn(x, b.labels);
    } finally {
      x.dispose();
    }
  }
}
