// End to end, as a user runs it: the built CLI on small synthetic CIFAR-10 files.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { ADDON_PATH } from '../src/engine/native/addon';
import { summarize } from '../src/model/summary';
import { cli, cliUntil, metricsWithoutTiming, readCsv, tempDir, writeSyntheticCifar } from './helpers';

const RECORDS = 64;
const work = tempDir('resnet-exp-cli-');
const data = path.join(work, 'data');
const native = fs.existsSync(ADDON_PATH);
const skip = native ? false : 'the native engine is not built (install libdnnl-dev, then npm run build:native)';

/** A run small enough for seconds: depth 8, batch 16, 12 iterations, a row every 3. */
const runArgs = (out: string, extra: string[] = []) => [
  'run',
  '--depth',
  '8',
  '--iterations',
  '12',
  '--eval-every',
  '3',
  '--batch',
  '16',
  '--data-dir',
  data,
  '--records-per-file',
  String(RECORDS),
  '--out',
  out,
  ...extra,
];

function oneLineError(r: { status: number | null; stderr: string }, pattern: RegExp): void {
  assert.equal(r.status, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const errors = lines.filter((l) => l.startsWith('error: '));
  assert.equal(errors.length, 1, `one error line, got: ${r.stderr}`);
  assert.equal(lines[lines.length - 1], errors[0], 'the error is the last word');
  assert.ok(!lines.some((l) => /^\s+at /.test(l)), `no stack trace: ${r.stderr}`);
  assert.match(errors[0], pattern);
}

before(() => writeSyntheticCifar(data, RECORDS));

describe('bad input: one line, non-zero exit', () => {
  it('a depth that is not 6n+2', () => {
    oneLineError(cli(['run', '--depth', '21', '--data-dir', data]), /depth must be 6n\+2.*got 21/);
    oneLineError(cli(['summary', '--depth', '57']), /6n\+2/);
  });
  it('a missing data set says to run download', () => {
    oneLineError(
      cli(['run', '--depth', '20', '--data-dir', path.join(work, 'nowhere'), '--out', path.join(work, 'r0')]),
      /resnet-exp download/,
    );
  });
  it('a truncated data file names the file', () => {
    const bad = path.join(work, 'truncated');
    writeSyntheticCifar(bad, RECORDS);
    const f = path.join(bad, 'data_batch_3.bin');
    fs.truncateSync(f, fs.statSync(f).size - 100);
    const r = cli([
      'run',
      '--depth',
      '8',
      '--data-dir',
      bad,
      '--records-per-file',
      String(RECORDS),
      '--out',
      path.join(work, 'r1'),
    ]);
    oneLineError(r, /data_batch_3\.bin.*(truncated|3073)/);
  });
  it('the real-size check: 64-record files are not CIFAR-10', () => {
    oneLineError(cli(['run', '--depth', '8', '--data-dir', data, '--out', path.join(work, 'r2')]), /data_batch_1\.bin/);
  });
  it('an output folder that cannot be written', () => {
    const file = path.join(work, 'a-file');
    fs.writeFileSync(file, 'x');
    oneLineError(cli(runArgs(path.join(file, 'sub'))), /cannot write to/);
  });
  it('an unknown engine or a bad flag value', () => {
    assert.notEqual(cli(['run', '--depth', '20', '--engine', 'gpu']).status, 0);
    oneLineError(cli(['run', '--depth', '20', '--lr', 'fast', '--data-dir', data]), /--lr/);
  });
  it('a bad RESNET_EXP_LOOPS stops the run; --engine auto does not fall back to a slower engine', { skip }, () => {
    const out = path.join(work, 'bad-loops');
    const env = { RESNET_EXP_LOOPS: 'fast' };
    const expected = /RESNET_EXP_LOOPS must be avx512, generic or avx512-bf16, not "fast"/;
    oneLineError(cli(runArgs(out), { env }), expected);
    oneLineError(cli(runArgs(out, ['--engine', 'native']), { env }), expected);
    oneLineError(cli(runArgs(out, ['--precision', 'bf16']), { env }), expected);
    assert.ok(!fs.existsSync(path.join(out, 'metrics.csv')), 'nothing trained');
  });
});

describe('summary', () => {
  it('prints the layer table, parameters and MACs', () => {
    const r = cli(['summary', '--depth', '56']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /parameters: 853,018/);
    assert.match(r.stdout, /forward MACs per image: 125,485,696/);
    assert.equal(r.stdout.split('\n').filter((l) => l.startsWith('stage')).length, 54);
  });
  it('--arch prints an ImageNet net of Table 1', () => {
    const r = cli(['summary', '--arch', 'resnet152']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /resnet152: 151 conv layers \(\+ 4 projection shortcuts\) \+ fc/);
    assert.match(r.stdout, /parameters: 60,192,808/);
    assert.match(r.stdout, /forward MACs per image: 11,282,415,616 \(11\.28G\)/);
    oneLineError(cli(['summary', '--arch', 'vgg16']), /--arch must be one of resnet18/);
    oneLineError(cli(['summary']), /either --depth .* or --arch/);
  });
});

describe('a run, killed and resumed', { skip }, () => {
  const straight = path.join(work, 'straight');
  const dir = (out: string) => path.join(out, 'resnet-8-s1-it12');

  it('trains, writes a row per evaluation with a falling loss, and says when it is finished', () => {
    const r = cli(runArgs(straight));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /engine: native/);
    const rows = readCsv(path.join(dir(straight), 'metrics.csv'));
    assert.deepEqual(rows[0], [
      'iteration',
      'epoch',
      'lr',
      'train_loss',
      'train_error',
      'test_error',
      'val_error',
      'elapsed_s',
      'images_per_s',
    ]);
    assert.deepEqual(
      rows.slice(1).map((x) => x[0]),
      ['3', '6', '9', '12'],
    );
    const losses = rows.slice(1).map((x) => Number(x[3]));
    assert.ok(losses.every(Number.isFinite));
    assert.ok(losses[3] < losses[0], `loss falls: ${losses}`);
    for (const x of rows.slice(1)) {
      assert.ok(Number(x[5]) >= 0 && Number(x[5]) <= 100, 'test error in percent');
      assert.equal(x[6], '', 'no val_error without --val');
    }
    const summary = JSON.parse(fs.readFileSync(path.join(dir(straight), 'summary.json'), 'utf8'));
    assert.equal(summary.finished, true);
    assert.equal(summary.iterations, 12);
    const config = JSON.parse(fs.readFileSync(path.join(dir(straight), 'config.json'), 'utf8'));
    assert.equal(config.params, summarize({ depth: 8, plain: false, shortcut: 'A' }).params);
    assert.equal(config.recipe.milestones.join(','), '6,9');
    assert.equal(config.data.files.length, 6);

    const again = cli(runArgs(straight));
    assert.equal(again.status, 0);
    assert.match(again.stderr, /already finished/);
    assert.equal(readCsv(path.join(dir(straight), 'metrics.csv')).length, 5, 'no row added');
  });

  it('same seed, same engine: the same metrics', () => {
    const twin = path.join(work, 'twin');
    assert.equal(cli(runArgs(twin)).status, 0);
    assert.deepEqual(
      metricsWithoutTiming(path.join(dir(twin), 'metrics.csv')),
      metricsWithoutTiming(path.join(dir(straight), 'metrics.csv')),
    );
    const other = path.join(work, 'other-seed');
    assert.equal(cli(runArgs(other, ['--seed', '2'])).status, 0);
    assert.notDeepEqual(
      metricsWithoutTiming(path.join(other, 'resnet-8-s2-it12', 'metrics.csv')),
      metricsWithoutTiming(path.join(dir(straight), 'metrics.csv')),
    );
  });

  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGKILL'] as const) {
    it(`${signal} midway, then the same command: no row lost or duplicated, same figures`, async () => {
      const out = path.join(work, `killed-${signal}`);
      const p = cliUntil(runArgs(out), (o) => /iter 6\//.test(o));
      await p.reached;
      p.child.kill(signal);
      const code = await p.exited;
      if (signal === 'SIGTERM') assert.equal(code, 143, p.output());
      if (signal === 'SIGINT') assert.equal(code, 130, p.output());
      if (signal !== 'SIGKILL') assert.match(p.output(), /interrupted at iteration \d+; checkpoint saved/);
      assert.ok(!fs.existsSync(path.join(dir(out), 'summary.json')));
      const resumed = cli(runArgs(out));
      assert.equal(resumed.status, 0, resumed.stderr);
      assert.match(resumed.stderr, /resuming .* at iteration \d+/);
      assert.deepEqual(
        metricsWithoutTiming(path.join(dir(out), 'metrics.csv')),
        metricsWithoutTiming(path.join(dir(straight), 'metrics.csv')),
      );
    });
  }

  it('a corrupt checkpoint is a one-line error and the CSV is kept', async () => {
    const out = path.join(work, 'corrupt');
    const p = cliUntil(runArgs(out), (o) => /iter 3\//.test(o));
    await p.reached;
    p.child.kill('SIGTERM');
    await p.exited;
    const csv = fs.readFileSync(path.join(dir(out), 'metrics.csv'), 'utf8');
    const ckpt = path.join(dir(out), 'checkpoint.bin');
    const bytes = fs.readFileSync(ckpt);
    bytes[bytes.length - 10] ^= 0xff;
    fs.writeFileSync(ckpt, bytes);
    oneLineError(cli(runArgs(out)), /checkpoint\.bin is unreadable.*--fresh/);
    assert.equal(fs.readFileSync(path.join(dir(out), 'metrics.csv'), 'utf8'), csv);
    // Analyses of the old weights must not outlive them.
    for (const f of ['responses.csv', 'lesion.csv']) fs.writeFileSync(path.join(dir(out), f), 'stale\n');
    const fresh = cli(runArgs(out, ['--fresh']));
    assert.equal(fresh.status, 0, fresh.stderr);
    assert.equal(readCsv(path.join(dir(out), 'metrics.csv')).length, 5);
    for (const f of ['responses.csv', 'lesion.csv']) assert.ok(!fs.existsSync(path.join(dir(out), f)), `${f} removed`);
  });

  it('resuming with other settings is refused', () => {
    oneLineError(cli(runArgs(straight, ['--lr', '0.05'])), /other settings/);
  });

  it('a diverging run stops with a one-line error naming the iteration', () => {
    const out = path.join(work, 'diverge');
    const r = cli(runArgs(out, ['--lr', '1e30']));
    oneLineError(r, /training loss is (NaN|Infinity|-Infinity) at iteration \d+/);
    assert.ok(fs.existsSync(path.join(dir(out), 'metrics.csv')));
    assert.ok(!fs.existsSync(path.join(dir(out), 'summary.json')));
  });

  it('--val holds out images and logs val_error', () => {
    const out = path.join(work, 'val');
    const r = cli(runArgs(out, ['--val', '32', '--iterations', '3']));
    assert.equal(r.status, 0, r.stderr);
    const runDir = path.join(out, 'resnet-8-s1-it3'); // --iterations 3: the schedule is in the name
    const rows = readCsv(path.join(runDir, 'metrics.csv'));
    assert.ok(Number.isFinite(Number(rows[1][6])) && rows[1][6] !== '');
    assert.equal(JSON.parse(fs.readFileSync(path.join(runDir, 'config.json'), 'utf8')).data.train, 5 * RECORDS - 32);
  });

  it('compare and plot work on the results', () => {
    const plain = cli(runArgs(straight, ['--plain']));
    assert.equal(plain.status, 0, plain.stderr);
    const c = cli(['compare', '--results', straight]);
    assert.equal(c.status, 0, c.stderr);
    assert.match(c.stdout, /plain/);
    assert.match(c.stdout, /resnet/);
    const j = JSON.parse(cli(['compare', '--results', straight, '--json']).stdout);
    assert.ok(JSON.stringify(j).includes('"depth":8'));
    const plotOut = path.join(work, 'fig');
    const pl = cli(['plot', '--results', straight, '--out', plotOut]);
    assert.equal(pl.status, 0, pl.stderr);
    assert.ok(fs.readFileSync(plotOut + '.svg', 'utf8').startsWith('<svg'));
    assert.deepEqual([...fs.readFileSync(plotOut + '.png').subarray(1, 4)], [0x50, 0x4e, 0x47]);
  });
});

describe('grid', { skip }, () => {
  it('runs an experiment file, then skips what is finished', () => {
    const exp = path.join(work, 'tiny.json');
    fs.writeFileSync(
      exp,
      JSON.stringify({
        description: 'tiny',
        out: 'tiny',
        recipe: { iterations: 4, evalEvery: 2, batch: 8 },
        runs: [
          { depth: 8, plain: true },
          { depth: 8, seeds: [1, 2] },
        ],
      }),
    );
    const out = path.join(work, 'grid');
    const args = ['grid', exp, '--data-dir', data, '--records-per-file', String(RECORDS), '--out', out];
    const r = cli(args);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(fs.readdirSync(path.join(out, 'tiny')).sort(), [
      'plain-8-s1-it4',
      'resnet-8-s1-it4',
      'resnet-8-s2-it4',
    ]);
    const again = cli(args);
    assert.equal(again.status, 0);
    assert.equal((again.stderr.match(/already finished/g) ?? []).length, 3);
  });
});

const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
const bf16Cpu = / (avx512_bf16|amx_bf16) /.test(cpuinfo);
const slowerBf16 = /warning: --precision bf16 is slower than fp32 on this CPU/;
describe('--precision bf16', () => {
  it('needs the native engine: a one-line error with another one', () => {
    oneLineError(
      cli(runArgs(path.join(work, 'bf-cpu'), ['--engine', 'cpu', '--precision', 'bf16'])),
      /needs the native engine/,
    );
    assert.notEqual(cli(runArgs(path.join(work, 'bf-x'), ['--precision', 'fp16'])).status, 0);
  });

  it(
    'trains in its own folder, records the precision, and does not resume an fp32 run',
    { skip: skip || (!bf16Cpu && 'this CPU has no AVX512-BF16 or AMX') },
    () => {
      const out = path.join(work, 'bf16');
      const r = cli(runArgs(out, ['--precision', 'bf16']));
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /engine: native.*--precision bf16/);
      // (a CPU with AMX, or AMD's AVX512-BF16: bf16 pays, no warning; see the next test)
      assert.equal(slowerBf16.test(r.stderr), !/ amx_bf16 /.test(cpuinfo) && !/AuthenticAMD/.test(cpuinfo));
      const dir = path.join(out, 'resnet-8-s1-bf16-it12');
      const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as {
        precision: string;
        name: string;
      };
      assert.equal(config.precision, 'bf16');
      assert.equal(config.name, 'resnet-8-s1-bf16-it12');
      const rows = readCsv(path.join(dir, 'metrics.csv'));
      assert.equal(rows.length, 1 + 4);
      const loss = rows.slice(1).map((row) => Number(row[3]));
      assert.ok(loss.every(Number.isFinite) && loss[3] < loss[0], `bf16 losses: ${loss}`);
      // an fp32 run beside it is a different run, in the usual folder
      assert.equal(cli(runArgs(out)).status, 0);
      assert.ok(fs.existsSync(path.join(out, 'resnet-8-s1-it12', 'summary.json')));
    },
  );

  it(
    'on an Intel CPU without AMX (here: AMX masked) warns that bf16 is slower, and takes weight gradients in f32',
    { skip: skip || (!/ avx512_bf16 /.test(cpuinfo) && 'this CPU has no AVX512-BF16') },
    () => {
      // oneDNN's own switch: its kernels (and our rules, which ask it for the ISA) see a CPU
      // without AMX. On AMD nothing changes: its AVX512-BF16 kernels pay (native/conv.cc).
      const env = { ONEDNN_MAX_CPU_ISA: 'AVX512_CORE_BF16' };
      const intel = /GenuineIntel/.test(cpuinfo);
      const r = cli(runArgs(path.join(work, 'bf16-no-amx'), ['--precision', 'bf16', '--iterations', '2']), { env });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /ISA avx512_core_bf16/);
      assert.equal(slowerBf16.test(r.stderr), intel, r.stderr);
      // Stage 1's 3x3 conv: its weight gradient reads the bf16 copies only where they pay.
      const probe = `const { loadNativeEngine } = require('./src/engine/native/index.ts');
        const { loadAddon } = require('./src/engine/native/addon.ts');
        const { conv2dGeometry } = require('./src/engine/native/kernels-conv.ts');
        const geometry = conv2dGeometry([8, 32, 32, 16], [3, 3, 16, 16], 1);
        loadNativeEngine(1, 'bf16').then(() =>
          console.log(JSON.stringify(loadAddon().convImplInfo({ geometry }).takesBf16)));`;
      const p = spawnSync(process.execPath, ['--import', 'tsx', '-e', probe], {
        cwd: path.resolve(__dirname, '..'),
        env: { ...process.env, ...env },
        encoding: 'utf8',
      });
      assert.equal(p.status, 0, p.stderr);
      const takes = JSON.parse(p.stdout) as Record<string, boolean>;
      assert.equal(takes.forwardX, true);
      assert.equal(takes.backwardWeightsX, !intel);
    },
  );
});
