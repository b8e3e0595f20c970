import math

import numpy as np
import pandas as pd
import pytest
import torch

from kdlib import calibrated_control as cc
from kdlib import presets
from kdlib.experiments import temperature_sweep as ts


def _pair(**changes):
    p = presets.get(ts.NAME, "smoke")["pairs"][0]
    p.update(changes)
    return p


def test_presets_have_the_paper_protocol():
    paper = presets.get(ts.NAME, "paper")
    assert [p["name"] for p in paper["pairs"]] == [
        "resnet56->resnet14", "resnet110->resnet14", "wrn_28_1->resnet14"]
    assert [p["name"] for p in paper["pairs_9"]] == ["wrn_28_2->wrn_22_1",
                                                      "wrn_28_4->mobilenetv2"]
    for p in paper["pairs"] + paper["pairs_9"]:
        assert p["temperatures"] == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0]
        # the CRD/RepDistiller recipe
        assert p["student_recipe"]["epochs"] == 240
        assert p["student_recipe"]["milestones"] == [150, 180, 210]
        assert p["data"]["name"] == "cifar100"
    assert paper["pairs_9"][-1]["student_recipe"]["lr"] == 0.01  # MobileNetV2
    assert {g["data"]["name"] for g in paper["figure4"]["groups"]} == {"cifar100", "cifar10"}
    assert all(len(g["teachers"]) >= 3 for g in paper["figure4"]["groups"])
    assert paper["losses"] == ["kd", "dist", "kd_ls", "dkd", "dkd_ls"]
    default = presets.get(ts.NAME, "default")
    assert max(len(p["seeds"]) for p in default["pairs"]) >= 3
    assert default["torch_threads"] == 1
    assert presets.tables(ts.NAME) == {"6": ["pairs", "calibrated_teacher"],
                                       "9": ["pairs_9", "calibrated_teacher"],
                                       "figure4": ["figure4", "figure4_training_length"]}


def test_grid_counts_sweep_control_and_figure4_cells():
    cfg = presets.get(ts.NAME, "default")
    cells = ts.grid(cfg)
    n_main = sum(len(p.get("seeds", cfg["seeds"])) for p in cfg["pairs"])
    by_part = pd.Series([c["part"] for c in cells]).value_counts().to_dict()
    assert by_part["6"] == n_main and by_part["control"] == n_main
    assert all(c["calibration_holdout"] == 0.1 and c["losses"] == ["kd"]
               for c in cells if c["part"] == "control")
    # 8 teachers x 3 seeds, less the two the sweep already trains (gmm 256x256, resnet20)
    assert by_part["figure4"] == (8 - 2) * 3
    assert by_part["figure4_length"] == 4 * 2
    assert len({repr(sorted(c.items())) for c in cells}) == len(cells)
    fig4 = [c for c in cells if c["part"].startswith("figure4")]
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


def test_missing_data_skips_its_tables_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))  # an empty data folder
    cfg = presets.get(ts.NAME, "paper", dry_run=True)
    skips = dict(ts.skipped_tables(cfg))
    assert set(skips) == {"6", "9", "figure4 (cifar100 ->resnet14)",
                          "figure4 (cifar10 ->resnet14)", "figure4 (cifar10 ->wrn_22_1)"}
    assert "cifar-100-python" in skips["6"] and "cifar-10-batches-py" in \
        skips["figure4 (cifar10 ->wrn_22_1)"]
    assert ts.grid(cfg) == []  # nothing to run, and no error
    # CIFAR-100 present: only the CIFAR-10 groups are skipped
    from fake_datasets import write_cifar100

    write_cifar100(tmp_path / "data")
    skips = dict(ts.skipped_tables(cfg))
    assert set(skips) == {"figure4 (cifar10 ->resnet14)", "figure4 (cifar10 ->wrn_22_1)"}
    assert {c["data"]["name"] for c in ts.grid(cfg)} == {"cifar100"}
    # a scale without Table 9 pairs says so
    assert dict(ts.skipped_tables(presets.get(ts.NAME, "default")))["9"].startswith("no pairs")


