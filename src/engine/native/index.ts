// Entry point of the native (oneDNN) engine.
import * as tf from '@tensorflow/tfjs-core';

import type { Engine, Precision } from '../engine';
import { loadAddon } from './addon';
import { NATIVE_BACKEND, NativeBackend, registerNativeBackend } from './backend';

export { NATIVE_BACKEND, NATIVE_KERNELS } from './backend';

/** The native engine is built but refuses this process's configuration (see select.ts). */
export class NativeConfigError extends Error {
  override name = 'NativeConfigError';
}

/**
 * Loads the addon (throws a one-line Error if it is not built), registers and activates
 * the 'native' backend, and returns the Engine description. threads defaults to every core;
 * precision 'bf16' throws a one-line Error on CPUs without bf16 arithmetic.
 */
export async function loadNativeEngine(threads?: number, precision: Precision = 'fp32'): Promise<Engine> {
  const addon = loadAddon();
  // Built and loaded: a failure here is this process's configuration (RESNET_EXP_LOOPS, read
  // by the addon on first use), which --engine auto must report, not answer with a slower engine.
  let version: string;
  try {
    version = addon.version();
  } catch (e) {
    throw new NativeConfigError((e as Error).message);
  }
  const n = threads ?? addon.numProcs();
  if (!Number.isInteger(n) || n < 1) throw new Error(`native engine: invalid thread count ${n}`);
  addon.setThreads({ threads: n });
  const warning = addon.setConvPrecision(precision) || undefined;
  registerNativeBackend();
  if (!(await tf.setBackend(NATIVE_BACKEND))) {
    throw new Error('native engine: tf.setBackend("native") failed');
  }
  await tf.ready();
  const backend = tf.backend();
  if (backend instanceof NativeBackend) backend.writeBf16Copies = precision === 'bf16';
  return {
    name: 'native',
    reason: 'oneDNN addon built (build/Release/resnet_native.node)',
    version,
    threads: addon.getThreads(),
    precision,
    warning,
    sgdUpdate(params, lr, momentum) {
      const backend = tf.backend();
      if (!(backend instanceof NativeBackend)) {
        throw new Error('native engine: sgdUpdate needs the active backend to be "native"');
      }
      const values = (t: tf.Tensor, what: string): Float32Array => {
        const vals = backend.data.get(t.dataId)?.values;
        if (!(vals instanceof Float32Array)) throw new Error(`native engine: ${what} is not float32`);
        return vals;
      };
      // In place: the variables' storage is updated without new tensors (no allocation,
      // nothing for tfjs to track). Callers must not share w's or v's storage elsewhere.
      loadAddon().sgdUpdate({
        params: params.map(({ w, g, v, weightDecay }) => {
          if (w.size !== g.size || w.size !== v.size) {
            throw new Error(`native engine: sgdUpdate sizes differ (${w.size}, ${g.size}, ${v.size})`);
          }
          return {
            weights: values(w, 'weights'),
            gradient: values(g, 'gradient'),
            velocity: values(v, 'velocity'),
            weightDecay,
          };
        }),
        lr,
        momentum,
      });
    },
  };
}
