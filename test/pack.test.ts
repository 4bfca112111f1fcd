// The package as a user gets it: `npm pack`, installed globally from the tarball into a
// temporary prefix without dev dependencies, then used outside the project.
//
// It needs the npm registry (dependencies are installed from it; the project's npm cache
// is reused) and builds the native engine when oneDNN is installed, as a user's install
// would. dist/ must be built (npm test's pretest runs tsc): the tarball is packed with
// --ignore-scripts so that tsc is not run twice more (prepack and prepare).
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, tempDir, writeSyntheticCifar } from './helpers';

const work = tempDir('resnet-exp-pack-');
const prefix = path.join(work, 'prefix');
const bin = path.join(prefix, 'bin', 'resnet-exp');
const installed = path.join(prefix, 'lib', 'node_modules', 'resnet-exp');
const oneDnn = ['/usr/include/oneapi/dnnl/dnnl.hpp', '/usr/local/include/oneapi/dnnl/dnnl.hpp'].some(fs.existsSync);
let tarball = '';

function run(cmd: string, args: string[], opts: { cwd?: string; timeoutS?: number } = {}) {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd ?? work,
    encoding: 'utf8',
    timeout: (opts.timeoutS ?? 60) * 1000,
    env: { ...process.env, npm_config_update_notifier: 'false' },
  });
  return r;
}

after(() => fs.rmSync(work, { recursive: true, force: true }));

describe('npm package', () => {
  before(() => {
    assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js')), 'dist/ is not built: run `npx tsc` first');
    const packed = run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', work], { cwd: ROOT });
    assert.equal(packed.status, 0, packed.stderr);
    tarball = path.join(work, packed.stdout.trim().split('\n').pop() ?? '');
  });

  it('the tarball holds the built CLI, the native sources and the experiments, not the tests', () => {
    const list = run('tar', ['tzf', tarball]);
    assert.equal(list.status, 0, list.stderr);
    const files = new Set(list.stdout.split('\n').map((f) => f.replace(/^package\//, '')));
    for (const f of [
      'dist/cli/main.js',
      'bin/resnet-exp',
      'binding.gyp',
      'native/conv.cc',
      'native/common.h',
      'scripts/build-native.js',
      'experiments/quick.json',
      'README.md',
      'LICENSE',
      'package.json',
    ]) {
      assert.ok(files.has(f), `${f} missing from the tarball`);
    }
    const stray = [...files].filter((f) => /^(test|bench|src|\.ci|results|data|build)\//.test(f));
    assert.deepEqual(stray, []);
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    assert.equal(pkg.scripts.prepack, 'npm run build', 'prepack builds dist/ for npm pack and publish');
  });

  it('installs globally without dev dependencies, and runs from there', () => {
    const inst = run(
      'npm',
      ['install', '-g', '--prefix', prefix, tarball, '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund'],
      { timeoutS: 900 },
    );
    assert.equal(inst.status, 0, inst.stderr);
    const modules = path.join(installed, 'node_modules');
    for (const dev of ['typescript', 'tsx', 'eslint', '@tensorflow/tfjs', 'proper-lockfile']) {
      assert.ok(!fs.existsSync(path.join(modules, dev)), `${dev} installed`);
    }
    const addon = fs.existsSync(path.join(installed, 'build', 'Release', 'resnet_native.node'));
    if (oneDnn || process.env.CI) assert.ok(addon, `native engine not built at install:\n${inst.stdout}${inst.stderr}`);
    else assert.match(inst.stdout + inst.stderr, /oneDNN headers not found.*native engine is not built/);

    const help = run(bin, ['--help']);
    assert.equal(help.status, 0, help.stderr);
    const summary = run(bin, ['summary', '--depth', '56']);
    assert.equal(summary.status, 0, summary.stderr);
    assert.match(summary.stdout, /parameters: 853,018/);
  });

  it('trains a short synthetic run from the installed package', () => {
    const data = path.join(work, 'cifar');
    writeSyntheticCifar(data, 64);
    const out = path.join(work, 'results');
    const args = ['run', '--depth', '8', '--iterations', '4', '--eval-every', '2', '--batch', '16'];
    const r = run(bin, [...args, '--data-dir', data, '--records-per-file', '64', '--out', out], { timeoutS: 300 });
    assert.equal(r.status, 0, r.stderr);
    if (oneDnn || process.env.CI) assert.match(r.stderr, /engine: native/);
    const csv = fs
      .readFileSync(path.join(out, 'resnet-8-s1-it4', 'metrics.csv'), 'utf8')
      .trim()
      .split('\n');
    assert.deepEqual(
      csv.slice(1).map((l) => l.split(',')[0]),
      ['2', '4'],
    );
    assert.ok(fs.existsSync(path.join(out, 'resnet-8-s1-it4', 'summary.json')));
  });
});
