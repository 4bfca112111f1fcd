// How long a task can take between a stop signal and its checkpoint: the signal is
// honoured between steps, so the worst case is one training step plus, when the step ends on
// an evaluation, a forward pass over the 10,000 test images. Slurm's KillWait, the
// --signal lead time and Kubernetes' terminationGracePeriodSeconds must cover that.
//   node --import tsx scripts/measure-stop-latency.ts --depth 110 [--steps 3] [--eval 10000]
// Prints one JSON line. Uses the bench's setup (random CIFAR-shaped data, native engine).
// On a machine shared with other work, wall time swings; CPU time / threads estimates the
// wall time on the same cores unshared (the work is compute bound), so both are printed.
import { arg, benchSetup } from '../bench/train-throughput';
import { evaluate, trainStep } from '../src/train/step';

async function main(): Promise<void> {
  const steps = Number(arg('steps', '3'));
  const evalImages = Number(arg('eval', '10000'));
  const { cfg, net, sgd, x, labels, engine } = await benchSetup();
  const cpuS = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1e6;
  const times: number[] = [];
  const cpuTimes: number[] = [];
  for (let i = 0; i < steps + 1; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    trainStep(net, sgd, x, labels, 0.1);
    // The first step builds caches: not counted.
    if (i > 0) {
      times.push((performance.now() - t0) / 1000);
      cpuTimes.push(cpuS(process.cpuUsage(c0)));
    }
  }
  // Evaluation batches of 500, as src/experiment/run.ts, from the same random images.
  const evalX = new Float32Array(500 * 3072).map((_, i) => x[i % x.length]);
  const evalLabels = new Int32Array(500).map((_, i) => labels[i % labels.length]);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const batches = function* () {
    for (let seen = 0; seen < evalImages; seen += 500) yield { x: evalX, labels: evalLabels, count: 500 };
  };
  evaluate(net, batches());
  const evalS = (performance.now() - t0) / 1000;
  const evalCpuS = cpuS(process.cpuUsage(c0));
  const threads = engine.threads || 1;
  console.log(
    JSON.stringify({
      depth: cfg.depth,
      engine: engine.name,
      threads: engine.threads,
      step_s_max: Number(Math.max(...times).toFixed(2)),
      step_s_min: Number(Math.min(...times).toFixed(2)),
      eval_s: Number(evalS.toFixed(1)),
      eval_images: evalImages,
      // Unshared estimates: CPU seconds over threads; the evaluation scaled to 10,000 images.
      step_cpu_s_max: Number((Math.max(...cpuTimes) / threads).toFixed(2)),
      eval_cpu_s_10k: Number(((evalCpuS / threads) * (10000 / evalImages)).toFixed(1)),
    }),
  );
}

void main();
