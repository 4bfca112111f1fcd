// `report`: one self-contained HTML page of a results folder: Fig. 6, the compare table
// against the paper, and the Fig. 7, lesion and gradient figures where their data exist.
// The figures are live vega-lite views (hover a point for its values); vega, vega-lite and
// vega-embed are inlined from node_modules, so the page opens with no network.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { collectAnalyses } from '../analysis/collect';
import { buildGradientsSpec } from '../analysis/gradients-figure';
import { buildLesionSpec } from '../analysis/lesion-figure';
import { buildFig7Spec } from '../analysis/responses-figure';
import { writeFileAtomic } from '../experiment/files';
import { compareRuns, formatCompare } from './compare';
import { buildFig6Spec } from './plot';
import type { RunRecord } from './runs';

/** Packages whose browser builds the page inlines, in load order (vega-embed needs the other two). */
const LIBRARIES = ['vega', 'vega-lite', 'vega-embed'];

interface Section {
  id: string;
  title: string;
  /** What the figure shows and what the paper saw: one paragraph. */
  note: string;
  spec: TopLevelSpec;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] as string);
}

/** JSON that is safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

/**
 * A package's browser build: the file its package.json names for CDNs ("unpkg"), found
 * from its resolved entry point (vega-embed exports no other paths).
 */
function library(name: string): string {
  let dir = path.dirname(require.resolve(name));
  // (vega-lite's build/ folder has a copy of its package.json: the root is where "unpkg" exists.)
  const isRoot = (d: string) => {
    const file = path.join(d, 'package.json');
    if (!fs.existsSync(file)) return false;
    const json = readJson(file);
    return json.name === name && typeof json.unpkg === 'string' && fs.existsSync(path.join(d, json.unpkg));
  };
  while (!isRoot(dir)) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the package folder of ${name}`);
    dir = up;
  }
  const file = path.join(dir, String(readJson(path.join(dir, 'package.json')).unpkg));
  // None of these builds contains "</script", but a future one might: never end the element early.
  return fs.readFileSync(file, 'utf8').replace(/<\/script/gi, '<\\/script');
}

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
}

function sections(runs: RunRecord[]): Section[] {
  const a = collectAnalyses(runs);
  const out: Section[] = [];
  if (runs.some((r) => r.rows.length > 0)) {
    out.push({
      id: 'fig6',
      title: 'Fig. 6: training and test error',
      note:
        'Thin dashed: training error; bold: test error. The paper: deeper plain nets have higher training ' +
        'error (the degradation problem); deeper ResNets have lower.',
      spec: buildFig6Spec(runs),
    });
  }
  if (a.responses.length > 0) {
    out.push({
      id: 'fig7',
      title: 'Fig. 7: layer responses',
      note:
        "Std of each 3x3 layer's output (after BN, before ReLU/addition) on the test set. The paper: ResNets " +
        'respond less than plain nets, and deeper ResNets less still.',
      spec: buildFig7Spec(a.responses),
    });
  }
  if (a.lesion.length > 0) {
    out.push({
      id: 'lesion',
      title: 'Lesion study (Veit et al. 2016)',
      note:
        'Test error after deleting blocks at test time. Veit et al.: deleting one block of a ResNet barely ' +
        'changes its error except at downsampling blocks; a plain net falls to chance; error rises smoothly with k.',
      spec: buildLesionSpec(a.lesion),
    });
  }
  if (a.gradients.length > 0) {
    out.push({
      id: 'gradients',
      title: 'Gradient flow',
      note:
        "L2 norm of each conv layer's weight gradient (mean over a logged interval) against depth, at a few " +
        'iterations. Dashed: plain; solid: ResNet.',
      spec: buildGradientsSpec(a.gradients),
    });
  }
  return out;
}

export function buildReport(runs: RunRecord[], resultsDir: string): string {
  const parts = sections(runs);
  const table = runs.length > 0 ? formatCompare(compareRuns(runs)) : 'no runs';
  const body = parts
    .map(
      (s) =>
        `<section id="${s.id}"><h2>${escapeHtml(s.title)}</h2><p>${escapeHtml(s.note)}</p>` +
        `<div class="figure" id="view-${s.id}"></div></section>`,
    )
    .join('\n');
  const specs = Object.fromEntries(parts.map((s) => [s.id, s.spec]));
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>resnet-exp report: ${escapeHtml(resultsDir)}</title>
<style>
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }
section { margin-top: 2.5em; }
p { max-width: 60em; }
</style>
${LIBRARIES.map((l) => `<script>${library(l)}</script>`).join('\n')}
</head>
<body>
<h1>Plain vs residual networks on CIFAR-10</h1>
<p>${runs.length} runs in <code>${escapeHtml(resultsDir)}</code>, reported ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC.
Reproducing He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2.</p>
<section id="compare"><h2>Final errors against the paper</h2><pre>${escapeHtml(table)}</pre></section>
${body}
<script id="specs" type="application/json">${scriptJson(specs)}</script>
<script>
const specs = JSON.parse(document.getElementById('specs').textContent);
for (const [id, spec] of Object.entries(specs)) {
  // Hovering a mark shows its encoded values, unless the figure defines its own tooltips.
  spec.config = Object.assign({}, spec.config, { mark: Object.assign({ tooltip: true }, (spec.config || {}).mark) });
  vegaEmbed('#view-' + id, spec, { actions: false, renderer: 'svg' }).catch((e) => console.error(id, e));
}
</script>
</body>
</html>
`;
}

export function writeReport(runs: RunRecord[], resultsDir: string, outFile: string): string {
  const file = path.resolve(outFile);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, buildReport(runs, resultsDir));
  return file;
}
