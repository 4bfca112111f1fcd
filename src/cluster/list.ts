// `grid <experiment> --list`: the runs of a grid in their fixed order (the order of the
// experiment file; the index a scheduler task gets), each with its folder and state.
import * as path from 'node:path';
import type { Experiment } from '../experiment/grid';
import { runStatus, type FolderStatus as RunStatus } from '../experiment/run-folder';
import { runDir, type RunSettings } from '../experiment/settings';

export interface ListedRun {
  index: number;
  name: string;
  /** Absolute path of the run folder. */
  dir: string;
  plannedIterations: number;
  status: RunStatus;
}

/** The run folders of an experiment under `out` (the experiment's own sub-folder included). */
export function listRuns(
  exp: Experiment,
  flags: Pick<RunSettings, 'out' | 'precision' | 'recordsPerFile'>,
): ListedRun[] {
  const out = path.resolve(flags.out, exp.out);
  return exp.runs.map((r, index) => {
    const s = { ...flags, net: r.net, seed: r.seed, out, recipe: exp.recipe };
    const dir = runDir(s);
    return { index, name: path.basename(dir), dir, plannedIterations: exp.recipe.iterations, status: runStatus(dir) };
  });
}

function describe(s: RunStatus, planned: number): string {
  switch (s.state) {
    case 'not-started':
      return 'not started';
    case 'in-progress':
      return (
        `at iteration ${s.iteration}/${s.plannedIterations ?? planned}` +
        (s.lockedBy ? ` (running on ${s.lockedBy.host}, pid ${s.lockedBy.pid})` : '')
      );
    case 'finished':
      return `finished (${s.iteration} iterations)`;
    case 'failed':
      return `failed at iteration ${s.iteration}: ${s.error ?? 'see failed.json'}`;
  }
}

export function formatList(runs: ListedRun[]): string {
  const rows = runs.map((r) => [String(r.index), r.name, describe(r.status, r.plannedIterations), r.dir]);
  const header = ['index', 'run', 'status', 'folder'];
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(width[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
