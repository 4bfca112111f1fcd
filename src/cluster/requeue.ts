// Time limits on Slurm: `--signal=B:USR1@<s>` warns the task before its limit; the task has
// then checkpointed (src/cli/main.ts stopOnSignals) and asks Slurm to run it again. With
// --requeue a TIMEOUT is not requeued by Slurm itself (CLUSTER.md), hence this.
import { spawnSync } from 'node:child_process';

/** This process's Slurm job as `scontrol` names it: <array job>_<task> for an array task. */
export function slurmJobId(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.SLURM_ARRAY_JOB_ID && env.SLURM_ARRAY_TASK_ID) return `${env.SLURM_ARRAY_JOB_ID}_${env.SLURM_ARRAY_TASK_ID}`;
  return env.SLURM_JOB_ID || undefined;
}

/**
 * `scontrol requeue` of our own task: Slurm then sends SIGTERM (we are exiting anyway) and
 * starts the task again later with the same index; it resumes from the checkpoint.
 * We do not also move its start to now (`scontrol update StartTime=now`): the ~2 minutes
 * Slurm waits before a requeued job may start are small next to a run of hours, are the
 * cluster's own policy, and the task is still running (not yet pending) when it could ask.
 */
export function requeueSelf(log: (line: string) => void, env: NodeJS.ProcessEnv = process.env): boolean {
  const id = slurmJobId(env);
  if (!id) {
    log('SIGUSR1 outside Slurm: checkpoint saved, not requeued; run the same command to resume');
    return false;
  }
  // The requeue makes Slurm SIGTERM every process of the task, scontrol too (proctrack/pgid
  // or cgroup), sometimes before it has reported success: it then looks failed although the
  // task was requeued (seen on a loaded machine). Ignoring SIGTERM survives exec, so the
  // shell's trap lets scontrol answer; SIGKILL after KillWait still ends it.
  const r = spawnSync('sh', ['-c', 'trap "" TERM; exec scontrol requeue "$1"', 'sh', id], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (r.status === 0) {
    log(`time limit near: checkpoint saved, Slurm task ${id} requeued; it resumes when Slurm starts it again`);
    return true;
  }
  const why = (r.stderr || r.error?.message || (r.signal ? `killed by ${r.signal}` : `exit ${r.status}`))
    .trim()
    .split('\n')[0];
  log(`time limit near: checkpoint saved, but \`scontrol requeue ${id}\` failed (${why}); resubmit to resume`);
  return false;
}
