// Reading run directories (src/report/runs.ts) and the `compare` report
// (src/report/compare.ts), on synthetic runs written into a temp dir.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { compareRuns, formatCompare } from '../src/report/compare';
import { cli } from './helpers';
import { loadRuns, parseMetricsCsv, type RunRecord } from '../src/report/runs';

const HEADER = 'iteration,epoch,lr,train_loss,train_error,test_error,val_error,elapsed_s,images_per_s';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'resnet-exp-compare-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface FakeRun {
  variant: 'plain' | 'resnet';
  depth: number;
  seed: number;
  /** train_error of each row, one row every 100 iterations. */
  train: number[];
  /** test_error of each row (defaults to train + 5). */
  test?: number[];
  iterations?: number;
  shortcut?: 'A' | 'B';
  finished?: boolean;
}

/** Writes a run directory the way the trainer does; returns its path. */
function writeRun(root: string, run: FakeRun, sub = ''): string {
  const name = `${run.variant}-${run.depth}${run.shortcut === 'B' ? '-B' : ''}-s${run.seed}`;
  const dir = path.join(root, sub, name);
  fs.mkdirSync(dir, { recursive: true });
  const config = {
    name,
    variant: run.variant,
    depth: run.depth,
    shortcut: run.shortcut ?? 'A',
    seed: run.seed,
    params: 1000 * run.depth,
    recipe: { iterations: run.iterations ?? 64000, milestones: [32000, 48000], lr: 0.1, batch: 128, evalEvery: 100 },
    engine: { name: 'cpu' },
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const lines = run.train.map((tr, i) => {
    const te = run.test?.[i] ?? tr + 5;
    return `${(i + 1) * 100},${i * 0.25},0.1,1.5,${tr},${te},,${i * 3},1000`;
  });
  fs.writeFileSync(path.join(dir, 'metrics.csv'), [HEADER, ...lines].join('\n') + '\n');
  if (run.finished ?? true) {
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({ finished: true }));
  }
  return dir;
}

function runsIn(name: string, runs: FakeRun[]): RunRecord[] {
  const root = path.join(tmp, name);
  for (const r of runs) writeRun(root, r);
  const warnings: string[] = [];
  const loaded = loadRuns(root, (m) => warnings.push(m));
  assert.deepEqual(warnings, []);
  return loaded;
}

const close = (actual: number | undefined | null, expected: number, eps = 1e-9) =>
  assert.ok(
    actual !== undefined && actual !== null && Math.abs(actual - expected) < eps,
    `${actual} is not ${expected}`,
  );

describe('parseMetricsCsv', () => {
  it('parses rows, with an empty val_error as null', () => {
    const rows = parseMetricsCsv(
      `${HEADER}\n500,1.42,0.1,1.9,70.5,65.25,,12.5,5120\n1000,2.84,0.1,1.5,55,50,48.5,25,5100\n`,
    );
    assert.equal(rows.length, 2);
    assert.deepEqual(rows[0], {
      iteration: 500,
      epoch: 1.42,
      lr: 0.1,
      trainLoss: 1.9,
      trainError: 70.5,
      testError: 65.25,
      valError: null,
      elapsedS: 12.5,
      imagesPerS: 5120,
    });
    assert.equal(rows[1].valError, 48.5);
  });

  it('finds columns by header name, whatever their order', () => {
    const rows = parseMetricsCsv(
      'test_error,iteration,epoch,lr,train_loss,train_error,val_error,elapsed_s,images_per_s,extra\n' +
        '12,100,0.3,0.1,2,40,,1,900,x\n',
    );
    assert.equal(rows[0].testError, 12);
    assert.equal(rows[0].iteration, 100);
    assert.equal(rows[0].trainError, 40);
  });

  it('ignores a last line that is still being written, and an empty file', () => {
    const rows = parseMetricsCsv(`${HEADER}\n100,0.3,0.1,2,40,45,,1,900\n200,0.6,0.1`);
    assert.equal(rows.length, 1);
    assert.deepEqual(parseMetricsCsv(''), []);
    assert.deepEqual(parseMetricsCsv(`${HEADER}\n`), []);
  });

  it('rejects bad numbers, missing columns and iterations that go back', () => {
    assert.throws(() => parseMetricsCsv(`${HEADER}\n100,0.3,0.1,2,abc,45,,1,900\n`), /train_error/);
    assert.throws(() => parseMetricsCsv('iteration,train_error\n1,2\n'), /no "epoch" column/);
    assert.throws(
      () => parseMetricsCsv(`${HEADER}\n200,0.3,0.1,2,40,45,,1,900\n100,0.6,0.1,2,40,45,,2,900\n`),
      /iteration 100 after 200/,
    );
  });
});

