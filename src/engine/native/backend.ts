// The 'native' tfjs backend: the cpu backend's storage and kernels, with the hot kernels
// of a ResNet training step replaced by oneDNN primitives and native loops.
import * as os from 'node:os';

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu'; // registers the 'cpu' kernels we start from
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

import { loadAddon } from './addon';
import { bodyGradient, bodyKernels } from './kernels-body';
import { convKernels } from './kernels-conv';
import { elementwiseKernels, meanGradient } from './kernels-elementwise';
import { fusedGradients, fusedKernels } from './kernels-fused';
import { headGradient, headKernels } from './kernels-head';

export const NATIVE_BACKEND = 'native';

/**
 * Outputs of more than 16 floats are recycled. V8 keeps typed arrays of up to 64 bytes on
 * its own heap, which is cheap; a larger one gets its own backing store, measured here at
 * ~30 us for the 9 KB of a 3x3x16x16 weight gradient (a ResNet-20 step makes ~60 such).
 */
const POOL_MIN_ELEMENTS = 17;
/**
 * Upper bound on the recycled-but-unused storage kept around. The pool never holds more
 * than one step's peak of live tensors (it is refilled by the step's own frees), which
 * for ResNet-110 at batch 128 is ~3 GiB: the bound only guards against pathological
 * shape churn, and must not be below that peak or every step would fault in fresh pages.
 */
const POOL_MAX_BYTES = Math.min(16 * 2 ** 30, os.totalmem() / 2);

type Values = tf.backend_util.BackendValues;

const enum ArrayState {
  /** Returned by alloc(), not yet the storage of a tensor. */
  HandedOut,
  /** The storage of exactly one tensor data entry. */
  Owned,
  /** In the free lists, waiting for alloc(). */
  Pooled,
}

/**
 * Storage stays the cpu backend's (typed arrays in backend.data), so every cpu kernel
 * works unchanged on this backend and native kernels read and write the same arrays.
 *
 * Native kernels take their outputs from a pool of recycled Float32Arrays. A fresh large
 * typed array costs a page fault per 4 KiB on first touch (measured ~5 ms per 8 MiB
 * activation here, more than the kernel itself), and a training step makes hundreds of
 * them. A step's tensors are the same shapes every step, so the arrays freed by one step
 * are exactly the ones the next step needs: memory stays flat.
 *
 * With --precision bf16 the kernels whose outputs feed convolutions (batch norm forward and
 * backward) also write a bf16 copy of the output in the same pass; the convolution takes
 * that copy instead of converting the f32 tensor again (up to four conversions per conv
 * and step). A copy lives exactly as long as its array is the storage of a tensor, which
 * cannot change while it is (tensors are immutable): it is dropped when the array is
 * recycled.
 *
 * Safety: an array is recycled only when the single tensor storage entry owning it is
 * disposed. Anything that could alias a pooled array is copied instead: cpu kernels that
 * return views (subarray) or reuse an input array for an output (see write), and arrays
 * handed out to user code by dataSync()/data() (see readSync).
 */
export class NativeBackend extends MathBackendCPU {
  private readonly pool = new Map<number, Float32Array[]>();
  private pooledBytes = 0;
  /** State of every array this pool created. */
  private readonly state = new WeakMap<Float32Array, ArrayState>();
  private readonly pooledBuffers = new WeakSet<ArrayBufferLike>();
  /** bf16 copies of pool arrays, written by the kernel that wrote the array. */
  private readonly bf16Copies = new WeakMap<Float32Array, Uint16Array>();
  private readonly bf16Pool = new Map<number, Uint16Array[]>();
  private readonly recycleHooks = new WeakMap<Float32Array, () => void>();
  /** Whether kernels that feed convolutions write bf16 copies (set for --precision bf16). */
  writeBf16Copies = false;

  /** Storage for a kernel output of n floats. Contents are arbitrary: overwrite all of it. */
  alloc(n: number): Float32Array {
    if (n < POOL_MIN_ELEMENTS) return new Float32Array(n);
    const recycled = this.pool.get(n)?.pop();
    if (recycled) {
      this.pooledBytes -= recycled.byteLength;
      this.state.set(recycled, ArrayState.HandedOut);
      return recycled;
    }
    const fresh = loadAddon().alignedFloat32({ length: n }); // 64-byte aligned (see native/addon.cc)
    this.pooledBuffers.add(fresh.buffer);
    this.state.set(fresh, ArrayState.HandedOut);
    return fresh;
  }

  /**
   * A bf16 copy for output `a` (just returned by alloc), for the same kernel call to fill;
   * null when copies are off or `a` is not pool storage (then nothing is recorded).
   */
  bf16CopyFor(a: Float32Array): Uint16Array | null {
    if (!this.writeBf16Copies || this.state.get(a) !== ArrayState.HandedOut) return null;
    const recycled = this.bf16Pool.get(a.length)?.pop();
    if (recycled) this.pooledBytes -= recycled.byteLength;
    const copy = recycled ?? new Uint16Array(a.length);
    this.bf16Copies.set(a, copy);
    return copy;
  }

