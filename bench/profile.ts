// Where a training step's time goes, kernel by kernel (tf.profile):
//   node --import tsx bench/profile.ts [--engine native] [--depth 20] [--plain] [--batch 128]
//        [--precision bf16] [--top 14]
// npm run bench prints it for ResNet-20; run it alone for other nets.
import * as tf from '@tensorflow/tfjs-core';
import { netName } from '../src/model/resnet';
import { trainStep } from '../src/train/step';
import { arg, benchSetup } from './train-throughput';

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
}

main().catch((e: unknown) => {
  console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
