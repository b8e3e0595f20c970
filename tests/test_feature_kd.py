import numpy as np
import pandas as pd
import pytest

from kdlib import presets
from kdlib.analysis import spearman
from kdlib.experiments import feature_kd as fk
from kdlib.recipe import Recipe, recipe_from_spec


def _fake_df():
    """3 temperatures x 2 seeds x 3 losses. Teacher ECE rises with tau. FitNet and KD
    lose accuracy as ECE rises; DIST is flat apart from noise."""
    ece = {1.0: 0.02, 2.0: 0.10, 4.0: 0.40}
    acc = {"fitnet": {1.0: [0.90, 0.92], 2.0: [0.88, 0.90], 4.0: [0.80, 0.84]},
           "kd": {1.0: [0.91, 0.91], 2.0: [0.89, 0.87], 4.0: [0.85, 0.85]},
           "dist": {1.0: [0.88, 0.90], 2.0: [0.91, 0.89], 4.0: [0.89, 0.91]}}
    rows = []
    for loss, by_t in acc.items():
        for t, values in by_t.items():
            for seed, a in enumerate(values):
                rows.append({"loss": loss, "temperature": t, "seed": seed, "accuracy": a,
                             "teacher_ece_at_tau": ece[t]})
    return pd.DataFrame(rows)


def test_accuracy_table_by_hand():
    t = fk.accuracy_table(_fake_df())
    assert list(t.index) == [1.0, 2.0, 4.0]
    assert list(t.columns) == ["teacher_ece_at_tau", "fitnet_mean", "fitnet_std", "kd_mean",
                               "kd_std", "dist_mean", "dist_std"]
    assert t.loc[4.0, "teacher_ece_at_tau"] == pytest.approx(40.0)
    assert t.loc[1.0, "fitnet_mean"] == pytest.approx(91.0)
    assert t.loc[4.0, "fitnet_std"] == pytest.approx(np.std([80, 84], ddof=1))
    assert t.loc[2.0, "dist_mean"] == pytest.approx(90.0)


def test_correlation_table_by_hand():
    c = fk.correlation_table(_fake_df(), n_boot=200)
    assert list(c.index) == ["fitnet", "kd", "dist"]
    # seed means fall strictly as ECE rises -> rho = -100 %
    assert c.loc["fitnet", "spearman"] == pytest.approx(-100.0)
    assert c.loc["kd", "spearman"] == pytest.approx(-100.0)
    # dist means: 89, 90, 90 vs ECE 2, 10, 40 -> ranks (1, 2.5, 2.5) vs (1, 2, 3)
    assert c.loc["dist", "spearman"] == pytest.approx(100 * spearman([1, 2, 3], [89, 90, 90]))
    assert c.loc["fitnet", "accuracy_range"] == pytest.approx(91.0 - 82.0)
    assert c.loc["kd", "n_temperatures"] == 3 and c.loc["kd", "n_seeds"] == 2
    assert c.loc["fitnet", "lo"] <= c.loc["fitnet", "spearman"] <= c.loc["fitnet", "hi"]


def test_correlation_table_with_two_temperatures_is_nan():
    df = _fake_df()
    c = fk.correlation_table(df[df["temperature"] < 3], n_boot=10)
    assert c["spearman"].isna().all() and (c["n_temperatures"] == 2).all()


def test_per_seed_spearman():
    s = fk.per_seed_spearman(_fake_df())
    assert s.loc[0, "fitnet"] == pytest.approx(-100.0)
    # kd seed 1: 0.91, 0.87, 0.85 -> -100; dist seed 0: 0.88, 0.91, 0.89 -> ranks 1,3,2 -> 50
    assert s.loc[1, "kd"] == pytest.approx(-100.0)
    assert s.loc[0, "dist"] == pytest.approx(50.0)


def test_tables_validate():
    with pytest.raises(ValueError, match="lacks columns"):
        fk.accuracy_table(_fake_df().drop(columns="teacher_ece_at_tau"))
    with pytest.raises(TypeError, match="DataFrame"):
        fk.correlation_table({"loss": []})


def test_paper_correlations_are_the_printed_ones():
    p = fk.paper_correlations()
    row = p[(p["teacher"] == "ResNet56") & (p["student"] == "ResNet14")].iloc[0]
    assert row["spearman_kd_ece"] == pytest.approx(-91.82)
    assert row["spearman_dist_ece"] == pytest.approx(0.46)