  /** The bf16 copy of a tensor's storage, if the kernel that wrote it made one. */
  bf16CopyOf(a: Float32Array): Uint16Array | null {
    return this.bf16Copies.get(a) ?? null;
  }

  override write(values: Values, shape: number[], dtype: tf.DataType): tf.DataId {
    if (values instanceof Float32Array && this.pooledBuffers.has(values.buffer)) {
      if (this.state.get(values) === ArrayState.HandedOut) this.state.set(values, ArrayState.Owned);
      // A view of a pool array, a second owner for one, or one already back in the pool.
      else values = values.slice();
    }
    return super.write(values, shape, dtype);
  }

  override readSync(dataId: tf.DataId): Values {
    const v = super.readSync(dataId);
    // The caller may keep this array after the tensor is gone; never hand out pool memory.
    return v instanceof Float32Array && this.pooledBuffers.has(v.buffer) ? v.slice() : v;
  }

  override disposeData(dataId: tf.DataId, force = false): boolean {
    const values = this.data.get(dataId)?.values;
    const released = super.disposeData(dataId, force);
    if (values instanceof Float32Array && !this.data.has(dataId) && this.state.get(values) === ArrayState.Owned) {
      this.recycle(values);
    }
    return released;
  }

  private recycle(a: Float32Array): void {
    const hook = this.recycleHooks.get(a);
    if (hook) {
      this.recycleHooks.delete(a);
      hook();
    }
    const copy = this.bf16Copies.get(a);
    if (copy) {
      this.bf16Copies.delete(a);
      if (this.pooledBytes + copy.byteLength <= POOL_MAX_BYTES) {
        let copies = this.bf16Pool.get(copy.length);
        if (!copies) this.bf16Pool.set(copy.length, (copies = []));
        copies.push(copy);
        this.pooledBytes += copy.byteLength;
      }
    }
    if (this.pooledBytes + a.byteLength > POOL_MAX_BYTES) {
      this.state.delete(a); // let GC have it
      return;
    }
    this.state.set(a, ArrayState.Pooled);
    let list = this.pool.get(a.length);
    if (!list) this.pool.set(a.length, (list = []));
    list.push(a);
    this.pooledBytes += a.byteLength;
  }

  /**
   * Takes back an array from alloc() that a kernel used as scratch and never made a
   * tensor's storage (arrays below the pool's size are left to the garbage collector).
   */
  releaseScratch(a: Float32Array): void {
    const state = this.state.get(a);
    if (state === undefined) return;
    if (state !== ArrayState.HandedOut) throw new Error('native backend: releaseScratch of a tensor or pooled array');
    this.recycle(a);
  }

  /** Calls `f` once, when pool array `a` goes back to the pool (state kept beside a tensor). */
  onRecycle(a: Float32Array, f: () => void): void {
    if (this.state.has(a)) this.recycleHooks.set(a, f);
  }

  /** Bytes of recycled storage waiting for reuse (diagnostics, leak tests). */
  poolBytes(): number {
    return this.pooledBytes;
  }

  override dispose(): void {
    this.pool.clear();
    this.bf16Pool.clear();
    this.pooledBytes = 0;
    super.dispose();
  }
}

/** The kernels that run native code on the 'native' backend (the rest are tfjs's 'cpu' ones). */
const nativeKernels: Record<string, tf.KernelFunc> = {
  ...bodyKernels,
  ...convKernels,
  ...fusedKernels,
  ...headKernels,
  ...elementwiseKernels,
};

export const NATIVE_KERNELS: readonly string[] = Object.keys(nativeKernels);

let registered = false;

/** Registers the backend, its kernels and the fused kernels' gradients (idempotent). */
export function registerNativeBackend(): void {
  if (registered) return;
  registered = true;
  // Priority 0: never picked implicitly, only by tf.setBackend('native').
  tf.registerBackend(NATIVE_BACKEND, () => new NativeBackend(), 0);
  for (const k of tf.getKernelsForBackend('cpu')) {
    if (k.kernelName in nativeKernels) continue;
    tf.registerKernel({ ...k, backendName: NATIVE_BACKEND });
  }
  for (const [kernelName, kernelFunc] of Object.entries(nativeKernels)) {
    tf.registerKernel({ kernelName, backendName: NATIVE_BACKEND, kernelFunc });
  }
  // Gradients are registered by kernel name for every backend; these kernels exist only
  // on 'native', so that is where the gradients can ever run.
  for (const g of [...fusedGradients, bodyGradient, headGradient]) tf.registerGradient(g);
  const mean = tf.getGradient('Mean');
  if (mean) tf.registerGradient(meanGradient(mean));
}
