"""Single-run training throughput (images/s): kdlib.train.train vs a fair DataLoader loop.

    python benchmarks/bench_train.py [--arch resnet14] [--steps 12] [--batch-size 64]
                                     [--device auto] [--workers 0,2] [--threads N] [--quick]

Random CIFAR-shaped data (uint8, 3 x 32 x 32, 100 classes), same model, SGD (momentum 0.9,
weight decay 5e-4) and batch size on both sides; steady state only:
  * kdlib: `kdlib.train.train` (data on the device, whole-batch crop + flip, index slices).
    Its setup and final test evaluation are removed by timing two run lengths (n and 2n
    steps, one epoch each) and dividing the difference by n.
  * reference: the common recipe done well - a torch DataLoader over a Dataset whose
    __getitem__ pads, crops, flips and normalises one image (torchvision-style transforms in
    torch ops), shuffle, drop_last, persistent workers, pin_memory and non_blocking copies on
    CUDA; one row per --workers value, and on CUDA both fp32 and bf16 autocast (kdlib trains
    in bf16 there, fp32 on the CPU), channels_last and cudnn.benchmark. Timed after warm-up
    batches from the same iterator (worker start-up excluded).
Wall and process CPU time (user + sys, all threads) are both printed: a shared machine makes
wall time unreliable. The CPU time is the main process's only: DataLoader workers' time is
not in it, so img/cpu-s flatters rows with workers > 0. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sweep import fake_cifar  # noqa: E402  (same synthetic data as the sweep benchmark)

from kdlib.devices import resolve_device  # noqa: E402
from kdlib.recipe import Recipe  # noqa: E402
from kdlib.train import make_model, train  # noqa: E402


class PerImageDataset(torch.utils.data.Dataset):
    """uint8 CIFAR-like images with per-image random crop (pad 4), flip and normalization."""

    def __init__(self, x, y, mean, std):
        self.x, self.y = x, y
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].float().div(255)
        img = F.pad(img, (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        img = img[:, dy:dy + 32, dx:dx + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img - self.mean) / self.std, self.y[i]


def reference_rate(model, data, batch_size, steps, warm, device, workers, bf16) -> dict:
    """Steady-state images/s (wall and CPU) of the DataLoader loop over `steps` batches."""
    cuda = device.type == "cuda"
    ds = PerImageDataset(data.train_x, data.train_y, data.mean, data.std)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
        pin_memory=cuda, persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None)
    model = model.to(device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    it = iter(loader)

    def step():
        x, y = next(it)
        x = x.to(device, non_blocking=True)
        if cuda:
            x = x.to(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast(
            device.type, enabled=False)
        with ctx:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warm):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"img_per_s": steps * batch_size / wall, "img_per_cpu_s": steps * batch_size / cpu}


def kdlib_rate(arch, batch_size, steps, device) -> dict:
    """Steady-state images/s of kdlib.train.train from runs of `steps` and 2 x `steps`."""
    def run(n):
        data = fake_cifar(n * batch_size)
        model = make_model(arch, data)
        recipe = Recipe(epochs=1, batch_size=batch_size, lr=0.05)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        train(model, data, recipe, device=device, progress=False, eval_every=0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    run(2)  # warm-up
    w1, c1 = run(steps)
    w2, c2 = run(2 * steps)
    images = steps * batch_size
    return {"img_per_s": images / max(w2 - w1, 1e-9),
            "img_per_cpu_s": images / max(c2 - c1, 1e-9)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet14")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", default="0,2",
                    help="comma-separated DataLoader worker counts for the reference rows")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 steps of batch 16")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size = 3, 16
    workers = [int(w) for w in args.workers.split(",") if w != ""]
    if args.steps < 1 or args.batch_size < 2 or any(w < 0 for w in workers):
        ap.error("need steps >= 1, batch size >= 2, workers >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = {"kdlib": kdlib_rate(args.arch, args.batch_size, args.steps, dev)}
    data = fake_cifar((args.steps + 4) * args.batch_size)
    for w in workers:
        for bf16 in ((False, True) if dev.type == "cuda" else (False,)):
            name = f"reference workers={w} {'bf16' if bf16 else 'fp32'}"
            rows[name] = reference_rate(make_model(args.arch, data), data, args.batch_size,
                                        args.steps, 3, dev, w, bf16)
    refs = {n: r for n, r in rows.items() if n != "kdlib"}
    best = max(refs, key=lambda n: refs[n]["img_per_s"]) if refs else None
    out = {"device": str(dev), "arch": args.arch, "batch_size": args.batch_size,
           "steps": args.steps, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "kdlib_precision": "bf16 autocast" if dev.type == "cuda" else "fp32",
           "rows": {n: {k: round(v, 1) for k, v in r.items()} for n, r in rows.items()},
           "best_reference": best,
           "speedup_vs_best_reference": round(rows["kdlib"]["img_per_s"]
                                              / refs[best]["img_per_s"], 2) if best else None}
    for n, r in rows.items():
        print(f"{n:28s} {r['img_per_s']:9.1f} img/s  {r['img_per_cpu_s']:9.1f} img/cpu-s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
