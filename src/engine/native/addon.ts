// Loads the compiled oneDNN addon (build/Release/resnet_native.node) and types its API.
import { existsSync } from 'node:fs';
import * as path from 'node:path';

/** The functions exported by native/addon.cc and friends (all synchronous, in place). */
export interface NativeAddon {
  version(): string;
  setThreads(n: number): void;
  getThreads(): number;
  numProcs(): number;
  /** n floats (contents arbitrary) on a 64-byte boundary: storage for the backend's pool */
  alignedFloat32(n: number): Float32Array;
  /** geom: N, IH, IW, IC, OH, OW, OC, KH, KW, SH, SW, padTop, padLeft, padBottom, padRight */
  /** The optional Uint16Arrays: inputs already in bf16 (used when the conv runs in bf16). */
  convForward(
    x: Float32Array,
    filter: Float32Array,
    y: Float32Array,
    geom: Int32Array,
    xBf16?: Uint16Array | null,
  ): void;
  convBackwardData(
    dy: Float32Array,
    filter: Float32Array,
    dx: Float32Array,
    geom: Int32Array,
    dyBf16?: Uint16Array | null,
  ): void;
  convBackwardWeights(
    x: Float32Array,
    dy: Float32Array,
    df: Float32Array,
    geom: Int32Array,
    xBf16?: Uint16Array | null,
    dyBf16?: Uint16Array | null,
  ): void;
  convImplInfo(geom: Int32Array): { forward: string; backwardData: string; backwardWeights: string };
  /** Arithmetic of the convolutions from now on; 'bf16' throws without CPU support. */
  setConvPrecision(precision: 'fp32' | 'bf16'): void;
  bnTrainForward(
    x: Float32Array,
    gamma: Float32Array,
    beta: Float32Array,
    y: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    rows: number,
    channels: number,
    epsilon: number,
    relu: boolean,
    /** y = relu?(BN(x) + residual): the end of a residual block */
    residual?: Float32Array | null,
    /** receives y in bf16 */
    yBf16?: Uint16Array | null,
  ): void;
  bnTrainBackward(
    dy: Float32Array,
    x: Float32Array,
    y: Float32Array | null,
    gamma: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    dx: Float32Array,
    dgamma: Float32Array,
    dbeta: Float32Array,
    rows: number,
    channels: number,
    epsilon: number,
    relu: boolean,
    /** receives dy masked by the ReLU: the gradient of the forward's residual */
    g?: Float32Array | null,
    /** receives dx in bf16 */
    dxBf16?: Uint16Array | null,
  ): void;
  bnInfer(
    x: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    offset: Float32Array | null,
    scale: Float32Array | null,
    y: Float32Array,
    rows: number,
    channels: number,
    epsilon: number,
  ): void;
  /** op: see BinaryOp; shape and strides in elements, 0 stride = broadcast. */
  binary(
    op: number,
    a: Float32Array,
    b: Float32Array,
    out: Float32Array,
    shape: Int32Array,
    aStrides: Int32Array,
    bStrides: Int32Array,
  ): void;
  relu(x: Float32Array, out: Float32Array, n: number, alpha: number): void;
  step(x: Float32Array, out: Float32Array, n: number, alpha: number): void;
  reduceMiddle(x: Float32Array, out: Float32Array, outer: number, reduce: number, inner: number, mean: boolean): void;
  stridedCopy(
    src: Float32Array,
    srcOffset: number,
    srcStrides: Int32Array,
    dst: Float32Array,
    dstOffset: number,
    dstStrides: Int32Array,
    shape: Int32Array,
  ): void;
  fill(out: Float32Array, value: number, n: number): void;
  matmul(
    a: Float32Array,
    b: Float32Array,
    out: Float32Array,
    batch: number,
    M: number,
    N: number,
    K: number,
    aBatch: number,
    aM: number,
    aK: number,
    bBatch: number,
    bK: number,
    bN: number,
  ): void;
  sgdUpdate(w: Float32Array, g: Float32Array, v: Float32Array, lr: number, momentum: number, weightDecay: number): void;
  /** Option A's shortcut (native/elementwise.cc); x is [batch, height, width, channels]. */
  shortcutA(o: {
    src: Float32Array;
    dst: Float32Array;
    batch: number;
    height: number;
    width: number;
    channels: number;
    outChannels: number;
    /** src = dy [N, H/2, W/2, outChannels], dst = dx [N, H, W, C] */
    backward: boolean;
  }): void;
  /** FP32 FMA peak of the thread team (native/peak.cc), measured for about `seconds`. */
  fmaPeak(o: { seconds: number }): { gflops: number; threads: number; isa: string; seconds: number };
  /** True when built against OpenMPI (native/mpi.cc); the mpi* functions exist only then. */
  hasMpi: boolean;
  /** Initializes MPI on first call (MPI_THREAD_FUNNELED); then only queries. */
  mpiInit?(): { rank: number; size: number; host: string };
  /** In-place sum over ranks. */
  mpiAllreduceF32?(buffer: Float32Array): void;
  /** In-place reduction over ranks; op: see MpiOp. */
  mpiAllreduceF64?(buffer: Float64Array, op: number): void;
  /** The bytes of `buffer` from rank `root` to every rank. */
  mpiBcast?(buffer: Uint8Array | Float32Array | Float64Array, root: number): void;
  mpiBarrier?(): void;
  /** MPI_Abort: ends every rank of the job with `code`. Never returns. */
  mpiAbort?(code: number): never;
  /** MPI_Finalize, once, at a clean exit; a no-op when MPI was never initialized. */
  mpiFinalize?(): void;
}

/** Reduction codes of NativeAddon.mpiAllreduceF64 (native/mpi.cc). */
export const MpiOp = { sum: 0, min: 1, max: 2 } as const;

/** Operation codes of NativeAddon.binary (native/elementwise.cc, enum Op). */
export const BinaryOp = {
  add: 0,
  sub: 1,
  mul: 2,
  div: 3,
  addRelu: 4,
  /** out = b > 0 ? a : 0 (a = dy, b = the saved ReLU output) */
  reluMask: 5,
  max: 6,
} as const;

/** The package root: the nearest ancestor of this file holding package.json (src/ or dist/). */
function packageRoot(): string {
  let dir = __dirname;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`resnet-exp: cannot find package.json above ${__dirname}`);
    dir = up;
  }
  return dir;
}

export const ADDON_PATH = path.join(packageRoot(), 'build', 'Release', 'resnet_native.node');

let cached: NativeAddon | undefined;

/**
 * The addon, or an Error with a one-line explanation of why it cannot be used.
 * `file` overrides the location (tests); only the default one is cached.
 */
export function loadAddon(file = ADDON_PATH): NativeAddon {
  if (cached && file === ADDON_PATH) return cached;
  if (!existsSync(file)) {
    throw new Error(
      `native engine not built (${file} missing): install oneDNN (apt-get install libdnnl-dev) and run \`npm run build:native\` (or \`npm rebuild\`)`,
    );
  }
  let mod: NativeAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require(file) as NativeAddon;
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw new Error(`native engine cannot be loaded (${why}); rebuild it with \`npm run build:native\``);
  }
  if (file === ADDON_PATH) cached = mod;
  return mod;
}