def test_dry_run_hook_and_selection():
    cfg = presets.get(ts.NAME, "paper", dry_run=True)
    assert cfg["dry_run"] is True
    assert cfg["figure4_training_length"]["teacher_epochs"] == [1]
    assert cfg["figure4_training_length"]["base"]["teacher_recipe"]["epochs"] == 1
    assert all(p["student_recipe"]["epochs"] == 1 and p["student_recipe"]["batch_size"] == 8
               for p in cfg["pairs"] + cfg["pairs_9"])
    assert cfg["figure4"]["seeds"] == [0] and cfg["seeds"] == [0]
    assert ts.training_length_pairs(cfg)[0]["teacher_recipe"]["milestones"] == []
    only6 = presets.get(ts.NAME, "paper", select="table=6")
    assert only6["pairs_9"] is None and only6["figure4"] is None
    assert only6["calibrated_teacher"] == {"holdout": 0.1, "losses": ["kd"]}
    f4 = presets.get(ts.NAME, "paper", select="table=figure4")
    assert f4["pairs"] is None and f4["calibrated_teacher"] is None
    assert [p["name"] for p in ts.training_length_pairs(f4)][0] == \
        "resnet56->resnet14 teacher@60ep"


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
    # dist accuracies by temperature: i*7 % 3 -> 0, 1, 2, 0 ; ECE ranks 2, 1, 3, 4 ;
    # acc ranks 1.5, 3, 4, 1.5
    assert corr.loc["dist", "rho"] == pytest.approx(
        100 * np.corrcoef([2, 1, 3, 4], [1.5, 3, 4, 1.5])[0, 1])
    heads = ts.headlines(df, ts.correlations(df, n_boot=10))
    assert heads["spearman kd p"].value == pytest.approx(-1.0)
    assert heads["spearman kd p"].unit == "number"
    # dist: 90 + mean(0, .1, .2, 0) = 90.075; kd: 90 - 26.25/10 + 0.1 (mean seed) = 87.475
    means = ts.headlines(df, corr.iloc[:0])
    assert means["mean dist accuracy"].value == pytest.approx(0.90075)
    assert means["mean kd accuracy"].value == pytest.approx(0.87475)
    spread = ts.seed_spread_vs_effect(df).set_index("loss")
    assert spread.loc["kd", "effect_range"] == pytest.approx(5.5)  # 0.05..0.60 ECE / 10
    assert spread.loc["kd", "best_tau"] == 2.0 and spread.loc["kd", "worst_tau"] == 8.0
    # per-seed Spearman: each seed alone has KD accuracy exactly falling with ECE
    per = ts.per_seed_spearman(df.assign(teacher="t", student="s"))
    assert per[per.loss == "kd"]["rho"].tolist() == pytest.approx([-1.0] * 3)


def test_claims_cover_the_newer_losses():
    df = _synthetic()
    ls = df[df.loss == "dist"].assign(loss="kd_ls")
    dkd = df[df.loss == "kd"].assign(loss="dkd")
    t = ts.claims(pd.concat([df, ls, dkd]), n_boot=200).set_index("claim")
    assert t.loc["KD falls as teacher ECE rises (p)", "verdict"] == "holds"
    assert t.loc["DKD falls as teacher ECE rises (p)", "verdict"] == "holds"
    assert t.loc["DKD falls as teacher ECE rises (p)", "ours"] == "-100%"
    # kd_ls rows are the DIST rows: rho = -1 / sqrt(5 * 4.5) = -21% (ranks above)
    assert t.loc["KD_LS (standardized) insensitive to teacher ECE (p)", "ours"] == \
        t.loc["DIST insensitive to teacher ECE (p)", "ours"] == "-21%"


def test_aligned_table6_matches_the_paper_names_and_values():
    rows = []
    for seed, acc in ((0, 0.6800), (1, 0.6818)):
        for loss, a in (("kd", acc), ("dist", acc - 0.01)):
            rows.append({"teacher": "resnet56", "student": "resnet14", "temperature": 1.0,
                         "seed": seed, "loss": loss, "accuracy": a,
                         "teacher_ece_at_tau": 0.1204})
    t = ts.aligned_table6(pd.DataFrame(rows)).set_index("metric")
    kd = t.loc["kd_accuracy"]
    assert (kd["teacher"], kd["student"], kd["tau"]) == ("ResNet56", "ResNet14", 1.0)
    assert kd["paper (%)"] == 68.09 and kd["ours mean (%)"] == pytest.approx(68.09)
    assert kd["ours - paper (points)"] == pytest.approx(0.0, abs=1e-9)
    assert kd["n seeds"] == 2 and kd["epoch"] == "last"
    assert kd["ours sd (%)"] == pytest.approx(100 * np.std([0.68, 0.6818], ddof=1))
    assert t.loc["teacher_ece", "ours - paper (points)"] == pytest.approx(0.0, abs=1e-9)


