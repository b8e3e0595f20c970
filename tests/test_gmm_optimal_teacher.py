"""Analysis helpers, presets and one tiny end-to-end cell of the GMM optimal-teacher
experiment (paper Table 1)."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from kdlib import presets
from kdlib.experiments import gmm_optimal_teacher as exp
from kdlib.paper import paper_table
from kdlib.plots import gmm as gmm_plots
from kdlib.recipe import recipe_from_spec

# ----------------------------------------------------------------------------- targets


def test_tempered_posterior_lives_in_gmm():
    # moved to kdlib.gmm (tests there); the experiment module re-exports it
    from kdlib.gmm import tempered_posterior

    assert exp.tempered_posterior is tempered_posterior


def test_arm_names_and_temperatures():
    assert exp.group_arms("table1", [2.0]) == ["one-hot", "posterior"]
    assert exp.group_arms("tempered", [0, 0.5, 4.0]) == ["tau=0", "tau=0.5", "tau=4"]
    assert exp.arm_temperature("tau=0.5") == 0.5
    assert exp.arm_temperature("posterior") == 1.0
    assert np.isnan(exp.arm_temperature("one-hot"))
    with pytest.raises(ValueError, match="group"):
        exp.group_arms("other", [])
    with pytest.raises(ValueError, match="unknown arm"):
        exp.arm_temperature("labels")
    with pytest.raises(ValueError, match=">= 0"):
        exp.arm_name(-2)


def test_target_calibration_hand_values():
    labels = torch.tensor([0, 1, 1, 0])
    # a one-hot of the labels: confidence 1, always right -> ECE 0, accuracy 1
    onehot = torch.nn.functional.one_hot(labels, 2).float()
    c = exp.target_calibration(onehot, labels)
    assert c["target_ece"] == pytest.approx(0.0)
    assert c["target_accuracy"] == 1.0 and c["target_confidence"] == 1.0
    # confidence 0.9 for class 0 everywhere: right on half -> ECE |0.5 - 0.9| = 0.4
    q = torch.tensor([[0.9, 0.1]] * 4)
    c = exp.target_calibration(q, labels)
    assert c["target_ece"] == pytest.approx(0.4)
    assert c["target_accuracy"] == 0.5 and c["target_confidence"] == pytest.approx(0.9)
    assert np.isnan(exp.target_calibration(None, labels)["target_ece"])


# ----------------------------------------------------------------------------- tables


def test_population_variance_matches_paper_variance_row():
    assert exp.population_variance([1, 2, 3, 4]) == pytest.approx(1.25)
    paper = paper_table("table1")
    # the paper prints the population variance in %^2 times 100: 179%, 8%, 180%, 3%
    for classes, target, printed in ((10, "one-hot", 179), (10, "posterior", 8),
                                     (100, "one-hot", 180), (100, "posterior", 3)):
        acc = paper[(paper.classes == classes) & (paper.target == target)]["test_accuracy"]
        assert round(100 * exp.population_variance(acc)) == printed
    with pytest.raises(ValueError, match="non-empty"):
        exp.population_variance([])


def _synthetic_runs():
    rows = []
    acc = {("one-hot", 10): [80, 82, 84], ("posterior", 10): [85, 85, 86],
           ("tau=0.5", 10): [84, 85, 85], ("tau=4", 10): [70, 71, 72]}
    ece = {"one-hot": np.nan, "posterior": 0.01, "tau=0.5": 0.05, "tau=4": 0.4}
    for (arm, classes), vals in acc.items():
        for r, a in enumerate(vals):
            rows.append({"task": "gmm10", "group": "g", "classes": classes, "arm": arm,
                         "run": r, "temperature": exp.arm_temperature(arm),
                         "accuracy": a / 100, "ece": 0.02, "nll": 0.3, "train_loss": 0.4,
                         "bayes_agreement": 0.9, "target_ece": ece[arm],
                         "target_accuracy": 0.9, "target_confidence": 0.9,
                         "bayes_accuracy": 0.9})
    df = pd.DataFrame(rows)
    for col in ("accuracy", "ece", "target_ece", "bayes_accuracy", "bayes_agreement",
                "target_accuracy", "target_confidence"):
        df[f"{col}_pct"] = 100 * df[col]
    return df


def test_table1_frame_beside_the_paper():
    t = exp.table1_frame(_synthetic_runs(), paper_table("table1"))
    assert list(t.index) == ["run 1", "run 2", "run 3", "run 4", "run 5", "mean",
                             "variance (%^2)"]
    ours = t[(10, "one-hot", "ours")]
    assert ours["mean"] == pytest.approx(82.0)
    assert ours["variance (%^2)"] == pytest.approx(8 / 3)  # (4 + 0 + 4) / 3
    assert np.isnan(ours["run 4"])  # 3 runs of ours beside the paper's 5
    paper = t[(10, "one-hot", "paper")]
    assert paper["mean"] == pytest.approx(89.128)
    assert paper["run 1"] == 87.06
    assert t[(10, "posterior", "paper")]["mean"] == pytest.approx(89.818)
    assert 100 not in t.columns.get_level_values("classes")  # only the tasks we ran


def test_arm_summary_and_paired_difference():
    runs = _synthetic_runs()
    s = exp.arm_summary(runs).set_index("arm")
    assert s.loc["one-hot", "accuracy_mean"] == pytest.approx(82.0)
    assert s.loc["one-hot", "accuracy_var"] == pytest.approx(8 / 3)
    assert s.loc["posterior", "gap_to_bayes"] == pytest.approx(90 - 256 / 3)
    d = exp.paired_difference(runs).iloc[0]
    # posterior - one-hot per run: 5, 3, 2
    assert d["mean_diff"] == pytest.approx(10 / 3)
    assert d["std_diff"] == pytest.approx(np.std([5, 3, 2], ddof=1))
    assert d["wins"] == 3 and d["runs"] == 3


def test_calibration_correlations():
    c = exp.calibration_correlations(_synthetic_runs(), n_boot=50).iloc[0]
    # arm means: ECE 1, 5, 40 (%) vs accuracy 85.33, 84.67, 71: perfectly decreasing
    assert c["rho_ece_acc"] == pytest.approx(-1.0)
    assert c["arms"] == 3  # one-hot excluded
    # temperatures 1, 0.5, 4 vs accuracy 85.33, 84.67, 71: ranks (2,1,3) vs (3,2,1) -> -0.5
    assert c["rho_tau_acc"] == pytest.approx(-0.5)


# ----------------------------------------------------------------------------- presets


def test_presets_are_valid():
    cfgs = {s: presets.get(exp.NAME, s) for s in presets.SCALES}
    paper = cfgs["paper"]
    assert (paper["n_train"], paper["n_test"], paper["runs"]) == (10_000, 3_000, 5)
    assert paper["recipe"]["epochs"] == 200 and paper["recipe"]["lr"] == 0.03
    assert cfgs["default"]["runs"] == 5 and cfgs["default"]["n_train"] == 10_000
    assert cfgs["smoke"]["recipe"]["epochs"] < cfgs["default"]["recipe"]["epochs"] < 200
    for cfg in cfgs.values():
        r = recipe_from_spec(cfg["recipe"])
        assert r.batch_size == 128
        cells = exp.grid_cells(cfg)
        assert [(c["task"], c["group"]) for c in cells] == [
            ("gmm10", "table1"), ("gmm10", "tempered"), ("gmm100", "table1"),
            ("gmm100", "tempered")]
        json.dumps(cells)  # sweep cells must be plain JSON
    with pytest.raises(ValueError, match="missing"):
        exp.grid_cells({"tasks": ["gmm10"]})


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_records():
    common = dict(task="gmm10", n_train=400, n_test=300, data_seed=0, runs=2, hidden=[8, 8],
                  standardize_inputs=False, device="cpu", temperatures=[0.0, 2.0],
                  recipe={"epochs": 1, "batch_size": 128, "lr": 0.03, "momentum": 0.9,
                          "weight_decay": 5e-4, "milestones": []})
    out = []
    for group in exp.GROUPS:
        cell = {**common, "group": group}
        res = exp.run_group(**cell)
        out.append({**cell, **json.loads(json.dumps(res))})  # as the sweep store returns it
    return out


def test_run_group_end_to_end(tiny_records):
    table1, tempered = tiny_records
    assert table1["arms"] == ["one-hot", "posterior"]
    assert tempered["arms"] == ["tau=0", "tau=2"]
    assert len(table1["per_run"]) == 4 and table1["members"] == 4
    assert 0.5 < table1["bayes_accuracy"] < 1.0
    assert table1["bayes_accuracy"] == tempered["bayes_accuracy"]
    # the cached Bayes decisions give GaussianMixtureTask.bayes_accuracy on the same points
    from kdlib.gmm import gmm_preset

    data = exp.prepared_data("gmm10", 400, 300, 0, False)
    gmm = gmm_preset("gmm10")
    assert table1["bayes_accuracy"] == pytest.approx(gmm.bayes_accuracy(data.test_x,
                                                                        data.test_y))
    assert table1["bayes_train_accuracy"] == pytest.approx(
        gmm.bayes_accuracy(data.train_x, data.train_y))
    by_arm = {r["arm"]: r for r in tempered["per_run"] if r["run"] == 0}
    # the tau -> 0 target is the Bayes decision's one-hot: confidence 1, so its ECE is
    # exactly 1 - (Bayes accuracy on the training set)
    assert by_arm["tau=0"]["target_ece"] == pytest.approx(1 - tempered["bayes_train_accuracy"])
    assert by_arm["tau=0"]["target_accuracy"] == pytest.approx(tempered["bayes_train_accuracy"])
    # softening keeps the argmax (same accuracy) but lowers the confidence
    assert by_arm["tau=2"]["target_accuracy"] == pytest.approx(
        tempered["bayes_train_accuracy"], abs=1e-9)
    assert by_arm["tau=2"]["target_confidence"] < 1.0
    post = [r for r in table1["per_run"] if r["arm"] == "posterior"][0]
    assert post["target_ece"] < 0.1  # ~0 up to the noise of 400 samples
    # paired runs: same seed for both arms, different seeds across runs
    runs = exp.runs_frame(tiny_records)
    assert sorted(runs["run"].unique()) == [0, 1]
    assert set(runs["arm"]) == {"one-hot", "posterior", "tau=0", "tau=2"}
    assert runs["accuracy_pct"].between(0, 100).all()
    assert exp.table1_frame(runs, paper_table("table1")).shape == (7, 4)


def test_decision_grids_and_plots(tiny_records):
    g = exp.decision_grids(tiny_records[0], resolution=20)
    assert list(g["grids"]) == ["one-hot (run 1)", "posterior (run 1)", "Bayes rule"]
    assert all(v.shape == (20, 20) for v in g["grids"].values())
    assert g["agreement"]["Bayes rule"] == 1.0
    assert 0 <= g["agreement"]["posterior (run 1)"] <= 1
    xmin, xmax, ymin, ymax = g["extent"]
    assert xmin < -10 < 10 < xmax and ymin < ymax  # means lie in [-10, 10]^2
    from kdlib.gmm import gmm_preset

    fig = gmm_plots.decision_regions(g["grids"], g["extent"], gmm=gmm_preset("gmm10"),
                                     agreement=g["agreement"])
    assert len(fig.axes) == 3
    runs = exp.runs_frame(tiny_records)
    assert len(gmm_plots.run_accuracies(runs, paper_table("table1"), {10: 89.0}).axes) == 1
    assert len(gmm_plots.accuracy_vs_target_ece(exp.arm_summary(runs)).axes) == 1
    plt.close("all")
    with pytest.raises(ValueError, match="not in this record"):
        exp.decision_grids(tiny_records[0], resolution=5, arms=("tau=0",))


def test_covariance_ellipse_and_colormap():
    e = gmm_plots.covariance_ellipse([1.0, 2.0], [[4.0, 0.0], [0.0, 1.0]], n_sigma=2.0)
    assert (e.width, e.height) == pytest.approx((8.0, 4.0))  # 2 * 2 * sqrt(4), 2 * 2 * 1
    assert e.angle % 180 == pytest.approx(0.0)
    e = gmm_plots.covariance_ellipse([0, 0], [[1.0, 0.0], [0.0, 9.0]], n_sigma=1.0)
    assert e.width == pytest.approx(6.0) and e.angle % 180 == pytest.approx(90.0)
    assert gmm_plots.class_colormap(100).N == 100
    with pytest.raises(ValueError, match="positive definite"):
        gmm_plots.covariance_ellipse([0, 0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="num_classes"):
        gmm_plots.class_colormap(0)


def test_limited_threads_restores():
    old = torch.get_num_threads()
    with exp.limited_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
    with exp.limited_threads(None):
        assert torch.get_num_threads() == old
    with pytest.raises(ValueError, match="torch_threads"), exp.limited_threads(0):
        pass


# ----------------------------------------------------------------------------- contract


def _two_arm_runs():
    # 3 runs per arm, 10 classes; accuracies (fractions): one-hot .88 .89 .90, posterior
    # .90 .90 .91 -> paired differences .02 .01 .01, mean 1/75
    rows = []
    for arm, accs in ((exp.ONE_HOT, [0.88, 0.89, 0.90]), (exp.POSTERIOR, [0.90, 0.90, 0.91])):
        rows += [{"classes": 10, "arm": arm, "run": r, "accuracy": a, "accuracy_pct": 100 * a}
                 for r, a in enumerate(accs)]
    return pd.DataFrame(rows)


def test_table1_aligned_by_hand():
    t = exp.table1_aligned(_two_arm_runs())
    one = t[t["target"] == exp.ONE_HOT].iloc[0]
    assert one["paper (%)"] == pytest.approx((87.06 + 88.67 + 88.77 + 90.27 + 90.87) / 5)
    assert one["ours mean (%)"] == pytest.approx(89.0)
    assert one["ours sd (%)"] == pytest.approx(1.0)  # sd of 88, 89, 90 (ddof 1)
    assert one["n runs"] == 3 and one["epoch"] == "last"
    assert one["ours - paper (points)"] == pytest.approx(89.0 - 89.128)
    post = t[t["target"] == exp.POSTERIOR].iloc[0]
    assert post["paper (%)"] == pytest.approx(89.818)
    assert len(t) == 2
    with pytest.raises(ValueError, match="accuracy"):
        exp.table1_aligned(_two_arm_runs().drop(columns="accuracy"))


def test_headline_figures_by_hand():
    from scipy import stats

    h = exp.headline_figures(_two_arm_runs())
    d = np.array([0.02, 0.01, 0.01])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    fig = h["gmm10 posterior - one-hot"]
    assert fig.value == pytest.approx(d.mean()) and fig.unit == "points"
    assert fig.low == pytest.approx(d.mean() - half) and fig.high == pytest.approx(d.mean() + half)
    assert h["gmm10 one-hot variance (%^2)"].value == pytest.approx(2 / 3)  # 88, 89, 90
    assert h["gmm10 posterior variance (%^2)"].value == pytest.approx(2 / 9)  # 90, 90, 91


def test_selection_dry_run_and_grid():
    assert presets.tables(exp.NAME) == {"1": ["tasks"], "tempered": ["temperatures"]}
    only1 = presets.get(exp.NAME, "default", select="table=1")
    assert only1["temperatures"] is None
    assert [c["group"] for c in exp.grid_cells(only1)] == ["table1", "table1"]
    assert exp.skipped_tables(only1) == [("tempered posteriors (beyond the paper)",
                                          "not selected")]
    cells = exp.grid_cells(presets.get(exp.NAME, "default"))
    assert len(cells) == 4 and all(c["workers"] == 2 for c in cells)
    assert "workers" not in exp.grid_cells(presets.get(exp.NAME, "smoke"))[0]
    dry = presets.get(exp.NAME, "paper", dry_run=True)
    assert (dry["n_train"], dry["n_test"], dry["runs"]) == (16, 32, 1)
    assert dry["recipe"]["epochs"] == 1 and dry["recipe"]["batch_size"] == 8
    assert dry["torch_threads"] == 1 and dry["grid_resolution"] == 40


# ----------------------------------------------------------------------------- plan (kdlib plan)


def _stub_cell(**cell):
    return {"stub": 1}


def test_plan_runs_one_stacked_run_per_cell(tmp_path, monkeypatch):
    from kdlib import sweep
    from kdlib.plan import gpu_hours, plan_frame, run_cost

    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    cfg = presets.get(exp.NAME, "default")
    runs = exp.plan_runs(cfg)
    # 2 tasks x (table1: 2 arms, tempered: 4 temperatures) x 5 runs, 60 epochs of 10,000
    assert [(r.dataset, r.members, r.epochs, r.images) for r in runs] == [
        ("gmm10", 10, 60, 10_000), ("gmm10", 20, 60, 10_000),
        ("gmm100", 10, 60, 10_000), ("gmm100", 20, 60, 10_000)]
    assert {(r.role, r.arch, r.teacher, r.done) for r in runs} == {("student", "mlp", None,
                                                                    False)}
    # 2 -> 64 -> 64 -> 10 MLP: 2*64 + 64*64 + 64*10 MACs per point, 3x for training
    assert run_cost(runs[0]) == 60 * 10_000 * 10 * 3 * (2 * 64 + 64 * 64 + 64 * 10)
    assert plan_frame(runs)["gpu_hours"].sum() == pytest.approx(
        sum(gpu_hours(run_cost(r)) for r in runs))
    # keys: device/threads/workers do not change the weights; temperatures only the
    # tempered group's
    other = dict(cfg, device="cuda", workers=1, torch_threads=4,
                 temperatures=[0.0, 0.5])
    keys, other_keys = ([r.key for r in exp.plan_runs(c)] for c in (cfg, other))
    assert other_keys[0] == keys[0] and other_keys[1] != keys[1]
    assert len(set(keys)) == 4
    # a selection of Table 1 drops the tempered cells
    assert len(exp.plan_runs(presets.get(exp.NAME, "default", select="table=1"))) == 2
    assert not (tmp_path / "runs").exists()  # planning writes nothing
    # done: the store of the scale holds the cell (namespace NAME)
    cells = exp.grid_cells(cfg)
    sweep.run(_stub_cell, cells[2:3], tmp_path / "runs" / "default" / f"{exp.NAME}.sqlite",
              namespace=exp.NAME, progress=False)
    assert [r.done for r in exp.plan_runs(cfg)] == [False, False, True, False]
    assert [r.done for r in exp.plan_runs(presets.get(exp.NAME, "paper"))] == [False] * 4
