// The lesion figure, after Veit et al. 2016 Fig. 3 and 5a: test error with one block
// deleted (by block; downsampling blocks as filled squares; the intact net as a rule),
// and with k random blocks deleted (mean and ± 1 std over the draws).
import type { TopLevelSpec } from 'vega-lite';
import type { LesionRow } from './lesion';
import { netColours, VARIANT_DASH } from './responses-figure';

export interface LesionSeries {
  run: string;
  variant: 'plain' | 'resnet';
  depth: number;
  rows: LesionRow[];
}

export function buildLesionSpec(series: LesionSeries[]): TopLevelSpec {
  const nets = [...new Set(series.map((s) => `${s.variant}-${s.depth}`))].sort();
  const colour = netColours(nets);
  const dash = {
    field: 'variant',
    type: 'nominal' as const,
    title: null,
    scale: VARIANT_DASH,
    legend: null, // said in the titles: resvg draws no dashed legend symbols
  };
  const single = series.flatMap((s) =>
    s.rows
      .filter((r) => r.kind === 'single')
      .map((r) => ({
        run: s.run,
        net: `${s.variant}-${s.depth}`,
        variant: s.variant,
        // index among all blocks (stage/blockN), so plain and residual nets line up
        index: blockIndex(r.block, s.depth),
        block: r.block,
        kind: r.downsampling ? 'downsampling block' : 'block',
        error: r.errorMean,
      })),
  );
  const intact = series.map((s) => ({
    run: s.run,
    net: `${s.variant}-${s.depth}`,
    error: s.rows.find((r) => r.kind === 'none')?.errorMean ?? NaN,
  }));
  const random = series.flatMap((s) =>
    s.rows
      .filter((r) => r.kind === 'random')
      .map((r) => ({
        run: s.run,
        net: `${s.variant}-${s.depth}`,
        variant: s.variant,
        k: r.k,
        error: r.errorMean,
        lo: r.errorMean - r.errorStd,
        hi: r.errorMean + r.errorStd,
        std: r.errorStd,
        draws: r.draws,
      })),
  );
  const y = { field: 'error', type: 'quantitative' as const, title: 'test error (%)', scale: { domain: [0, 100] } };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    description: 'Lesion study (Veit et al. 2016): test error after deleting blocks at test time',
    vconcat: [
      {
        width: 460,
        height: 200,
        title: 'Deleting one block (dashed: plain, solid: ResNet; dotted: intact net; squares: downsampling blocks)',
        layer: [
          {
            data: { values: single },
            mark: { type: 'line', strokeWidth: 1.2 },
            encoding: {
              x: {
                field: 'index',
                type: 'quantitative',
                title: 'deleted block (1 = first block of stage 1)',
                axis: { tickMinStep: 1, format: 'd' },
              },
              y,
              color: colour,
              strokeDash: dash,
              detail: { field: 'run', type: 'nominal' },
            },
          },
          {
            data: { values: single },
            mark: { type: 'point', filled: true, size: 30 },
            encoding: {
              x: { field: 'index', type: 'quantitative' },
              y,
              color: colour,
              shape: {
                field: 'kind',
                type: 'nominal',
                title: null,
                scale: { domain: ['block', 'downsampling block'], range: ['circle', 'square'] },
              },
              tooltip: [
                { field: 'run', type: 'nominal' },
                { field: 'block', type: 'nominal' },
                { field: 'kind', type: 'nominal' },
                { field: 'error', type: 'quantitative', format: '.2f', title: 'error (%)' },
              ],
            },
          },
          {
            data: { values: intact },
            mark: { type: 'rule', strokeDash: [2, 2] },
            encoding: {
              y,
              color: colour,
              tooltip: [
                { field: 'run', type: 'nominal' },
                { field: 'error', type: 'quantitative', format: '.2f', title: 'intact error (%)' },
              ],
            },
          },
        ],
      },
      {
        width: 460,
        height: 200,
        title: 'Deleting k random blocks (mean ± std over the draws)',
        data: { values: random },
        layer: [
          {
            mark: { type: 'errorband', opacity: 0.2 },
            encoding: {
              x: {
                field: 'k',
                type: 'quantitative',
                title: 'blocks deleted (k)',
                axis: { tickMinStep: 1, format: 'd' },
              },
              y: { field: 'lo', type: 'quantitative', title: 'test error (%)', scale: { domain: [0, 100] } },
              y2: { field: 'hi' },
              color: colour,
              detail: { field: 'run', type: 'nominal' },
            },
          },
          {
            mark: { type: 'line', point: { size: 14 }, strokeWidth: 1.2 },
            encoding: {
              x: { field: 'k', type: 'quantitative' },
              y,
              color: colour,
              strokeDash: dash,
              detail: { field: 'run', type: 'nominal' },
              tooltip: [
                { field: 'run', type: 'nominal' },
                { field: 'k', type: 'quantitative' },
                { field: 'error', type: 'quantitative', format: '.2f', title: 'mean error (%)' },
                { field: 'std', type: 'quantitative', format: '.2f' },
                { field: 'draws', type: 'quantitative' },
              ],
            },
          },
        ],
      },
    ],
    config: { font: 'sans-serif' },
  } as TopLevelSpec;
}

/** 1-based position of stageS/blockB among the 3n blocks of a 6n+2 net. */
function blockIndex(name: string, depth: number): number {
  const m = /^stage(\d+)\/block(\d+)$/.exec(name);
  if (!m) return NaN;
  const n = (depth - 2) / 6;
  return (Number(m[1]) - 1) * n + Number(m[2]);
}