def test_paper_comparison_reproduces_printed_values():
    t = ts.paper_comparison()
    t6 = t[t.table == 6]
    np.testing.assert_allclose(t6.recomputed_kd, t6.spearman_kd_ece, atol=0.011)
    np.testing.assert_allclose(t6.recomputed_dist, t6.spearman_dist_ece, atol=0.011)


# ---------------------------------------------------------------- the calibrated control


def _control(gain_of_ece, seeds=(0, 1, 2), eces=(0.02, 0.10, 0.25, 0.40), noise=0.0):
    """Raw KD accuracy 0.80 everywhere; calibrated = raw + gain_of_ece(ece) + seed noise."""
    rows = []
    for seed in seeds:
        for tau, ece in zip((1.0, 2.0, 4.0, 8.0), eces):
            rows.append({"pair": "p (x)", "seed": seed, "temperature": tau, "arm": "raw",
                         "accuracy": 0.80, "raw_teacher_ece_at_tau": ece})
            rows.append({"pair": "p (x)", "seed": seed, "temperature": tau,
                         "arm": "calibrated", "raw_teacher_ece_at_tau": ece,
                         "accuracy": 0.80 + gain_of_ece(ece) + noise * (seed - 1)})
    return pd.DataFrame(rows)


def test_paired_gain_is_calibrated_minus_raw_per_tau_and_seed():
    g = cc.paired_gain(_control(lambda e: e / 10))
    assert len(g) == 12
    assert g["gain"].to_numpy() == pytest.approx(np.tile([0.002, 0.010, 0.025, 0.040], 3))
    # an unpaired row (calibrated arm missing) is left out
    df = _control(lambda e: 0.0)
    df = df.drop(df[(df.arm == "calibrated") & (df.seed == 2) & (df.temperature == 8.0)].index)
    assert len(cc.paired_gain(df)) == 11
    with pytest.raises(ValueError, match="arm must be one of"):
        cc.paired_gain(_control(lambda e: 0.0).replace({"arm": {"raw": "plain"}}))
    with pytest.raises(ValueError, match="duplicated"):
        d = _control(lambda e: 0.0)
        cc.paired_gain(pd.concat([d, d.iloc[:1]]))


def test_gain_vs_ece_known_answers_and_claims():
    # gain rises with the raw ECE: rho = +1 in every bootstrap replicate
    up = cc.gain_vs_ece(_control(lambda e: e / 10, noise=0.001), n_boot=200).iloc[0]
    assert up["rho"] == pytest.approx(1.0) and up["lo"] == pytest.approx(1.0)
    assert up["n_cells"] == 4 and up["n_seeds"] == 3
    # mean gain over temperatures: (0.002 + 0.010 + 0.025 + 0.040) / 4 = 0.01925 per seed,
    # seeds shifted by -0.001, 0, +0.001: mean 0.01925, sd 0.001, t(0.975, 2) = 4.3027
    half = 4.302653 * 0.001 / math.sqrt(3)
    assert up["mean_gain"] == pytest.approx(0.01925)
    assert (up["gain_lo"], up["gain_hi"]) == pytest.approx((0.01925 - half, 0.01925 + half))
    down = cc.gain_vs_ece(_control(lambda e: -e / 10, noise=0.001), n_boot=200).iloc[0]
    assert down["rho"] == pytest.approx(-1.0) and down["hi"] == pytest.approx(-1.0)
    t_up = cc.control_claims(_control(lambda e: e / 10, noise=0.001), n_boot=200)
    assert t_up.loc[0, "verdict"] == "holds" and t_up.loc[0, "ours"] == "100%"
    assert t_up.loc[0, "claim"] == \
        "Calibrated teacher helps KD most where raw ECE is high (p)"
    assert cc.control_claims(_control(lambda e: -e / 10, noise=0.001),
                             n_boot=200).loc[0, "verdict"] == "does not hold"
    # one seed: no verdict; two temperatures: no Spearman
    assert cc.control_claims(_control(lambda e: e / 10, seeds=(0,)),
                             n_boot=50).loc[0, "verdict"] == "inconclusive"
    two = _control(lambda e: e / 10)
    two = two[two.temperature <= 2.0]
    r = cc.gain_vs_ece(two, n_boot=50).iloc[0]
    assert math.isnan(r["rho"]) and r["mean_gain"] == pytest.approx(0.006)


