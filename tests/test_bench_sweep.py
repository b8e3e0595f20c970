"""benchmarks/bench_sweep.py: the interleaved-round summary, on hand-made step times."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_sweep.py"
_spec = importlib.util.spec_from_file_location("bench_sweep", _PATH)
bench_sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_sweep)


def test_summary_takes_the_ratio_within_each_round():
    # the machine is twice as slow in round 2: single and the stack both slow down
    single = [{"walls": [0.10, 0.12, 0.11], "cpu_s": 0.66}, {"walls": [0.20, 0.22, 0.24],
                                                               "cpu_s": 1.32}]
    stack = [{"walls": [1.0, 1.1, 0.9], "cpu_s": 6.0}, {"walls": [2.0, 2.2, 2.1], "cpu_s": 12.0}]
    s = bench_sweep.summarize(single, None)
    assert s["median_s"] == pytest.approx(0.16)  # median of the six steps
    assert s["mean_s"] == pytest.approx(0.99 / 6)
    assert s["cpu_s"] == pytest.approx(1.98 / 6)
    assert s["spread"] == pytest.approx((0.24 - 0.10) / 0.16)
    assert "round_step_ratios" not in s
    r = bench_sweep.summarize(stack, single, k=22)
    assert r["round_ratios"] == pytest.approx([22 * 0.11 / 1.0, 22 * 0.22 / 2.1])
    assert r["round_cpu_ratios"] == pytest.approx([22 * 0.22 / 2.0, 22 * 0.44 / 4.0])
    assert r["ratio"] == pytest.approx(22 * (0.11 / 1.0 + 0.22 / 2.1) / 2)  # median of two
    assert r["cpu_ratio"] == pytest.approx(22 * 0.11)
    # pooled medians mix the slow round with the fast one: 0.16 / 1.55, not ~0.107
    assert r["median_s"] == pytest.approx(1.55)
