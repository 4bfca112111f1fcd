// placeholder until issue 9 merges: issue 9's helper owns this file (run folder integrity,
// the lock, failed.json). Only runStatus is here, with the signature that branch exports,
// so that `grid --list` (src/cluster/list.ts) can be written and tested against it.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface RunStatus {
  state: 'not-started' | 'in-progress' | 'finished' | 'failed';
  iteration: number;
  plannedIterations?: number;
  error?: string;
  lockedBy?: { host: string; pid: number };
}

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The last complete row's iteration in metrics.csv (0 when there is none). */
function lastIteration(file: string): number {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return 0;
  }
  const lines = text.split('\n').slice(1, text.endsWith('\n') ? -1 : -2);
  const n = Number(
    lines
      .filter((l) => l.trim() !== '')
      .pop()
      ?.split(',')[0],
  );
  return Number.isFinite(n) ? n : 0;
}

export function runStatus(dir: string): RunStatus {
  const config = readJson(path.join(dir, 'config.json'));
  const recipe = config?.recipe as { iterations?: unknown } | undefined;
  const plannedIterations = typeof recipe?.iterations === 'number' ? recipe.iterations : undefined;
  const summary = readJson(path.join(dir, 'summary.json'));
  if (summary?.finished === true) {
    const iteration =
      typeof summary.iterations === 'number' ? summary.iterations : lastIteration(path.join(dir, 'metrics.csv'));
    return { state: 'finished', iteration, plannedIterations };
  }
  const failed = readJson(path.join(dir, 'failed.json'));
  if (failed) {
    return {
      state: 'failed',
      iteration: typeof failed.iteration === 'number' ? failed.iteration : 0,
      plannedIterations,
      error: typeof failed.error === 'string' ? failed.error : 'failed (see failed.json)',
    };
  }
  if (!fs.existsSync(path.join(dir, 'config.json'))) return { state: 'not-started', iteration: 0, plannedIterations };
  return { state: 'in-progress', iteration: lastIteration(path.join(dir, 'metrics.csv')), plannedIterations };
}
