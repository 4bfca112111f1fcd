// Fig. 6 (src/report/plot.ts): the files it writes and the data it plots.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { buildFig6Spec, plotFig6 } from '../src/report/plot';
import type { MetricsRow, RunRecord } from '../src/report/runs';
import { lineSeries, pngSize } from './helpers';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'resnet-exp-plot-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A run whose errors fall from `start` to `end` over `iterations`, logged every 1000. */
function fakeRun(
  variant: 'plain' | 'resnet',
  depth: number,
  seed: number,
  end: number,
  opts: { iterations?: number; every?: number; start?: number; shortcut?: 'A' | 'B'; milestones?: number[] } = {},
): RunRecord {
  const iterations = opts.iterations ?? 64000;
  const every = opts.every ?? 1000;
  const start = opts.start ?? 60;
  const rows: MetricsRow[] = [];
  for (let it = every; it <= iterations; it += every) {
    const trainError = end + (start - end) * Math.exp(-(it / iterations) * 8) + seed * 0.1;
    rows.push({
      iteration: it,
      epoch: (it * 128) / 50000,
      lr: 0.1,
      trainLoss: trainError / 40,
      trainError,
      testError: trainError + 4,
      valError: null,
      elapsedS: it / 10,
      imagesPerS: 1000,
    });
  }
  return {
    dir: `/nowhere/${variant}-${depth}-s${seed}`,
    name: `${variant}-${depth}-s${seed}`,
    variant,
    depth,
    shortcut: opts.shortcut ?? 'A',
    seed,
    params: 1000,
    plannedIterations: iterations,
    milestones: opts.milestones ?? [],
    recipeKey: 'paper',
    recipeTag: '',
    finished: true,
    rows,
  };
}

/** Plain 20/56 (deeper is worse) and ResNet 20/56/110 (deeper is better), two seeds each. */
function fig6Runs(): RunRecord[] {
  const runs: RunRecord[] = [];
  for (const seed of [1, 2]) {
    runs.push(fakeRun('plain', 20, seed, 6), fakeRun('plain', 56, seed, 10));
    runs.push(fakeRun('resnet', 20, seed, 4), fakeRun('resnet', 56, seed, 2));
    runs.push(fakeRun('resnet', 110, seed, 1));
  }
  return runs;
}

type Datum = {
  panel: string;
  label: string;
  kind: string;
  iteration: number;
  error: number;
  lo: number;
  hi: number;
  seeds: number;
};
/** The plotted points: every panel's line layer carries them all (each filters its own). */
const specData = (spec: ReturnType<typeof buildFig6Spec>): Datum[] => {
  const panel = (spec as unknown as { hconcat: { layer: { mark: { type: string }; data: { values: Datum[] } }[] }[] })
    .hconcat[0];
  return panel.layer.find((l) => l.mark.type === 'line')!.data.values;
};

describe('plotFig6', () => {
  it('writes an SVG with one line per (variant, depth, training|test) and a 2x PNG', async () => {
    const out = await plotFig6(fig6Runs(), path.join(tmp, 'sub', 'fig6.png'));
    assert.deepEqual(out, {
      svg: path.join(tmp, 'sub', 'fig6.svg'),
      png: path.join(tmp, 'sub', 'fig6.png'),
    });
    const svg = fs.readFileSync(out.svg, 'utf8');
    assert.ok(svg.startsWith('<svg'), svg.slice(0, 80));
    assert.ok(svg.trimEnd().endsWith('</svg>'));
    const series = lineSeries(svg);
    assert.equal(series.length, 5 * 2, 'plain 20/56 + ResNet 20/56/110, training and test');
    // Each series once; training error thin and dashed, test error bold and solid.
    const seen = series.map((s) => {
      const [, label, kind] = /label: ([^;]+); kind: (\w+)"/.exec(s) ?? [];
      const width = Number(/stroke-width="([\d.]+)"/.exec(s)?.[1]);
      const dashed = /stroke-dasharray="5,3"/.test(s);
      if (kind === 'training') assert.ok(dashed && width < 1.5, `thin dashed: ${label} ${kind}`);
      else assert.ok(!dashed && width > 2, `bold solid: ${label} ${kind}`);
      return `${label} ${kind}`;
    });
    const labels = ['plain-20', 'plain-56', 'ResNet-20', 'ResNet-56', 'ResNet-110'];
    assert.deepEqual([...seen].sort(), labels.flatMap((l) => [`${l} test`, `${l} training`]).sort());
    for (const title of ['plain networks', 'ResNets', 'plain-56', 'ResNet-110', 'iter.', 'error (%)']) {
      assert.ok(svg.includes(`>${title}`), `SVG shows "${title}"`);
    }
    assert.ok(!svg.includes('ResNet-110 vs'), 'no third panel without ResNet-1202');

    const png = pngSize(out.png);
    const svgWidth = Number(/<svg[^>]*\swidth="(\d+(?:\.\d+)?)"/.exec(svg)![1]);
    assert.ok(png.width > 0 && png.height > 0);
    assert.equal(png.width, Math.round(svgWidth * 2));
  });

  it('adds the ResNet-110 vs 1202 panel only when both exist, and drops absent panels', async () => {
    const runs = [fakeRun('resnet', 110, 1, 1), fakeRun('resnet', 1202, 1, 0.5), fakeRun('resnet', 20, 1, 4)];
    const out = await plotFig6(runs, path.join(tmp, 'three'));
    assert.equal(out.svg, path.join(tmp, 'three.svg'));
    const svg = fs.readFileSync(out.svg, 'utf8');
    assert.ok(svg.includes('>ResNet-110 vs ResNet-1202'));
    assert.ok(!svg.includes('>plain networks'), 'no plain panel without plain runs');
    // Middle: ResNet-20 and 110; right: 110 and 1202 -> 4 series, 8 lines.
    assert.equal(lineSeries(svg).length, 8);
    assert.ok(pngSize(out.png).width > 0);
  });
});

