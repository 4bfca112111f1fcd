// Throughput of full training steps (forward, loss, backward, SGD, BN running stats) on
// the native (oneDNN) engine, side by side with the PyTorch reference script.
//
//   node --import tsx bench/native-step.ts --depth 20 [--plain] [--steps 10] [--rounds 2]
//        [--warmup 5] [--batch 128] [--threads 2] [--no-torch] [--shortcut A|B]
//
// Rounds alternate native and PyTorch runs (never concurrently: both use every core), so
// drifting machine load hits both. Prints the median img/s of each, their ratio, and the
// per-kernel profile (tf.profile) of one native step.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';

import { loadNativeEngine } from '../src/engine/native';
import { CifarNet, netName, type Shortcut } from '../src/model/resnet';
import { Sgd } from '../src/train/sgd';
import { trainStep } from '../src/train/step';

const TORCH_SCRIPT = '/work/shared/bench/torch_cifar_resnet.py';
const PYTHON = '/usr/bin/python3';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

const depth = Number(arg('depth', '20'));
const plain = flag('plain');
const shortcut = arg('shortcut', 'A') as Shortcut;
const steps = Number(arg('steps', '10'));
const warmup = Number(arg('warmup', '5'));
const rounds = Number(arg('rounds', '2'));
const batch = Number(arg('batch', '128'));
const threads = Number(arg('threads', '2'));
const withTorch = !flag('no-torch') && existsSync(TORCH_SCRIPT) && existsSync(PYTHON);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function randomBatch(seed: number): { x: Float32Array; labels: Int32Array } {
  // A small LCG: reproducible CIFAR-shaped noise, no dependency on the data set.
  let s = seed >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const x = new Float32Array(batch * 32 * 32 * 3).map(() => rnd() * 2 - 1);
  const labels = new Int32Array(batch).map(() => Math.floor(rnd() * 10));
  return { x, labels };
}

function torchRun(): number {
  const args = [TORCH_SCRIPT, '--depth', String(depth), '--channels-last', '--steps', String(steps)];
  args.push('--warmup', String(warmup), '--batch', String(batch), '--threads', String(threads), '--no-infer');
  if (plain) args.push('--plain');
  const r = spawnSync(PYTHON, args, { encoding: 'utf8' });
  const line = r.stdout.split('\n').find((l) => l.includes('"img_s_median"'));
  if (!line) throw new Error(`PyTorch reference failed: ${r.stderr.split('\n').slice(-2).join(' ')}`);
  return (JSON.parse(line) as { img_s_median: number }).img_s_median;
}

async function main(): Promise<void> {
  tf.env().set('PROD', true);
  const engine = await loadNativeEngine(threads);
  const net = new CifarNet({ depth, plain, shortcut }, 1);
  const sgd = new Sgd(net.params, (n) => net.decayed(n), { momentum: 0.9, weightDecay: 1e-4 }, engine);
  const data = randomBatch(42);
  console.log(`${netName({ depth, plain, shortcut })}, batch ${batch}, ${engine.version}, ${engine.threads} threads`);

  const nativeRun = (): number => {
    for (let i = 0; i < warmup; i++) trainStep(net, sgd, data.x, data.labels, 0.1);
    const times: number[] = [];
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      trainStep(net, sgd, data.x, data.labels, 0.1);
      times.push(performance.now() - t0);
    }
    return (batch * 1000) / median(times);
  };

  const nativeIps: number[] = [];
  const torchIps: number[] = [];
  for (let r = 0; r < rounds; r++) {
    nativeIps.push(nativeRun());
    const rss = (process.memoryUsage().rss / 2 ** 20).toFixed(0);
    console.log(
      `round ${r + 1}: native ${nativeIps[r].toFixed(1)} img/s (tensors ${tf.memory().numTensors}, rss ${rss} MiB)`,
    );
    if (withTorch) {
      torchIps.push(torchRun());
      console.log(`round ${r + 1}: pytorch ${torchIps[r].toFixed(1)} img/s`);
    }
  }

  const prof = await tf.profile(() => {
    trainStep(net, sgd, data.x, data.labels, 0.1);
  });
  const byKernel = new Map<string, { ms: number; calls: number }>();
  let total = 0;
  for (const k of prof.kernels) {
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    const e = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
    e.ms += ms;
    e.calls += 1;
    byKernel.set(k.name, e);
    total += ms;
  }
  console.log(`\nprofile of one step: ${prof.kernels.length} kernels, ${total.toFixed(1)} ms in kernels`);
  for (const [name, e] of [...byKernel].sort((a, b) => b[1].ms - a[1].ms).slice(0, 15)) {
    console.log(`  ${name.padEnd(28)} ${e.ms.toFixed(1).padStart(8)} ms  ${String(e.calls).padStart(4)} calls`);
  }

  const nat = median(nativeIps);
  const summary: Record<string, unknown> = {
    net: netName({ depth, plain, shortcut }),
    batch,
    threads: engine.threads,
    native_img_s: Number(nat.toFixed(1)),
    native_rounds: nativeIps.map((v) => Number(v.toFixed(1))),
  };
  if (withTorch) {
    const tor = median(torchIps);
    summary.torch_img_s = Number(tor.toFixed(1));
    summary.torch_rounds = torchIps.map((v) => Number(v.toFixed(1)));
    summary.ratio = Number((nat / tor).toFixed(2));
  }
  console.log('\n' + JSON.stringify(summary));
  sgd.dispose();
  net.dispose();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
