// The shipped example runs (examples/, examples/README.md): the paper's full 64,000-iteration
// schedule for ResNet-20 and plain-20 on real CIFAR-10, read back through `compare` and
// `plot` as a user reads them. They are real data, so these tests also guard the numbers the
// README quotes: if the files are replaced by a shorter or different run, they fail.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { readMetricsStrict } from '../src/experiment/metrics-csv';
import type { CompareReport } from '../src/report/compare';
import { cli, lineSeries, pngSize, ROOT, tempDir } from './helpers';

const EXAMPLES = path.join(ROOT, 'examples');
const RUNS = ['plain-20-s1', 'resnet-20-s1'];
// scripts/torch-reference.py's run of the same recipe on the same files (not a run folder).
const TORCH_CSV = path.join(EXAMPLES, 'torch-reference', 'resnet-20-s1.csv');
const tmp = tempDir('resnet-exp-examples-');
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Every file under examples/, with its size and mtime: reports must not touch any. */
function snapshot(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => {
      const file = path.join(e.parentPath, e.name);
      const st = fs.statSync(file);
      return `${path.relative(dir, file)} ${st.size} ${st.mtimeMs}`;
    })
    .sort();
}

function lastRow(run: string) {
  const rows = readMetricsStrict(path.join(EXAMPLES, run, 'metrics.csv'));
  return { rows, last: rows[rows.length - 1] };
}

