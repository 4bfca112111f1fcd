// Where a training step's time goes, kernel by kernel (tf.profile), and how much of it is
// native code at all, addon function by addon function (the rest is JavaScript: tfjs's
// tape and bookkeeping, our kernels' argument handling, the storage pool, garbage
// collection):
//   node --import tsx bench/profile.ts [--engine native] [--depth 20] [--plain] [--batch 128]
//        [--precision bf16] [--top 14] [--steps 10] [--layouts 16]
// npm run bench prints it for ResNet-20; run it alone for other nets.
import * as tf from '@tensorflow/tfjs-core';
import { loadAddon, type Layout } from '../src/engine/native/addon';
import { bodyLayout } from '../src/engine/native/kernels-body';
import { netName } from '../src/model/resnet';
import { trainStep } from '../src/train/step';
import { arg, benchSetup, median } from './train-throughput';

/**
 * Runs `step` `steps` times without tf.profile (which adds its own cost per kernel) and
 * splits each step's wall time into time inside the addon's functions and the rest, by
 * wrapping every addon function in a timer for the duration (~0.1 us per call).
 */
function nativeSplit(
  step: () => void,
  steps: number,
): { wall: number; inside: number; calls: number; byFunction: Map<string, number> } {
  const addon = loadAddon() as unknown as Record<string, unknown>;
  const originals = new Map<string, (...a: unknown[]) => unknown>();
  let inside = 0;
  let calls = 0;
  const byFunction = new Map<string, number>();
  for (const [name, f] of Object.entries(addon)) {
    if (typeof f !== 'function') continue;
    const fn = f as (...a: unknown[]) => unknown;
    originals.set(name, fn);
    addon[name] = (...a: unknown[]) => {
      const t = performance.now();
      try {
        return fn(...a);
      } finally {
        const ms = performance.now() - t;
        inside += ms;
        calls++;
        byFunction.set(name, (byFunction.get(name) ?? 0) + ms / steps);
      }
    };
  }
  const walls: number[] = [];
  const insides: number[] = [];
  try {
    for (let i = 0; i < steps; i++) {
      const [t0, in0] = [performance.now(), inside];
      step();
      walls.push(performance.now() - t0);
      insides.push(inside - in0);
    }
  } finally {
    for (const [name, f] of originals) addon[name] = f;
  }
  return { wall: median(walls), inside: median(insides), calls: calls / steps, byFunction };
}

async function main(): Promise<void> {
  const { cfg, batch, engine, net, sgd, x, labels } = await benchSetup();
  for (let i = 0; i < 3; i++) trainStep(net, sgd, x, labels, 0.1);

  const t0 = performance.now();
  const prof = await tf.profile(() => {
    trainStep(net, sgd, x, labels, 0.1);
  });
  const wall = performance.now() - t0;
  const byKernel = new Map<string, { ms: number; calls: number }>();
  let inKernels = 0;
  for (const k of prof.kernels) {
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    const e = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
    e.ms += ms;
    e.calls++;
    byKernel.set(k.name, e);
    inKernels += ms;
  }
  console.log(
    `profile of one ${netName(cfg)} step at batch ${batch} on ${engine.name} (${engine.precision}): ${wall.toFixed(0)} ms wall ` +
      `(profiling adds a little), ${inKernels.toFixed(0)} ms in ${prof.kernels.length} kernel calls`,
  );
  for (const [name, e] of [...byKernel].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(arg('top', '14')))) {
    const share = ((100 * e.ms) / inKernels).toFixed(1);
    console.log(
      `  ${name.padEnd(28)} ${e.ms.toFixed(1).padStart(7)} ms ${share.padStart(5)}%  ${String(e.calls).padStart(4)} calls`,
    );
  }
  if (engine.name === 'native') {
    const steps = Number(arg('steps', '10'));
    const addon = loadAddon();
    const before = addon.bnLoopsCalls();
    const s = nativeSplit(() => trainStep(net, sgd, x, labels, 0.1), steps);
    const after = addon.bnLoopsCalls();
    console.log(
      `without the profiler (median of ${steps} steps): ${s.wall.toFixed(1)} ms a step, ` +
        `${s.inside.toFixed(1)} ms inside ${s.calls.toFixed(0)} native calls, ` +
        `${(s.wall - s.inside).toFixed(1)} ms (${((100 * (s.wall - s.inside)) / s.wall).toFixed(0)}%) in JavaScript ` +
        '(tfjs tape and bookkeeping, kernel arguments, storage pool, GC)',
    );
    // The body kernel (src/engine/native/kernels-body.ts) shows above as one entry each
    // way; the addon's functions show what it is made of (mean ms a step).
    for (const [name, ms] of [...s.byFunction].sort((a, b) => b[1] - a[1]).slice(0, 8)) {
      console.log(`  ${name.padEnd(28)} ${ms.toFixed(1).padStart(7)} ms`);
    }
    // Which copy of the batch-norm loops ran them (native/addon.cc: avx512Loops).
    const [generic, avx512] = [after.generic - before.generic, after.avx512 - before.avx512].map((n) => n / steps);
    console.log(`batch-norm calls a step by copy of the loops: ${avx512} avx512, ${generic} generic`);
    const pairs = Number(arg('layouts', '0'));
    if (pairs > 0) compareLayouts(() => trainStep(net, sgd, x, labels, 0.1), pairs);
  }
}

/**
 * --layouts N: the body kernel's activations in nhwc against nChw16c (kernels-body.ts), one
 * step each, alternating, N pairs in this process: both sides see the same load from the
 * machine's other tenants, which separate runs do not.
 */
function compareLayouts(step: () => void, pairs: number): void {
  const ms: Record<Layout, number[]> = { nhwc: [], nChw16c: [] };
  const ratios: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const order: Layout[] = i % 2 ? ['nhwc', 'nChw16c'] : ['nChw16c', 'nhwc'];
    for (const layout of order) {
      bodyLayout.f32 = layout;
      step(); // the pool settles on this layout's arrays
      const t = performance.now();
      step();
      ms[layout].push(performance.now() - t);
    }
    ratios.push(ms.nhwc[i] / ms.nChw16c[i]);
  }
  bodyLayout.f32 = 'nChw16c';
  console.log(
    `body layout, ${pairs} alternating pairs of steps: nhwc ${median(ms.nhwc).toFixed(1)} ms, ` +
      `nChw16c ${median(ms.nChw16c).toFixed(1)} ms; nhwc / nChw16c ${median(ratios).toFixed(3)} ` +
      `(${Math.min(...ratios).toFixed(3)}-${Math.max(...ratios).toFixed(3)})`,
  );
}

main().catch((e: unknown) => {
  console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
