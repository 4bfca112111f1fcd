// `plot`: Fig. 6 of the paper from our runs. Error (%) against iterations, one panel
// for plain nets and one for ResNets (and ResNet-110 vs 1202 when both exist);
// training error thin dashed, test error bold, one colour per depth in every panel.
// The figure is a vega-lite spec; vega renders it to SVG, resvg rasterizes that to PNG.
import type { TopLevelSpec } from 'vega-lite';
import { DEPTH_COLOURS, pickFont, renderFigure, SPARE_COLOURS } from './figure';
import type { RunRecord } from './runs';

export interface PlotOptions {
  /** Told which runs were left out of the figure, and why. */
  warn?: (msg: string) => void;
}

/** One plotted point: mean over seeds of one series at one iteration, and their range. */
interface Point {
  label: string;
  kind: 'training' | 'test';
  iteration: number;
  error: number;
  /** Lowest and highest over the seeds (equal to `error` with one seed). */
  lo: number;
  hi: number;
  seeds: number;
}

interface Series {
  variant: 'plain' | 'resnet';
  depth: number;
  shortcut: 'A' | 'B';
  plannedIterations: number;
  runs: RunRecord[];
}

interface Panel {
  title: string;
  series: Series[];
  label: (s: Series) => string;
}

const PANEL_WIDTH = 380;
/** Legends go below their panel, in a row: inside, they would cover some curve. */
const LEGEND = {
  title: null,
  orient: 'bottom' as const,
  direction: 'horizontal' as const,
  symbolType: 'stroke',
  symbolStrokeWidth: 2.5,
  symbolSize: 300,
  labelFontSize: 12,
  labelLimit: 240,
};
const PANEL_HEIGHT = 280;
/** The paper clips every panel to 0-20 %. */
const PAPER_Y_MAX = 20;
/** Below the panel, never over a curve. */
const COLOUR_LEGEND = { ...LEGEND, columns: 3 };
/** The key to the line styles, once for the figure. */
const KIND_LEGEND = { ...LEGEND, labelExpr: "datum.label == 'training' ? 'training (dashed)' : 'test (bold)'" };

/**
 * Writes `<outFile without extension>.svg` and `.png` and returns their paths.
 * Several seeds of one configuration are drawn as their per-iteration mean.
 */
export async function plotFig6(
  runs: RunRecord[],
  outFile: string,
  options: PlotOptions = {},
): Promise<{ svg: string; png: string }> {
  const warn = options.warn ?? ((msg: string) => process.stderr.write(`warning: ${msg}\n`));
  return renderFigure(buildFig6Spec(runs, warn), outFile);
}

/**
 * One series per (variant, depth). Where one depth was run several ways, the figure
 * shows the paper's: option-A shortcuts, then the longest schedule; mixing a 2k run
 * into a 64k curve, in the same colour, would be misread.
 */
function pickSeries(runs: RunRecord[], warn: (msg: string) => void): Series[] {
  const byDepth = new Map<string, RunRecord[]>();
  for (const r of runs.filter((r) => r.rows.length === 0)) {
    warn(`plot: ${r.name}: no logged rows yet, left out (${r.dir})`);
  }
  for (const r of runs.filter((r) => r.rows.length > 0)) {
    const key = `${r.variant}-${r.depth}`;
    byDepth.set(key, [...(byDepth.get(key) ?? []), r]);
  }
  const series: Series[] = [];
  for (const [key, group] of byDepth) {
    const best = [...group].sort(
      (a, b) =>
        (a.shortcut === 'A' ? 0 : 1) - (b.shortcut === 'A' ? 0 : 1) ||
        b.plannedIterations - a.plannedIterations ||
        (a.recipeTag === '' ? 0 : 1) - (b.recipeTag === '' ? 0 : 1), // the paper's recipe first
    )[0];
    // One configuration per curve: the same recipe/precision/data (recipeKey) too.
    const chosen = group.filter(
      (r) =>
        r.recipeKey === best.recipeKey &&
        r.shortcut === best.shortcut &&
        r.plannedIterations === best.plannedIterations,
    );
    if (chosen.length < group.length) {
      warn(
        `plot: ${key}: drawing the ${best.plannedIterations}-iteration option-${best.shortcut} ` +
          `runs, leaving out ${group.length - chosen.length} run(s) of another schedule/shortcut`,
      );
    }
    series.push({
      variant: best.variant,
      depth: best.depth,
      shortcut: best.shortcut,
      plannedIterations: best.plannedIterations,
      runs: chosen,
    });
  }
  return series.sort((a, b) => a.variant.localeCompare(b.variant) || a.depth - b.depth);
}

