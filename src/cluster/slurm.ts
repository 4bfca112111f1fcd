// `grid <experiment> --emit slurm`: an sbatch script that runs the grid as a job array,
// one task per run (task i = `grid --list` index i), ready to submit as printed.
import type { TaskPlan } from './plan';

export interface SlurmOptions {
  time: string;
  partition?: string;
  /** Tasks running at once (the %p of --array); all when absent. */
  parallel?: number;
}

/** Single-quotes a word for bash, so that paths with spaces or $ survive. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

export function slurmScript(plan: TaskPlan, o: SlurmOptions): string {
  const k = plan.runs;
  const directives = [
    `--job-name=${plan.jobName}`,
    `--array=0-${k - 1}${o.parallel ? `%${o.parallel}` : ''}`,
    '--ntasks=1',
    `--cpus-per-task=${plan.cpus}`,
    `--mem=${plan.memoryGiB}G`,
    `--time=${o.time}`,
    ...(o.partition ? [`--partition=${o.partition}`] : []),
    // One log per task, %A_%a = <array job>_<task>: a requeued task keeps both ids, and
    // append mode keeps what it wrote before the requeue. The folder must exist before the
    // task starts (Slurm fails the task at once otherwise): --emit creates it.
    `--output=${plan.logDir}/%A_%a.log`,
    '--open-mode=append',
    '--requeue',
    // B: the batch shell gets the signal, which is the trainer itself (exec below). It
    // checkpoints and requeues its own task; Slurm may deliver up to ~60 s off, so the lead
    // covers that plus the longest stop (a step and an evaluation) of the deepest net.
    `--signal=B:USR1@${plan.signalLeadSeconds}`,
  ];
  const command = [
    plan.node,
    plan.bin,
    'grid',
    plan.experiment,
    '--data-dir',
    plan.dataDir,
    '--out',
    plan.out,
    ...plan.extraFlags,
    '--threads',
    '"$SLURM_CPUS_PER_TASK"',
  ];
  return [
    '#!/bin/bash',
    `# ${plan.title}`,
    `# ${k} runs, task i trains run i of \`resnet-exp grid ${plan.experiment} --list\`.`,
    `# Submit: sbatch <this file>    Watch: resnet-exp grid ${plan.experiment} --out ${plan.out} --list`,
    `# A stop (scancel, preemption, time limit) checkpoints within ${plan.stopSeconds} s on the machine this was`,
    `# measured on (README, "Running on a cluster"); a KillWait below that only costs the steps`,
    `# since the last checkpoint (check: scontrol show config | grep KillWait).`,
    ...directives.map((d) => `#SBATCH ${d}`),
    '',
    'set -eu',
    'echo "resnet-exp task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname), start ${SLURM_RESTART_COUNT:-0}, $(date -Is)"',
    '# exec: node replaces this shell, so it is the process --signal=B:USR1 reaches.',
    `exec ${command.map((w) => (w.startsWith('"$') ? w : shellQuote(w))).join(' ')}`,
    '',
  ].join('\n');
}
