// Which run of a grid this process trains: `--index I`, or the task index a scheduler
// gives (a Slurm array task, a Kubernetes Indexed Job pod), or every run in order.
import { SettingsError } from '../experiment/settings';

/** The environment variables a scheduler sets to a task's index, in the order they are read. */
export const INDEX_VARIABLES = ['SLURM_ARRAY_TASK_ID', 'JOB_COMPLETION_INDEX'] as const;

export interface IndexChoice {
  index: number;
  /** '--index' or the environment variable it came from. */
  source: '--index' | (typeof INDEX_VARIABLES)[number];
}

/**
 * The index to run, or undefined for "all runs in order". An explicit --index wins over
 * the environment, so that a user inside an interactive allocation can still pick one.
 * Anything that is not a whole number in [0, count) is one clear error, before training.
 */
export function chooseIndex(
  flag: string | undefined,
  count: number,
  env: NodeJS.ProcessEnv = process.env,
): IndexChoice | undefined {
  let choice: { raw: string; source: IndexChoice['source'] } | undefined;
  if (flag !== undefined) choice = { raw: flag, source: '--index' };
  else {
    const name = INDEX_VARIABLES.find((v) => env[v] !== undefined && env[v] !== '');
    if (name) choice = { raw: env[name]!, source: name };
  }
  if (!choice) return undefined;
  const what = choice.source === '--index' ? '--index' : `${choice.source} (set by the scheduler)`;
  const n = /^\d+$/.test(choice.raw.trim()) ? Number(choice.raw) : NaN;
  if (!Number.isInteger(n)) throw new SettingsError(`${what} must be a whole number >= 0, got '${choice.raw}'`);
  if (n >= count) {
    throw new SettingsError(
      `${what} is ${n}, but this experiment has ${count} runs (indices 0-${count - 1}); see \`grid <experiment> --list\``,
    );
  }
  return { index: n, source: choice.source };
}
