"""ESKD experiment: configuration, tables and claims against hand-computed values, one
tiny end-to-end run."""

import matplotlib
import pandas as pd
import pytest

from kdlib import presets
from kdlib.analysis import paired_difference
from kdlib.experiments import early_stopped_teacher as es
from kdlib.paper import paper_table
from kdlib.recipe import recipe_from_spec

matplotlib.use("Agg")




# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("scale", ["smoke", "default", "paper"])
def test_presets_build_valid_grids(scale):
    cfg = presets.get(es.NAME, scale)
    grid = es.student_grid(cfg)
    # per pair and seed: one cell per distinct early epoch, the final and the few-trained
    n = sum((len({e["epoch"] for e in p["early"]}) + 2) for p in cfg["pairs"])
    assert len(grid) == n * len(cfg["seeds"])
    assert len(es.curve_grid(cfg)) == len({p["teacher"] for p in cfg["pairs"]})
    finals = [c for c in grid if c["checkpoint"] is None and c["training"] == "full"]
    assert all(c["temperatures"] == sorted(set(cfg["eskd_taus"]) | set(cfg["few_taus"]))
               for c in finals)
    full, few = recipe_from_spec(cfg["full_recipe"]), recipe_from_spec(cfg["few_recipe"])
    assert few.epochs < full.epochs
    # the few-trained recipe starts decaying at (about) half of its epochs, as the paper's
    assert few.milestones[0] == pytest.approx(few.epochs / 2, abs=1)


def test_paper_preset_is_the_papers_setting():
    p = presets.get(es.NAME, "paper")
    full = recipe_from_spec(p["full_recipe"])
    # the 200-epoch schedule (not the 240-epoch CRD/RepDistiller recipe)
    assert (full.epochs, full.lr, full.milestones, full.checkpoint_every) == (
        200, 0.05, (100, 150, 180), 10)
    few = recipe_from_spec(p["few_recipe"])
    # the few-trained teacher is that schedule halved: 100 epochs, decay from epoch 50
    assert few.epochs == 100 and few.milestones == (50, 75, 90)
    assert recipe_from_spec(p["distill_recipe"]).epochs == 200
    assert p["few_taus"] == [1.6, 3.0, 4.0] and p["eskd_taus"] == [1.0, 1.6]
    early = {(x["teacher"], e["tau"]): e["epoch"] for x in p["pairs"] for e in x["early"]}
    # Table 4: 140 vs 200, but 130 vs 200 for WRN-28-3 at tau 1.0
    assert early == {("wrn_16_3", 1.0): 140, ("wrn_16_3", 1.6): 140,
                     ("wrn_28_3", 1.0): 130, ("wrn_28_3", 1.6): 140}
    cells = {(c["teacher"], c["checkpoint"], tuple(c["temperatures"]))
             for c in es.student_grid(p) if c["training"] == "full"}
    assert ("wrn_28_3", 130, (1.0,)) in cells and ("wrn_28_3", 140, (1.6,)) in cells
    assert ("wrn_16_3", 140, (1.0, 1.6)) in cells
    # the default preset mirrors it at 1/10 of the epochs
    d = presets.get(es.NAME, "default")
    assert recipe_from_spec(d["full_recipe"]).milestones == (10, 15, 18)
    assert {e["epoch"] for e in d["pairs"][0]["early"]} == {14}


def test_dry_run_maps_checkpoints_onto_the_cut_recipe():
    p = presets.get(es.NAME, "paper", dry_run=True)
    full = recipe_from_spec(p["full_recipe"])
    assert (full.epochs, full.checkpoint_every, full.milestones) == (2, 1, ())
    assert {e["epoch"] for x in p["pairs"] for e in x["early"]} == {1}
    assert recipe_from_spec(p["few_recipe"]).epochs == 1
    grid = es.student_grid(p)
    assert {c["checkpoint"] for c in grid} == {1, None} and p["seeds"] == [0]


