// One measurement, in its own process so that its peak RSS is its own:
//   node --import tsx bench/train-throughput.ts --engine native --depth 56 [--plain]
//        [--steps 10] [--warmup 3] [--batch 128] [--threads 2] [--precision bf16]
// Full training steps of the product's own code path (src/train/step.ts: forward,
// cross-entropy, backward, SGD momentum + weight decay, BN running statistics) on random
// CIFAR-shaped data. Prints one JSON line.
import * as tf from '@tensorflow/tfjs-core';
import { parseEngineChoice, parsePrecision, selectEngine } from '../src/engine/select';
import { CifarNet, netName } from '../src/model/resnet';
import { summarize } from '../src/model/summary';
import { Sgd } from '../src/train/sgd';
import { trainStep } from '../src/train/step';

export function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Reproducible CIFAR-shaped noise (mean-subtracted pixel scale) and labels. */
export function randomBatch(batch: number): { x: Float32Array; labels: Int32Array } {
  let s = 12345;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const x = new Float32Array(batch * 32 * 32 * 3).map(() => rnd() * 100 - 50);
  const labels = new Int32Array(batch).map(() => Math.floor(rnd() * 10));
  return { x, labels };
}

/**
 * What both bench scripts train, from the shared flags --depth, --plain, --batch, --engine,
 * --threads, --precision: the engine, a net with its SGD, and one reproducible batch.
 */
export async function benchSetup() {
  const cfg = { depth: Number(arg('depth', '20')), plain: process.argv.includes('--plain'), shortcut: 'A' as const };
  const batch = Number(arg('batch', '128'));
  const engine = await selectEngine(
    parseEngineChoice(arg('engine', 'native')),
    Number(arg('threads', '2')),
    parsePrecision(arg('precision', 'fp32')),
  );
  const net = new CifarNet(cfg, 1);
  const sgd = new Sgd(net.params, (n) => net.decayed(n), { momentum: 0.9, weightDecay: 1e-4 }, engine);
  return { cfg, batch, engine, net, sgd, ...randomBatch(batch) };
}

async function main(): Promise<void> {
  const steps = Number(arg('steps', '10'));
  const warmup = Number(arg('warmup', '3'));
  const { cfg, batch, engine, net, sgd, x, labels } = await benchSetup();

  const times: number[] = [];
  let tensorsAfterWarmup = 0;
  for (let i = 0; i < warmup + steps; i++) {
    const t0 = performance.now();
    trainStep(net, sgd, x, labels, 0.1);
    if (i >= warmup) times.push((performance.now() - t0) / 1000);
    if (i === warmup - 1) tensorsAfterWarmup = tf.memory().numTensors;
  }
  const med = median(times);
  const macs = summarize(cfg).macs;
  console.log(
    JSON.stringify({
      net: netName(cfg),
      engine: engine.name,
      precision: engine.precision,
      version: engine.version,
      threads: engine.threads,
      batch,
      steps,
      img_s_median: Number((batch / med).toFixed(1)),
      step_ms_median: Number((med * 1000).toFixed(1)),
      // The fastest step: least disturbed by other tenants of a shared machine.
      step_ms_min: Number((Math.min(...times) * 1000).toFixed(1)),
      // Training FLOPs: forward + two backward products = 3 x (2 x forward MACs).
      gflops: Number(((batch / med) * 6 * macs * 1e-9).toFixed(1)),
      peak_rss_mib: Math.round(process.resourceUsage().maxRSS / 1024),
      tensors_flat: tf.memory().numTensors === tensorsAfterWarmup,
    }),
  );
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
