// --help as a user reads it: required flags marked, defaults as typed, an example per command.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { cli } from './helpers';

const COMMANDS = ['run', 'grid', 'compare', 'plot', 'download', 'summary', 'responses', 'lesion', 'report'];

describe('--help', () => {
  it('marks --depth required and prints defaults unquoted', () => {
    const r = cli(['run', '--help']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Usage: resnet-exp run --depth <n> \[options\]/);
    // Commander wraps descriptions at 80 columns.
    const flat = r.stdout.replace(/\s+/g, ' ');
    assert.match(flat, /--depth <n> weighted layers, 6n\+2: 20, 32, 44, 56, 110, 1202 \(required\)/);
    assert.match(flat, /--iterations <n> training iterations \(default: 64000\)/);
    assert.match(flat, /\(choices: auto, tensorflow, native, cpu; default: auto\)/);
    assert.doesNotMatch(r.stdout, /default: "/);
    // summary takes --depth or --arch: neither is required on its own.
    assert.match(cli(['summary', '--help']).stdout, /--depth <n> +weighted layers of a CIFAR-10 net, 6n\+2\n/);
  });

  for (const c of COMMANDS) {
    it(`${c}: ends with an example of itself`, () => {
      const r = cli([c, '--help']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`\\nExamples?:\\n(  \\$ resnet-exp ${c}\\b.*\\n)+$`));
    });
  }
});