/** The paper's layout: plain | ResNets (without 1202) | ResNet-110 vs 1202. */
function panelsFor(series: Series[]): Panel[] {
  const plain = series.filter((s) => s.variant === 'plain');
  const resnet = series.filter((s) => s.variant === 'resnet');
  const has = (d: number) => resnet.some((s) => s.depth === d);
  const third = has(110) && has(1202);
  // Runs still training on a shared results folder are drawn as far as they got,
  // and say so in the legend (the least progress over the series' seeds).
  const running = (s: Series) => {
    if (s.runs.every((r) => r.finished)) return '';
    const least = Math.min(...s.runs.map((r) => r.rows[r.rows.length - 1]?.iteration ?? 0));
    return ` (running: ${least}/${s.plannedIterations})`;
  };
  const suffix = (s: Series) => (s.shortcut === 'B' ? ' (B)' : '') + running(s);
  const panels: Panel[] = [];
  if (plain.length) {
    panels.push({
      title: 'plain networks',
      series: plain,
      label: (s) => `plain-${s.depth}${running(s)}`,
    });
  }
  const middle = third ? resnet.filter((s) => s.depth !== 1202) : resnet;
  if (middle.length) {
    panels.push({
      title: 'ResNets',
      series: middle,
      label: (s) => `ResNet-${s.depth}${suffix(s)}`,
    });
  }
  if (third) {
    panels.push({
      title: 'ResNet-110 vs ResNet-1202',
      series: resnet.filter((s) => s.depth === 110 || s.depth === 1202),
      label: (s) => `${s.depth}-layer${suffix(s)}`,
    });
  }
  return panels;
}

/** Per-iteration mean, min and max over the seeds that logged that iteration. */
function meanCurve(runs: RunRecord[], pick: (r: RunRecord['rows'][number]) => number) {
  const byIteration = new Map<number, number[]>();
  for (const run of runs) {
    for (const row of run.rows) byIteration.set(row.iteration, [...(byIteration.get(row.iteration) ?? []), pick(row)]);
  }
  return [...byIteration.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([iteration, xs]) => ({
      iteration,
      error: xs.reduce((a, b) => a + b, 0) / xs.length,
      lo: Math.min(...xs),
      hi: Math.max(...xs),
      seeds: xs.length,
    }));
}

/** The learning-rate drops of a panel's runs: the rows only show the lr after the drop, somewhere in an interval. */
function milestones(series: Series[], xMax: number): number[] {
  const found = new Set(series.flatMap((s) => s.runs.flatMap((run) => run.milestones)).filter((m) => m < xMax));
  return [...found].sort((a, b) => a - b);
}

/**
 * Iterations per axis unit: the paper's 1e4 for long schedules, 1e3 for a few thousand,
 * plain iterations below that (a 100-iteration run labelled 0.02 x 1e4 reads badly).
 */
function iterationUnit(xMax: number): { unit: number; title: string } {
  if (xMax >= 20000) return { unit: 1e4, title: 'iter. (1e4)' };
  if (xMax >= 2000) return { unit: 1e3, title: 'iter. (1e3)' };
  return { unit: 1, title: 'iterations' };
}

function colourFor(depths: number[]): (depth: number) => string {
  const spare = [...SPARE_COLOURS];
  const map = new Map<number, string>();
  for (const d of [...new Set(depths)].sort((a, b) => a - b)) {
    map.set(d, DEPTH_COLOURS[d] ?? spare.shift() ?? '#999999');
  }
  return (d) => map.get(d)!;
}

/**
 * 0-20 % as in the paper, which cuts off the start (every net begins near 90 %) and
 * the noisy first learning-rate phase. Short or unfinished runs may never get below
 * 20 % in their second half; then clipping would hide what they show, and the range
 * holds every point.
 */
function yMax(curves: { error: number }[][]): number {
  let late = 0;
  let all = 0;
  for (const c of curves) {
    c.forEach((p, i) => {
      all = Math.max(all, p.error);
      if (i >= Math.floor(c.length / 2)) late = Math.max(late, p.error);
    });
  }
  if (late <= PAPER_Y_MAX) return PAPER_Y_MAX;
  return Math.min(100, Math.ceil((all * 1.02) / 10) * 10);
}