def test_selection_and_skipped_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    p = presets.get(es.NAME, "paper", select="table=4")
    assert p["few_taus"] is None
    grid = es.student_grid(p)
    assert {c["training"] for c in grid} == {"full"}
    assert all(c["temperatures"] == [1.0, 1.6] or c["checkpoint"] is not None for c in grid)
    # no CIFAR-100 in the data folder: every table skipped (naming the file), nothing run
    reasons = es.skipped_tables(presets.get(es.NAME, "paper"))
    assert [t for t, _ in reasons] == ["4", "5", "8"] and "cifar-100" in reasons[0][1]
    curve, students = es.run(presets.get(es.NAME, "paper"), "paper", progress=False)
    assert curve.empty and students.empty
    assert [t for t, _ in es.skipped_tables(p)] == ["4", "5", "8"]


def test_config_errors():
    cfg = presets.get(es.NAME, "default")
    pair = cfg["pairs"][0]
    with pytest.raises(ValueError, match="not saved"):
        es.student_grid(dict(cfg, pairs=[{**pair, "early": [{"tau": 1.0, "epoch": 13},
                                                            {"tau": 1.6, "epoch": 14}]}]))
    with pytest.raises(ValueError, match="not saved"):
        es.student_grid(dict(cfg, pairs=[{**pair, "early": [{"tau": 1.0, "epoch": 20},
                                                            {"tau": 1.6, "epoch": 14}]}]))
    with pytest.raises(ValueError, match="cover taus"):
        es.student_grid(dict(cfg, pairs=[{**pair, "early": [{"tau": 1.0, "epoch": 14}]}]))
    with pytest.raises(ValueError, match="not saved"):
        es.student_grid(dict(cfg, full_recipe={"epochs": 30}))
    with pytest.raises(ValueError, match="lacks"):
        es.curve_grid({k: v for k, v in cfg.items() if k != "pairs"})
    with pytest.raises(ValueError, match="each pair"):
        es.student_grid(dict(cfg, pairs=[{"teacher": "resnet8"}]))


# ------------------------------------------------------------------ analysis


def test_paired_difference_hand_values():
    df = pd.DataFrame({"training": ["few"] * 3 + ["full"] * 4,
                       "seed": [0, 1, 2, 0, 1, 2, 3],
                       "acc": [3.0, 5.0, 7.0, 2.0, 3.0, 4.0, 9.0]})
    d = paired_difference(df, "acc", "training", "few", "full").iloc[0]
    # diffs 1, 2, 3 (seed 3 has no partner): mean 2, std 1, t(0.975, 2) = 4.302653
    assert d["diff"] == pytest.approx(2.0) and d["std"] == pytest.approx(1.0)
    assert d["n"] == 3
    assert d["hi"] - d["diff"] == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)
    assert d["diff"] - d["lo"] == pytest.approx(d["hi"] - d["diff"])
    one = paired_difference(df[df.seed == 0], "acc", "training", "few", "full").iloc[0]
    assert one["diff"] == 1.0 and pd.isna(one["lo"]) and one["n"] == 1
    with pytest.raises(ValueError, match="several rows"):
        paired_difference(pd.concat([df, df]), "acc", "training", "few", "full")


def test_paired_difference_by_group():
    df = pd.DataFrame({"training": ["few", "full"] * 4, "tau": [1.0] * 4 + [4.0] * 4,
                       "seed": [0, 0, 1, 1, 0, 0, 1, 1],
                       "acc": [5, 4, 6, 4, 1, 2, 1, 3]})
    d = paired_difference(df, "acc", "training", "few", "full", groups=["tau"])
    assert list(d["tau"]) == [1.0, 4.0]
    assert list(d["diff"]) == [1.5, -1.5]


def test_few_minus_full_and_checkpoint_minus_final():
    st = _students()
    f = es.few_minus_full(st, [1.6, 4.0])
    assert list(f["temperature"]) == [1.6, 4.0]
    assert f["diff"].tolist() == pytest.approx([1.0, 1.0])  # few students are +1 point
    assert f["std"].tolist() == pytest.approx([0.0, 0.0]) and list(f["n"]) == [2, 2]
    st.loc[(st.teacher_epoch == 18) & (st.seed == 1), "student_accuracy"] = 0.95
    c = es.checkpoint_minus_final(st, [1.0, 1.6])
    assert list(c["teacher_epoch"]) == [18, 18] and list(c["temperature"]) == [1.0, 1.6]
    # seed 0: 90 - 90, seed 1: 95 - 92
    assert c["diff"].tolist() == pytest.approx([1.5, 1.5])
    assert c["std"].tolist() == pytest.approx([3 / 2 ** 0.5] * 2)