describe('loadRuns', () => {
  it('finds runs at any depth, skips malformed ones with one warning each', () => {
    const root = path.join(tmp, 'load');
    writeRun(root, { variant: 'plain', depth: 20, seed: 1, train: [50, 40] }, 'a/b/c');
    writeRun(root, { variant: 'resnet', depth: 56, seed: 2, train: [50], finished: false }, 'x');
    writeRun(root, { variant: 'resnet', depth: 20, seed: 1, train: [50, 30] });
    const badJson = writeRun(root, { variant: 'plain', depth: 32, seed: 1, train: [1] }, 'bad');
    fs.writeFileSync(path.join(badJson, 'config.json'), '{ "name": ');
    const badVariant = writeRun(root, { variant: 'plain', depth: 44, seed: 1, train: [1] }, 'bad');
    fs.writeFileSync(
      path.join(badVariant, 'config.json'),
      JSON.stringify({
        variant: 'dense',
        depth: 44,
        seed: 1,
        params: 1,
        recipe: { iterations: 1 },
      }),
    );
    const badCsv = writeRun(root, { variant: 'plain', depth: 56, seed: 1, train: [1] }, 'bad');
    fs.writeFileSync(path.join(badCsv, 'metrics.csv'), `${HEADER}\n1,2,3,4,five,6,,8,9\n`);
    fs.mkdirSync(path.join(root, 'not-a-run', 'logs'), { recursive: true });
    fs.writeFileSync(path.join(root, 'not-a-run', 'notes.txt'), 'hello');

    const warnings: string[] = [];
    const runs = loadRuns(root, (m) => warnings.push(m));
    assert.deepEqual(
      runs.map((r) => r.name),
      ['plain-20-s1', 'resnet-20-s1', 'resnet-56-s2'],
    );
    assert.deepEqual(runs[0].milestones, [32000, 48000]); // plot marks the lr drops from these
    assert.equal(warnings.length, 3, warnings.join('\n'));
    for (const [w, name] of [
      [warnings.find((w) => w.includes('plain-32-s1')), 'JSON'],
      [warnings.find((w) => w.includes('plain-44-s1')), 'variant'],
      [warnings.find((w) => w.includes('plain-56-s1')), 'train_error'],
    ]) {
      assert.ok(w && w.includes(name!), `warning ${w} should mention ${name}`);
      assert.ok(!w!.includes('\n'), 'a warning is one line');
    }
    const plain = runs[0];
    assert.equal(plain.dir, path.join(root, 'a/b/c/plain-20-s1'));
    assert.equal(plain.plannedIterations, 64000);
    assert.equal(plain.params, 20000);
    assert.equal(plain.shortcut, 'A');
    assert.equal(plain.rows.length, 2);
    assert.equal(plain.finished, true);
    assert.equal(runs[2].finished, false);
  });

  it('keeps bf16 runs out of the tables with one warning, and reads fp32 ones with or without the field', () => {
    const root = path.join(tmp, 'precision');
    const fp32 = writeRun(root, { variant: 'resnet', depth: 20, seed: 1, train: [50, 30] });
    const bf16 = writeRun(root, { variant: 'resnet', depth: 20, seed: 1, train: [50, 31] }, 'bf');
    const config = JSON.parse(fs.readFileSync(path.join(bf16, 'config.json'), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(path.join(bf16, 'config.json'), JSON.stringify({ ...config, precision: 'bf16' }));
    const explicit = writeRun(root, { variant: 'resnet', depth: 32, seed: 1, train: [50, 30] });
    const c32 = JSON.parse(fs.readFileSync(path.join(explicit, 'config.json'), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(path.join(explicit, 'config.json'), JSON.stringify({ ...c32, precision: 'fp32' }));
    const warnings: string[] = [];
    const runs = loadRuns(root, (m) => warnings.push(m));
    assert.deepEqual(runs.map((r) => r.dir).sort(), [fp32, explicit].map((d) => path.resolve(d)).sort());
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0], /bf16 run; compare and plot read fp32 runs only/);
  });

  it('throws a one-line message for a missing results dir', () => {
    const missing = path.join(tmp, 'nope');
    assert.throws(
      () => loadRuns(missing),
      (e: Error) =>
        e.message === `no results in ${missing}: run \`resnet-exp run ...\` first` && !e.message.includes('\n'),
    );
  });
});

describe('compareRuns', () => {
  it('averages over seeds: last-interval training error, final and best test error', () => {
    const runs = runsIn('agg', [
      // last train rows 3, 5, 7 -> mean 5, sample std 2
      { variant: 'resnet', depth: 20, seed: 1, train: [90, 1, 2, 3], test: [80, 9, 7, 8] },
      { variant: 'resnet', depth: 20, seed: 2, train: [90, 3, 4, 5], test: [80, 10, 9, 9.5] },
      { variant: 'resnet', depth: 20, seed: 3, train: [90, 5, 6, 7], test: [80, 11, 10, 11] },
    ]);
    const report = compareRuns(runs);
    assert.equal(report.rows.length, 1);
    const row = report.rows[0];
    assert.deepEqual(row.seeds, [1, 2, 3]);
    assert.equal(row.iterationsDone, 400);
    close(row.finalTrainError?.mean, 5);
    close(row.finalTrainError?.std, 2);
    assert.equal(row.finalTrainError?.n, 3);
    // final test: 8, 9.5, 11 -> mean 9.5, std 1.5
    close(row.finalTestError?.mean, 9.5);
    close(row.finalTestError?.std, 1.5);
    // best test: 7, 9, 10 -> mean 26/3
    close(row.bestTestError?.mean, 26 / 3);
    close(row.bestTestError?.std, Math.sqrt(((7 - 26 / 3) ** 2 + (9 - 26 / 3) ** 2 + (10 - 26 / 3) ** 2) / 2));
  });

  it('takes the last logged interval, says which, and no std for one seed', () => {
    const report = compareRuns(runsIn('one', [{ variant: 'plain', depth: 20, seed: 1, train: [30, 20] }]));
    close(report.rows[0].finalTrainError?.mean, 20);
    assert.deepEqual(report.rows[0].trainWindows, [{ from: 100, to: 200 }]);
    assert.equal(report.rows[0].finalTrainError?.std, null);
    const text = formatCompare(report);
    assert.ok(text.includes('20.00'), text);
    assert.ok(!text.includes('20.00 ±'), 'no ± with one seed');
    assert.match(text, /final training error = each run's last logged interval: .* last 100 iterations/);
  });

  it("the paper's final error, not a mean of rows: two seeds ending at 71.41 and 72.69", () => {
    // Rows at irregular spacing (an interrupted run) and a big drop at the end.
    const report = compareRuns(
      runsIn('issue', [
        { variant: 'plain', depth: 20, seed: 1, train: [90, 85, 71.41] },
        { variant: 'plain', depth: 20, seed: 2, train: [90, 86, 72.69] },
      ]),
    );
    close(report.rows[0].finalTrainError?.mean, (71.41 + 72.69) / 2);
  });

  it("shows each seed's iterations done", () => {
    const report = compareRuns(
      runsIn('perseed', [
        { variant: 'plain', depth: 20, seed: 1, train: [5, 4, 3], iterations: 300 },
        { variant: 'plain', depth: 20, seed: 2, train: [5, 4, 3], iterations: 300 },
        { variant: 'plain', depth: 20, seed: 3, train: [5], iterations: 300, finished: false },
      ]),
    );
    assert.deepEqual(
      report.rows[0].perSeed.map((p) => [p.seed, p.iterations, p.finished]),
      [
        [1, 300, true],
        [2, 300, true],
        [3, 100, false],
      ],
    );
    const line = formatCompare(report)
      .split('\n')
      .find((l) => l.startsWith('plain-20 '));
    assert.match(line ?? '', /300,300,100\/300/);
  });

  it('keeps different schedules in separate rows', () => {
    const report = compareRuns(
      runsIn('sched', [
        { variant: 'resnet', depth: 20, seed: 1, train: [10], iterations: 2000 },
        { variant: 'resnet', depth: 20, seed: 2, train: [20], iterations: 64000 },
        { variant: 'resnet', depth: 20, seed: 3, train: [30], iterations: 64000 },
      ]),
    );
    assert.deepEqual(
      report.rows.map((r) => [r.plannedIterations, r.seeds.length, r.finalTrainError?.mean]),
      [
        [2000, 1, 10],
        [64000, 2, 25],
      ],
    );
    assert.ok(report.notes.some((n) => n.includes('not comparable')));
  });

  it('attaches Table 6 to ResNets only, and the reproduction where it has one', () => {
    const report = compareRuns(
      runsIn('paper', [
        { variant: 'plain', depth: 20, seed: 1, train: [10] },
        { variant: 'plain', depth: 32, seed: 1, train: [10] },
        { variant: 'resnet', depth: 20, seed: 1, train: [10] },
        { variant: 'resnet', depth: 110, seed: 1, train: [10] },
      ]),
    );
    const [p20, p32, r20, r110] = report.rows;
    assert.equal(p20.paper, null);
    assert.equal(p32.paper, null);
    assert.equal(p20.reproduction?.testError, 9.78);
    assert.equal(p32.reproduction, null);
    assert.equal(r20.paper?.testError, 8.75);
    assert.equal(r20.reproduction?.testError, 8.51);
    assert.equal(r110.paper?.testError, 6.43);
    assert.equal(r110.paper?.mean, 6.61);
    const line = formatCompare(report)
      .split('\n')
      .find((l) => l.startsWith('resnet-20 '));
    assert.ok(line?.includes('8.75') && line.includes('8.51 ± 0.22'), line);
  });

  it('calls degradation for plain nets that train worse when deeper, none for ResNets', () => {
    const report = compareRuns(
      runsIn('verdict', [
        { variant: 'plain', depth: 20, seed: 1, train: [9, 5, 5, 5] },
        { variant: 'plain', depth: 32, seed: 1, train: [9, 7, 7, 7] },
        { variant: 'plain', depth: 56, seed: 1, train: [99, 9, 9.5, 9.3] },
        { variant: 'resnet', depth: 20, seed: 1, train: [5, 5, 5] },
        { variant: 'resnet', depth: 56, seed: 1, train: [3, 2, 1] },
      ]),
    );
    const [plain, resnet] = report.verdicts;
    assert.equal(plain.variant, 'plain');
    assert.equal(plain.trend, 'rises');
    assert.equal(plain.degradation, true);
    assert.deepEqual(
      plain.points.map((p) => p.depth),
      [20, 32, 56],
    );
    assert.match(
      plain.text,
      /^plain: training error rises with depth \(20: 5\.0% < 32: 7\.0% < 56: 9\.3%\) -> degradation \[provisional: a single seed per depth, no spread to compare with\]$/,
    );
    assert.equal(resnet.trend, 'falls');
    assert.equal(resnet.degradation, false);
    assert.match(resnet.text, /falls with depth .* -> no degradation \[provisional: a single seed/);
    assert.ok(formatCompare(report).includes(plain.text));
  });

  it('is provisional only for a short schedule, unfinished runs or a single seed, and says which', () => {
    const seeds = (variant: 'plain' | 'resnet', iterations: number, finished = true) =>
      [20, 56].flatMap((depth) =>
        [1, 2].map((seed) => ({ variant, depth, seed, train: [9, depth / 10], iterations, finished })),
      );
    const full = compareRuns(runsIn('prov-full', seeds('plain', 64000)));
    assert.equal(full.verdicts[0].provisional, false);
    assert.deepEqual(full.verdicts[0].reasons, []);
    assert.match(full.verdicts[0].text, /-> degradation$/);
    const short = compareRuns(runsIn('prov-short', seeds('plain', 200, false)));
    assert.equal(short.verdicts[0].provisional, true);
    assert.match(
      short.verdicts[0].text,
      /-> degradation \[provisional: short schedule: 200 of the paper's 64k iterations; 4 of 4 runs unfinished, least progress 200\/200\]$/,
    );
  });

  it('says a verdict needs two depths, and flags unfinished groups', () => {
    const report = compareRuns(
      runsIn('single', [
        { variant: 'plain', depth: 20, seed: 1, train: [5] },
        { variant: 'resnet', depth: 20, seed: 1, train: [5] },
        { variant: 'resnet', depth: 56, seed: 1, train: [9, 8], finished: false },
      ]),
    );
    const [plain, resnet] = report.verdicts;
    assert.equal(plain.trend, null);
    assert.equal(plain.degradation, null);
    assert.match(plain.text, /needs two depths/);
    assert.equal(resnet.provisional, true);
    assert.match(resnet.text, /provisional/);
  });

  it('is plain JSON: survives a JSON round trip unchanged', () => {
    const report = compareRuns(
      runsIn('json', [
        { variant: 'plain', depth: 20, seed: 1, train: [5] },
        { variant: 'resnet', depth: 110, seed: 1, train: [5] },
        { variant: 'resnet', depth: 110, seed: 2, train: [6] },
      ]),
    );
    assert.deepEqual(JSON.parse(JSON.stringify(report)), report);
    const empty = compareRuns([]);
    assert.deepEqual([empty.rows, empty.verdicts], [[], []]);
  });

  it('aligns the table columns', () => {
    const report = compareRuns(
      runsIn('align', [
        { variant: 'plain', depth: 20, seed: 1, train: [5] },
        { variant: 'resnet', depth: 1202, seed: 1, train: [5] },
        { variant: 'resnet', depth: 1202, seed: 2, train: [6] },
      ]),
    );
    const lines = formatCompare(report).split('\n');
    const header = lines[0];
    const col = header.indexOf('seeds') + 'seeds'.length; // right-aligned column end
    for (const l of lines.filter((l) => /^(plain|resnet)-\d+ /.test(l))) {
      assert.match(l[col - 1], /\d/, `seed count ends under the header in "${l}"`);
    }
  });
});

describe('compare command', () => {
  it('nothing found: one line on stderr, exit 1, nothing on stdout', () => {
    const empty = fs.mkdtempSync(path.join(tmp, 'empty-'));
    const r = cli(['compare', '--results', empty]);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^error: no runs found in .*--results\n$/);
  });
});
