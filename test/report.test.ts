// `report`: the HTML page opens in headless Chromium with no network, every figure
// renders, no console error, hovering shows values; a screenshot is kept to look at.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { appendGradientRows, createGradients, gradientsFile } from '../src/analysis/gradients-csv';
import { writeLesion } from '../src/analysis/lesion';
import { writeResponses } from '../src/analysis/responses';
import { appendMetricsRow, createMetrics } from '../src/experiment/metrics-csv';
import { cli, tempDir } from './helpers';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const hasChromium = fs.existsSync(CHROMIUM);
if (!hasChromium && process.env.CI)
  throw new Error(`CI: Chromium must be installed (${CHROMIUM}; apt-get install chromium)`);
const skip = hasChromium ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;

const work = tempDir('resnet-exp-report-');
const results = path.join(work, 'results');

/** A run folder as the trainer and the analysis commands leave it (made-up figures). */
function fakeRun(variant: 'plain' | 'resnet', depth: number): void {
  const name = `${variant}-${depth}-s1`;
  const dir = path.join(results, name);
  fs.mkdirSync(dir, { recursive: true });
  const config = {
    name,
    variant,
    depth,
    shortcut: 'A',
    seed: 1,
    params: 1000,
    recipe: { iterations: 400, milestones: [200, 300], evalEvery: 100 },
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  createMetrics(path.join(dir, 'metrics.csv'));
  createGradients(gradientsFile(dir));
  const layers = depth - 1;
  const names = Array.from({ length: layers }, (_, i) => `layer${i + 1}`);
  for (const iteration of [100, 200, 300, 400]) {
    const err = (variant === 'plain' ? 60 : 50) + depth / 10 - iteration / 20;
    appendMetricsRow(path.join(dir, 'metrics.csv'), {
      iteration,
      epoch: iteration / 390,
      lr: 0.1,
      trainLoss: err / 30,
      trainError: err,
      testError: err + 3,
      valError: null,
      elapsedS: iteration,
      imagesPerS: 100,
    });
    const norms = names.map((_, i) => (variant === 'plain' ? 0.01 * 1.1 ** i : 0.1) * (500 / iteration));
    appendGradientRows(gradientsFile(dir), iteration, { names, norms });
  }
  writeResponses(
    dir,
    names.map((n, i) => ({ layer: i + 1, name: n, std: (variant === 'plain' ? 1.5 : 0.8) - i / (10 * depth) })),
    400,
  );
  const blocks = (depth - 2) / 2;
  writeLesion(dir, [
    { kind: 'none', k: 0, block: '', downsampling: false, draws: 1, errorMean: 30, errorStd: 0, images: 100 },
    ...Array.from({ length: blocks }, (_, i) => ({
      kind: 'single' as const,
      k: 1,
      block: `stage${1 + Math.floor(i / (blocks / 3))}/block${1 + (i % (blocks / 3))}`,
      downsampling: i > 0 && i % (blocks / 3) === 0,
      draws: 1,
      errorMean: variant === 'plain' ? 88 : 32 + i,
      errorStd: 0,
      images: 100,
    })),
    ...Array.from({ length: blocks }, (_, i) => ({
      kind: 'random' as const,
      k: i + 1,
      block: '',
      downsampling: false,
      draws: 3,
      errorMean: Math.min(90, 30 + 8 * (i + 1)),
      errorStd: 2,
      images: 100,
    })),
  ]);
}

before(() => {
  for (const v of ['plain', 'resnet'] as const) for (const d of [8, 14]) fakeRun(v, d);
});

describe('report', { skip }, () => {
  it('opens offline in headless Chromium: every figure renders, no console error, tooltips on hover', async () => {
    const out = path.join(results, 'report.html');
    const r = cli(['report', '--results', results, '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    const html = fs.readFileSync(out, 'utf8');
    assert.ok(!/<script[^>]+src=/.test(html), 'no external scripts');

    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
      ],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const problems: string[] = [];
      const requests: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      // Anything but the file itself would be the network: refuse and record it.
      await page.route('**/*', (route) => {
        const url = route.request().url();
        if (url.startsWith('file://')) return route.continue();
        requests.push(url);
        return route.abort();
      });
      await page.goto(`file://${out}`);
      const ids = ['fig6', 'fig7', 'lesion', 'gradients'];
      // each figure drawn: its SVG has line paths
      for (const id of ids) {
        // (a string: evaluated in the page, where `document` exists; the tests have no DOM types)
        await page.waitForFunction(`document.querySelectorAll('#view-${id} svg .mark-line path').length > 0`, null, {
          timeout: 60_000,
        });
      }
      assert.deepEqual(requests, [], 'no network requests');
      assert.deepEqual(problems, []);
      assert.match(await page.textContent('#compare pre').then(String), /plain|resnet/);

      // Hover a point of Fig. 7: vega's tooltip shows its values.
      const points = await page.$$('#view-fig7 svg g.mark-symbol.role-mark path');
      assert.ok(points.length > 10, 'Fig. 7 has points');
      await points[points.length - 1].hover({ force: true });
      await page.waitForSelector('#vg-tooltip-element.visible', { timeout: 10_000 });
      assert.match(String(await page.textContent('#vg-tooltip-element')), /std/);

      const shot = path.join(results, 'report.png');
      await page.screenshot({ path: shot, fullPage: true });
      assert.ok(fs.statSync(shot).size > 50_000, 'a real screenshot');
      process.stderr.write(`report screenshot: ${shot}\n`);
    } finally {
      await browser.close();
    }
  });
});
