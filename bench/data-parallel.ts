// One data-parallel measurement, run under mpirun (see bench.ts):
//   mpirun -np 2 node --import tsx bench/data-parallel.ts --depth 56 [--plain]
//          [--steps 10] [--warmup 5] [--batch 128] [--threads 1]
// Full training steps of the product's code path (src/train/step.ts with the gradient
// averaging of src/distributed/data-parallel.ts): each rank takes its shard of one global
// batch of --batch images. Rank 0 prints one JSON line: global images/s, and the time of the
// gradient allreduce inside the step (it includes waiting for the slower rank) and alone
// (ranks lined up first: the transfer and reduction themselves).
import * as tf from '@tensorflow/tfjs-core';
import { DataParallel } from '../src/distributed/data-parallel';
import { joinWorld } from '../src/distributed/world';
import { netName } from '../src/model/resnet';
import { summarize } from '../src/model/summary';
import { trainStep } from '../src/train/step';
import { arg, benchSetup, median } from './train-throughput';

async function main(): Promise<void> {
  const steps = Number(arg('steps', '10'));
  const warmup = Number(arg('warmup', '5'));
  const world = joinWorld(true);
  const { cfg, batch, engine, net, sgd, x, labels } = await benchSetup();

  let inStep: number[] = [];
  const timed = {
    ...world,
    sumF32: (b: Float32Array) => {
      const t0 = performance.now();
      world.sumF32(b);
      inStep.push(performance.now() - t0);
    },
  };
  const dp = new DataParallel(timed, net);
  const mine = dp.shard({ x, labels });
  const times: number[] = [];
  let tensorsAfterWarmup = 0;
  for (let i = 0; i < warmup + steps; i++) {
    if (i === warmup) {
      inStep = [];
      tensorsAfterWarmup = tf.memory().numTensors;
    }
    const t0 = performance.now();
    trainStep(net, sgd, mine.x, mine.labels, 0.1, {
      sync: { reduce: (g, t) => dp.reduce(g, t), stopRequested: false },
    });
    if (i >= warmup) times.push((performance.now() - t0) / 1000);
  }

  // The allreduce alone, on a buffer of the same size (all gradients + 4 totals).
  let floats = 4;
  for (const v of net.params.values()) floats += v.size;
  const buf = new Float32Array(floats);
  const alone: number[] = [];
  for (let i = 0; i < 20; i++) {
    world.sumF32(new Float32Array(1)); // line the ranks up
    const t0 = performance.now();
    world.sumF32(buf);
    alone.push(performance.now() - t0);
  }

  const med = median(times);
  if (world.rank === 0) {
    console.log(
      JSON.stringify({
        net: netName(cfg),
        engine: `${engine.name} x ${world.size} ranks`,
        threads: engine.threads,
        ranks: world.size,
        batch,
        steps,
        img_s_median: Number((batch / med).toFixed(1)),
        step_ms_median: Number((med * 1000).toFixed(1)),
        allreduce_ms_in_step: Number(median(inStep).toFixed(2)),
        allreduce_ms_alone: Number(median(alone).toFixed(2)),
        allreduce_mb: Number(((floats * 4) / 2 ** 20).toFixed(2)),
        gflops: Number(((batch / med) * 6 * summarize(cfg).macs * 1e-9).toFixed(1)),
        peak_rss_mib: Math.round(process.resourceUsage().maxRSS / 1024),
        tensors_flat: tf.memory().numTensors === tensorsAfterWarmup,
      }),
    );
  }
}

main().catch((e: unknown) => {
  console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