describe('buildFig6Spec', () => {
  it('plots the per-iteration mean over seeds', () => {
    const runs = [fakeRun('plain', 20, 1, 6), fakeRun('plain', 20, 3, 6)];
    const data = specData(buildFig6Spec(runs));
    const at = (kind: string, iteration: number) =>
      data.filter((d) => d.label === 'plain-20' && d.kind === kind && d.iteration === iteration);
    const train = at('training', 5000);
    assert.equal(train.length, 1, 'one point per iteration, not one per seed');
    const expected = (runs[0].rows[4].trainError + runs[1].rows[4].trainError) / 2;
    assert.ok(Math.abs(train[0].error - expected) < 1e-9);
    assert.ok(Math.abs(at('test', 5000)[0].error - (expected + 4)) < 1e-9);
    // The band: lowest and highest seed.
    const seeds = [runs[0].rows[4].trainError, runs[1].rows[4].trainError];
    assert.deepEqual([train[0].lo, train[0].hi, train[0].seeds], [Math.min(...seeds), Math.max(...seeds), 2]);
    const json = JSON.stringify(buildFig6Spec(runs));
    assert.match(json, /"mark":\{"type":"area","clip":true,"fillOpacity":[\d.]+\}/);
    assert.match(json, /band: min-max/);
  });

  it('labels short runs in iterations, long ones in 1e4 as the paper', () => {
    const title = (runs: RunRecord[]) => /"axis":\{"title":"([^"]+)"/.exec(JSON.stringify(buildFig6Spec(runs)))![1];
    assert.equal(title(fig6Runs()), 'iter. (1e4)');
    assert.equal(title([fakeRun('plain', 20, 1, 45, { iterations: 100, every: 10 })]), 'iterations');
    assert.equal(title([fakeRun('plain', 20, 1, 45, { iterations: 4000, every: 100 })]), 'iter. (1e3)');
  });

  it("marks the learning-rate drops of the runs' recipes with dotted rules", () => {
    const json = JSON.stringify(buildFig6Spec([fakeRun('plain', 20, 1, 6, { milestones: [32000, 48000] })]));
    assert.match(
      json,
      /"data":\{"values":\[\{"iteration":32000\},\{"iteration":48000\}\]\},"mark":\{"type":"rule","strokeDash":\[1,3\]/,
    );
  });

  it('warns about each run left out for having no rows', () => {
    const warnings: string[] = [];
    const empty = { ...fakeRun('plain', 56, 1, 6), rows: [], name: 'plain-56-s1' };
    buildFig6Spec([fakeRun('plain', 20, 1, 6), empty], (m) => warnings.push(m));
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /plain-56-s1: no logged rows yet, left out/);
  });

  it('puts the legends below the panels and keys dashed training / bold test', () => {
    const json = JSON.stringify(buildFig6Spec(fig6Runs()));
    assert.doesNotMatch(json, /"orient":"(top-right|right|top-left)"/);
    assert.match(json, /training \(dashed\).*test \(bold\)/);
  });

  it('keeps the paper y range 0-20 % for full runs, widens it for short ones', () => {
    const yTop = (runs: RunRecord[]) => {
      const json = JSON.stringify(buildFig6Spec(runs));
      return Number(/"domain":\[0,(\d+)\],"nice":false\},"field":"error"/.exec(json)![1]);
    };
    assert.equal(yTop(fig6Runs()), 20);
    assert.equal(yTop([fakeRun('resnet', 110, 1, 1)]), 20, 'low errors keep 0-20 too');
    const short = [fakeRun('plain', 20, 1, 45, { iterations: 2000, every: 100, start: 90 })];
    const top = yTop(short);
    assert.ok(top >= 50 && top <= 100, `y top ${top} holds errors near 45-60 %`);
  });

  it('draws one schedule per depth, preferring the longest, and says what it left out', () => {
    const warnings: string[] = [];
    const runs = [fakeRun('resnet', 20, 1, 4), fakeRun('resnet', 20, 2, 30, { iterations: 2000, every: 100 })];
    const data = specData(buildFig6Spec(runs, (m) => warnings.push(m)));
    assert.equal(Math.max(...data.map((d) => d.iteration)), 64000);
    assert.ok(!data.some((d) => d.iteration % 1000 !== 0), 'no points from the 2k run');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /resnet-20/);
  });

  it('refuses to plot nothing', () => {
    assert.throws(() => buildFig6Spec([]), /no runs/);
  });
});
