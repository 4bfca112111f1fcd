import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { blocksPerStage, CifarNet, DepthError, netName, shortcutA } from '../src/model/resnet';
import { ArchError, IMAGENET_ARCHS, parseArch, type ImageNetArch } from '../src/model/imagenet';
import { summarize, summarizeImageNet } from '../src/model/summary';

before(async () => {
  tf.env().set('PROD', true);
  await tf.setBackend('cpu');
});

describe('architecture', () => {
  it('accepts only depths 6n+2', () => {
    assert.equal(blocksPerStage(20), 3);
    assert.equal(blocksPerStage(1202), 200);
    for (const bad of [0, 2, 19, 21, 51, 20.5, -4]) assert.throws(() => blocksPerStage(bad), DepthError);
  });

  it('has the parameter counts of Table 6 (with BN scale and shift), plain nets the same', () => {
    const expected: Record<number, number> = {
      20: 269722,
      32: 464154,
      44: 658586,
      56: 853018,
      110: 1727962,
      1202: 19421274,
    };
    for (const [depth, params] of Object.entries(expected)) {
      assert.equal(summarize({ depth: Number(depth), plain: false, shortcut: 'A' }).params, params, `resnet-${depth}`);
      assert.equal(summarize({ depth: Number(depth), plain: true, shortcut: 'A' }).params, params, `plain-${depth}`);
    }
  });

  it('has the forward multiply-accumulates of the reference', () => {
    assert.equal(summarize({ depth: 20, plain: false, shortcut: 'A' }).macs, 40551040);
    assert.equal(summarize({ depth: 56, plain: false, shortcut: 'A' }).macs, 125485696);
  });

  it('option B adds two 1x1 projections + BN', () => {
    const a = summarize({ depth: 20, plain: false, shortcut: 'A' }).params;
    const b = summarize({ depth: 20, plain: false, shortcut: 'B' }).params;
    assert.equal(b - a, 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64);
  });

  it('names runs as the results folders do', () => {
    assert.equal(netName({ depth: 56, plain: true, shortcut: 'A' }), 'plain-56');
    assert.equal(netName({ depth: 110, plain: false, shortcut: 'B' }), 'resnet-110-B');
  });
});

describe('network', () => {
  it('builds variables that match the summary and maps a batch to 10 logits', () => {
    for (const cfg of [
      { depth: 20, plain: false, shortcut: 'A' as const },
      { depth: 8, plain: true, shortcut: 'A' as const },
      { depth: 8, plain: false, shortcut: 'B' as const },
    ]) {
      const net = new CifarNet(cfg, 1);
      assert.equal(net.parameterCount(), summarize(cfg).params);
      const logits = tf.tidy(() => net.forward(tf.randomNormal([2, 32, 32, 3]), false));
      assert.deepEqual(logits.shape, [2, 10]);
      assert.ok([...logits.dataSync()].every(Number.isFinite));
      logits.dispose();
      net.dispose();
    }
  });

  it('keeps only each block output alive in inference, so a deeper net holds no more tensors', () => {
    // What a 500-image evaluation of ResNet-110 needs in memory (8.7 GB peak before, 3.0 after).
    const alive = (depth: number, plain: boolean) => {
      const net = new CifarNet({ depth, plain, shortcut: 'A' }, 1);
      const x = tf.zeros([2, 32, 32, 3]) as tf.Tensor4D;
      const before = tf.memory().numTensors;
      const logits = net.forward(x, false);
      const grew = tf.memory().numTensors - before;
      tf.dispose([logits, x]);
      net.dispose();
      return grew;
    };
    for (const plain of [false, true]) assert.equal(alive(20, plain), alive(8, plain), `plain ${plain}`);
  });

  it('initializes conv weights He-normal: std sqrt(2 / fan_in)', () => {
    const net = new CifarNet({ depth: 20, plain: false, shortcut: 'A' }, 3);
    const w = net.params.get('stage3/block2/conv1/w') as tf.Variable; // 3x3x64x64
    const v = [...(w.dataSync() as Float32Array)];
    const mean = v.reduce((s, x) => s + x, 0) / v.length;
    const std = Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length);
    assert.ok(Math.abs(std - Math.sqrt(2 / (9 * 64))) < 0.005, `std ${std}`);
    assert.ok(Math.abs(mean) < 0.005);
    net.dispose();
  });

  it('same seed, same weights; other seed, other weights', () => {
    const a = new CifarNet({ depth: 8, plain: false, shortcut: 'A' }, 5);
    const b = new CifarNet({ depth: 8, plain: false, shortcut: 'A' }, 5);
    const c = new CifarNet({ depth: 8, plain: false, shortcut: 'A' }, 6);
    const w = (n: CifarNet) => [...(n.params.get('stage2/block1/conv1/w') as tf.Variable).dataSync()];
    assert.deepEqual(w(a), w(b));
    assert.notDeepEqual(w(a), w(c));
    [a, b, c].forEach((n) => n.dispose());
  });
});