def test_eskd_claims_on_the_papers_table4():
    c = es.eskd_claims(paper_table("table4")).set_index(["teacher", "tau"])
    assert len(c) == 4
    assert c.loc[("WRN-16-3", 1.0), ["early", "late"]].tolist() == [140, 200]
    assert c.loc[("WRN-28-3", 1.0), "early"] == 130
    # 7.26 > 7.20, 67.12 < 67.31
    assert not c.loc[("WRN-16-3", 1.0), "ece_not_worse"]
    assert not c.loc[("WRN-16-3", 1.0), "acc_not_worse"]
    # 7.91 > 7.89 but 68.43 > 68.01
    assert not c.loc[("WRN-16-3", 1.6), "ece_not_worse"]
    assert c.loc[("WRN-16-3", 1.6), "acc_not_worse"]
    assert c.loc[("WRN-28-3", 1.0), ["ece_not_worse", "acc_not_worse"]].tolist() == [True, True]
    assert c.loc[("WRN-28-3", 1.6), ["ece_not_worse", "acc_not_worse"]].tolist() == [True, False]


def test_few_full_claims_and_summary():
    p = es.few_full_claims(paper_table("table5_8"))
    assert len(p) == 6
    assert p[["few_less_accurate", "few_better_calibrated", "few_better_students"]].all().all()
    row = p[(p.teacher == "WRN-28-3") & (p.tau == 1.6)].iloc[0]
    assert (row.ece_few, row.ece_full, row.student_few) == (3.48, 5.16, 71.95)
    ours4 = pd.DataFrame({"teacher": "t", "student": "s", "tau": [1.0, 1.0],
                          "checkpoint_epoch": [18, 30], "teacher_ece": [2.0, 3.0],
                          "student_accuracy": [90.0, 91.0]})
    ours5 = pd.DataFrame({"teacher": "t", "training": ["few", "full"],
                          "teacher_accuracy": [95.0, 97.0], "tau": 1.6,
                          "teacher_ece": [4.0, 3.0], "student_accuracy": [92.0, 91.0]})
    s = es.claims_summary(ours4, ours5)
    assert list(s["paper"]) == ["2/4", "2/4", "6/6", "6/6", "6/6"]
    assert list(s["ours"]) == ["1/1", "0/1", "1/1", "0/1", "1/1"]


def _students():
    rows = []
    for training, epoch, final, tacc, taus in [("full", 18, False, 0.95, [1.0, 1.6]),
                                               ("full", 30, True, 0.97, [1.0, 1.6, 4.0]),
                                               ("few", 12, True, 0.96, [1.6, 4.0])]:
        for tau in taus:
            for seed, acc in [(0, 0.90), (1, 0.92)]:
                rows.append({"teacher": "T", "student": "S", "training": training,
                             "teacher_epoch": epoch, "final": final, "temperature": tau,
                             "seed": seed, "teacher_accuracy": tacc, "teacher_ece": 0.02,
                             "teacher_ece_at_tau": 0.01 * tau,
                             "student_accuracy": acc + (0.01 if training == "few" else 0)})
    return pd.DataFrame(rows)