def test_holdout_split_scaled_teacher_and_fitted_temperature():
    from kdlib.data import Dataset

    gen = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(4000, 5, generator=gen)
    y = torch.multinomial((z / 2.0).softmax(1), 1, generator=gen).squeeze(1)
    data = Dataset("toy", z, y, z[:10], y[:10], classes=list("abcde"))
    teacher_data, held = cc.holdout_split(data, 0.25)
    assert len(teacher_data.train_y) == 3000 and len(held.test_y) == 1000
    # disjoint: no held-out row is among the teacher's rows
    rows = {tuple(r) for r in teacher_data.train_x.tolist()}
    assert not any(tuple(r) in rows for r in held.test_x.tolist())
    # stratified: class shares of the held-out part follow the whole split's (to 1 sample)
    whole = torch.bincount(y, minlength=5).float() / 4
    assert (torch.bincount(held.test_y, minlength=5).float() - whole).abs().max() <= 1
    assert torch.equal(teacher_data.test_x, data.test_x)  # the test split is untouched
    # the identity "teacher" outputs z; labels were drawn from softmax(z / 2): T* ~ 2
    t_star, logits = cc.fit_heldout_temperature(torch.nn.Identity(), held)
    assert torch.equal(logits, held.test_x)
    assert t_star == pytest.approx(2.0, rel=0.1)
    scaled = cc.ScaledTeacher(torch.nn.Identity(), 4.0)
    assert torch.equal(scaled(torch.tensor([[4.0, -8.0]])), torch.tensor([[1.0, -2.0]]))
    with pytest.raises(ValueError, match="> 0"):
        cc.ScaledTeacher(torch.nn.Identity(), 0.0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        cc.holdout_split(data, 1.0)


# ---------------------------------------------------------------- end to end (smoke)


def test_smoke_run_end_to_end_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    cfg = presets.get(ts.NAME, "smoke")
    losses, _ = ts.stackable_losses(cfg["losses"])
    df = ts.run(cfg, "smoke", progress=False)
    parts = ts.split_frame(df)
    sweep_df, control = parts["sweep"], parts["control"]
    assert len(sweep_df) == 2 * len(losses)  # 2 temperatures x losses x 1 seed
    assert set(sweep_df.loss) == set(losses) and set(sweep_df.temperature) == {1.0, 4.0}
    assert df.accuracy.between(0, 1).all() and df.teacher_ece_at_tau.between(0, 1).all()
    # the teacher's ECE at tau is shared by all losses at a given temperature
    per_t = sweep_df.groupby("temperature").teacher_ece_at_tau.nunique()
    assert (per_t == 1).all()
    # control: 2 arms x 2 temperatures; the calibrated arm distils from logits / T*
    assert sorted(control.arm) == ["calibrated"] * 2 + ["raw"] * 2
    cal = control[control.arm == "calibrated"]
    assert (cal.teacher_temperature == cal.t_star).all() and (cal.t_star > 0).all()
    raw = control[control.arm == "raw"]
    np.testing.assert_allclose(raw.sort_values("temperature").teacher_ece_at_tau,
                               raw.sort_values("temperature").raw_teacher_ece_at_tau)
    # every student is kept in the student store
    assert len(list((tmp_path / "runs" / "smoke" / "students").glob("*.pt"))) == len(df)
    # a re-run reads the store: nothing retrains
    import kdlib.stacked

    def boom(*a, **k):
        raise AssertionError("retrained a finished cell")

    monkeypatch.setattr(kdlib.stacked, "distill_stacked", boom)
    again = ts.run(cfg, "smoke", progress=False)
    pd.testing.assert_frame_equal(df, again)
