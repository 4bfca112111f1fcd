// Small helpers shared by the native kernels.
import * as tf from '@tensorflow/tfjs-core';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

import { loadAddon, type NativeAddon } from './addon';

export type Backend = MathBackendCPU;
export type Attrs = tf.NamedAttrMap;

/** The addon; callers run only after loadNativeEngine() has loaded it successfully. */
export function addon(): NativeAddon {
  return loadAddon();
}

/** A float32 tensor's own storage (no copy): the cpu backend keeps values as typed arrays. */
export function f32(backend: Backend, t: tf.TensorInfo): Float32Array {
  const vals = backend.data.get(t.dataId)?.values;
  if (!(vals instanceof Float32Array)) {
    throw new Error(`native engine: expected float32 storage for a ${t.dtype} tensor`);
  }
  return vals;
}

/** Whether every tensor is float32 with real (non-complex) storage we can hand to C++. */
export function allF32(backend: Backend, ...ts: (tf.TensorInfo | undefined | null)[]): boolean {
  return ts.every(
    (t) => t == null || (t.dtype === 'float32' && backend.data.get(t.dataId)?.values instanceof Float32Array),
  );
}

/**
 * Output storage of n floats from the backend's pool (see NativeBackend.alloc); its
 * contents are arbitrary, so the kernel must write every element.
 */
export function alloc(backend: Backend, n: number): Float32Array {
  const pooled = backend as unknown as { alloc?: (n: number) => Float32Array };
  return pooled.alloc ? pooled.alloc(n) : new Float32Array(n);
}

interface Bf16Copies {
  bf16CopyFor?: (a: Float32Array) => Uint16Array | null;
  bf16CopyOf?: (a: Float32Array) => Uint16Array | null;
}

/** A bf16 copy for a kernel to write beside output `a`, or null (see NativeBackend). */
export function bf16CopyFor(backend: Backend, a: Float32Array): Uint16Array | null {
  return (backend as unknown as Bf16Copies).bf16CopyFor?.(a) ?? null;
}

/** The bf16 copy written beside a tensor's float32 storage, or null. */
export function bf16CopyOf(backend: Backend, a: Float32Array): Uint16Array | null {
  return (backend as unknown as Bf16Copies).bf16CopyOf?.(a) ?? null;
}

/** Wraps freshly computed values as a tensor owned by the backend. */
export function output(backend: Backend, shape: number[], values: Float32Array): tf.TensorInfo {
  return backend.makeTensorInfo(shape, 'float32', values);
}

export function size(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major element strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** The reference cpu kernel of the same name, for the cases the native code does not cover. */
export function cpuKernel(name: string): tf.KernelFunc {
  const k = tf.getKernel(name, 'cpu');
  if (!k) throw new Error(`native engine: no cpu kernel ${name} to fall back to`);
  return k.kernelFunc;
}

/** Calls the cpu kernel with the same arguments (our backend is a MathBackendCPU). */
export function fallback(
  name: string,
  args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: Attrs },
): tf.TensorInfo | tf.TensorInfo[] {
  return cpuKernel(name)(args as Parameters<tf.KernelFunc>[0]);
}

/** The named inputs of a kernel call, which tfjs types as possibly missing. */
export function need(inputs: tf.NamedTensorInfoMap, ...names: string[]): tf.TensorInfo[] {
  return names.map((n) => {
    const t = inputs[n];
    if (!t) throw new Error(`native engine: kernel input '${n}' is missing`);
    return t;
  });
}
