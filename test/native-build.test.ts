// The two compiled copies of our own loops (native/batchnorm-loops.cc for any x86-64 CPU,
// native/batchnorm-loops-avx512.cc for AVX-512): they compute the same bits, and the
// AVX-512 object file leaves no AVX code in anything the linker may share with the
// baseline copy (which would crash a CPU without AVX-512). Skipped, with the reason, when
// the addon is not built or the CPU has no AVX-512.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { loadAddon } from '../src/engine/native/addon';

const ROOT = path.join(__dirname, '..');
const OBJECTS = path.join(ROOT, 'build/Release/obj.target/resnet_native/native');
const ADDON = path.join(ROOT, 'build/Release/resnet_native.node');

// The AVX-512 copy needs AVX-512 F, BW, DQ and VL (Linux: /proc/cpuinfo's flags).
const cpuFlags = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
const avx512 = ['avx512f', 'avx512bw', 'avx512dq', 'avx512vl'].every((f) => new RegExp(`\\b${f}\\b`).test(cpuFlags));
let skipReason: string | false = false;
try {
  loadAddon();
  if (!avx512) skipReason = 'this CPU has no AVX-512 (F, BW, DQ, VL): it runs the baseline loops only';
} catch (e) {
  skipReason = `native addon not built: ${(e as Error).message}`;
}

interface Probe {
  version: string;
  hashes: Record<string, string>;
  /** Batch-norm calls the probe made, and those with a bf16 array. */
  made: { all: number; bf16: number };
  /** The addon's count of them by copy of the loops that ran them. */
  ran: { generic: number; avx512: number };
}
/** The probe's output with RESNET_EXP_LOOPS (which copy of the loops runs) set to `loops`. */
function probe(loops: string): Probe {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'bn-loops-probe.ts')], {
    cwd: ROOT,
    env: { ...process.env, RESNET_EXP_LOOPS: loops },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Probe;
}

describe('AVX-512 and baseline copies of the loops', { skip: skipReason }, () => {
  it('batch norm forward, backward and inference give the same bits in both copies', () => {
    const fast = probe('avx512');
    const base = probe('generic');
    const mixed = probe('avx512-bf16');
    assert.match(fast.version, /batch-norm loops avx512$/);
    assert.match(base.version, /batch-norm loops generic$/);
    assert.match(mixed.version, /batch-norm loops generic \(avx512 for bf16\)$/);
    // Every call ran the copy chosen: all of them one copy, or by bf16 or not.
    const { all, bf16 } = fast.made;
    assert.ok(bf16 > 0 && bf16 < all, `the probe makes f32 and bf16 calls (${bf16} of ${all} bf16)`);
    assert.deepEqual(fast.ran, { generic: 0, avx512: all });
    assert.deepEqual(base.ran, { generic: all, avx512: 0 });
    assert.deepEqual(mixed.ran, { generic: all - bf16, avx512: bf16 });
    // 5 shapes (widths 16/32/64/48, nhwc and nChw16c) x inputs x relu x residual, 3 functions,
    // and in nhwc a second backward reading dy in bf16
    assert.equal(Object.keys(fast.hashes).length, 136);
    for (const other of [base, mixed]) {
      const differ = Object.keys(fast.hashes).filter((k) => fast.hashes[k] !== other.hashes[k]);
      assert.deepEqual(differ, [], `outputs differ between the copies: ${differ.slice(0, 5).join('; ')}`);
    }
  });

  it('the default follows the CPU, and RESNET_EXP_LOOPS is checked', () => {
    // The addon's version line in a fresh process with these variables (and neither knob
    // inherited), or the error it throws.
    const version = (vars: NodeJS.ProcessEnv = {}) => {
      const env = { ...process.env };
      delete env.RESNET_EXP_LOOPS;
      delete env.ONEDNN_MAX_CPU_ISA;
      const script = `try { console.log(require(${JSON.stringify(ADDON)}).version()) } catch (e) { console.log(e.message) }`;
      return spawnSync(process.execPath, ['-e', script], { env: { ...env, ...vars }, encoding: 'utf8' }).stdout.trim();
    };
    // Intel CPUs with AVX-512 run its copy; AMD's too for bf16 calls, the baseline one for
    // f32 calls (addon.cc says why).
    const amd = /AuthenticAMD/.test(cpuFlags);
    assert.match(version(), amd ? /batch-norm loops generic \(avx512 for bf16\)$/ : /batch-norm loops avx512$/);
    // oneDNN's ISA cap below AVX-512 caps our loops as well.
    assert.match(version({ ONEDNN_MAX_CPU_ISA: 'AVX2' }), /\(ISA avx2\), batch-norm loops generic/);
    assert.equal(
      version({ RESNET_EXP_LOOPS: 'fast' }),
      'resnet_native: RESNET_EXP_LOOPS must be avx512, generic or avx512-bf16, not "fast" (unset it for the default)',
    );
  });

  it('shares no AVX code with the baseline build', (t) => {
    const files = ['batchnorm-loops.o', 'batchnorm-loops-avx512.o'].map((f) => path.join(OBJECTS, f));
    if (!files.every(existsSync)) return t.skip(`object files not found in ${OBJECTS}`);
    if (spawnSync('objdump', ['--version']).status !== 0) return t.skip('objdump not installed (binutils)');
    // Functions the linker keeps one copy of (weak and unique symbols: inline functions and
    // templates of headers), defined in both objects.
    const shared = (file: string) => {
      const nm = spawnSync('nm', ['--defined-only', file], { encoding: 'utf8' });
      assert.equal(nm.status, 0, nm.stderr);
      return new Set(
        nm.stdout
          .split('\n')
          .map((l) => l.split(' '))
          .filter((f) => f.length === 3 && 'WVu'.includes(f[1]))
          .map((f) => f[2]),
      );
    };
    const base = shared(files[0]);
    const both = [...shared(files[1])].filter((s) => base.has(s));
    // Instructions by function in the AVX-512 object.
    const dump = spawnSync('objdump', ['-d', '--no-show-raw-insn', files[1]], {
      encoding: 'utf8',
      maxBuffer: 1 << 30,
    });
    assert.equal(dump.status, 0, dump.stderr);
    const code = new Map<string, string[]>();
    let current: string[] = [];
    for (const line of dump.stdout.split('\n')) {
      const head = /^[0-9a-f]+ <(.+)>:$/.exec(line);
      if (head) code.set(head[1], (current = []));
      else if (line.includes('\t')) current.push(line.split('\t')[1].trim());
    }
    // VEX/EVEX instructions (v...), AVX registers, mask registers.
    const avx = /^v[a-z0-9]+\s|%[yz]mm|%k[0-7]|%xmm(1[6-9]|2\d|3[01])\b/;
    const sharedWithAvx = both.filter((s) => (code.get(s) ?? []).some((i) => avx.test(i)));
    assert.deepEqual(
      sharedWithAvx,
      [],
      'functions compiled for AVX-512 that the linker may also give baseline callers',
    );
    // The check sees AVX-512 code where there is some: the loops themselves.
    const loops = [...code.keys()].filter((s) => s.includes('rn6avx512') && s.includes('trainBackward'));
    assert.ok(
      loops.some((s) => code.get(s)!.some((i) => avx.test(i))),
      'no AVX-512 code found in the loops',
    );
    assert.ok(both.length > 0, 'no shared functions found: nm output not understood');
  });
});
