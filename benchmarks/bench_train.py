"""Training throughput (images/s): kdlib's engine vs a DataLoader reference loop.

    python benchmarks/bench_train.py [--arch resnet14] [--steps 10] [--batch-size 64]
                                     [--device auto] [--workers 0]

Random CIFAR-shaped data (uint8, 3 x 32 x 32, 100 classes). "kdlib": `kdlib.train.train`
(data on the device, whole-batch crop + flip, index slicing). "reference": the common
recipe, a torch DataLoader over a Dataset whose __getitem__ pads, crops, flips and
normalizes one image at a time (torchvision-style per-image transforms, written with torch
ops since torchvision is not used here). Same model, optimizer and batch size. The last
line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from kdlib.devices import resolve_device
from kdlib.recipe import Recipe
from kdlib.train import make_model, train


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


def reference_loop(model, data, batch_size, steps, device, workers):
    ds = PerImageDataset(data.train_x, data.train_y, data.mean, data.std)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True)
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    n = 0
    for i, (x, y) in enumerate(loader):
        if i == steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet14")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args(argv)
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_sweep import fake_cifar  # same synthetic data as the sweep benchmark

    dev = resolve_device(args.device)
    data = fake_cifar(args.steps * args.batch_size)
    recipe = Recipe(epochs=1, batch_size=args.batch_size, lr=0.05)
    # warm-up both paths
    warm = fake_cifar(2 * args.batch_size)
    train(make_model(args.arch, warm), warm, recipe, device=dev, progress=False, eval_every=0)
    reference_loop(make_model(args.arch, warm), warm, args.batch_size, 2, dev, args.workers)

    t0 = time.perf_counter()
    train(make_model(args.arch, data), data, recipe, device=dev, progress=False, eval_every=0)
    t_kdlib = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_ref = reference_loop(make_model(args.arch, data), data, args.batch_size, args.steps, dev,
                           args.workers)
    t_ref = time.perf_counter() - t0
    images = args.steps * args.batch_size
    out = {"device": str(dev), "arch": args.arch, "batch_size": args.batch_size,
           "threads": torch.get_num_threads(),
           "kdlib_img_per_s": round(images / t_kdlib, 1),
           "reference_img_per_s": round(n_ref / t_ref, 1),
           "speedup": round((images / t_kdlib) / (n_ref / t_ref), 2),
           "note": "kdlib time includes one final test-set evaluation (256 images)"}
    print(f"kdlib engine:       {out['kdlib_img_per_s']} img/s")
    print(f"DataLoader loop:    {out['reference_img_per_s']} img/s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
