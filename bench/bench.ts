// npm run bench: training throughput of our engines beside PyTorch's, measured in the same
// run on the same cores, interleaved round by round (this 2-core machine drifts +-20%),
// plus the input pipeline's images/s. Not a test: it prints figures, it asserts nothing.
// A ratio is the median over rounds of (ours / PyTorch) in the same round: the two halves
// of a pair run seconds apart, under the same load from the machine's other tenants.
//
//   npm run bench [-- --rounds 4 --steps 10 --warmup 5 --nets resnet-20,resnet-56 --engines native]
// With OpenMPI, a data-parallel column (2 ranks x 1 thread) joins the native one.
import * as os from 'node:os';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TrainBatches } from '../src/data/batches';
import { loadCifar10, pixelMean, type Cifar10Split } from '../src/data/cifar10';
import { arg, median } from './train-throughput';

const ROOT = path.resolve(__dirname, '..');
const TORCH_SCRIPT = path.resolve(ROOT, '../shared/bench/torch_cifar_resnet.py');
const PYTHON = '/usr/bin/python3';
const DATA = path.resolve(ROOT, '../shared/cifar-10-batches-bin');

const rounds = Number(arg('rounds', '4'));
const steps = arg('steps', '10');
const warmup = arg('warmup', '5');
const threads = arg('threads', '2');
const nets = arg('nets', 'plain-56,resnet-20,resnet-56,resnet-110').split(',');

interface Measure {
  img_s_median: number;
  step_ms_median?: number;
  allreduce_ms_in_step?: number;
  allreduce_ms_alone?: number;
  allreduce_mb?: number;
  gflops?: number;
  peak_rss_mib?: number;
  tensors_flat?: boolean;
  /** the engine's version line, e.g. "oneDNN 2.6.3 (ISA avx512_core_amx), batch-norm loops avx512" */
  version?: string;
}

function jsonLine(stdout: string, key: string): Measure | undefined {
  const line = stdout.split('\n').find((l) => l.includes(`"${key}"`));
  return line ? (JSON.parse(line) as Measure) : undefined;
}

// An engine column: 'native', 'tensorflow', or 'native-bf16' (native with --precision bf16).
function engineArgs(column: string): string[] {
  const [engine, precision] = column.split('-');
  return ['--engine', engine, ...(precision ? ['--precision', precision] : [])];
}

function ours(engine: string, net: string): Measure | string {
  const [variant, depth] = net.split('-');
  const args = [
    '--import',
    'tsx',
    path.join(__dirname, 'train-throughput.ts'),
    ...engineArgs(engine),
    '--depth',
    depth,
  ];
  args.push('--steps', steps, '--warmup', warmup, '--threads', threads);
  if (variant === 'plain') args.push('--plain');
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' });
  return jsonLine(r.stdout, 'img_s_median') ?? (r.stderr.trim().split('\n').pop() || `exit ${r.status}`);
}

// Data-parallel: 2 ranks x 1 thread under mpirun, against 1 process x 2 threads ('native').
const MPI_SIDE = 'native-2ranks';

// One round's order: each pair whose ratio is reported runs back to back, PyTorch between
// the first two engines and the 2-rank column right after native. The load from this
// machine's other tenants comes in spells of a minute or so; with PyTorch last, native and
// PyTorch ran three measurements (~30 s) apart and a spell could slow only one of them.
function roundOrder(engines: string[], haveTorch: boolean): string[] {
  const single = engines.filter((e) => e !== MPI_SIDE);
  const order = haveTorch ? [...single.slice(1), 'pytorch', ...single.slice(0, 1)] : single;
  if (engines.includes(MPI_SIDE)) order.splice(order.indexOf('native') + 1, 0, MPI_SIDE);
  return order;
}

function haveMpi(): boolean {
  if (spawnSync('mpirun', ['--version']).status !== 0) return false;
  const probe = "process.exit(require('./src/engine/native/addon').loadAddon().hasMpi ? 0 : 1)";
  return spawnSync(process.execPath, ['--import', 'tsx', '-e', probe], { cwd: ROOT }).status === 0;
}

