"""Stacked students vs one after another: images/s per student, and the ratio.

    python benchmarks/bench_sweep.py [--students 22] [--steps 10] [--batch-size 64]
                                     [--teacher resnet56] [--student resnet14] [--device auto]

Random CIFAR-shaped data (3 x 32 x 32, 100 classes). "sequential" trains each student
alone for --steps steps (teacher forward per student per step, as separate runs would);
"stacked" trains all of them at once with the teacher's forward once per step. The last
line is JSON; on CUDA it adds a projection for the paper's Table 6 protocol of one pair
(22 students x 240 epochs x 50,000 images).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kdlib.data import Dataset
from kdlib.devices import resolve_device
from kdlib.recipe import Recipe
from kdlib.stacked import distill_stacked
from kdlib.train import distill, make_model


def fake_cifar(n_train: int, classes: int = 100, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + 256, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n_train + 256,), generator=g)
    y[:classes] = torch.arange(classes)
    return Dataset(name="fake-cifar", train_x=x[:n_train], train_y=y[:n_train],
                   test_x=x[n_train:], test_y=y[n_train:], classes=[str(i) for i in range(classes)],
                   mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment=True, pad=4, flip=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=22)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet14")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mode", default="auto", choices=["auto", "vmap", "loop"],
                    help="distill_stacked mode (auto: vmap on CUDA, loop on CPU)")
    ap.add_argument("--sequential-students", type=int, default=3,
                    help="time this many students alone and extrapolate to --students")
    args = ap.parse_args(argv)
    dev = resolve_device(args.device)
    data = fake_cifar(args.steps * args.batch_size)
    recipe = Recipe(epochs=1, batch_size=args.batch_size, lr=0.05)
    teacher = make_model(args.teacher, data, seed=0).to(dev).eval()
    temps = [1.0, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8]
    specs = [{"loss": ("kd", "dist")[i % 2], "temperature": float(temps[(i // 2) % len(temps)])}
             for i in range(args.students)]
    images = args.steps * args.batch_size

    # warm-up (allocator, kernels) on a couple of steps
    warm = fake_cifar(2 * args.batch_size)
    distill_stacked([make_model(args.student, warm, seed=0) for _ in range(2)], teacher, warm,
                    specs[:2], recipe, device=dev, progress=False, mode=args.mode)
    distill(make_model(args.student, warm, seed=0), teacher, warm, "kd", 4.0, recipe, device=dev,
            progress=False, eval_every=0)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    n_seq = args.sequential_students or args.students
    sync()
    t0 = time.perf_counter()
    for spec in specs[:n_seq]:
        distill(make_model(args.student, data, seed=1), teacher, data, spec["loss"],
                spec["temperature"], recipe, device=dev, progress=False, eval_every=0)
    sync()
    seq = (time.perf_counter() - t0) * args.students / n_seq

    students = [make_model(args.student, data, seed=1) for _ in specs]
    sync()
    t0 = time.perf_counter()
    distill_stacked(students, teacher, data, specs, recipe, device=dev, progress=False,
                    mode=args.mode)
    sync()
    stk = time.perf_counter() - t0

    out = {"device": str(dev), "mode": args.mode, "students": args.students, "steps": args.steps,
           "batch_size": args.batch_size, "teacher": args.teacher, "student": args.student,
           "threads": torch.get_num_threads(),
           "sequential_s": round(seq, 3), "stacked_s": round(stk, 3),
           # each student sees `images` images during the whole job's time
           "sequential_img_per_s_per_student": round(images / seq, 1),
           "stacked_img_per_s_per_student": round(images / stk, 1),
           "sequential_img_per_s_total": round(images * args.students / seq, 1),
           "stacked_img_per_s_total": round(images * args.students / stk, 1),
           "ratio": round(seq / stk, 2)}
    if dev.type == "cuda":
        per_image = stk / images  # seconds per image for all students together
        out["projected_table6_pair_minutes"] = round(per_image * 240 * 50_000 / 60, 1)
    print(f"sequential: {out['sequential_img_per_s_per_student']} img/s per student, "
          f"{out['sequential_img_per_s_total']} img/s over all students")
    print(f"stacked:    {out['stacked_img_per_s_per_student']} img/s per student, "
          f"{out['stacked_img_per_s_total']} img/s over all students")
    print(f"ratio:      {out['ratio']}x")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