def test_checkpoint_and_few_full_tables():
    st = _students()
    t4 = es.checkpoint_table(st, [1.0, 1.6])
    assert len(t4) == 4 and set(t4["teacher_epoch"]) == {18, 30}
    r = t4[(t4.temperature == 1.6) & (t4.teacher_epoch == 18)].iloc[0]
    assert r.teacher_ece_at_tau == pytest.approx(1.6) and r.teacher_accuracy == 95.0
    assert r.teacher_ece_t1 == pytest.approx(2.0)
    assert r.student_accuracy == pytest.approx(91.0)
    assert r.student_accuracy_std == pytest.approx(2 ** 0.5) and r.n == 2
    t5 = es.few_vs_full_table(st, [1.6, 4.0])
    assert list(t5["training"]) == ["few", "full", "few", "full"]
    assert t5["student_accuracy"].tolist() == pytest.approx([92.0, 91.0, 92.0, 91.0])
    a5 = es.as_paper_table5(t5)
    assert list(a5.columns) == list(paper_table("table5_8").columns)
    a4 = es.as_paper_table4(t4)
    assert list(a4.columns) == list(paper_table("table4").columns)


def test_curve_wide():
    curve = pd.DataFrame({"teacher": "T", "epoch": [2, 2, 4, 4], "temperature": [1.0, 1.6] * 2,
                          "accuracy": [0.5, 0.5, 0.8, 0.8], "nll": 0.0,
                          "ece": [0.10, 0.20, 0.05, 0.15]})
    w = es.curve_wide(curve)
    assert list(w.columns) == ["teacher", "epoch", "accuracy", "ece_tau_1", "ece_tau_1.6"]
    assert w["accuracy"].tolist() == [50.0, 80.0]
    assert w["ece_tau_1.6"].tolist() == pytest.approx([20.0, 15.0])


# ------------------------------------------------------------------ end to end