describe('examples/: the full schedule of ResNet-20 and plain-20 (seed 1)', () => {
  it('holds both finished runs: a row every 500 iterations to 64,000, lr 0.1 / 0.01 / 0.001', () => {
    for (const run of RUNS) {
      const { rows, last } = lastRow(run);
      assert.equal(rows.length, 128, run);
      assert.deepEqual(
        rows.map((r) => r.iteration),
        Array.from({ length: 128 }, (_, i) => (i + 1) * 500),
        run,
      );
      assert.equal(last.iteration, 64000, run);
      // The schedule as logged: a row's lr is the one its last iteration used.
      for (const r of rows) {
        const lr = r.iteration <= 32000 ? 0.1 : r.iteration <= 48000 ? 0.01 : 0.001;
        assert.ok(Math.abs(r.lr - lr) < 1e-9, `${run} @${r.iteration}: lr ${r.lr}, expected ${lr}`);
      }
      const summary = JSON.parse(fs.readFileSync(path.join(EXAMPLES, run, 'summary.json'), 'utf8'));
      assert.equal(summary.finished, true, `${run}/summary.json`);
      assert.equal(summary.iterations, 64000, `${run}/summary.json`);
      assert.equal(summary.final_test_error, last.testError, `${run}/summary.json`);
      assert.ok(!fs.existsSync(path.join(EXAMPLES, run, 'checkpoint.bin')), `${run}: no checkpoint shipped`);
    }
  });

  it('compare reports each run finished, with the final errors of its last metrics row', () => {
    const before = snapshot(EXAMPLES);
    const r = cli(['compare', '--results', EXAMPLES, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as CompareReport;
    assert.deepEqual(report.rows.map((row) => row.label).sort(), ['plain-20', 'resnet-20']);
    for (const row of report.rows) {
      const { last } = lastRow(`${row.label}-s1`);
      assert.equal(row.finishedSeeds, 1, row.label);
      assert.equal(row.iterationsDone, 64000, row.label);
      // The final training error is the last logged interval's mean (compare's note), which
      // is the last row's train_error; the final test error is the last evaluation.
      assert.equal(row.finalTrainError?.mean, last.trainError, row.label);
      assert.equal(row.finalTestError?.mean, last.testError, row.label);
      assert.ok(row.reproduction?.mean, `${row.label}: the 5-seed reproduction's figure`);
    }
    const resnet = report.rows.find((row) => row.variant === 'resnet')!;
    const plain = report.rows.find((row) => row.variant === 'plain')!;
    // As in the 5-seed reproduction, the residual net ends below the plain one at depth 20.
    assert.ok(resnet.finalTestError!.mean < plain.finalTestError!.mean);
    assert.equal(resnet.paper?.testError, 8.75);
    assert.deepEqual(snapshot(EXAMPLES), before, 'compare wrote into examples/');
  });

  it("the README's results table quotes the runs' final test errors", () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Results: the paper'));
    for (const [label, run] of [
      ['plain-20', 'plain-20-s1'],
      ['ResNet-20', 'resnet-20-s1'],
    ]) {
      const row = section.match(new RegExp(`^\\| ${label} +\\| ([0-9.]+) +\\|`, 'm'));
      assert.ok(row, `README.md: no results row for ${label}`);
      assert.equal(Number(row[1]), Number(lastRow(run).last.testError.toFixed(2)), label);
    }
  });

  it("the README's PyTorch cross-check quotes the two CSVs (this tool's run, PyTorch's on the same files)", () => {
    const tool = lastRow('resnet-20-s1').rows;
    const torch = readMetricsStrict(TORCH_CSV);
    // The reference follows the same schedule: a row every 500 iterations, the same lr.
    torch.forEach((r, i) => {
      assert.equal(r.iteration, (i + 1) * 500, `${TORCH_CSV}: row ${i + 1}`);
      assert.ok(Math.abs(r.lr - tool[i].lr) < 1e-9, `${TORCH_CSV} @${r.iteration}: lr ${r.lr}`);
    });
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Results: the paper'), readme.indexOf('## Engines'));
    const rows = [
      ...section.matchAll(
        /^\| ([0-9,]+)-([0-9,]+) +\| ([0-9.]+) +\| ([0-9.]+) +\| ([0-9.]+) +\| ([0-9.]+) +\| ([0-9.]+) +\|/gm,
      ),
    ];
    assert.ok(rows.length >= 2, 'README.md: the PyTorch cross-check table has no rows');
    const mean = (rs: typeof tool, key: 'trainError' | 'testError') =>
      Number((rs.reduce((t, r) => t + (r[key] ?? NaN), 0) / rs.length).toFixed(2));
    for (const m of rows) {
      const [from, to] = [Number(m[1].replace(/,/g, '')), Number(m[2].replace(/,/g, ''))];
      const pick = (rs: typeof tool) => rs.filter((r) => r.iteration >= from && r.iteration <= to);
      const [ours, theirs] = [pick(tool), pick(torch)];
      const count = (to - from) / 500 + 1;
      assert.equal(ours.length, count, `README row ${m[1]}-${m[2]}: this tool's rows`);
      assert.equal(theirs.length, count, `README row ${m[1]}-${m[2]}: PyTorch's rows`);
      for (const r of [...ours, ...theirs]) assert.ok(Math.abs(r.lr - Number(m[3])) < 1e-9, `lr in ${m[0]}`);
      assert.deepEqual(
        [m[4], m[5], m[6], m[7]].map(Number),
        [mean(ours, 'trainError'), mean(theirs, 'trainError'), mean(ours, 'testError'), mean(theirs, 'testError')],
        `README row ${m[1]}-${m[2]}`,
      );
    }
  });

  it('plot draws both runs (training and test curves) into a PNG', () => {
    const before = snapshot(EXAMPLES);
    const out = path.join(tmp, 'fig6');
    const r = cli(['plot', '--results', EXAMPLES, '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(pngSize(`${out}.png`).width >= 800, 'PNG width');
    const svg = fs.readFileSync(`${out}.svg`, 'utf8');
    // One dashed (training) and one bold (test) line per run: 2 runs, 4 lines.
    assert.equal(lineSeries(svg).length, 4);
    assert.match(svg, /plain-20/);
    assert.match(svg, /ResNet-20/);
    assert.deepEqual(snapshot(EXAMPLES), before, 'plot wrote into examples/');
  });
});