/** The vega-lite spec of the figure (exported so tests can check the plotted data). */
export function buildFig6Spec(runs: RunRecord[], warn: (msg: string) => void = () => {}): TopLevelSpec {
  const series = pickSeries(runs, warn);
  if (series.length === 0) throw new Error('plot: no runs with logged metrics to plot');
  const panels = panelsFor(series);
  const colour = colourFor(series.map((s) => s.depth));
  const font = pickFont();

  const points: (Point & { panel: string })[] = [];
  const curves: { error: number }[][] = [];
  for (const panel of panels) {
    for (const s of panel.series) {
      for (const kind of ['training', 'test'] as const) {
        const curve = meanCurve(s.runs, (r) => (kind === 'training' ? r.trainError : r.testError));
        curves.push(curve);
        for (const p of curve)
          points.push({
            panel: panel.title,
            label: panel.label(s),
            kind,
            ...p,
          });
      }
    }
  }
  const top = yMax(curves);
  const xMax = Math.max(...series.map((s) => s.plannedIterations));
  const { unit, title: xTitle } = iterationUnit(xMax);
  const drops = new Map(panels.map((p) => [p.title, milestones(p.series, xMax)]));
  const multiSeed = points.some((p) => p.seeds > 1);

  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'CIFAR-10 training: plain vs residual networks (He et al. 2016, Fig. 6)',
      subtitle:
        'dashed: training error, bold: test error' +
        (multiSeed ? '; line: mean over seeds, band: min-max' : '') +
        (drops.size && [...drops.values()].some((d) => d.length) ? '; dotted: lr / 10' : '') +
        (top > PAPER_Y_MAX ? '' : ' (y clipped to 0-20 % as in the paper)'),
      anchor: 'start',
      fontSize: 16,
      subtitleFontSize: 13,
      offset: 14,
    },
    background: 'white',
    padding: 16,
    hconcat: panels.map((panel) => {
      const inPanel = { filter: { field: 'panel', equal: panel.title } };
      const colourScale = {
        domain: panel.series.map(panel.label),
        range: panel.series.map((s) => colour(s.depth)),
      };
      const x = {
        field: 'iteration',
        type: 'quantitative' as const,
        scale: { domain: [0, xMax], nice: false },
        axis: {
          title: xTitle,
          tickCount: 7,
          // Whole iterations only: no tick at 12.5 iterations.
          tickMinStep: unit === 1 ? 1 : unit / 10,
          labelExpr: `format(datum.value / ${unit}, '~g')`,
          grid: false,
        },
      };
      const y = { type: 'quantitative' as const, scale: { domain: [0, top], nice: false } };
      return {
        title: { text: panel.title, fontSize: 15 },
        width: PANEL_WIDTH,
        height: PANEL_HEIGHT,
        layer: [
          // The seeds' spread: a band from the lowest to the highest seed at each row.
          ...(multiSeed
            ? [
                {
                  data: { values: points },
                  transform: [inPanel, { filter: 'datum.seeds > 1' }],
                  mark: { type: 'area' as const, clip: true, fillOpacity: 0.16 },
                  encoding: {
                    x,
                    y: { ...y, field: 'lo', title: 'error (%)' },
                    y2: { field: 'hi' },
                    // The lines' legend (vega-lite merges the two); the band is faint through
                    // fillOpacity, which the legend's stroke symbols do not take.
                    color: { field: 'label', type: 'nominal' as const, scale: colourScale, legend: COLOUR_LEGEND },
                    detail: { field: 'kind' },
                  },
                },
              ]
            : []),
          {
            data: { values: points },
            transform: [inPanel],
            mark: { type: 'line' as const, clip: true, interpolate: 'linear' as const },
            encoding: {
              x,
              y: {
                ...y,
                field: 'error',
                axis: {
                  title: 'error (%)',
                  tickCount: top <= 20 ? 4 : 5,
                  gridDash: [2, 3],
                  gridColor: '#d0d0d0',
                  // A grid line on the frame's edge would draw a dashed frame.
                  gridOpacity: {
                    condition: {
                      test: `datum.value <= 0 || datum.value >= ${top}`,
                      value: 0,
                    },
                    value: 1,
                  },
                },
              },
              color: {
                field: 'label',
                type: 'nominal' as const,
                scale: colourScale,
                legend: COLOUR_LEGEND,
              },
              strokeDash: {
                field: 'kind',
                type: 'nominal' as const,
                scale: {
                  domain: ['training', 'test'],
                  range: [
                    [5, 3],
                    [1, 0],
                  ],
                },
                legend: KIND_LEGEND,
              },
              strokeWidth: {
                field: 'kind',
                type: 'ordinal' as const, // a size channel wants an ordered field
                sort: ['training', 'test'],
                scale: { domain: ['training', 'test'], range: [1.2, 2.6] },
                // The same legend as strokeDash: vega-lite merges the two into one key.
                legend: KIND_LEGEND,
              },
              // One line per (depth, kind): the dash encoding already splits by kind.
              detail: { field: 'kind' },
              order: { field: 'iteration', type: 'quantitative' as const },
            },
          },
          // The learning-rate drops, dotted, as the paper's schedule divides lr by 10.
          ...((drops.get(panel.title) ?? []).length
            ? [
                {
                  data: { values: (drops.get(panel.title) ?? []).map((iteration) => ({ iteration })) },
                  mark: { type: 'rule' as const, strokeDash: [1, 3], color: '#666', strokeWidth: 1 },
                  encoding: { x },
                },
              ]
            : []),
        ],
      };
    }),
    resolve: {
      scale: { color: 'independent' },
      legend: { color: 'independent' },
    },
    config: {
      font,
      view: { stroke: '#444' },
      axis: {
        labelFontSize: 12,
        titleFontSize: 13,
        titleFontWeight: 'normal',
        domain: false,
      },
      concat: { spacing: 28 },
    },
  };
}
