#!/usr/bin/env python3
"""The paper's CIFAR-10 recipe in PyTorch, on the same binary files: an independent
reference for resnet-exp's curves. When a run ends far from the paper's figure, training the
same net here on the same data tells whether the gap comes from the data or from the tool.

  /usr/bin/python3 scripts/torch-reference.py --depth 20 [--plain] --data-dir DIR \\
      --out reference/resnet-20.csv [--iterations 64000 --milestones 32000,48000] \\
      [--seed 1 --threads 1 --decay-all]

What it matches in resnet-exp (src/data/batches.ts, src/train/): the per-pixel mean of the
training images subtracted, 4 zero pixels padded after that, a random 32x32 crop and a
horizontal flip with probability 1/2, a new permutation every epoch; SGD with momentum 0.9
(v = m v + g + wd w; w -= lr v), lr 0.1 divided by 10 at the milestones, weight decay 1e-4
on conv and FC weights only (--decay-all: every parameter, as pytorch_resnet_cifar10 does);
BN momentum 0.1, eps 1e-5; the test error of the 10,000 test images in inference mode every
--eval-every iterations. The networks are ../shared/bench/torch_cifar_resnet.py's (the speed
reference of `npm run bench`). The random streams are PyTorch's, so two runs agree as two
seeds do, not row by row.

Writes rows with resnet-exp's metrics.csv columns, so the curves can be set side by side.
A checkpoint beside the CSV (<out>.pt, written at every row) lets the same command resume
after an interruption; rows past the checkpoint are dropped then, so none is repeated.
Debian's PyTorch: apt-get install python3-torch, then use /usr/bin/python3.
"""
import argparse
import importlib.util
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADER = "iteration,epoch,lr,train_loss,train_error,test_error,val_error,elapsed_s,images_per_s\n"
RECORD = 3073


def fail(msg):
    print(f"torch-reference: {msg}", file=sys.stderr)
    sys.exit(2)


def load_split(data_dir, names):
    parts = []
    for name in names:
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            fail(f"{path} is missing: pass --data-dir with the six CIFAR-10 .bin files")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % RECORD:
            fail(f"{path} is not a whole number of {RECORD}-byte records")
        parts.append(raw.reshape(-1, RECORD))
    raw = np.concatenate(parts)
    images = raw[:, 1:].reshape(-1, 3, 32, 32)  # R, G, B planes, row-major
    labels = raw[:, 0].astype(np.int64)
    return images, labels


def load_model_module(path):
    if not os.path.isfile(path):
        fail(f"{path} is missing: pass --model-file (../shared/bench/torch_cifar_resnet.py)")
    spec = importlib.util.spec_from_file_location("torch_cifar_resnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def augment(x, generator):
    """Zero-pad 4, random 32x32 crop, flip with probability 1/2; x is [B, 3, 32, 32]."""
    b = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    offsets = torch.randint(0, 9, (b, 2), generator=generator)
    flips = torch.randint(0, 2, (b,), generator=generator)
    out = torch.empty_like(x)
    for i in range(b):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy : dy + 32, dx : dx + 32]
        out[i] = crop.flip(2) if flips[i] else crop
    return out


def lr_at(step, base, milestones):
    """The lr of step `step` (1-based): divided by 10 after each milestone passed."""
    return base * 0.1 ** sum(1 for m in milestones if step > m)


