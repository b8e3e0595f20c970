"""Stacked MLP training (kdlib.stacked_mlp.train_mlps_stacked) against a plain per-run PyTorch
loop on a GMM task of paper Table 1: same data, MLP, initializations, batch orders, batch
size, epochs and SGD settings.

Run: .venv/bin/python benchmarks/bench_gmm.py --classes 10 --runs 5 --epochs 200 --batch-size 128
Options: --hidden 64,64 (MLP widths), --target posterior|onehot (soft CE on the exact
posterior, or CE on the labels), --lr 0.03, --threads N (torch CPU threads for both arms;
default: torch's default, i.e. all cores; the stacked arm splits its runs into one group per
thread), --plain-threads N (threads of the plain loop only, e.g. 1, its fastest setting on
a small machine), --device cpu|cuda, --skip-plain (time the stacked arm only), --floor (also
time the stacked arm's matrix products alone, same shapes and groups, no other work).
Prints progress lines, then as the last line one JSON object: the stacked and plain wall times
(s), their ratio, and both mean test accuracies over the runs (fractions); with --floor also
products_s and the ratio that products-only training would reach. Data loading and model
construction are not timed; the plain loop's test evaluation is timed with it, and so is the
stacked arm's one-off TorchScript compilation.

Both arms do the same matrix-product FLOPs. The stacked path removes the per-step Python,
autograd and optimizer overhead of K separate runs and uses every core; what is left is
mostly those products, which is why --floor bounds the ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

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


def products_floor(workers, runs, data, hidden, epochs, batch_size, device) -> float:
    """Wall time (s) of only the batched matrix products of stacked training (forward and
    backward, every layer, every step), with the runs split into `workers` threads as the
    stacked arm splits them: the part no amount of overhead removal takes away (eager calls,
    so it also holds their small per-call cost)."""
    widths = [data.train_x.shape[1], *hidden, data.num_classes]
    n = len(data.train_y)
    bounds = [round(i * runs / workers) for i in range(workers + 1)]
    threads = max(1, torch.get_num_threads() // workers)

    def group(k):
        if device == "cpu":
            torch.set_num_threads(threads)
        mats = []
        for d_in, d_out in zip(widths[:-1], widths[1:]):
            mats.append((torch.randn(k, batch_size, d_in, device=device),
                         torch.randn(k, d_in, d_out, device=device),
                         torch.randn(k, batch_size, d_out, device=device)))
        for _ in range(epochs * ((n + batch_size - 1) // batch_size)):
            for j, (h, w, dz) in enumerate(mats):
                torch.bmm(h, w)  # forward
                torch.bmm(h.transpose(1, 2), dz)  # weight gradient
                if j:
                    torch.bmm(dz, w.transpose(1, 2))  # input gradient
        _sync(device)

    old = torch.get_num_threads()
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(group, [hi - lo for lo, hi in zip(bounds[:-1], bounds[1:])]))
    torch.set_num_threads(old)
    return time.perf_counter() - start


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
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--plain-threads", type=int, default=0, help="0: as --threads")
    parser.add_argument("--floor", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    data = load_dataset(f"gmm{args.classes}")
    seeds = list(range(args.runs))
    targets = data.train_posterior if args.target == "posterior" else None
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    print(f"gmm{args.classes}: {len(data.train_y)} train / {len(data.test_y)} test, MLP "
          f"{hidden}, {args.runs} runs x {args.epochs} epochs, batch {args.batch_size}, "
          f"target {args.target}, {threads} threads, {args.device}", flush=True)

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
              "threads": threads, "workers": records[0]["config"]["workers"],
              "device": args.device,
              "stacked_s": round(stacked_s, 3),
              "stacked_accuracy": sum(stacked_acc) / len(stacked_acc)}
    if args.floor:
        products_s = products_floor(records[0]["config"]["workers"], args.runs, data, hidden,
                                    args.epochs, args.batch_size, args.device)
        result["products_s"] = round(products_s, 3)
        print(f"products only: {products_s:.2f} s", flush=True)
    if not args.skip_plain:
        torch.set_num_threads(args.plain_threads or threads)
        result["plain_threads"] = torch.get_num_threads()
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
        if args.floor:
            result["products_only_ratio"] = round(plain_s / products_s, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
