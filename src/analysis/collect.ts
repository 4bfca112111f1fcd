// The analyses' files of every run under a results folder, as figure series: what
// `plot --gradients` and `report` draw. Runs without a given file are left out of that figure.
import type { RunRecord } from '../report/runs';
import { readGradients } from './gradients-csv';
import type { GradientSeries } from './gradients-figure';
import { readLesion } from './lesion';
import type { LesionSeries } from './lesion-figure';
import { readResponses } from './responses';
import type { ResponseSeries } from './responses-figure';

function series<T>(runs: RunRecord[], read: (dir: string) => T[] | undefined) {
  return runs.flatMap((r) => {
    const rows = read(r.dir);
    return rows && rows.length > 0 ? [{ run: r.name, variant: r.variant, depth: r.depth, rows }] : [];
  });
}

export interface AnalysisSeries {
  responses: ResponseSeries[];
  lesion: LesionSeries[];
  gradients: GradientSeries[];
}

export function collectAnalyses(runs: RunRecord[]): AnalysisSeries {
  return {
    responses: series(runs, readResponses),
    lesion: series(runs, readLesion),
    gradients: series(runs, readGradients),
  };
}