def test_presets_and_grids():
    for scale in presets.SCALES:
        cfg = presets.get(fk.NAME, scale)
        fit = fk.fitnet_grid(cfg)
        hint_only = len(cfg["seeds"]) if fk.hint_only_supported() else 0
        assert len(fit) == len(cfg["temperatures"]) * len(cfg["seeds"]) + hint_only
        assert {c["stage"] for c in fit} == {cfg["hint_stage"]}
        logit = fk.logit_grid(cfg)
        assert len(logit) == len(cfg["seeds"])
        assert logit[0]["losses"] == ["kd", "dist"]
    paper = presets.get(fk.NAME, "paper")
    assert paper["data"]["name"] == "cifar100"
    assert recipe_from_spec(paper["teacher_recipe"]) == Recipe.preset("paper",
                                                                      checkpoint_every=0)
    assert paper["temperatures"] == fk.PAPER_TAUS
    cfg = presets.get(fk.NAME, "smoke")
    assert fk.logit_grid({**cfg, "compare_losses": []}) == []
    with pytest.raises(ValueError, match="compare_losses"):
        fk.fitnet_grid({**cfg, "compare_losses": ["fitnet"]})
    with pytest.raises(ValueError, match="hint_weight"):
        fk.fitnet_grid({**cfg, "hint_weight": 0.0})
    with pytest.raises(ValueError, match="lacks"):
        fk.fitnet_grid({"data": {}})


def test_end_to_end_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    cfg = presets.get(fk.NAME, "smoke")
    cfg["data"] = {"name": "digits", "seed": 0, "subset_train": 80, "subset_test": 60}
    cfg["teacher_recipe"] = {"epochs": 1}
    df = fk.run(cfg, "smoke", progress=False)
    hint_only = fk.hint_only_supported()
    assert len(df) == 3 * 2 + hint_only  # fitnet, kd, dist at 2 temperatures, 1 seed
    assert sorted(df["loss"].unique()) == sorted(["dist", "fitnet", "kd"]
                                                 + ["fitnet_ce"] * hint_only)
    # every student is kept in the student store
    kept = list((tmp_path / "runs" / "smoke" / "students").glob("*.pt"))
    assert len(kept) == len(df)
    assert ((df["accuracy"] >= 0) & (df["accuracy"] <= 1)).all()
    # the teacher's ECE at tau is the same for every loss at a temperature
    per_t = df.dropna(subset=["temperature"]).groupby("temperature")[
        "teacher_ece_at_tau"].nunique()
    assert (per_t == 1).all()
    df2 = fk.run(cfg, "smoke", progress=False)  # read back from the store
    pd.testing.assert_frame_equal(df, df2)
    assert fk.correlation_table(df, n_boot=10)["spearman"].isna().all()


def test_accuracy_vs_teacher_ece_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdlib.plots.features import accuracy_vs_teacher_ece

    fig = accuracy_vs_teacher_ece(_fake_df())
    left, right = fig.axes[0], fig.axes[1]
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "FitNet: KD(tau) + hint", "KD(tau)", "DIST(tau)"]
    # right panel: KD's points sit at (teacher ECE %, mean accuracy %)
    kd = right.containers[1].lines[0].get_xydata()
    np.testing.assert_allclose(kd, [[2, 91], [10, 88], [40, 85]])
    assert left.get_xlabel() == "temperature tau"
    with pytest.raises(ValueError, match="lacks columns"):
        accuracy_vs_teacher_ece(_fake_df().drop(columns="seed"))
    # the hint-only arm: a horizontal line at its mean accuracy (87 %) in both panels
    fig = accuracy_vs_teacher_ece(_with_hint_only())
    for ax in fig.axes[:2]:
        hline = [ln for ln in ax.lines if ln.get_label() == "hint only: CE + hint"]
        assert len(hline) == 1 and hline[0].get_ydata()[0] == pytest.approx(87.0)
    plt.close("all")


def _with_hint_only():
    """_fake_df plus the hint-only arm: seed 0 at 0.86, seed 1 at 0.88 (no temperature)."""
    hint = pd.DataFrame({"loss": "fitnet_ce", "temperature": np.nan, "seed": [0, 1],
                         "accuracy": [0.86, 0.88], "teacher_ece_at_tau": np.nan})
    return pd.concat([_fake_df(), hint], ignore_index=True)


