// --engine auto|tensorflow|native|cpu: which tfjs backend runs the tensors, and why.
//
// auto prefers tfjs-node (libtensorflow) when it is installed and loads, then our oneDNN
// engine, then tfjs's pure-JavaScript CPU backend, which trains correctly but about a
// thousand times slower (minutes per step): fine for tests, not for experiments.
import * as tf from '@tensorflow/tfjs-core';
import { ENGINE_CHOICES, PRECISIONS, type Engine, type EngineChoice, type Precision } from './engine';

export class EngineError extends Error {}

export function parseEngineChoice(value: string): EngineChoice {
  if (!(ENGINE_CHOICES as readonly string[]).includes(value)) {
    throw new EngineError(`--engine must be one of ${ENGINE_CHOICES.join(', ')}, got '${value}'`);
  }
  return value as EngineChoice;
}

export function parsePrecision(value: string): Precision {
  if (!(PRECISIONS as readonly string[]).includes(value)) {
    throw new EngineError(`--precision must be one of ${PRECISIONS.join(', ')}, got '${value}'`);
  }
  return value as Precision;
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e)
    .split('\n')[0]
    .trim();
}

/** tfjs-node missing (the usual case offline) or its libtensorflow binding not installed. */
function tensorflowProblem(e: unknown): string {
  const msg = firstLine(e);
  if ((e as NodeJS.ErrnoException)?.code === 'MODULE_NOT_FOUND' && msg.includes("'@tensorflow/tfjs-node'")) {
    return 'tfjs-node not installed';
  }
  if (msg.includes('tfjs_binding.node')) return 'tfjs-node installed without its libtensorflow binding';
  return `tfjs-node failed to load: ${msg}`;
}

async function loadTensorflow(threads: number | undefined): Promise<Engine> {
  if (threads) {
    // libtensorflow reads its thread pools' sizes from the environment when it starts.
    process.env.TF_NUM_INTRAOP_THREADS = String(threads);
    process.env.TF_NUM_INTEROP_THREADS = '1';
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('@tensorflow/tfjs-node');
  await tf.setBackend('tensorflow');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const version = (require('@tensorflow/tfjs-node/package.json') as { version: string }).version;
  return { name: 'tensorflow', reason: '', version: `tfjs-node ${version}`, threads: threads ?? 0, precision: 'fp32' };
}

async function loadNative(threads: number | undefined, precision: Precision): Promise<Engine> {
  const { loadNativeEngine } = await import('./native/index.js');
  return loadNativeEngine(threads, precision);
}

async function loadCpu(): Promise<Engine> {
  await import('@tensorflow/tfjs-backend-cpu');
  await tf.setBackend('cpu');
  return { name: 'cpu', reason: '', version: `tfjs-backend-cpu ${tf.version_core}`, threads: 1, precision: 'fp32' };
}

export async function selectEngine(
  choice: EngineChoice,
  threads?: number,
  precision: Precision = 'fp32',
): Promise<Engine> {
  // Production mode: no debug checks, and no "install tfjs-node" banner from the CPU backend.
  tf.env().set('PROD', true);
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
    throw new EngineError(`--threads must be a whole number >= 1, got ${threads}`);
  }
  const explicit = async (load: () => Promise<Engine>, what: string): Promise<Engine> => {
    try {
      const e = await load();
      e.reason = `--engine ${choice}`;
      return e;
    } catch (err) {
      throw new EngineError(`the ${what} engine is not available: ${firstLine(err)}`);
    }
  };
  if (precision === 'bf16') {
    // Only our oneDNN engine has bf16 convolutions; auto therefore means native here.
    if (choice !== 'auto' && choice !== 'native') {
      throw new EngineError(`--precision bf16 needs the native engine, not --engine ${choice}`);
    }
    try {
      const e = await loadNative(threads, precision);
      e.reason = choice === 'auto' ? 'auto: --precision bf16 needs the native engine' : `--engine ${choice}`;
      return e;
    } catch (err) {
      throw new EngineError(`--precision bf16: ${firstLine(err).replace(/^resnet_native: /, '')}`);
    }
  }
  if (choice === 'tensorflow') return explicit(() => loadTensorflow(threads), 'tensorflow (tfjs-node)');
  if (choice === 'native') return explicit(() => loadNative(threads, 'fp32'), 'native (oneDNN)');
  if (choice === 'cpu') return explicit(loadCpu, 'cpu');

  const skipped: string[] = [];
  for (const [label, load, problem] of [
    ['tfjs-node', () => loadTensorflow(threads), tensorflowProblem],
    ['native', () => loadNative(threads, 'fp32'), firstLine],
  ] as const) {
    try {
      const e = await load();
      e.reason = `auto: ${[...skipped, `${label} loads`].join('; ')}`;
      return e;
    } catch (err) {
      // (By name: importing native/index.ts here would load its modules for every engine.)
      if ((err as Error)?.name === 'NativeConfigError')
        throw new EngineError(firstLine(err).replace(/^resnet_native: /, ''));
      skipped.push(problem(err));
    }
  }
  const e = await loadCpu();
  e.reason = `auto: ${skipped.join('; ')}; falling back to the pure-JavaScript cpu backend (minutes per training step: tests only)`;
  return e;
}
