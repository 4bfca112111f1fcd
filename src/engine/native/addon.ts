// Loads the compiled oneDNN addon (build/Release/resnet_native.node) and types its API.
import { existsSync } from 'node:fs';
import * as path from 'node:path';

/** The functions exported by native/addon.cc and friends (all synchronous, in place). */
export interface NativeAddon {
  version(): string;
  /** Batch-norm calls of this process so far, by copy of the loops that ran them. */
  bnLoopsCalls(): { generic: number; avx512: number };
  setThreads(a: { threads: number }): void;
  getThreads(): number;
  numProcs(): number;
  /** n floats (contents arbitrary) on a 64-byte boundary: storage for the backend's pool */
  alignedFloat32(a: { length: number }): Float32Array;
  // Every kernel takes one object of named arguments (native/common.h, class Args): a
  // missing or mistyped field is a one-line error naming the function and the field.
  // Arrays are written in place; optional bf16 arrays are inputs already converted (used
  // when the conv multiplies in bf16) or extra outputs in bf16 for the next conv.
  // An array left out is passed as undefined or null in a plain object literal, never by
  // spreading one of two literals: V8 builds a spread literal's object the slow way, 15-25 us
  // a call, ~2 ms of a ResNet-20 step on the AMX Xeon.
  convForward(a: {
    /** may be left out when this pass reads xBf16 instead (convImplInfo's takesBf16) */
    x?: Float32Array;
    filter: Float32Array;
    /** the output; or (instead) yBf16, where the forward writes bf16 (convImplInfo's writesBf16) */
    y?: Float32Array;
    yBf16?: Bf16;
    geometry: ConvGeometry;
    layout?: Layout;
    xBf16?: Bf16;
  }): void;
  convBackwardData(a: {
    /** may be left out when this pass reads dyBf16 instead (convImplInfo's takesBf16) */
    dy?: Float32Array;
    filter: Float32Array;
    /** the output; or (instead) dxBf16, where this pass writes bf16 (convImplInfo's writesBf16) */
    dx?: Float32Array;
    dxBf16?: Bf16;
    geometry: ConvGeometry;
    layout?: Layout;
    dyBf16?: Bf16;
  }): void;
  convBackwardWeights(a: {
    /** x and dy: as in convForward and convBackwardData */
    x?: Float32Array;
    dy?: Float32Array;
    dfilter: Float32Array;
    geometry: ConvGeometry;
    layout?: Layout;
    xBf16?: Bf16;
    dyBf16?: Bf16;
  }): void;
  convImplInfo(a: { geometry: ConvGeometry }): {
    forward: string;
    backwardData: string;
    backwardWeights: string;
    /** which inputs a pass reads from the caller's bf16 copy when given one (never in fp32) */
    takesBf16: { forwardX: boolean; backwardDataDy: boolean; backwardWeightsX: boolean; backwardWeightsDy: boolean };
    /** whether the forward writes its output in bf16 (a bf16 forward; an f32 y gets it widened) */
    writesBf16: { forwardY: boolean; backwardDataDx: boolean };
  };
  /** Arithmetic of the convolutions from now on; 'bf16' throws without CPU support. */
  /** Returns a note for the user when the precision does not pay on this CPU, else ''. */
  setConvPrecision(precision: 'fp32' | 'bf16'): string;
  /** x, y: [rows, channels]; gamma, beta, mean, variance: [channels]. */
  bnTrainForward(a: {
    /** or (instead) xBf16, nhwc: a bf16 forward's output (convForward's yBf16) */
    x?: Float32Array;
    xBf16?: Bf16;
    gamma: Float32Array;
    beta: Float32Array;
    /** may be left out when yBf16 is given: then y is written in bf16 only */
    y?: Float32Array;
    mean: Float32Array;
    variance: Float32Array;
    rows: number;
    channels: number;
    epsilon: number;
    relu: boolean;
    /** y = relu?(BN(x) + residual): the end of a residual block */
    residual?: Float32Array | null;
    /** receives y in bf16 (nhwc only) */
    yBf16?: Bf16;
    /** of x, y and residual; nChw16c needs imageSize */
    layout?: Layout;
    /** rows of one image (H*W) */
    imageSize?: number;
  }): void;
  bnTrainBackward(a: {
    /** or (instead) dyBf16, nhwc, with dxBf16: a bf16 backward data's output (its dxBf16) */
    dy?: Float32Array;
    dyBf16?: Bf16;
    /** a second incoming gradient, added to dy as it is read */
    dyAdd?: Float32Array | null;
    /** as in bnTrainForward: x or xBf16 */
    x?: Float32Array;
    xBf16?: Bf16;
    /** the forward's output; needed only with relu, and then replaceable by yBf16 */
    y?: Float32Array | null;
    /** the forward's bf16 copy of y (nhwc only): the ReLU mask's source when y is left out */
    yBf16?: Bf16;
    gamma: Float32Array;
    mean: Float32Array;
    variance: Float32Array;
    /** may be left out when dxBf16 is given: then dx is written in bf16 only */
    dx?: Float32Array;
    dgamma: Float32Array;
    dbeta: Float32Array;
    rows: number;
    channels: number;
    epsilon: number;
    relu: boolean;
    /** receives dy masked by the ReLU: the gradient of the forward's residual (may be dy or dyAdd) */
    g?: Float32Array | null;
    /** receives dx in bf16 (nhwc only) */
    dxBf16?: Bf16;
    /** of every [rows, channels] array; nChw16c needs imageSize */
    layout?: Layout;
    imageSize?: number;
  }): void;
  /** y = relu?(BN(x) + residual?) with given statistics, nhwc */
  bnInfer(a: {
    /** or (instead) xBf16: a bf16 forward's output (convForward's yBf16) */
    x?: Float32Array;
    xBf16?: Bf16;
    mean: Float32Array;
    variance: Float32Array;
    offset: Float32Array | null;
    scale: Float32Array | null;
    residual?: Float32Array | null;
    y: Float32Array;
    rows: number;
    channels: number;
    epsilon: number;
    relu: boolean;
  }): void;
  /** shape and strides in elements, 0 stride = broadcast. */
  binary(a: {
    op: BinaryOp;
    a: Float32Array;
    b: Float32Array;
    out: Float32Array;
    shape: Int32Array;
    aStrides: Int32Array;
    bStrides: Int32Array;
  }): void;
  /** out = x > 0 ? x : alpha * x */
  relu(a: { x: Float32Array; out: Float32Array; n: number; alpha: number }): void;
  /** out = x > 0 ? 1 : alpha (tfjs Step, ReLU's derivative) */
  step(a: { x: Float32Array; out: Float32Array; n: number; alpha: number }): void;
  /** x viewed as [outer, reduce, inner]; out[outer, inner] = sum (or mean) over reduce */
  reduceMiddle(a: {
    x: Float32Array;
    out: Float32Array;
    outer: number;
    reduce: number;
    inner: number;
    mean: boolean;
  }): void;
  /** dst[dstOffset + i . dstStrides] = src[srcOffset + i . srcStrides] for i over shape */
  stridedCopy(a: {
    src: Float32Array;
    srcOffset: number;
    srcStrides: Int32Array;
    dst: Float32Array;
    dstOffset: number;
    dstStrides: Int32Array;
    shape: Int32Array;
  }): void;
  fill(a: { out: Float32Array; value: number; n: number }): void;
  /** out[batch, M, N] = a[batch, M, K] . b[batch, K, N], a and b addressed by element strides */
  matmul(a: {
    a: Float32Array;
    b: Float32Array;
    out: Float32Array;
    batch: number;
    M: number;
    N: number;
    K: number;
    aBatch: number;
    aM: number;
    aK: number;
    bBatch: number;
    bK: number;
    bN: number;
  }): void;
  /** for every param: v = momentum * v + (gradient + weightDecay * weights); weights -= lr * v, in place */
  sgdUpdate(a: {
    params: { weights: Float32Array; gradient: Float32Array; velocity: Float32Array; weightDecay: number }[];
    lr: number;
    momentum: number;
  }): void;
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
    /** of both tensors */
    layout?: Layout;
  }): void;
  /**
   * The head and loss (native/head.cc): writes logits [rows, classes] = meanOverPixels(h) w + b
   * and returns the mean softmax cross-entropy. h is [rows, pixels, channels], w [channels, classes].
   */
  headLoss(a: HeadArgs & { b: Float32Array; logits: Float32Array }): number;
  /** Gradients of dloss * loss (+ sum(dlogits * logits)) given headLoss's logits. */
  headLossGrad(
    a: HeadArgs & {
      logits: Float32Array;
      dloss: number;
      dlogits?: Float32Array | null;
      dh: Float32Array;
      dw: Float32Array;
      db: Float32Array;
    },
  ): void;
  /** dst = src converted to layout `to` from the other one; rows = N*H*W, imageSize = H*W */
  convertLayout(a: {
    src: Float32Array;
    dst: Float32Array;
    rows: number;
    channels: number;
    imageSize: number;
    to: Layout;
  }): void;
  /** FP32 FMA peak of the thread team (native/peak.cc), measured for about `seconds`. */
  fmaPeak(o: { seconds: number }): { gflops: number; threads: number; isa: string; seconds: number };
  /** True when built against OpenMPI (native/mpi.cc); the mpi* functions exist only then. */
  hasMpi: boolean;
  /** Initializes MPI on first call (MPI_THREAD_FUNNELED); then only queries. */
  mpiInit?(): { rank: number; size: number; host: string };
  /** In-place sum over ranks. */
  mpiAllreduceF32?(a: { buffer: Float32Array }): void;
  /** In-place reduction over ranks. */
  mpiAllreduceF64?(a: { buffer: Float64Array; op: MpiOp }): void;
  /** The bytes of `buffer` from rank `root` to every rank. */
  mpiBcast?(a: { buffer: Uint8Array | Float32Array | Float64Array; root: number }): void;
  mpiBarrier?(): void;
  /** MPI_Abort: ends every rank of the job with exit status `code` (0..255). Never returns. */
  mpiAbort?(a: { code: number }): never;
  /** MPI_Finalize, once, at a clean exit; a no-op when MPI was never initialized. */
  mpiFinalize?(): void;
}