def test_hint_effect_by_hand():
    e = fk.hint_effect(_with_hint_only()).set_index(["comparison", "temperature"])
    # fitnet - kd per seed (points): tau 1: -1, +1; tau 2: -1, +3; tau 4: -5, -1
    r = e.loc[("fitnet - kd", 2.0)]
    assert r["mean"] == pytest.approx(1.0) and r["n_seeds"] == 2
    half = 12.7062047 * np.std([-1, 3], ddof=1) / np.sqrt(2)
    assert (r["lo"], r["hi"]) == (pytest.approx(1 - half), pytest.approx(1 + half))
    assert r["teacher_ece_at_tau"] == pytest.approx(10.0)
    # mean over tau per seed: seed 0 (-1 - 1 - 5) / 3 = -7/3, seed 1 (1 + 3 - 1) / 3 = 1
    assert e.loc[("fitnet - kd", "mean"), "mean"] == pytest.approx((-7 / 3 + 1) / 2)
    # fitnet - hint only at tau 4: 80 - 86 = -6, 84 - 88 = -4 -> -5
    assert e.loc[("fitnet - fitnet_ce", 4.0), "mean"] == pytest.approx(-5.0)
    # without the hint-only arm only the KD comparison is there
    assert set(fk.hint_effect(_fake_df())["comparison"]) == {"fitnet - kd"}


def test_hint_only_in_tables_and_claims():
    df = _with_hint_only()
    t = fk.accuracy_table(df)
    assert t["fitnet_ce_mean"].tolist() == pytest.approx([87.0] * 3)
    assert list(fk.correlation_table(df, n_boot=50).index) == ["fitnet", "kd", "dist"]
    c = fk.claims(df, n_boot=50).set_index("claim")
    # 2 seeds only: every verdict is inconclusive (n < 3), but the figures are computed
    hurt = [k for k in c.index if k.startswith("KD term at the highest-ECE tau (4)")]
    assert len(hurt) == 1 and c.loc[hurt[0], "ours"] == "-5.00 pp"
    assert c.loc["the hint adds accuracy to KD (FitNet - KD, mean over tau)", "ours"] == \
        "-0.67 pp"
    assert set(c["verdict"]) == {"inconclusive"}
    # three seeds where FitNet at tau 4 is 3-5 points below the hint-only student: holds
    rows = []
    for seed in range(3):
        for t, ece in ((1.0, 0.02), (2.0, 0.1), (4.0, 0.4)):
            rows += [{"loss": "fitnet", "temperature": t, "seed": seed,
                      "accuracy": 0.90 - 0.02 * t - 0.01 * seed, "teacher_ece_at_tau": ece},
                     {"loss": "kd", "temperature": t, "seed": seed,
                      "accuracy": 0.89 - 0.02 * t, "teacher_ece_at_tau": ece}]
        rows.append({"loss": "fitnet_ce", "temperature": np.nan, "seed": seed,
                     "accuracy": 0.86 - 0.005 * seed, "teacher_ece_at_tau": np.nan})
    c = fk.claims(pd.DataFrame(rows), n_boot=50).set_index("claim")
    hurt = next(k for k in c.index if k.startswith("KD term"))
    assert c.loc[hurt, "verdict"] == "holds"          # -4, -4.5, -5 points
    # FitNet - KD: +1, 0, -1 points -> mean 0, interval contains 0
    assert c.loc["the hint adds accuracy to KD (FitNet - KD, mean over tau)",
                 "verdict"] == "inconclusive"


def test_skipped_tables_dry_run_and_headline(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    paper = presets.get(fk.NAME, "paper")
    (table, reason), = fk.skipped_tables(paper)
    assert table == "Figure 7" and "cifar" in reason.lower()
    smoke = presets.get(fk.NAME, "smoke")
    expected = [] if fk.hint_only_supported() else [fk.HINT_TABLE]
    assert [t for t, _ in fk.skipped_tables(smoke)] == expected
    assert fk.skipped_tables({**smoke, "hint_only": False}) == []
    dry = presets.get(fk.NAME, "paper", dry_run=True)
    assert recipe_from_spec(dry["student_recipe"]).epochs == 1 and dry["seeds"] == [0]
    assert dry["torch_threads"] == 1 and paper["torch_threads"] is None
    assert fk.logit_grid(dry, "paper")[0]["store"] == "paper-dry-run"
    f = fk.headline_figures(_with_hint_only(), fk.correlation_table(_fake_df(), n_boot=50))
    assert f["accuracy, hint only (CE + hint)"].text() == "87.00%"
    assert f["Spearman teacher ECE vs accuracy, kd"].value == pytest.approx(-1.0)
    assert f["FitNet - KD, mean over tau"].value == pytest.approx(-2 / 3 / 100)