describe('option A shortcut', () => {
  it('keeps every second pixel and zero-pads the new channels half before, half after', () => {
    const [n, h, w, c] = [2, 4, 6, 3];
    const x = tf.tensor4d(
      Array.from({ length: n * h * w * c }, (_, i) => i + 1),
      [n, h, w, c],
    );
    const y = shortcutA(x, 7); // 4 new channels: 2 before, 2 after
    assert.deepEqual(y.shape, [n, h / 2, w / 2, 7]);
    const xv = x.arraySync();
    const yv = y.arraySync();
    for (let b = 0; b < n; b++)
      for (let i = 0; i < h / 2; i++)
        for (let j = 0; j < w / 2; j++) {
          assert.deepEqual(yv[b][i][j], [0, 0, ...xv[b][2 * i][2 * j], 0, 0]);
        }
    tf.dispose([x, y]);
  });

  it('passes gradients only to the kept pixels', () => {
    const x = tf.randomNormal([1, 4, 4, 2]) as tf.Tensor4D;
    const g = tf.grad((t: tf.Tensor) => tf.sum(shortcutA(t as tf.Tensor4D, 4)))(x);
    const gv = g.arraySync() as number[][][][];
    for (let i = 0; i < 4; i++)
      for (let j = 0; j < 4; j++) {
        const kept = i % 2 === 0 && j % 2 === 0 ? 1 : 0;
        assert.deepEqual(gv[0][i][j], [kept, kept]);
      }
    tf.dispose([x, g]);
  });
});

describe('ImageNet family (Table 1)', () => {
  it("has torchvision's parameter counts and the paper's multiply-adds", () => {
    // torchvision.models.resnetXX(): sum(p.numel() for p in model.parameters())
    const expected: Record<ImageNetArch, { params: number; gmacs: number }> = {
      resnet18: { params: 11689512, gmacs: 1.8 },
      resnet34: { params: 21797672, gmacs: 3.6 },
      resnet50: { params: 25557032, gmacs: 3.8 },
      resnet101: { params: 44549160, gmacs: 7.6 },
      resnet152: { params: 60192808, gmacs: 11.3 },
    };
    for (const arch of IMAGENET_ARCHS) {
      const s = summarizeImageNet(arch);
      assert.equal(s.params, expected[arch].params, arch);
      // Table 1 rounds (and truncates 3.66 to 3.6, 3.86 to 3.8): within 0.1 G.
      assert.ok(Math.abs(s.macs / 1e9 - expected[arch].gmacs) < 0.1, `${arch}: ${s.macs}`);
    }
  });

  it('has the stem, the stages and the 1000-way classifier of Table 1', () => {
    const s = summarizeImageNet('resnet50');
    assert.equal(s.layers[0].op, 'conv7x7/2 + BN');
    assert.equal(s.layers[0].output, '112x112x64');
    assert.equal(s.layers[1].output, '56x56x64');
    assert.equal(s.layers.at(-1)?.output, '1000');
    // 1 + 3 * (3 + 4 + 6 + 3) = 49 conv layers + fc = 50, plus one projection per stage
    assert.equal(s.layers.filter((l) => l.op.startsWith('conv') && !l.name.endsWith('/proj')).length, 49);
    assert.equal(s.layers.filter((l) => l.name.endsWith('/proj')).length, 4);
    assert.ok(s.layers.some((l) => l.name === 'conv5_3/c' && l.output === '7x7x2048'));
    // basic blocks: the first stage keeps 64 channels, so only 3 projections
    assert.equal(summarizeImageNet('resnet18').layers.filter((l) => l.name.endsWith('/proj')).length, 3);
  });

  it('rejects an unknown architecture', () => {
    assert.equal(parseArch('ResNet-50'), 'resnet50');
    assert.throws(() => parseArch('vgg16'), ArchError);
  });
});
