"""CPU timings of kdlib.calibration: ece() on 1,000,000 x 100 float32 probabilities and
ece_vs_temperature() over 11 temperatures on 100,000 x 100 float32 logits.

Run: .venv/bin/python benchmarks/bench_ece.py [--repeats 5]
Prints the median (and fastest) wall time in seconds of the repeats after one warm-up call;
input generation is not timed. The machine's other load shows up in the spread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdlib.calibration import ece, ece_vs_temperature, nll_vs_temperature


def _median_seconds(fn, repeats: int) -> tuple[str, object]:
    """Median (and fastest) wall time of `repeats` calls after one warm-up call."""
    result = fn()  # warm-up (allocator, thread pool)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return f"median {statistics.median(times):.3f} s (min {min(times):.3f} s)", result


def bench_ece(repeats: int, g: torch.Generator) -> None:
    n, c = 1_000_000, 100
    probs = torch.softmax(torch.randn(n, c, generator=g) * 3, dim=1)
    labels = torch.randint(0, c, (n,), generator=g)
    seconds, value = _median_seconds(lambda: ece(probs, labels), repeats)
    print(f"ece, {n:,} x {c} float32 probs: {seconds} (ECE {value:.4f})")


def bench_temperatures(repeats: int, g: torch.Generator) -> None:
    n, c = 100_000, 100
    logits = torch.randn(n, c, generator=g) * 3
    labels = torch.randint(0, c, (n,), generator=g)
    temps = [0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 20]
    seconds, _ = _median_seconds(lambda: ece_vs_temperature(logits, labels, temps), repeats)
    print(f"ece_vs_temperature, {n:,} x {c} float32 logits, {len(temps)} temperatures: "
          f"{seconds}")
    seconds, _ = _median_seconds(lambda: nll_vs_temperature(logits, labels, temps), repeats)
    print(f"nll_vs_temperature, {n:,} x {c} float32 logits (float64 math), "
          f"{len(temps)} temperatures: {seconds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"median of {args.repeats} repeats after one warm-up")
    bench_ece(args.repeats, g)
    bench_temperatures(args.repeats, g)


if __name__ == "__main__":
    main()