def test_error(model, x, y, fmt):
    model.eval()
    wrong = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], 500):
            logits = model(x[i : i + 500].contiguous(memory_format=fmt))
            wrong += int((logits.argmax(1) != y[i : i + 500]).sum())
    model.train()
    return 100.0 * wrong / x.shape[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--plain", action="store_true")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, help="metrics CSV to write (resumed if it exists with its .pt)")
    p.add_argument("--iterations", type=int, default=64000)
    p.add_argument("--milestones", default="32000,48000")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--decay-all", action="store_true", help="weight decay on BN and biases too")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--model-file", default=os.path.join(here, "..", "..", "shared", "bench", "torch_cifar_resnet.py"))
    args = p.parse_args()
    try:
        milestones = [int(m) for m in args.milestones.split(",") if m]
    except ValueError:
        fail(f"--milestones must be iterations separated by commas, got {args.milestones!r}")
    if (args.depth - 2) % 6 or args.depth < 8:
        fail(f"--depth must be 6n+2 (20, 32, 44, 56, 110), got {args.depth}")

    torch.set_num_threads(args.threads)
    fmt = torch.channels_last
    net_module = load_model_module(args.model_file)
    train_u8, train_y = load_split(args.data_dir, [f"data_batch_{i}.bin" for i in range(1, 6)])
    test_u8, test_y = load_split(args.data_dir, ["test_batch.bin"])
    mean = train_u8.astype(np.float64).mean(0).astype(np.float32)
    train_x = torch.from_numpy(train_u8.astype(np.float32) - mean)
    test_x = torch.from_numpy(test_u8.astype(np.float32) - mean)
    train_y, test_y = torch.from_numpy(train_y), torch.from_numpy(test_y)
    n = train_x.shape[0]

    torch.manual_seed(args.seed)
    model = net_module.CifarNet(args.depth, residual=not args.plain).to(memory_format=fmt)
    decayed = [w for name, w in model.named_parameters() if args.decay_all or (w.dim() > 1)]
    free = [w for name, w in model.named_parameters() if not (args.decay_all or (w.dim() > 1))]
    opt = torch.optim.SGD(
        [{"params": decayed, "weight_decay": args.weight_decay}, {"params": free, "weight_decay": 0.0}],
        lr=args.lr,
        momentum=0.9,
    )

    checkpoint = args.out + ".pt"
    step, elapsed = 0, 0.0
    if os.path.exists(checkpoint) and os.path.exists(args.out):
        state = torch.load(checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["iteration"], state["elapsed_s"]
        # Rows written after the checkpoint (killed between the two writes) are redone.
        with open(args.out) as f:
            lines = f.readlines()
        keep = [lines[0]] + [l for l in lines[1:] if l.strip() and int(l.split(",")[0]) <= step]
        with open(args.out, "w") as f:
            f.writelines(keep)
        print(f"resuming {args.out} at iteration {step}", file=sys.stderr)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(HEADER)

    perms = {}  # epoch -> permutation of the training images (at most two kept)
    loss_sum, wrong, seen = 0.0, 0, 0
    mark = time.time()
    interval_start = mark
    while step < args.iterations:
        # Batch `step`: stream positions [step * B, (step + 1) * B) of per-epoch permutations.
        idx = []
        for k in range(step * args.batch, (step + 1) * args.batch):
            epoch, pos = divmod(k, n)
            if epoch not in perms:
                if len(perms) > 1:
                    perms.clear()
                perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1_000_003 + epoch))
            idx.append(int(perms[epoch][pos]))
        gen = torch.Generator().manual_seed(args.seed * 7_919 + step)
        x = augment(train_x[idx], gen).contiguous(memory_format=fmt)
        y = train_y[idx]
        step += 1
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, milestones)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss) * len(idx)
        wrong += int((logits.argmax(1) != y).sum())
        seen += len(idx)
        if step % args.eval_every == 0 or step == args.iterations:
            now = time.time()
            train_s = now - interval_start
            err = test_error(model, test_x, test_y, fmt)
            now = time.time()
            elapsed += now - mark
            mark = now
            row = (
                f"{step},{step * args.batch / n:.2f},{lr_at(step, args.lr, milestones):g},"
                f"{loss_sum / seen:.5f},{100.0 * wrong / seen:.3f},{err:.2f},,{elapsed:.1f},{seen / train_s:.1f}\n"
            )
            with open(args.out, "a") as f:
                f.write(row)
            tmp = checkpoint + ".tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "iteration": step, "elapsed_s": elapsed}, tmp)
            os.replace(tmp, checkpoint)
            print(row.strip(), file=sys.stderr)
            loss_sum, wrong, seen = 0.0, 0, 0
            interval_start = time.time()


if __name__ == "__main__":
    main()
