// The `grid` command's cluster flags: --list [--json], --index, --emit slurm|k8s and the
// emitters' options. src/cli/main.ts declares the command and calls in here.
import { Command, Option } from 'commander';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TEST_FILE } from '../data/cifar10';
import type { Experiment } from '../experiment/grid';
import { packageVersion } from '../experiment/run';
import { integer, SettingsError, type RunSettings } from '../experiment/settings';
import { k8sManifest } from './k8s';
import { formatList, listRuns } from './list';
import { planTasks } from './plan';
import { slurmScript } from './slurm';

export interface ClusterFlags {
  list?: boolean;
  json?: boolean;
  index?: string;
  emit?: 'slurm' | 'k8s';
  time: string;
  cpus?: string;
  mem?: string;
  partition?: string;
  parallel?: string;
  jobName?: string;
  image: string;
  resultsClaim: string;
  dataClaim: string;
  backoffLimitPerIndex: string;
}

export function addClusterOptions(cmd: Command): Command {
  return cmd
    .option('--list', 'list the runs (index, name, status, folder) instead of running them')
    .option('--json', 'with --list: JSON for scripts')
    .option('--index <i>', 'run only run i of --list (default: $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX)')
    .addOption(
      new Option('--emit <scheduler>', 'print a job for a cluster instead of running').choices(['slurm', 'k8s']),
    )
    .option('--time <limit>', 'slurm: time limit per task (a task requeues itself before it)', '24:00:00')
    .option('--cpus <n>', 'slurm/k8s: cores per task (default 2)')
    .option('--mem <GiB>', 'slurm/k8s: memory per task (default: from the deepest net)')
    .option('--partition <name>', 'slurm: partition')
    .option('--parallel <n>', 'slurm/k8s: tasks running at once (default: all)')
    .option('--job-name <name>', 'slurm/k8s: job name (default resnet-exp-<experiment>)')
    .option('--image <ref>', 'k8s: container image built from the Dockerfile', `resnet-exp:${packageVersion()}`)
    .option(
      '--results-claim <name>',
      'k8s: PersistentVolumeClaim for the results (ReadWriteMany)',
      'resnet-exp-results',
    )
    .option('--data-claim <name>', 'k8s: PersistentVolumeClaim holding cifar-10-batches-bin', 'cifar10-data')
    .option('--backoff-limit-per-index <n>', 'k8s: failed pods allowed per run', '2');
}

/** Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (sbatch(1)). */
function checkSlurmTime(t: string): void {
  if (!/^(\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2})$/.test(t)) {
    throw new SettingsError(`--time must be a Slurm time limit (minutes, H:MM:SS or D-HH:MM:SS), got '${t}'`);
  }
}

type Base = Pick<RunSettings, 'dataDir' | 'out' | 'engine' | 'precision' | 'recordsPerFile' | 'fresh'>;

/** Handles --emit and --list; returns false when the grid should train instead. */
export function clusterAction(exp: Experiment, given: string, base: Base, o: ClusterFlags): boolean {
  if (o.emit && o.list) throw new SettingsError('--emit and --list do not go together; pick one');
  if (o.json && !o.list) throw new SettingsError('--json only goes with --list');
  if (o.emit) {
    // A task would discard its own checkpoint every time it is requeued or replaced.
    if (base.fresh) throw new SettingsError('--fresh does not go with --emit: a requeued task would start over');
    if (o.emit === 'slurm') checkSlurmTime(o.time);
    const plan = planTasks(exp, given, base, o);
    const parallel = o.parallel === undefined ? undefined : integer('--parallel', o.parallel, 1);
    // The data may well live only on the cluster's file system: say so, do not refuse.
    if (o.emit === 'slurm' && !fs.existsSync(path.join(plan.dataDir, TEST_FILE))) {
      process.stderr.write(`warning: no CIFAR-10 files in ${plan.dataDir} here; the tasks will need them there\n`);
    }
    if (o.emit === 'slurm') {
      // Slurm fails a task at once when its log folder is missing (CLUSTER.md).
      fs.mkdirSync(plan.logDir, { recursive: true });
      process.stderr.write(`logs of the tasks go to ${plan.logDir}/<job>_<task>.log\n`);
      process.stdout.write(slurmScript(plan, { time: o.time, partition: o.partition, parallel }));
    } else {
      process.stdout.write(
        k8sManifest(plan, {
          image: o.image,
          resultsClaim: o.resultsClaim,
          dataClaim: o.dataClaim,
          parallel,
          backoffLimitPerIndex: integer('--backoff-limit-per-index', o.backoffLimitPerIndex, 0),
        }),
      );
    }
    return true;
  }
  if (o.list) {
    const runs = listRuns(exp, base);
    process.stdout.write(o.json ? JSON.stringify(runs, null, 2) + '\n' : formatList(runs) + '\n');
    return true;
  }
  return false;
}