function oursMpi(net: string): Measure | string {
  const [variant, depth] = net.split('-');
  const args = ['--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath, '--import', 'tsx'];
  args.push(path.join(__dirname, 'data-parallel.ts'), '--depth', depth, '--steps', steps, '--warmup', warmup);
  args.push('--threads', '1');
  if (variant === 'plain') args.push('--plain');
  const r = spawnSync('mpirun', args, { cwd: ROOT, encoding: 'utf8' });
  return jsonLine(r.stdout, 'img_s_median') ?? (r.stderr.trim().split('\n').pop() || `exit ${r.status}`);
}

/**
 * Projected speed-up of one run over M machines like this one, from the one-machine step
 * time T1 and the gradient bytes: each machine computes 1/M of the batch (assumed to scale
 * linearly, which small per-machine batches do not quite), then a ring allreduce moves
 * 2(M-1)/M of the gradient bytes over each link and pays 2(M-1) latencies.
 */
function projection(stepMs: number, mb: number, gbitPerS: number, latencyUs: number, machines: number): number {
  const bytes = mb * 2 ** 20;
  const ringMs =
    ((2 * (machines - 1)) / machines) * (bytes / ((gbitPerS * 1e9) / 8)) * 1000 +
    (2 * (machines - 1) * latencyUs) / 1000;
  return stepMs / (stepMs / machines + ringMs);
}

function torch(net: string): Measure | string {
  const [variant, depth] = net.split('-');
  const argv = [
    TORCH_SCRIPT,
    '--depth',
    depth,
    '--channels-last',
    '--steps',
    steps,
    '--warmup',
    warmup,
    '--threads',
    threads,
    '--no-infer',
  ];
  if (variant === 'plain') argv.push('--plain');
  // Run the reference script unchanged, then report the interpreter's own peak RSS.
  const wrapper = [
    'import json, resource, runpy, sys',
    `sys.argv = ${JSON.stringify(argv)}`,
    "runpy.run_path(sys.argv[0], run_name='__main__')",
    "print(json.dumps({'peak_rss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))",
  ].join('\n');
  const r = spawnSync(PYTHON, ['-c', wrapper], { encoding: 'utf8' });
  const m = jsonLine(r.stdout, 'img_s_median');
  const rss = jsonLine(r.stdout, 'peak_rss_kib') as unknown as { peak_rss_kib: number } | undefined;
  if (!m) return r.stderr.trim().split('\n').pop() || `exit ${r.status}`;
  return { ...m, peak_rss_mib: rss ? Math.round(rss.peak_rss_kib / 1024) : undefined };
}

/**
 * The FP32 FMA peak of `threads` threads (native/peak.cc), measured once a round beside the
 * nets so that GFLOP/s can be read as a share of what this CPU can do at this moment.
 */
function fmaPeak(): { gflops: number; isa: string } | string {
  const probe =
    "const a = require('./src/engine/native/addon').loadAddon(); " +
    `a.setThreads({ threads: ${Number(threads)} }); console.log(JSON.stringify(a.fmaPeak({ seconds: 1 })));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', probe], { cwd: ROOT, encoding: 'utf8' });
  const line = r.stdout.split('\n').find((l) => l.includes('"gflops"'));
  return line ? (JSON.parse(line) as { gflops: number; isa: string }) : r.stderr.trim().split('\n').pop() || 'no addon';
}

function available(column: string): boolean {
  const [engine, precision] = column.split('-');
  const probe =
    `require('./src/engine/select').selectEngine('${engine}', undefined, '${precision ?? 'fp32'}')` +
    '.then(() => process.exit(0), () => process.exit(1))';
  return spawnSync(process.execPath, ['--import', 'tsx', '-e', probe], { cwd: ROOT }).status === 0;
}

function pipeline(): string {
  let split: Cifar10Split;
  let source: string;
  if (fs.existsSync(path.join(DATA, 'data_batch_1.bin'))) {
    split = loadCifar10(DATA).train;
    source = 'CIFAR-10 training set';
  } else {
    const count = 10000;
    split = { images: new Uint8Array(count * 3072).map((_, i) => (i * 7) & 255), labels: new Uint8Array(count), count };
    source = 'synthetic images (CIFAR-10 not found at ../shared)';
  }
  const batches = new TrainBatches(split, pixelMean(split), 128, 1);
  const t0 = performance.now();
  const n = 400;
  for (let i = 0; i < n; i++) batches.batch(i);
  const ips = (n * 128) / ((performance.now() - t0) / 1000);
  return `input pipeline (${source}): ${ips.toFixed(0)} images/s on one core, augmented batches of 128`;
}

function main(): void {
  const haveTorch = fs.existsSync(TORCH_SCRIPT) && spawnSync(PYTHON, ['-c', 'import torch']).status === 0;
  // native-bf16: the optional --precision bf16 (AVX512-BF16/AMX CPUs); the targets are fp32.
  const engines = arg('engines', 'native,native-bf16,tensorflow').split(',').filter(available);
  if (engines.includes('native') && haveMpi()) engines.push(MPI_SIDE);
  console.log(`engines measured: ${engines.join(', ') || 'none'}; cpu (pure JavaScript) is not: ~300 s per step`);
  console.log(
    haveTorch
      ? `reference: PyTorch (${TORCH_SCRIPT})`
      : 'reference: PyTorch not available (apt-get install python3-torch)',
  );
  console.log(
    `batch 128, ${threads} threads, ${warmup} warm-up + ${steps} timed steps, ${rounds} interleaved rounds; ` +
      'medians over rounds of each side and of the per-round ratios\n',
  );

  const results: Record<string, Record<string, number[]>> = {};
  // ratios[net][engine]: ours / PyTorch within each round where both were measured.
  const ratios: Record<string, Record<string, number[]>> = {};
  const extra: Record<string, Measure> = {};
  const failures: string[] = [];
  const peaks: number[] = [];
  let peakIsa = '';
  const versions: Record<string, string> = {};
  for (let r = 0; r < rounds; r++) {
    const p = fmaPeak();
    if (typeof p === 'string') failures.push(`FMA peak: ${p}`);
    else {
      peaks.push(p.gflops);
      peakIsa = p.isa;
      process.stderr.write(`round ${r + 1} FMA peak: ${p.gflops.toFixed(0)} GFLOP/s\n`);
    }
    // Every other round runs the sides in reverse order: a fixed order turns any drift or
    // position effect into a bias for one side (on this shared machine the second of two
    // alternating processes has tended to run slower).
    const sides = roundOrder(engines, haveTorch);
    if (r % 2 === 1) sides.reverse();
    for (const net of nets) {
      const round: Record<string, number> = {};
      for (const side of sides) {
        const m = side === 'pytorch' ? torch(net) : side === MPI_SIDE ? oursMpi(net) : ours(side, net);
        if (typeof m === 'string') {
          failures.push(`${side} ${net}: ${m}`);
          continue;
        }
        ((results[net] ??= {})[side] ??= []).push(m.img_s_median);
        round[side] = m.img_s_median;
        extra[`${net}/${side}`] = m;
        if (m.version) versions[side] = m.version;
        process.stderr.write(`round ${r + 1} ${net} ${side}: ${m.img_s_median} img/s\n`);
      }
      for (const e of engines) {
        if (round[e] && round.pytorch) ((ratios[net] ??= {})[e] ??= []).push(round[e] / round.pytorch);
      }
      if (round[MPI_SIDE] && round.native) ((ratios[net] ??= {}).dp ??= []).push(round[MPI_SIDE] / round.native);
      const a = extra[`${net}/${MPI_SIDE}`];
      if (round[MPI_SIDE] && a) {
        ((results[net] ??= {}).arStep ??= []).push(a.allreduce_ms_in_step ?? NaN);
        (results[net].arAlone ??= []).push(a.allreduce_ms_alone ?? NaN);
      }
    }
  }

  // Best of the rounds: the peak is what the CPU can do; a lower round had company.
  const peak = peaks.length ? Math.max(...peaks) : NaN;
  const ofPeak = (gf: number) =>
    Number.isFinite(gf) ? `${gf.toFixed(0)}${peaks.length ? ` (${((100 * gf) / peak).toFixed(0)}%)` : ''}` : '-';
  // What ran: the CPU (README tables name it) and each engine's kernels.
  console.log(`CPU: ${os.cpus()[0]?.model ?? 'unknown'}`);
  for (const [side, v] of Object.entries(versions)) console.log(`${side}: ${v}`);
  console.log(
    peaks.length
      ? `FP32 FMA peak of ${threads} threads (${peakIsa}, native/peak.cc): ${peak.toFixed(0)} GFLOP/s ` +
          `(rounds ${Math.min(...peaks).toFixed(0)}-${peak.toFixed(0)}); GFLOP/s columns give (% of it)\n`
      : 'FP32 FMA peak: not measured (no native addon)\n',
  );
  const header = ['net', ...engines.flatMap((e) => [`${e} img/s`, `${e} GFLOP/s`, `${e} peak RSS`])];
  header.push('pytorch img/s', 'pytorch GFLOP/s', 'pytorch peak RSS');
  if (haveTorch) header.push(...engines.map((e) => `${e}/pytorch`));
  const rows = [header];
  for (const net of nets) {
    const res = results[net] ?? {};
    const torchMed = res.pytorch ? median(res.pytorch) : NaN;
    const row = [net];
    for (const e of engines) {
      const med = res[e] ? median(res[e]) : NaN;
      const m = extra[`${net}/${e}`];
      const gf = m?.gflops && m.img_s_median ? (m.gflops / m.img_s_median) * med : NaN;
      row.push(
        med.toFixed(1),
        ofPeak(gf),
        m ? `${m.peak_rss_mib} MiB${m.tensors_flat ? '' : ' (tensors grew!)'}` : '-',
      );
    }
    const t = extra[`${net}/pytorch`] as (Measure & { train_gflops_median?: number }) | undefined;
    const tgf = t?.train_gflops_median ? (t.train_gflops_median / t.img_s_median) * torchMed : NaN;
    row.push(torchMed.toFixed(1), ofPeak(tgf), t?.peak_rss_mib ? `${t.peak_rss_mib} MiB` : '-');
    if (haveTorch) {
      for (const e of engines) {
        const rs = ratios[net]?.[e];
        row.push(
          rs?.length ? `${median(rs).toFixed(2)}x (${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)})` : '-',
        );
      }
    }
    rows.push(row);
  }
  const widths = header.map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const r of rows) console.log(r.map((cell, c) => cell.padStart(widths[c])).join('  '));
  if (engines.includes(MPI_SIDE)) dataParallelReport(results, ratios, extra);
  console.log('\n' + pipeline());
  for (const column of engines.filter((e) => e.startsWith('native') && e !== MPI_SIDE)) {
    const args = ['--import', 'tsx', path.join(__dirname, 'profile.ts'), ...engineArgs(column), '--depth', '20'];
    const p = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' });
    console.log('\n' + (p.stdout.trim() || p.stderr.trim()));
  }
  if (failures.length) console.log(`\nfailed measurements:\n  ${[...new Set(failures)].join('\n  ')}`);
}

function dataParallelReport(
  results: Record<string, Record<string, number[]>>,
  ratios: Record<string, Record<string, number[]>>,
  extra: Record<string, Measure>,
): void {
  console.log(
    `\ndata-parallel: ${MPI_SIDE} (mpirun -np 2, 1 thread each) against native (1 process, ${threads} threads)`,
  );
  const fmt = (xs?: number[], d = 2) => (xs?.length ? median(xs).toFixed(d) : '-');
  for (const net of nets) {
    const r = results[net] ?? {};
    const rs = ratios[net]?.dp;
    console.log(
      `  ${net}: ${fmt(r[MPI_SIDE], 1)} img/s vs ${fmt(r.native, 1)}: ${rs?.length ? `${median(rs).toFixed(2)}x (${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)})` : '-'}; ` +
        `allreduce of ${extra[`${net}/${MPI_SIDE}`]?.allreduce_mb ?? '?'} MB: ${fmt(r.arAlone)} ms alone, ` +
        `${fmt(r.arStep)} ms in the step (with waiting for the slower rank)`,
    );
  }
  const networks = [
    { name: '10 Gbit/s Ethernet, 50 us', gbit: 10, lat: 50 },
    { name: '1 Gbit/s Ethernet, 100 us', gbit: 1, lat: 100 },
  ];
  console.log('\nprojected speed-up of one run on M such machines (ring allreduce; compute split M ways):');
  for (const n of networks) {
    for (const net of nets) {
      const native = results[net]?.native;
      const mb = extra[`${net}/${MPI_SIDE}`]?.allreduce_mb;
      if (!native?.length || !mb) continue;
      const stepMs = (128 / median(native)) * 1000;
      const ups = [2, 4, 8, 16].map((m) => `${m}: ${projection(stepMs, mb, n.gbit, n.lat, m).toFixed(1)}x`);
      console.log(`  ${n.name}, ${net} (step ${stepMs.toFixed(0)} ms): ${ups.join(', ')}`);
    }
  }
}

main();
