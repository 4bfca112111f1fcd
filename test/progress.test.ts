import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createReporter, estimateSeconds, formatBar, type BarState } from '../src/cli/progress';
import type { LoopState, Row } from '../src/train/trainer';

const long: BarState = {
  name: 'resnet-1202-B-s10',
  iteration: 12345,
  total: 64000,
  loss: 0.51234,
  trainError: 18.25,
  testError: 21.3,
  lr: 0.001,
  imagesPerS: 312.4,
  eta: { seconds: 3600 * 12 + 60 * 34, lowerBound: false },
};

describe('progress bar line', () => {
  it('fits 80 columns and keeps test error, lr and ETA', () => {
    const line = formatBar(long, 80);
    assert.ok(line.length <= 80, `${line.length}: ${line}`);
    assert.match(line, /test 21\.3%/);
    assert.match(line, /lr 0\.001/);
    assert.match(line, /ETA 12h34m/);
    assert.match(line, /12345\/64000/);
  });

  it('shows everything on a wide terminal, and drops fields rather than exceed a narrow one', () => {
    const wide = formatBar(long, 200);
    assert.match(wide, /loss 0\.512 .*train 18\.3%.*312 img\/s/);
    for (const columns of [40, 60, 80, 100]) assert.ok(formatBar(long, columns).length <= columns);
  });

  it('has an evaluating state with its own progress', () => {
    const line = formatBar({ ...long, evaluating: { done: 2500, total: 10000 } }, 80);
    assert.match(line, /evaluating 25%/);
    assert.doesNotMatch(line, /loss/);
  });

  it('marks an ETA that does not include evaluations yet', () => {
    assert.match(formatBar({ ...long, eta: { seconds: 90, lowerBound: true } }, 80), /ETA >1m30s/);
  });
});

describe('ETA', () => {
  it('adds one measured evaluation per row still to come', () => {
    const e = estimateSeconds({
      iteration: 1000,
      total: 2000,
      secondsPerIteration: 0.5,
      evalEvery: 500,
      secondsPerEval: 20,
    });
    assert.deepEqual(e, { seconds: 500 + 2 * 20, lowerBound: false });
    // The last iteration is evaluated even off the grid: 1500, 2000 and 2100.
    const off = estimateSeconds({
      iteration: 1000,
      total: 2100,
      secondsPerIteration: 1,
      evalEvery: 500,
      secondsPerEval: 10,
    });
    assert.equal(off.seconds, 1100 + 3 * 10);
  });

  it('is a lower bound before an evaluation was timed', () => {
    const e = estimateSeconds({
      iteration: 0,
      total: 100,
      secondsPerIteration: 1,
      evalEvery: undefined,
      secondsPerEval: undefined,
    });
    assert.deepEqual(e, { seconds: 100, lowerBound: true });
  });
});

/** A terminal of 80 columns that keeps what was written, and what is on screen. */
function fakeTty() {
  let written = '';
  const stream = {
    isTTY: true,
    columns: 80,
    write(s: string) {
      written += s;
      return true;
    },
  } as unknown as NodeJS.WriteStream;
  // The screen: '\r' returns to the line's start, '\x1b[K' erases the rest of the line,
  // other characters overwrite what is under the cursor.
  const screen = () => {
    const lines: string[] = [''];
    let col = 0;
    // eslint-disable-next-line no-control-regex -- the escape sequence is what is parsed
    for (const part of written.split(/(\r|\n|\x1b\[K)/)) {
      const cur = lines.length - 1;
      if (part === '\n') {
        lines.push('');
        col = 0;
      } else if (part === '\r') col = 0;
      else if (part === '\x1b[K') lines[cur] = lines[cur].slice(0, col);
      else {
        lines[cur] = lines[cur].slice(0, col) + part + lines[cur].slice(col + part.length);
        col += part.length;
      }
    }
    return lines.filter((l) => l !== '');
  };
  return { stream, screen };
}

function loopState(iteration: number): LoopState {
  return {
    iteration,
    warmup: { active: false, recentErrors: [] } as unknown as LoopState['warmup'],
    interval: { lossSum: 2.3 * 128, errorSum: 100, images: 128, batches: 1, trainSeconds: 0.1 },
    elapsedS: 1,
  };
}

const row: Row = {
  iteration: 2,
  epoch: 0.1,
  lr: 0.1,
  trainLoss: 2.3,
  trainError: 80,
  testError: 77.5,
  valError: null,
  elapsedS: 1,
  imagesPerS: 100,
};

describe('reporter on a terminal', () => {
  it('shows the evaluating state, then the test error, and keeps lines printed meanwhile', () => {
    const { stream, screen } = fakeTty();
    const r = createReporter(stream);
    r.start('plain-20-s1', 4, 0);
    r.step(loopState(1), { loss: 2.3, error: 80, lr: 0.1, imagesPerS: 100 });
    r.log('SIGINT: saving a checkpoint after this step (send again to quit at once)');
    r.step(loopState(2), { loss: 2.3, error: 80, lr: 0.1, imagesPerS: 100 });
    r.evaluating?.(0, 1000);
    assert.match(screen().at(-1) ?? '', /evaluating 0%/);
    r.evaluating?.(1000, 1000);
    assert.match(screen().at(-1) ?? '', /evaluating 100%/);
    r.row(row);
    assert.match(screen().at(-1) ?? '', /test 77\.5%/);
    r.stop();
    r.log('interrupted at iteration 2; checkpoint saved.');
    const lines = screen();
    assert.ok(
      lines.includes('SIGINT: saving a checkpoint after this step (send again to quit at once)'),
      lines.join('\n'),
    );
    assert.equal(lines.at(-1), 'interrupted at iteration 2; checkpoint saved.');
    assert.match(lines.at(-2) ?? '', /^plain-20-s1 .*2\/4 .*test 77\.5%/);
    for (const l of lines) assert.ok(l.length <= 80, l);
  });
});
