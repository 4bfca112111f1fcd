// Fig. 7's two panels: response std by layer index (top) and sorted by magnitude
// (bottom); plain nets dashed, ResNets solid, one colour per depth as in `plot`.
import type { TopLevelSpec } from 'vega-lite';
import { depthColour } from '../report/figure';
import type { LayerResponse } from './responses';

export interface ResponseSeries {
  /** e.g. plain-20-s1 */
  run: string;
  variant: 'plain' | 'resnet';
  depth: number;
  rows: LayerResponse[];
}

/** Plain nets dashed, ResNets solid, as in Fig. 6. */
export const VARIANT_DASH = {
  domain: ['plain', 'resnet'],
  range: [
    [5, 3],
    [1, 0],
  ],
};

/** A colour per net (`plain-20`, `resnet-56`, ...) by its depth, for a `color` channel on `net`. */
export function netColours(nets: string[]) {
  return {
    field: 'net',
    type: 'nominal' as const,
    title: null,
    scale: { domain: nets, range: nets.map((n) => depthColour(Number(n.split('-')[1]))) },
  };
}

export function buildFig7Spec(series: ResponseSeries[]): TopLevelSpec {
  const values = series.flatMap((s) => {
    const ranks = [...s.rows].sort((a, b) => b.std - a.std).map((r) => r.name);
    return s.rows.map((r) => ({
      run: s.run,
      net: `${s.variant}-${s.depth}`,
      variant: s.variant,
      layer: r.layer,
      name: r.name,
      rank: ranks.indexOf(r.name) + 1,
      std: r.std,
    }));
  });
  const nets = [...new Set(series.map((s) => `${s.variant}-${s.depth}`))].sort();
  const colour = netColours(nets);
  const panel = (x: 'layer' | 'rank', title: string) => ({
    width: 460,
    height: 200,
    title,
    mark: { type: 'line' as const, point: { size: 14 }, strokeWidth: 1.2 },
    encoding: {
      x: {
        field: x,
        type: 'quantitative' as const,
        title: x === 'layer' ? 'layer index' : 'layer index (sorted by magnitude)',
        axis: { tickMinStep: 1, format: 'd' },
      },
      y: { field: 'std', type: 'quantitative' as const, title: 'std' },
      color: colour,
      strokeDash: {
        field: 'variant',
        type: 'nominal' as const,
        title: null,
        scale: VARIANT_DASH,
        legend: null, // said in the titles: resvg draws no dashed legend symbols
      },
      detail: { field: 'run', type: 'nominal' as const },
      tooltip: [
        { field: 'run', type: 'nominal' as const },
        { field: 'name', type: 'nominal' as const, title: 'layer' },
        { field: 'layer', type: 'quantitative' as const, title: 'index' },
        { field: 'std', type: 'quantitative' as const, format: '.3f' },
      ],
    },
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    description: 'Fig. 7: standard deviations of the 3x3 layer responses on the CIFAR-10 test set',
    data: { values },
    vconcat: [
      panel('layer', 'Std of 3x3 layer responses (after BN, before ReLU/addition); dashed: plain, solid: ResNet'),
      panel('rank', 'The same, sorted by magnitude'),
    ],
    config: { font: 'sans-serif' },
  } as TopLevelSpec;
}