/** The reductions of NativeAddon.mpiAllreduceF64 (native/mpi.cc). */
export type MpiOp = 'sum' | 'min' | 'max';

/** The operations of NativeAddon.binary (native/elementwise.cc). reluMask: out = b > 0 ? a : 0
 * (a = dy, b = the saved ReLU output). */
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'addRelu' | 'reluMask' | 'max';

/**
 * Where an activation's values live: tfjs's NHWC, or oneDNN's nChw16c (channels in blocks
 * of 16, each block an [H, W, 16] plane per image), the layout the body kernel keeps (Layout
 * in native/common.h). With 16 channels the two are the same bytes.
 */
export type Layout = 'nhwc' | 'nChw16c';

/** An optional bf16 copy (or bf16 output) of a Float32Array of the same length. */
type Bf16 = Uint16Array | null;

/** The head's inputs and sizes, the same for its forward and backward. */
interface HeadArgs {
  h: Float32Array;
  w: Float32Array;
  labels: Int32Array;
  rows: number;
  pixels: number;
  channels: number;
  classes: number;
}

/** A convolution's shape, named as tfjs's Conv2DInfo names it (NHWC input, HWIO filter). */
export interface ConvGeometry {
  batch: number;
  inHeight: number;
  inWidth: number;
  inChannels: number;
  outHeight: number;
  outWidth: number;
  outChannels: number;
  filterHeight: number;
  filterWidth: number;
  strideHeight: number;
  strideWidth: number;
  padTop: number;
  padLeft: number;
  padBottom: number;
  padRight: number;
}

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
