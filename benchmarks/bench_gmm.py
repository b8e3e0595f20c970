"""Stacked MLP training (kdlib.stacked_mlp.train_mlps_stacked) against a plain per-run PyTorch
loop on a GMM task of paper Table 1: same data, MLP, initializations, batch orders, batch
size, epochs and SGD settings.

Run: .venv/bin/python benchmarks/bench_gmm.py --classes 10 --runs 5 --epochs 200 --batch-size 128
Options: --hidden 64,64 (MLP widths), --target posterior|onehot (soft CE on the exact
posterior, or CE on the labels), --lr 0.03, --threads 1 (torch CPU threads for both arms;
with other jobs on the machine more threads than free cores slow tiny ops down by orders of
magnitude), --device cpu|cuda, --skip-plain (time the stacked arm only).
Prints progress lines, then as the last line one JSON object: the stacked and plain wall times
(s), their ratio, and both mean test accuracies over the runs (fractions). Data loading and
model construction are not timed; the plain loop's test evaluation is timed with it.

Both arms do the same matrix-product FLOPs; the stacked path removes the per-step Python,
autograd and optimizer overhead of K separate runs. With hidden (64, 64) those products are
most of a stacked step on one CPU core, which caps the ratio well below 10 for 5 runs;
narrower MLPs (--hidden 32,32) or more runs per stack move it up.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from kdlib.data import load_dataset
from kdlib.recipe import Recipe
from kdlib.stacked_mlp import train_mlps_stacked
from kdlib.train import make_model


def plain_loop(data, hidden, seeds, targets, epochs, batch_size, lr, device) -> list[float]:
    """Train one MLP per seed with a hand-written loop; returns test accuracies (fractions)."""
    x, y = data.train_x.to(device), data.train_y.to(device)
    tx, ty = data.test_x.to(device), data.test_y.to(device)
    q = None if targets is None else targets.to(device)
    accs = []
    for seed in seeds:
        model = make_model("mlp", data, seed=seed, hidden=hidden).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(len(y), generator=gen).to(device)
            for start in range(0, len(y), batch_size):
                idx = perm[start:start + batch_size]
                logits = model(x[idx])
                if q is None:
                    loss = F.cross_entropy(logits, y[idx])
                else:
                    loss = -(q[idx] * F.log_softmax(logits, dim=1)).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            accs.append(float((model(tx).argmax(1) == ty).float().mean()))
    return accs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, choices=(10, 100), default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", default="64,64")
    parser.add_argument("--target", choices=("posterior", "onehot"), default="posterior")
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    data = load_dataset(f"gmm{args.classes}")
    seeds = list(range(args.runs))
    targets = data.train_posterior if args.target == "posterior" else None
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    print(f"gmm{args.classes}: {len(data.train_y)} train / {len(data.test_y)} test, MLP "
          f"{hidden}, {args.runs} runs x {args.epochs} epochs, batch {args.batch_size}, "
          f"target {args.target}, {torch.get_num_threads()} threads, {args.device}", flush=True)

    models = [make_model("mlp", data, seed=s, hidden=hidden) for s in seeds]
    _sync(args.device)
    start = time.perf_counter()
    records = train_mlps_stacked(models, data, recipe, seeds, targets=targets,
                                 device=args.device, progress=False)
    _sync(args.device)
    stacked_s = time.perf_counter() - start
    stacked_acc = [r["metrics"]["accuracy"] for r in records]
    print(f"stacked: {stacked_s:.2f} s, accuracies {[round(a, 4) for a in stacked_acc]}",
          flush=True)

    result = {"classes": args.classes, "runs": args.runs, "epochs": args.epochs,
              "batch_size": args.batch_size, "hidden": list(hidden), "target": args.target,
              "threads": torch.get_num_threads(), "device": args.device,
              "stacked_s": round(stacked_s, 3),
              "stacked_accuracy": sum(stacked_acc) / len(stacked_acc)}
    if not args.skip_plain:
        _sync(args.device)
        start = time.perf_counter()
        plain_acc = plain_loop(data, hidden, seeds, targets, args.epochs, args.batch_size,
                               args.lr, args.device)
        _sync(args.device)
        plain_s = time.perf_counter() - start
        print(f"plain:   {plain_s:.2f} s, accuracies {[round(a, 4) for a in plain_acc]}",
              flush=True)
        result.update({"plain_s": round(plain_s, 3), "ratio": round(plain_s / stacked_s, 2),
                       "plain_accuracy": sum(plain_acc) / len(plain_acc)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
