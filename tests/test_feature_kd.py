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
        assert len(fit) == len(cfg["temperatures"]) * len(cfg["seeds"])
        assert {c["stage"] for c in fit} == {cfg["hint_stage"]}
        logit = fk.logit_grid(cfg)
        assert len(logit) == len(cfg["seeds"])
        assert logit[0]["losses"] == ["kd", "dist"]
    paper = presets.get(fk.NAME, "paper")
    assert paper["data"]["name"] == "cifar100"
    assert recipe_from_spec(paper["teacher_recipe"]) == Recipe.preset("paper")
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
    assert len(df) == 3 * 2  # fitnet, kd, dist at 2 temperatures, 1 seed
    assert sorted(df["loss"].unique()) == ["dist", "fitnet", "kd"]
    assert ((df["accuracy"] >= 0) & (df["accuracy"] <= 1)).all()
    # the teacher's ECE at tau is the same for every loss at a temperature
    per_t = df.groupby("temperature")["teacher_ece_at_tau"].nunique()
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
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["fitnet", "kd", "dist"]
    # right panel: KD's points sit at (teacher ECE %, mean accuracy %)
    kd = right.containers[1].lines[0].get_xydata()
    np.testing.assert_allclose(kd, [[2, 91], [10, 88], [40, 85]])
    assert left.get_xlabel() == "temperature tau"
    with pytest.raises(ValueError, match="lacks columns"):
        accuracy_vs_teacher_ece(_fake_df().drop(columns="seed"))
    plt.close("all")
