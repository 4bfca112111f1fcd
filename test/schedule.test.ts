import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { completeRecipe, PAPER_RECIPE, warmupEnabled } from '../src/experiment/settings';
import { defaultMilestones, initialWarmup, learningRate, recordWarmup, WARMUP_WINDOW } from '../src/train/schedule';

describe('learning-rate schedule', () => {
  const cfg = { lr: 0.1, milestones: [32000, 48000], warmup: false };
  it('is 0.1, then 0.01 from 32k, then 0.001 from 48k', () => {
    assert.equal(learningRate(cfg, 0, false), 0.1);
    assert.equal(learningRate(cfg, 31999, false), 0.1);
    assert.ok(Math.abs(learningRate(cfg, 32000, false) - 0.01) < 1e-12);
    assert.ok(Math.abs(learningRate(cfg, 47999, false) - 0.01) < 1e-12);
    assert.ok(Math.abs(learningRate(cfg, 48000, false) - 0.001) < 1e-12);
    assert.ok(Math.abs(learningRate(cfg, 63999, false) - 0.001) < 1e-12);
  });
  it('warms up at lr/10, never above the scheduled rate', () => {
    assert.ok(Math.abs(learningRate(cfg, 10, true) - 0.01) < 1e-12);
    assert.ok(Math.abs(learningRate(cfg, 50000, true) - 0.001) < 1e-12);
  });
  it('scales milestones to 50% and 75% of --iterations', () => {
    assert.deepEqual(defaultMilestones(64000), [32000, 48000]);
    assert.deepEqual(completeRecipe({ iterations: 2000 }).milestones, [1000, 1500]);
    assert.deepEqual(completeRecipe({ iterations: 2000, milestones: [10] }).milestones, [10]);
    assert.deepEqual(completeRecipe({}), PAPER_RECIPE);
  });
  it('rejects nonsense', () => {
    assert.throws(() => completeRecipe({ iterations: 0 }), /--iterations/);
    assert.throws(() => completeRecipe({ lr: -1 }), /--lr/);
    assert.throws(() => completeRecipe({ batch: 1.5 }), /--batch/);
  });
});

describe('warm-up', () => {
  it('is on for depth >= 110 with auto, forced by on/off', () => {
    assert.equal(warmupEnabled(PAPER_RECIPE, 56), false);
    assert.equal(warmupEnabled(PAPER_RECIPE, 110), true);
    assert.equal(warmupEnabled({ ...PAPER_RECIPE, warmup: 'on' }, 20), true);
    assert.equal(warmupEnabled({ ...PAPER_RECIPE, warmup: 'off' }, 1202), false);
  });
  it('ends once the running training error over the window is below 80%', () => {
    const s = initialWarmup({ lr: 0.1, milestones: [], warmup: true });
    for (let i = 0; i < WARMUP_WINDOW; i++) assert.equal(recordWarmup(s, 90), false);
    assert.equal(s.active, true);
    // The window mean falls below 80% only after enough good batches.
    let ended = -1;
    for (let i = 0; i < WARMUP_WINDOW && ended < 0; i++) if (recordWarmup(s, 60)) ended = i;
    assert.ok(ended > 0, 'ended after several low-error batches');
    assert.equal(s.active, false);
    assert.equal(recordWarmup(s, 99), false, 'stays off');
  });
  it('never starts when disabled', () => {
    const s = initialWarmup({ lr: 0.1, milestones: [], warmup: false });
    assert.equal(recordWarmup(s, 10), false);
    assert.equal(s.active, false);
  });
});
