"""Distillation sweep throughput: students one at a time vs each stacking representation.

    python benchmarks/bench_sweep.py [--k 22] [--steps 6] [--rounds 3] [--warmup 2]
                                     [--batch-size 64]
                                     [--teacher resnet56] [--student resnet14]
                                     [--reps loop,vmap,wide] [--device auto] [--threads N]
                                     [--quick]

Measures steady state at the level of ONE distillation step, written here from kdlib's
public pieces (the training engine itself is being unified; this is the step it runs):
teacher forward once (no grad) -> K student forwards -> KD loss of every member
(`kdlib.losses.stacked_logit_losses`, half KD, half DIST, temperatures 1 ... 8) -> one
backward -> one SGD step (momentum 0.9, weight decay 5e-4) over all members.
  * single: one student alone (K = 1, plain module): what K separate runs do K times,
    teacher forward included in every step.
  * loop:   kdlib.stacked.make_stack(mode="loop"): the K students' forwards one after another.
  * vmap:   kdlib.stacked.make_stack(mode="vmap"): torch.func stacked state + vmap.
  * wide:   kdlib.wide.WideModels: one wide network, grouped convolutions.
  * wide_cl: the same in channels_last memory format (single, loop and the teacher are in
    channels_last as in the engine, on the CPU and on CUDA).
Data: CIFAR-shaped random images (3 x 32 x 32, 100 classes), cropped/flipped/normalised once
into a pool of batches BEFORE timing (augmentation costs the same per step for every
representation, so leaving it out favours "single": the ratios are conservative). Setup,
warm-up (`--warmup` steps at the same K and shapes) and any evaluation are outside the timed
region. The representations then take turns: in each of `--rounds` rounds every one runs
`--steps` timed steps. The median step over all rounds gives images/s; the ratio to single is
the median over rounds of the ratio within a round, so a machine whose speed drifts (another
process, clocks) does not favour whichever ran first. Measured on 2 idle cores, 22 resnet14
students from a resnet56, batch 64, `--reps loop --threads 2`: one-round runs gave the loop
2.40-2.62x; interleaved (`--steps 8 --rounds 4 --warmup 3`) 2.10-2.16x (single 0.168 s/step,
loop 1.70 s/step), since "single" runs faster when it does not run first. The process CPU
time (user + sys of all threads) is beside the wall time, since a shared machine makes wall
time unreliable.
On CUDA: bf16 autocast, channels_last, cudnn.benchmark, CUDA events, the syncs per step,
the activation dtypes inside each stack, a grouped-conv microbenchmark and the projected
GPU-hours of the paper's Table 6 protocol (5 pairs x 3 seeds x 22 students x 240 epochs x
50,000 images) from the best representation.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdlib.data import Dataset  # noqa: E402
from kdlib.devices import prepare_model, resolve_device  # noqa: E402
from kdlib.losses import stacked_logit_losses  # noqa: E402
from kdlib.models import build_model  # noqa: E402

TABLE6_STUDENT_IMAGES = 5 * 3 * 22 * 240 * 50_000  # pairs x seeds x students x epochs x images
REPS = ("loop", "vmap", "wide", "wide_cl")


def fake_cifar(n_train: int, classes: int = 100, seed: int = 0) -> Dataset:
    """Random uint8 CIFAR-shaped data (3 x 32 x 32) with `classes` labels (also bench_train)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + 256, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n_train + 256,), generator=g)
    y[:classes] = torch.arange(classes)
    return Dataset(name="fake-cifar", train_x=x[:n_train], train_y=y[:n_train],
                   test_x=x[n_train:], test_y=y[n_train:], classes=[str(i) for i in range(classes)],
                   mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment=True, pad=4, flip=True)