def test_run_end_to_end(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    cfg = {"data": {"name": "digits", "seed": 0, "subset_train": 120, "subset_test": 60},
           "pairs": [{"teacher": "resnet8", "student": "resnet8",
                      "early": [{"tau": 1.0, "epoch": 1}]}], "teacher_seed": 0,
           "full_recipe": {"epochs": 2, "checkpoint_every": 1}, "few_recipe": {"epochs": 1},
           "distill_recipe": {"epochs": 1}, "curve_taus": [1.0, 2.0],
           "eskd_taus": [1.0], "few_taus": [2.0], "seeds": [0]}
    curve, st = es.run(cfg, "smoke", progress=False)
    assert sorted(curve["epoch"].unique()) == [1, 2] and len(curve) == 4
    assert len(st) == 4  # checkpoint 1: tau 1; final full: 1, 2; few: 2
    ckpt = st[~st.final].iloc[0]
    assert ckpt.teacher_epoch == 1 and ckpt.temperature == 1.0
    # the teacher numbers seen while distilling match the checkpoint curve
    c1 = curve[(curve.epoch == 1) & (curve.temperature == 1.0)].iloc[0]
    assert ckpt.teacher_accuracy == pytest.approx(c1.accuracy)
    assert ckpt.teacher_ece_at_tau == pytest.approx(c1.ece, abs=1e-6)
    full2 = st[st.final & (st.training == "full") & (st.temperature == 2.0)].iloc[0]
    c2 = curve[(curve.epoch == 2) & (curve.temperature == 2.0)].iloc[0]
    assert full2.teacher_epoch == 2
    assert full2.teacher_ece_at_tau == pytest.approx(c2.ece, abs=1e-6)
    few = st[st.training == "few"].iloc[0]
    assert few.teacher_epoch == 1 and few.final
    assert st["student_accuracy"].between(0, 1).all()
    with pytest.raises(ValueError, match="no checkpoint at epoch 2"):
        es.distill_from_teacher(cfg["data"], "resnet8", "resnet8", "full",
                                {"epochs": 2, "checkpoint_every": 3}, 0, 2, [1.0], 0,
                                {"epochs": 1})
    with pytest.raises(ValueError, match="training must be"):
        es.distill_from_teacher(cfg["data"], "resnet8", "resnet8", "long", {"epochs": 1}, 0,
                                None, [1.0], 0, {"epochs": 1})


def test_plots():
    import matplotlib.pyplot as plt

    from kdlib.plots.takd_eskd import plot_checkpoints, plot_few_vs_full

    curve = pd.DataFrame({"teacher": "T", "epoch": [2, 2, 4, 4], "temperature": [1.0, 1.6] * 2,
                          "accuracy": [0.5, 0.5, 0.8, 0.8], "nll": 0.0,
                          "ece": [0.10, 0.20, 0.05, 0.15]})
    fig = plot_checkpoints(curve, chosen=[2], milestones=[3])
    acc_ax, ece_ax = fig.axes
    assert len(ece_ax.get_legend().get_texts()) == 2  # one ECE curve per tau
    assert list(acc_ax.lines[0].get_ydata()) == [50.0, 80.0]
    plt.close(fig)
    t5 = es.few_vs_full_table(_students(), [1.6, 4.0])
    fig = plot_few_vs_full(t5)
    assert len(fig.axes[0].lines) == 2  # few and full
    plt.close(fig)
    with pytest.raises(ValueError, match="empty"):
        plot_few_vs_full(t5.iloc[:0])


def _students_frame():
    """Two seeds of a WRN-16-3 -> WRN-16-1 pair: early (140) and final (200) at tau 1.0,
    final and few-trained at tau 1.6; accuracies chosen by hand."""
    rows = []
    for s, (early, final, few, final16) in enumerate([(0.6712, 0.6731, 0.6862, 0.6801),
                                                      (0.6722, 0.6721, 0.6872, 0.6791)]):
        for training, epoch, is_final, tau, acc, ece in (
                ("full", 140, False, 1.0, early, 0.0726), ("full", 200, True, 1.0, final, 0.072),
                ("full", 200, True, 1.6, final16, 0.0789), ("few", 100, True, 1.6, few, 0.0748)):
            rows.append({"teacher": "wrn_16_3", "student": "wrn_16_1", "training": training,
                         "teacher_epoch": epoch, "final": is_final, "temperature": tau,
                         "seed": s, "teacher_accuracy": 0.7517 if training == "full" else 0.7428,
                         "teacher_ece": 0.05, "teacher_ece_at_tau": ece,
                         "student_accuracy": acc, "student_ece": 0.1, "student_nll": 1.0,
                         "agreement": 0.8})
    return pd.DataFrame(rows)


def test_aligned_tables_4_and_5_hand_values():
    st = _students_frame()
    a4 = es.aligned_table4(st, [1.0]).set_index(["checkpoint_epoch", "metric"])
    r = a4.loc[(140, "student_accuracy")]
    assert (r.teacher, r.student, r.tau) == ("WRN-16-3", "WRN-16-1", 1.0)
    assert r["paper (%)"] == pytest.approx(67.12)
    assert r["ours mean (%)"] == pytest.approx(67.17) and r["n seeds"] == 2
    assert r["ours - paper (points)"] == pytest.approx(0.05)
    e = a4.loc[(200, "teacher_ece_at_tau")]
    assert e["paper (%)"] == pytest.approx(7.2) and e["ours mean (%)"] == pytest.approx(7.2)
    a5 = es.aligned_table5_8(st, [1.6]).set_index(["training", "metric"])
    assert a5.loc[("few", "student_accuracy"), "paper (%)"] == pytest.approx(68.62)
    assert a5.loc[("few", "student_accuracy"), "ours mean (%)"] == pytest.approx(68.67)
    assert a5.loc[("full", "teacher_accuracy"), "ours - paper (points)"] == pytest.approx(0.0)
    assert es.aligned_table4(st, None).empty


def test_headline_figures_hand_values():
    from kdlib.headline import headline_bundle

    figs = es.headline_figures(_students_frame(), [1.0], [1.6])
    d = figs["student acc, epoch 140 - final teacher, wrn_16_3 tau 1"]
    # per seed: -0.19 and +0.01 points -> mean -0.09 points
    assert d.value == pytest.approx(-0.0009) and d.unit == "points"
    f = figs["student acc, few - full-trained teacher, wrn_16_3 tau 1.6"]
    assert f.value == pytest.approx(0.0071)  # +0.61 and +0.81 points
    assert figs["teacher ECE at tau 1.6, few-trained wrn_16_3"].value == pytest.approx(0.0748)
    headline_bundle(**figs)
    assert es.headline_figures(_students_frame(), None, None) == {}
