import numpy as np
import pandas as pd
import pytest

from kdlib import presets
from kdlib.experiments import temperature_sweep as ts


def _pair(**changes):
    p = presets.get(ts.NAME, "smoke")["pairs"][0]
    p.update(changes)
    return p


def test_presets_have_the_paper_protocol():
    paper = presets.get(ts.NAME, "paper")
    names = [p["name"] for p in paper["pairs"]]
    assert names == ["resnet56->resnet14", "resnet110->resnet14", "wrn_28_1->resnet14",
                     "wrn_28_2->wrn_22_1", "wrn_28_4->mobilenetv2"]
    for p in paper["pairs"]:
        assert p["temperatures"] == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0]
        assert p["student_recipe"]["epochs"] == 240
        assert p["data"]["name"] == "cifar100"
    assert paper["pairs"][-1]["student_recipe"]["lr"] == 0.01  # MobileNetV2
    default = presets.get(ts.NAME, "default")
    assert max(len(p["seeds"]) for p in default["pairs"]) >= 3


def test_grid_is_one_cell_per_pair_and_seed():
    cfg = presets.get(ts.NAME, "default")
    cells = ts.grid(cfg)
    n_main = sum(len(p.get("seeds", cfg["seeds"])) for p in cfg["pairs"])
    ct = cfg["calibration_teachers"]
    n_fig4 = len(ct["teacher_epochs"]) * len(ct.get("seeds", cfg["seeds"]))
    assert len(cells) == n_main + n_fig4
    assert len({repr(sorted(c.items())) for c in cells}) == len(cells)
    fig4 = [c for c in cells if "teacher@" in c["name"]]
    assert all(c["temperatures"] == [4.0] for c in fig4)


@pytest.mark.parametrize("changes, message", [
    ({"temperatures": []}, "non-empty"),
    ({"temperatures": [1.0, 0.0]}, "> 0"),
    ({"temperatures": [1.0, -2.0]}, "> 0"),
    ({"teacher": "resnet13"}, "resnet13"),
    ({"student_kwargs": {"num_classes": 100}}, "100 classes but the data set 'digits' has 10"),
])
def test_bad_pairs_fail_before_training(changes, message):
    cfg = presets.get(ts.NAME, "smoke")
    cfg["pairs"] = [_pair(**changes)]
    with pytest.raises(ValueError, match=message):
        ts.grid(cfg)


def _synthetic(seeds=(0, 1, 2)):
    rows = []
    for seed in seeds:
        for i, tau in enumerate([1.0, 2.0, 4.0, 8.0]):
            ece = [0.10, 0.05, 0.30, 0.60][i]
            rows.append({"pair": "p", "seed": seed, "loss": "kd", "temperature": tau,
                         "teacher_ece_at_tau": ece, "accuracy": 0.9 - ece / 10 + 0.001 * seed})
            rows.append({"pair": "p", "seed": seed, "loss": "dist", "temperature": tau,
                         "teacher_ece_at_tau": ece, "accuracy": 0.9 + 0.001 * ((i * 7) % 3)})
    return pd.DataFrame(rows)


def test_summary_and_correlations_on_known_values():
    df = _synthetic()
    table = ts.summary(df)
    row = table[(table.temperature == 4.0)].iloc[0]
    assert row["teacher_ece"] == pytest.approx(30.0)
    assert row["kd_acc"] == pytest.approx(100 * (0.9 - 0.03 + 0.001))  # mean over seeds 0,1,2
    assert row["kd_acc_std"] == pytest.approx(0.1)  # std of 0, 0.1, 0.2 points
    corr = ts.correlations(df, n_boot=100).set_index("loss")
    assert corr.loc["kd", "rho"] == pytest.approx(-100.0)  # accuracy falls exactly with ECE
    # dist accuracies by temperature: ranks (1, 3, 2, 1.5 tie...) computed by hand:
    # i*7 % 3 -> 0, 1, 2, 0 ; ECE ranks 2, 1, 3, 4 ; acc ranks 1.5, 3, 4, 1.5
    assert corr.loc["dist", "rho"] == pytest.approx(
        100 * np.corrcoef([2, 1, 3, 4], [1.5, 3, 4, 1.5])[0, 1])
    heads = ts.headlines(df, ts.correlations(df, n_boot=10))
    assert heads["spearman kd p (%)"] == -100.0
    # dist: 90 + mean(0, .1, .2, 0) = 90.075; kd: 90 - 26.25/10 + 0.1 (mean seed) = 87.475
    assert ts.headlines(df, corr.iloc[:0]) == {
        "mean dist accuracy (%)": pytest.approx(90.075, abs=0.006),
        "mean kd accuracy (%)": pytest.approx(87.475, abs=0.006)}
    spread = ts.seed_spread_vs_effect(df).set_index("loss")
    assert spread.loc["kd", "effect_range"] == pytest.approx(5.5)  # 0.05..0.60 ECE / 10
    assert spread.loc["kd", "best_tau"] == 2.0 and spread.loc["kd", "worst_tau"] == 8.0


def test_paper_comparison_reproduces_printed_values():
    t = ts.paper_comparison()
    t6 = t[t.table == 6]
    np.testing.assert_allclose(t6.recomputed_kd, t6.spearman_kd_ece, atol=0.011)
    np.testing.assert_allclose(t6.recomputed_dist, t6.spearman_dist_ece, atol=0.011)


def test_smoke_run_end_to_end_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    cfg = presets.get(ts.NAME, "smoke")
    df = ts.run(cfg, "smoke", progress=False)
    assert len(df) == 4  # 2 temperatures x 2 losses x 1 seed
    assert set(df.loss) == {"kd", "dist"} and set(df.temperature) == {1.0, 4.0}
    assert df.accuracy.between(0, 1).all() and df.teacher_ece_at_tau.between(0, 1).all()
    # the teacher's ECE at tau is shared by both losses at a given temperature
    per_t = df.groupby("temperature").teacher_ece_at_tau.nunique()
    assert (per_t == 1).all()
    # a re-run reads the store: nothing retrains
    import kdlib.stacked

    def boom(*a, **k):
        raise AssertionError("retrained a finished cell")

    monkeypatch.setattr(kdlib.stacked, "distill_stacked", boom)
    again = ts.run(cfg, "smoke", progress=False)
    pd.testing.assert_frame_equal(df, again)
