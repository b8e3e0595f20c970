import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdlib.analysis import (
    bootstrap_spearman,
    fit_line,
    paper_spearman,
    spearman,
    spearman_rows,
    spearman_table,
)
from kdlib.paper import paper_table


def test_reproduces_paper_table6_spearman():
    ours = paper_spearman(paper_table("table6"))
    printed = paper_table("table6_9_spearman").query("table == 6")
    merged = ours.merge(printed, on=["teacher", "student"], suffixes=("", "_paper"))
    assert len(merged) == 3
    # The paper prints two decimals of percent; -99.0909 is printed as -99.10.
    np.testing.assert_allclose(merged["spearman_kd_ece"], merged["spearman_kd_ece_paper"],
                               atol=0.011)
    np.testing.assert_allclose(merged["spearman_dist_ece"], merged["spearman_dist_ece_paper"],
                               atol=0.011)
    assert merged.loc[merged.teacher == "ResNet56", "spearman_kd_ece"].item() == pytest.approx(
        -91.818, abs=1e-3)


def test_spearman_hand_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = ranks differ by (0, 0, 1, -1): rho = 1 - 6*2/(4*15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_spearman_validation():
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 3"):
        spearman([1, 2], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        spearman([1, 2, np.nan], [1, 2, 3])


def _grid(noise, seeds=4):
    rng = np.random.default_rng(0)
    rows = []
    for t in [1, 2, 3, 4, 5, 6]:
        for s in range(seeds):
            acc = -t + noise * rng.normal()
            rows.append({"temperature": t, "seed": s, "ece": t / 10, "acc": acc, "loss": "kd"})
            rows.append({"temperature": t, "seed": s, "ece": t / 10, "acc": rng.normal(),
                         "loss": "dist"})
    return pd.DataFrame(rows)


def test_bootstrap_interval_contains_point_and_is_tight_without_noise():
    df = _grid(noise=0.0).query("loss == 'kd'")
    r = bootstrap_spearman(df, "ece", "acc", n_boot=200)
    assert r["rho"] == pytest.approx(-1.0)
    assert r["lo"] == pytest.approx(-1.0) and r["hi"] == pytest.approx(-1.0)
    assert r["n_cells"] == 6 and r["n_seeds"] == 4


def test_bootstrap_interval_widens_with_noise():
    df = _grid(noise=3.0).query("loss == 'kd'")
    r = bootstrap_spearman(df, "ece", "acc", n_boot=300)
    assert r["lo"] <= r["rho"] <= r["hi"]
    assert r["hi"] - r["lo"] > 0.1


def test_spearman_table_per_loss():
    t = spearman_table(_grid(noise=0.0), "ece", "acc", by="loss", n_boot=50)
    assert list(t["loss"]) == ["dist", "kd"]
    assert t.set_index("loss").loc["kd", "rho"] == pytest.approx(-1.0)


def test_spearman_rows_hand_values_and_scipy():
    x = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 1, 1, 1], [1, 2, 2, 3]])
    y = np.array([[10, 20, 30, 40], [4, 3, 2, 1], [1, 2, 4, 3], [1, 2, 3, 4], [5, 5, 6, 7]])
    rho = spearman_rows(x, y)
    assert rho[:3] == pytest.approx([1.0, -1.0, 0.8])  # 1 - 6*2/(4*15) = 0.8
    assert np.isnan(rho[3])  # constant row: no rank correlation
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1.5, 1.5, 3, 4)
    assert rho[4] == pytest.approx(stats.spearmanr(x[4], y[4]).statistic, abs=1e-15)
    rng = np.random.default_rng(3)
    xs, ys = np.round(rng.random((200, 11)), 1), rng.random((200, 11))  # many ties in x
    want = [stats.spearmanr(a, b).statistic for a, b in zip(xs, ys)]
    np.testing.assert_allclose(spearman_rows(xs, ys), want, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="B x n"):
        spearman_rows([1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="n >= 3"):
        spearman_rows([[1, 2]], [[1, 2]])


def test_bootstrap_equals_a_plain_loop_over_replicates():
    """The vectorized replicates draw in the order of this loop and average in its order:
    unequal seeds per cell, tied x values, 2,000 replicates."""
    rng = np.random.default_rng(5)
    rows = [{"temperature": t, "seed": s, "x": round(float(rng.random()), 1),
             "y": float(rng.random())} for t in range(9) for s in range(1 + t % 3)]
    df = pd.DataFrame(rows)
    got = bootstrap_spearman(df, "x", "y", n_boot=2000, rng_seed=7)
    groups = [g[["x", "y"]].to_numpy(float) for _, g in df.groupby("temperature")]
    draw = np.random.default_rng(7)
    reps = []
    for _ in range(2000):
        m = np.array([g[draw.integers(0, len(g), len(g))].mean(0) for g in groups])
        reps.append(spearman(m[:, 0], m[:, 1]))
    reps = np.array(reps)
    lo, hi = np.quantile(reps[np.isfinite(reps)], [0.025, 0.975])
    assert got["lo"] == pytest.approx(lo, abs=1e-15) and got["hi"] == pytest.approx(hi, abs=1e-15)
    assert got["lo"] < got["rho"] < got["hi"]


def test_bootstrap_validation():
    df = _grid(0.0)
    with pytest.raises(ValueError, match="columns"):
        bootstrap_spearman(df, "nope", "acc")
    with pytest.raises(ValueError, match="level"):
        bootstrap_spearman(df, "ece", "acc", level=1.5)


def test_fit_line():
    slope, intercept = fit_line([0, 1, 2], [1, 3, 5])
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fit_line([1], [1])


def test_paper_tables_load():
    t1 = paper_table("table1")
    assert len(t1) == 20 and set(t1["target"]) == {"one-hot", "posterior"}
    with pytest.raises(ValueError, match="table6"):
        paper_table("table99")


def test_mean_t_interval_matches_the_hand_computed_interval():
    from kdlib.analysis import mean_t_interval

    # d = 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3026527297 (tables) -> half = t / sqrt(3)
    mean, lo, hi = mean_t_interval([1.0, 2.0, 3.0, float("nan")])
    half = 4.3026527297 / 3 ** 0.5
    assert mean == 2.0
    assert abs(lo - (2 - half)) < 1e-9 and abs(hi - (2 + half)) < 1e-9
    one = mean_t_interval([5.0])
    assert one[0] == 5.0 and all(v != v for v in one[1:])
    assert all(v != v for v in mean_t_interval([]))
    with pytest.raises(ValueError, match="level"):
        mean_t_interval([1.0, 2.0], level=1.5)
