// Renders a vega-lite figure to SVG and PNG for every figure command (plot's Fig. 6 and the
// analyses' figures): vega draws the SVG, resvg rasterizes it at 2x. The HTML report embeds
// the same specs live. Also the one colour per depth that every figure uses.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';

/**
 * Fig. 6's colours for the paper's depths; other depths get distinct spare ones. The paper's
 * colours are not legible in print; these are distinct, and a depth keeps its colour across
 * panels so ResNet-56 can be found next to plain-56.
 */
export const DEPTH_COLOURS: Record<number, string> = {
  20: '#ff7f0e',
  32: '#1f77b4',
  44: '#2ca02c',
  56: '#d62728',
  110: '#222222',
  1202: '#9467bd',
};
export const SPARE_COLOURS = ['#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f', '#aec7e8'];

/** A depth's colour where one figure draws depths on their own (Fig. 6 hands out spares in order). */
export function depthColour(depth: number): string {
  return DEPTH_COLOURS[depth] ?? SPARE_COLOURS[Math.floor(depth / 6) % SPARE_COLOURS.length];
}

let fontCache: string | undefined;

/**
 * A sans-serif family that fontconfig has, for resvg (which has no default of its own): text
 * in a family resvg cannot resolve may not be drawn.
 */
export function pickFont(): string {
  if (fontCache) return fontCache;
  const wanted = ['DejaVu Sans', 'Liberation Sans', 'Noto Sans', 'Arial', 'Helvetica'];
  let installed = '';
  try {
    installed = execFileSync('fc-list', [':', 'family'], { encoding: 'utf8', timeout: 5000 });
  } catch {
    // No fontconfig: keep the first choice; resvg also looks in the usual font folders.
  }
  const families = new Set(installed.split(/[\n,]/).map((f) => f.trim()));
  fontCache = wanted.find((f) => families.has(f)) ?? wanted[0];
  return fontCache;
}

/** Writes `<outFile without extension>.svg` and `.png`; returns their paths. */
export async function renderFigure(spec: TopLevelSpec, outFile: string): Promise<{ svg: string; png: string }> {
  // Loaded here: vega is large and only the figure commands need it.
  const vega = await import('vega');
  const vl = await import('vega-lite');
  const { Resvg } = await import('@resvg/resvg-js');
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  const svgText = await view.toSVG();
  view.finalize();
  const font = pickFont();
  const png = new Resvg(svgText, {
    fitTo: { mode: 'zoom', value: 2 },
    background: 'white',
    font: { loadSystemFonts: true, defaultFontFamily: font, sansSerifFamily: font },
  })
    .render()
    .asPng();
  const parsed = path.parse(path.resolve(outFile));
  const base = path.join(parsed.dir, parsed.ext ? parsed.name : parsed.base);
  fs.mkdirSync(parsed.dir, { recursive: true });
  const out = { svg: `${base}.svg`, png: `${base}.png` };
  fs.writeFileSync(out.svg, svgText);
  fs.writeFileSync(out.png, png);
  return out;
}