def batch_pool(n: int, batch: int, classes: int, dev, seed: int = 0):
    """n (x, y) batches: crop (pad 4) + flip + normalise of random uint8 images, on `dev`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(0, 256, (batch, 3, 32, 32), generator=g).float().div(255)
        off = torch.randint(0, 9, (batch, 2), generator=g)
        flip = torch.rand(batch, generator=g) < 0.5
        padded = F.pad(x, (4, 4, 4, 4))
        x = torch.stack([padded[i, :, a:a + 32, b:b + 32] for i, (a, b) in enumerate(off.tolist())])
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = (x - 0.5) / 0.25
        y = torch.randint(0, classes, (batch,), generator=g)
        out.append((x.to(dev), y.to(dev)))
    return out


def build_stack(rep: str, models, dev):
    """The K students in representation `rep` (single: the one plain module)."""
    if rep == "single":
        return prepare_model(models[0], dev)  # as the engine: channels_last on CPU and CUDA
    if rep in ("wide", "wide_cl"):
        from kdlib.wide import WideModels

        wide = WideModels(models).to(dev)
        return wide.to(memory_format=torch.channels_last) if rep == "wide_cl" else wide
    from kdlib.stacked import make_stack

    return make_stack(models, rep, dev)


def parameters_of(stack):
    return list(stack.parameters())


class Step:
    """One distillation step for `stack` (a plain module when K = 1) against `teacher`."""

    def __init__(self, stack, teacher, k: int, dev):
        self.stack, self.teacher, self.k, self.dev = stack, teacher, k, dev
        self.opt = torch.optim.SGD(parameters_of(stack), lr=0.05, momentum=0.9,
                                   weight_decay=5e-4)
        temps = [1.0 + (i // 2) % 8 for i in range(k)]
        self.taus = torch.tensor(temps, device=dev)
        self.names = tuple("dist" if i % 2 else "kd" for i in range(k))
        self.alphas = torch.ones(k, device=dev)
        self.plain = isinstance(stack, torch.nn.Module)
        self.channels_last = any(p.dim() == 4 and p.is_contiguous(
            memory_format=torch.channels_last) and not p.is_contiguous()
            for p in parameters_of(stack))

    def __call__(self, x, y):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = (torch.autocast("cuda", dtype=torch.bfloat16) if self.dev.type == "cuda"
               else _null())
        with amp:
            with torch.no_grad():
                t = self.teacher(x)
            s = self.stack(x)
            if self.plain:
                s = s.unsqueeze(0)
            losses = stacked_logit_losses(s.float(), t.float(), self.taus, self.names,
                                          self.alphas, y, check_values=False)
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()
        return losses


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def warm(step, pool, warmup: int, dev) -> None:
    """`warmup` untimed steps (allocator, kernel choice) at the timed K and shapes."""
    for i in range(warmup):
        step(*pool[i % len(pool)])
    sync(dev)


def timed_steps(step, pool, steps: int, dev) -> dict:
    """Wall seconds of each of `steps` steps and the CPU seconds they took in all."""
    walls = []
    cpu0 = time.process_time()
    for i in range(steps):
        t0 = time.perf_counter()
        step(*pool[i % len(pool)])
        sync(dev)
        walls.append(time.perf_counter() - t0)
    return {"walls": walls, "cpu_s": time.process_time() - cpu0}


def summarize(rounds: list[dict], base_rounds: list[dict] | None, k: int = 1) -> dict:
    """Median step, mean step, CPU s per step and spread over all rounds of one
    representation of `k` students; with `base_rounds` (single's, same rounds) also its
    speed-up over one student at a time within each round (`k` x single's step / this step,
    by wall and by CPU time) and their medians `ratio` and `cpu_ratio`, which a machine whose
    speed drifts between rounds does not bias (single and the stacks take turns)."""
    walls = [w for r in rounds for w in r["walls"]]
    steps = len(walls)
    med = statistics.median(walls)
    out = {"median_s": med, "mean_s": sum(walls) / steps,
           "cpu_s": sum(r["cpu_s"] for r in rounds) / steps,
           "spread": (max(walls) - min(walls)) / med}
    if base_rounds is not None:
        out["round_ratios"] = [k * statistics.median(b["walls"]) / statistics.median(r["walls"])
                               for r, b in zip(rounds, base_rounds)]
        out["round_cpu_ratios"] = [
            k * (b["cpu_s"] / len(b["walls"])) / (r["cpu_s"] / len(r["walls"]))
            for r, b in zip(rounds, base_rounds)]
        out["ratio"] = statistics.median(out["round_ratios"])
        out["cpu_ratio"] = statistics.median(out["round_cpu_ratios"])
    return out


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def ops_per_step(step, pool) -> int:
    """aten ops dispatched by one step (host-bound ceiling on a GPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        step(*pool[0])
    return Count.n


def activation_dtypes(stack, x, dev) -> dict:
    """dtypes of the 4-d conv / batch-norm / elementwise outputs inside one forward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: dict = {}

    class Dtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            r = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if isinstance(r, torch.Tensor) and r.dim() >= 4 and name in (
                    "convolution", "native_batch_norm", "_native_batch_norm_legit", "mul",
                    "add", "relu", "_to_copy"):
                seen.setdefault(name, set()).add(str(r.dtype).replace("torch.", ""))
            return r

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else _null()
    with torch.no_grad(), Dtypes(), amp:
        stack(x)
    return {k: sorted(v) for k, v in seen.items()}


def syncs_per_step(step, pool) -> int:
    """Host-device synchronisations of one step (CUDA only)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step(*pool[0])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def grouped_conv_ms(k: int, batch: int, dev) -> dict:
    """fwd+bwd ms of one 3x3 layer of 16 channels per student: grouped (NCHW/NHWC) vs K
    separate convs (CUDA; bf16)."""
    dt = torch.bfloat16
    c, hw, reps = 16, 32, 20

    def bench(fn):
        for _ in range(3):
            fn()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            fn()
        e.record()
        torch.cuda.synchronize()
        return round(s.elapsed_time(e) / reps, 3)

    out = {}
    for fmt, name in ((torch.contiguous_format, "NCHW"), (torch.channels_last, "NHWC")):
        x = torch.randn(batch, k * c, hw, hw, device=dev, dtype=dt).to(memory_format=fmt)
        w = torch.randn(k * c, c, 3, 3, device=dev, dtype=dt).to(memory_format=fmt)
        x.requires_grad_()
        w.requires_grad_()
        out[f"grouped K={k} {name}"] = bench(
            lambda x=x, w=w: F.conv2d(x, w, padding=1, groups=k).sum().backward())
    xs = [torch.randn(batch, c, hw, hw, device=dev, dtype=dt).to(
        memory_format=torch.channels_last).requires_grad_() for _ in range(k)]
    ws = [torch.randn(c, c, 3, 3, device=dev, dtype=dt).to(
        memory_format=torch.channels_last).requires_grad_() for _ in range(k)]
    out[f"{k} separate convs NHWC"] = bench(
        lambda: sum(F.conv2d(a, b, padding=1).sum() for a, b in zip(xs, ws)).backward())
    return out


def make_students(arch: str, k: int, classes: int, dev):
    out = []
    for seed in range(k):
        torch.manual_seed(1000 + seed)
        m = build_model(arch, classes).to(dev).train()
        if dev.type == "cuda":
            m = m.to(memory_format=torch.channels_last)
        out.append(m)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", "--students", dest="k", type=int, default=22)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per representation")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first, same K")
    ap.add_argument("--rounds", type=int, default=3,
                    help="timed rounds; in each, every representation runs --steps steps")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet14")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--reps", default=",".join(REPS),
                    help=f"comma-separated stacking representations out of {REPS}")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default); 1 gives CPU times free of "
                         "OpenMP spin-waiting on a crowded machine")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: K=3, batch 16, 2 steps, 1 warm-up")
    args = ap.parse_args(argv)
    if args.quick:
        args.k, args.batch_size, args.steps, args.warmup, args.rounds = 3, 16, 2, 1, 1
    reps = [r for r in args.reps.split(",") if r]
    bad = sorted(set(reps) - set(REPS))
    if (bad or args.k < 1 or args.steps < 1 or args.warmup < 0 or args.batch_size < 2
            or args.rounds < 1):
        ap.error(f"need reps out of {REPS} (got unknown {bad}), k >= 1, steps >= 1, "
                 f"rounds >= 1, warmup >= 0, batch size >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    teacher = prepare_model(build_model(args.teacher, args.classes), dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    pool = batch_pool(4, args.batch_size, args.classes, dev)
    if dev.type == "cuda":
        pool = [(x.to(memory_format=torch.channels_last), y) for x, y in pool]

    results, extra, steps, rounds = {}, {}, {}, {}
    for rep in ["single", *reps]:  # setup and warm-up of every representation, untimed
        k = 1 if rep == "single" else args.k
        try:
            stack = build_stack(rep, make_students(args.student, k, args.classes, dev), dev)
            steps[rep] = Step(stack, teacher, k, dev)
            warm(steps[rep], pool, args.warmup, dev)
            rounds[rep] = []
        except Exception as err:  # a representation that fails is reported, not fatal
            results[rep] = {"error": f"{type(err).__name__}: {err}"[:300]}
            steps.pop(rep, None)
    for i in range(args.rounds):  # the representations take turns, round after round
        for rep in list(steps):
            try:
                if dev.type == "cuda" and i == 0:
                    torch.cuda.reset_peak_memory_stats()
                    held = torch.cuda.memory_allocated()
                rounds[rep].append(timed_steps(steps[rep], pool, args.steps, dev))
                if dev.type == "cuda" and i == 0:  # memory a step needs beyond what is held
                    extra[rep] = {"step_mem_gib": round(
                        (torch.cuda.max_memory_allocated() - held) / 2**30, 2)}
            except Exception as err:
                results[rep] = {"error": f"{type(err).__name__}: {err}"[:300]}
                del steps[rep]
    for rep, step in steps.items():
        k = step.k
        base = rounds.get("single") if rep != "single" and "single" in steps else None
        r = summarize(rounds[rep], base, k)
        r["student_img_per_s"] = k * args.batch_size / r["median_s"]
        r["student_img_per_cpu_s"] = k * args.batch_size / r["cpu_s"]
        info = {"ops_per_step": ops_per_step(step, pool)}
        if rep != "single":
            info["activation_dtypes"] = activation_dtypes(step.stack, pool[0][0], dev)
        if dev.type == "cuda":
            info["syncs_per_step"] = syncs_per_step(step, pool)
        results[rep], extra[rep] = r, {**extra.get(rep, {}), **info}
    steps = None

    base = results["single"].get("student_img_per_s")
    out = {"device": str(dev), "name": torch.cuda.get_device_name() if dev.type == "cuda"
           else "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "k": args.k, "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
           "warmup": args.warmup, "teacher": args.teacher, "student": args.student,
           "level": "one distillation step from kdlib's public pieces (not the engine)",
           "results": {}}
    print(f"{args.k} x {args.student} from {args.teacher}, batch {args.batch_size}, "
          f"{dev}, {torch.get_num_threads()} threads; {args.rounds} rounds of {args.steps} "
          f"steps (representations take turns); ratio: median over rounds of the ratio "
          f"within a round")
    print(f"{'':8s} {'s/step':>8s} {'cpu s':>8s} {'img/s':>9s} {'img/cpu-s':>10s} "
          f"{'ratio':>6s} {'cpu ratio':>9s} {'ops':>6s}")
    for rep, r in results.items():
        if "error" in r:
            print(f"{rep:8s} failed: {r['error']}")
            out["results"][rep] = r
            continue
        ratio, cpu_ratio = (r.get("ratio"), r.get("cpu_ratio")) if rep != "single" else (1, 1)
        row = {"s_per_step": round(r["median_s"], 4), "mean_s_per_step": round(r["mean_s"], 4),
               "cpu_s_per_step": round(r["cpu_s"], 4), "spread": round(r["spread"], 3),
               "student_img_per_s": round(r["student_img_per_s"], 1),
               "student_img_per_cpu_s": round(r["student_img_per_cpu_s"], 1),
               "ratio": None if ratio is None else round(ratio, 2),
               "cpu_ratio": None if cpu_ratio is None else round(cpu_ratio, 2),
               **({"round_ratios": [round(x, 2) for x in r["round_ratios"]]}
                  if "round_ratios" in r else {}), **extra[rep]}
        out["results"][rep] = row
        print(f"{rep:8s} {row['s_per_step']:8.3f} {row['cpu_s_per_step']:8.3f} "
              f"{row['student_img_per_s']:9.1f} {row['student_img_per_cpu_s']:10.1f} "
              f"{row['ratio'] or 0:6.2f} {row['cpu_ratio'] or 0:9.2f} {row['ops_per_step']:6d}")
    stacked = {rep: r for rep, r in out["results"].items() if rep != "single" and "error" not in r}
    if stacked:
        # the interleaved ratios when single ran (all share its rounds), else pooled speeds
        best = max(stacked, key=lambda rep: stacked[rep]["ratio"]
                   or stacked[rep]["student_img_per_s"])
        best_cpu = max(stacked, key=lambda rep: stacked[rep]["cpu_ratio"]
                       or stacked[rep]["student_img_per_cpu_s"])
        out["best"], out["best_by_cpu_time"] = best, best_cpu
        print(f"best stacking representation: {best} by wall time "
              f"({stacked[best]['ratio']}x one-at-a-time), {best_cpu} by CPU time "
              f"({stacked[best_cpu]['cpu_ratio']}x)")
        if dev.type == "cuda":
            rate = stacked[best]["student_img_per_s"]
            out["projected_table6_gpu_hours"] = round(TABLE6_STUDENT_IMAGES / rate / 3600, 2)
            if base:
                out["projected_table6_gpu_hours_one_at_a_time"] = round(
                    TABLE6_STUDENT_IMAGES / base / 3600, 1)
            out["grouped_conv_fwd_bwd_ms"] = grouped_conv_ms(args.k, args.batch_size, dev)
            print(f"projected Table 6 protocol: {out['projected_table6_gpu_hours']} GPU-hours "
                  f"({best}); one at a time: "
                  f"{out.get('projected_table6_gpu_hours_one_at_a_time')}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
