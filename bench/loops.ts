// Which copy of batch norm's loops is faster on this CPU: the portable one or the AVX-512
// one (native/batchnorm-loops-avx512.cc). avx512Loops() in native/addon.cc decides that by
// a fixed rule of the CPU and of the call (f32 or bf16 arrays); this is the measurement
// behind the rule. Processes alternate between RESNET_EXP_LOOPS=generic and =avx512 (each
// forces one copy for every call of the process), each
// timing the batch-norm kernels at the three CIFAR stage shapes of batch 128 as a
// training step calls them:
//   node --import tsx bench/loops.ts [--pairs 6] [--calls 30]
// Prints the median per kernel and copy over the pairs, and avx512 / generic.
import { spawnSync } from 'node:child_process';
import { loadAddon } from '../src/engine/native/addon';
import { arg, median } from './train-throughput';

type Copy = 'generic' | 'avx512';
const SHAPES: [number, number][] = [
  [131072, 16],
  [32768, 32],
  [8192, 64],
];

/** Reproducible values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let s = seed;
  return new Float32Array(n).map(() => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 31 - 1);
}

/** bf16 (the upper half of each f32) of v, as the bf16 convolutions write it. */
function bf16(v: Float32Array): Uint16Array {
  const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
  return Uint16Array.from(u, (w) => w >>> 16);
}

/** In a child: median ms of each kernel, one line of JSON. */
function child(calls: number): void {
  const addon = loadAddon();
  addon.setThreads({ threads: 2 });
  const ms: Record<string, number> = {};
  const time = (name: string, f: () => void) => {
    for (let i = 0; i < 5; i++) f();
    const t: number[] = [];
    for (let i = 0; i < calls; i++) {
      const t0 = performance.now();
      f();
      t.push(performance.now() - t0);
    }
    ms[name] = median(t);
  };
  for (const [rows, channels] of SHAPES) {
    const n = rows * channels;
    const shape = { rows, channels, epsilon: 1e-5, relu: true };
    const x = values(n, 1);
    const stats = { mean: new Float32Array(channels), variance: new Float32Array(channels) };
    const affine = { gamma: values(channels, 2), beta: values(channels, 3) };
    const y = new Float32Array(n);
    const at = `${rows}x${channels}`;
    // A block's end: BN + the shortcut + ReLU; its backward with both incoming gradients,
    // writing the masked one over dyAdd (the body kernel's calls, fp32).
    const residual = values(n, 7);
    time(`forward ${at} f32`, () => addon.bnTrainForward({ ...shape, ...affine, ...stats, x, y, residual }));
    const dyAdd = values(n, 5);
    const backward = { ...shape, gamma: affine.gamma, ...stats, dy: values(n, 4), x, y, dx: new Float32Array(n) };
    const sums = { dgamma: new Float32Array(channels), dbeta: new Float32Array(channels) };
    time(`backward ${at} f32`, () => addon.bnTrainBackward({ ...backward, ...sums, dyAdd, g: dyAdd }));
    // bf16 mode (nhwc): input, mask and gradients in bf16.
    const [xBf16, yBf16, dyBf16, dxBf16] = [bf16(x), new Uint16Array(n), bf16(values(n, 6)), new Uint16Array(n)];
    time(`forward ${at} bf16`, () => addon.bnTrainForward({ ...shape, ...affine, ...stats, xBf16, yBf16 }));
    time(`backward ${at} bf16`, () =>
      addon.bnTrainBackward({
        ...shape,
        gamma: affine.gamma,
        ...stats,
        ...sums,
        dyBf16,
        xBf16,
        yBf16,
        dxBf16,
      }),
    );
  }
  console.log(JSON.stringify(ms));
}

function measure(copy: Copy, calls: number): Record<string, number> {
  const r = spawnSync(process.execPath, ['--import', 'tsx', __filename, '--child', '--calls', String(calls)], {
    env: { ...process.env, RESNET_EXP_LOOPS: copy },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`RESNET_EXP_LOOPS=${copy}: ${r.stderr.trim().split('\n').pop()}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, number>;
}

function main(): void {
  const calls = Number(arg('calls', '30'));
  if (process.argv.includes('--child')) return child(calls);
  const pairs = Number(arg('pairs', '6'));
  const runs: Record<Copy, Record<string, number>[]> = { generic: [], avx512: [] };
  for (let i = 0; i < pairs; i++) {
    const order: Copy[] = i % 2 ? ['avx512', 'generic'] : ['generic', 'avx512'];
    for (const copy of order) runs[copy].push(measure(copy, calls));
  }
  const addon = loadAddon();
  console.log(`batch-norm loops, ${pairs} alternating pairs of processes; this CPU by the rule: ${addon.version()}`);
  console.log(`${'kernel'.padEnd(26)} ${'generic ms'.padStart(10)} ${'avx512 ms'.padStart(10)}  avx512 / generic`);
  for (const name of Object.keys(runs.generic[0])) {
    const [g, a] = [median(runs.generic.map((r) => r[name])), median(runs.avx512.map((r) => r[name]))];
    console.log(`${name.padEnd(26)} ${g.toFixed(3).padStart(10)} ${a.toFixed(3).padStart(10)}  ${(a / g).toFixed(2)}`);
  }
}

try {
  main();
} catch (e) {
  console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}
