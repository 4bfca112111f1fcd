// What both emitters (--emit slurm, --emit k8s) need to know about a grid: how many tasks,
// what each one runs, and the resources and stop time of its deepest net.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Experiment } from '../experiment/grid';
import { integer, SettingsError, type RunSettings } from '../experiment/settings';
import { memoryGiB, signalLeadSeconds, stopSeconds } from './resources';

export interface TaskPlan {
  title: string;
  /** DNS-1123 label (Kubernetes) and a readable Slurm job name. */
  jobName: string;
  runs: number;
  /** The experiment as `grid` is given it: an absolute path when it is a file. */
  experiment: string;
  /** The experiment file's text when it is not one of the built-in experiments. */
  customFile?: { name: string; text: string };
  node: string;
  bin: string;
  out: string;
  dataDir: string;
  logDir: string;
  /** Flags every task passes to `grid` besides --data-dir/--out/--threads. */
  extraFlags: string[];
  cpus: number;
  memoryGiB: number;
  stopSeconds: number;
  signalLeadSeconds: number;
}

export interface PlanFlags {
  cpus?: string;
  mem?: string;
  jobName?: string;
}

/** A Kubernetes name: lowercase letters, digits and '-', at most 63 characters. */
export function dnsLabel(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return s.slice(0, 63).replace(/-+$/, '') || 'resnet-exp';
}

/** --mem in GiB: '4', '4G' or '4GiB'. */
function parseGiB(value: string): number {
  const n = /^(\d+)\s*(G|GB|Gi|GiB)?$/i.exec(value.trim());
  if (!n || Number(n[1]) < 1) throw new SettingsError(`--mem is whole GiB (e.g. 4 or 4G), got '${value}'`);
  return Number(n[1]);
}

export function planTasks(
  exp: Experiment,
  given: string,
  s: Pick<RunSettings, 'dataDir' | 'out' | 'engine' | 'precision' | 'recordsPerFile'>,
  f: PlanFlags,
): TaskPlan {
  const isFile = fs.existsSync(given);
  const deepest = Math.max(...exp.runs.map((r) => r.net.depth));
  const memory = f.mem === undefined ? memoryGiB(deepest) : parseGiB(f.mem);
  const jobName = dnsLabel(f.jobName ?? `resnet-exp-${exp.name}`);
  if (f.jobName !== undefined && jobName !== f.jobName)
    throw new SettingsError(`--job-name must be lowercase letters, digits and '-', e.g. ${jobName}`);
  const out = path.resolve(s.out);
  const stop = stopSeconds(deepest);
  const extraFlags: string[] = [];
  if (s.engine !== 'auto') extraFlags.push('--engine', s.engine);
  if (s.precision !== 'fp32') extraFlags.push('--precision', s.precision);
  if (s.recordsPerFile !== 10000) extraFlags.push('--records-per-file', String(s.recordsPerFile));
  return {
    title: `resnet-exp grid ${exp.name}: ${exp.description}`.slice(0, 200),
    jobName,
    runs: exp.runs.length,
    experiment: isFile ? path.resolve(given) : exp.name,
    customFile: isFile ? { name: `${exp.name}.json`, text: fs.readFileSync(given, 'utf8') } : undefined,
    // The same resnet-exp the user ran: this node and this bin/resnet-exp (through npx's
    // symlink, if any, to the real file), so every task runs the same code.
    node: process.execPath,
    bin: fs.realpathSync(process.argv[1] ?? path.resolve(__dirname, '../../bin/resnet-exp')),
    out,
    dataDir: path.resolve(s.dataDir),
    logDir: path.join(out, exp.out, 'logs'),
    extraFlags,
    cpus: f.cpus === undefined ? 2 : integer('--cpus', f.cpus, 1),
    memoryGiB: memory,
    stopSeconds: stop,
    signalLeadSeconds: signalLeadSeconds(stop),
  };
}
