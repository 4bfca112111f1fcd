// `plot --gradients`: the L2 norm of each conv layer's weight gradient against the layer's
// depth, at a few logged iterations; one panel per depth, plain nets dashed against
// ResNets solid, log scale (the norms span orders of magnitude).
import type { TopLevelSpec } from 'vega-lite';
import type { GradientRow } from './gradients-csv';
import { VARIANT_DASH } from './responses-figure';

export interface GradientSeries {
  run: string;
  variant: 'plain' | 'resnet';
  depth: number;
  rows: GradientRow[];
}

/** Up to `count` logged iterations, spread from the first to the last. */
export function pickIterations(iterations: number[], count = 4): number[] {
  const sorted = [...new Set(iterations)].sort((a, b) => a - b);
  if (sorted.length <= count) return sorted;
  const picked = Array.from({ length: count }, (_, i) => sorted[Math.round((i * (sorted.length - 1)) / (count - 1))]);
  return [...new Set(picked)];
}

export function buildGradientsSpec(series: GradientSeries[]): TopLevelSpec {
  // The same iterations for every net where they were logged, so curves compare.
  const chosen = new Set(pickIterations(series.flatMap((s) => s.rows.map((r) => r.iteration))));
  const values = series.flatMap((s) =>
    s.rows
      .filter((r) => chosen.has(r.iteration) && r.gradNorm > 0)
      .map((r) => ({
        run: s.run,
        net: `${s.depth} layers`,
        depth: s.depth,
        variant: s.variant,
        iteration: r.iteration,
        layer: r.layer,
        name: r.name,
        norm: r.gradNorm,
      })),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    description: 'Gradient flow: L2 norm of each conv layer weight gradient against depth',
    title: {
      text: "Gradient norm of each conv layer's weights against depth",
      subtitle: 'dashed: plain, solid: ResNet; colour: training iteration',
    },
    data: { values },
    facet: { row: { field: 'net', type: 'ordinal', title: null, sort: { field: 'depth' } } },
    spec: {
      width: 460,
      height: 170,
      mark: { type: 'line', point: { size: 12 }, strokeWidth: 1.2 },
      encoding: {
        x: {
          field: 'layer',
          type: 'quantitative',
          title: 'conv layer (input side → output side)',
          axis: { tickMinStep: 1, format: 'd' },
        },
        y: { field: 'norm', type: 'quantitative', title: '‖∂loss/∂W‖₂ (interval mean)', scale: { type: 'log' } },
        color: { field: 'iteration', type: 'ordinal', scale: { scheme: 'viridis' } },
        strokeDash: {
          field: 'variant',
          type: 'nominal',
          title: null,
          scale: VARIANT_DASH,
          legend: null, // said in the titles: resvg draws no dashed legend symbols
        },
        detail: { field: 'run', type: 'nominal' },
        tooltip: [
          { field: 'run', type: 'nominal' },
          { field: 'name', type: 'nominal', title: 'layer' },
          { field: 'iteration', type: 'quantitative' },
          { field: 'norm', type: 'quantitative', format: '.3g', title: 'gradient norm' },
        ],
      },
    },
    resolve: { scale: { y: 'independent' } },
    config: { font: 'sans-serif' },
  } as TopLevelSpec;
}
