import math

import pandas as pd
import pytest
import torch

from kdlib import presets
from kdlib.experiments import gmm_oracle as go
from kdlib.recipe import recipe_from_spec

# ------------------------------------------------------------------ true calibration error


def test_kl_and_tv_closed_forms():
    p = torch.tensor([[0.5, 0.5]])
    z = torch.tensor([[math.log(3.0), 0.0]])  # q = (0.75, 0.25)
    assert go.expected_kl_to_posterior(p, z) == pytest.approx(0.5 * math.log(4 / 3))
    assert go.expected_tv_to_posterior(p, z) == pytest.approx(0.25)
    # the same q from doubled logits at T = 2
    assert go.expected_kl_to_posterior(p, 2 * z, 2.0) == pytest.approx(0.5 * math.log(4 / 3))
    # a one-hot posterior: 0 log 0 = 0, KL = -log q_y
    p1 = torch.tensor([[1.0, 0.0, 0.0]])
    assert go.expected_kl_to_posterior(p1, torch.zeros(1, 3)) == pytest.approx(math.log(3))
    assert go.expected_tv_to_posterior(p1, torch.zeros(1, 3)) == pytest.approx(2 / 3)


def test_kl_and_tv_vanish_at_the_posterior_and_average_rows():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], dtype=torch.float64)
    assert go.expected_kl_to_posterior(p, p.log()) == pytest.approx(0.0, abs=1e-12)
    assert go.expected_tv_to_posterior(p, p.log() + 5.0) == pytest.approx(0.0, abs=1e-12)
    # row 1 exact, row 2 against uniform: mean of 0 and KL((.25,.25,.5) || uniform)
    z = torch.stack([p[0].log(), torch.zeros(3, dtype=torch.float64)])
    kl_row2 = 0.5 * math.log(0.25 * 3) + 0.5 * math.log(0.5 * 3)
    assert go.expected_kl_to_posterior(p, z) == pytest.approx(kl_row2 / 2)
    tv_row2 = 0.5 * (2 * abs(0.25 - 1 / 3) + abs(0.5 - 1 / 3))
    assert go.expected_tv_to_posterior(p, z) == pytest.approx(tv_row2 / 2)
    # a higher temperature flattens q away from a peaked posterior: KL grows
    assert (go.expected_kl_to_posterior(p, p.log(), 4.0)
            > go.expected_kl_to_posterior(p, p.log(), 2.0) > 0)


def test_kl_and_tv_reject_bad_inputs():
    p = torch.tensor([[0.5, 0.5]])
    with pytest.raises(ValueError, match="shape"):
        go.expected_kl_to_posterior(p, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="probabilities"):
        go.expected_tv_to_posterior(torch.tensor([[0.9, 0.9]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="probabilities"):
        go.expected_kl_to_posterior(torch.tensor([[1.5, -0.5]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="temperature"):
        go.expected_kl_to_posterior(p, torch.zeros(1, 2), 0.0)
    with pytest.raises(TypeError, match="floating"):
        go.expected_kl_to_posterior(torch.tensor([[1, 0]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="finite"):
        go.expected_kl_to_posterior(p, torch.tensor([[float("nan"), 0.0]]))


def test_teacher_quality_per_temperature():
    p = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=torch.float64)
    z = p.log()
    labels = torch.tensor([0, 0])
    q = go.teacher_quality(z, labels, p, [1.0, 2.0])
    assert [r["temperature"] for r in q] == [1.0, 2.0]
    assert q[0]["accuracy"] == 0.5 and q[1]["accuracy"] == 0.5
    assert q[0]["kl_to_posterior"] == pytest.approx(0.0, abs=1e-6)
    assert q[1]["kl_to_posterior"] == pytest.approx(go.expected_kl_to_posterior(p, z, 2.0))
    # ECE with 15 bins: confidences 0.8 (correct) and 0.7 (wrong) in different bins
    assert q[0]["ece_at_tau"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.7, rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        go.teacher_quality(z, labels, p, [])


def test_teacher_label():
    assert go.teacher_label([64, 64], 50) == "mlp64x64-50ep"
    assert go.teacher_label((16,), 10) == "mlp16-10ep"


# ------------------------------------------------------------------ tables


def _records():
    """Two teachers x three temperatures x two seeds; student accuracy falls with the
    KL to the posterior, while ECE is ordered the other way round within one teacher."""
    recs = []
    for name, base in (("mlp16-10ep", 0.4), ("mlp64-50ep", 0.1)):
        teachers, students = [], []
        for seed in (0, 1):
            for t in (1.0, 2.0, 4.0):
                kl = base * t + 0.001 * seed
                teachers.append({"seed": seed, "temperature": t, "accuracy": 0.8,
                                 "ece_at_tau": 0.3 / t + 0.5 * base, "nll_at_tau": 1.0,
                                 "kl_to_posterior": kl, "tv_to_posterior": kl / 2})
                for loss in ("kd", "dist"):
                    acc = 0.9 - kl if loss == "kd" else 0.8 + 0.01 * seed
                    students.append({"seed": seed, "loss": loss, "temperature": t,
                                     "accuracy": acc, "ece": 0.0, "nll": 0.0,
                                     "agreement": 1.0, "kl_teacher_student": 0.0})
        recs.append({"data": {"name": "gmm10"}, "hidden": [16], "epochs": 10,
                     "teacher": name, "teachers": teachers, "students": students})
    return recs


def test_results_frame_joins_teacher_quality():
    df = go.results_frame(_records())
    assert len(df) == 2 * 2 * 3 * 2
    r = df[(df["teacher"] == "mlp64-50ep") & (df["seed"] == 1) & (df["loss"] == "kd")
           & (df["temperature"] == 4.0)].iloc[0]
    assert r["kl_to_posterior"] == pytest.approx(0.401)
    assert r["accuracy"] == pytest.approx(0.9 - 0.401)
    assert r["teacher_accuracy"] == 0.8 and r["cell"] == "mlp64-50ep@4"
    assert len(go.teachers_frame(_records())) == 12


def test_proxy_correlations_and_picks():
    df = go.results_frame(_records())
    c = go.proxy_correlations(df, n_boot=50).set_index(["loss", "x", "y"])
    kd_kl = c.loc[("kd", "kl_to_posterior", "accuracy")]
    assert kd_kl["rho"] == -1.0 and kd_kl["hi"] == -1.0 and kd_kl["n_cells"] == 6
    assert c.loc[("kd", "tv_to_posterior", "accuracy")]["rho"] == -1.0
    # ECE: cells ordered 0.35, 0.2, 0.125 (mlp16) and 0.35, 0.2, 0.125 shifted by -0.15
    ece_rho = c.loc[("kd", "teacher_ece_at_tau", "accuracy")]["rho"]
    assert -1.0 < ece_rho < 1.0
    assert math.isnan(c.loc[("dist", "kl_to_posterior", "accuracy")]["rho"])  # constant
    assert ("teachers", "teacher_ece_at_tau", "kl_to_posterior") in c.index
    assert math.isnan(c.loc[("kd", "teacher_accuracy", "accuracy")]["rho"])  # one accuracy
    gain = go.proxy_correlations(df, ys=("gain_over_teacher",), n_boot=20).set_index(
        ["loss", "x", "y"])
    assert gain.loc[("kd", "kl_to_posterior", "gain_over_teacher")]["rho"] == -1.0
    assert df["gain_over_teacher"].iloc[0] == pytest.approx(df["accuracy"].iloc[0] - 0.8)
    picks = go.best_teachers(df).set_index(["loss", "criterion"])
    assert picks.loc[("kd", "best_student"), "teacher"] == "mlp64-50ep"
    assert picks.loc[("kd", "best_student"), "temperature"] == 1.0
    assert picks.loc[("kd", "lowest_kl"), "student_accuracy"] == pytest.approx(0.9 - 0.1005)
    assert picks.loc[("kd", "lowest_ece"), "temperature"] == 4.0
    with pytest.raises(ValueError, match="columns"):
        go.proxy_correlations(df.drop(columns=["cell"]))


def test_cell_table_sorted_by_kl():
    t = go.cell_table(go.results_frame(_records()))
    kd = t[t["loss"] == "kd"]
    assert list(kd["kl_to_posterior"]) == sorted(kd["kl_to_posterior"])
    assert len(t) == 12


# ------------------------------------------------------------------ presets and the cell


@pytest.mark.parametrize("scale", presets.SCALES)
def test_presets_are_valid(scale):
    cfg = presets.get(go.NAME, scale)
    for e in cfg["teacher_epochs"]:
        recipe_from_spec({**cfg["teacher_recipe"], "epochs": e})
    recipe_from_spec(cfg["student_recipe"])
    assert all(task["name"].startswith("gmm") for task in cfg["tasks"])
    assert set(cfg["losses"]) <= {"kd", "dist"}
    assert len(go.grid(cfg)) == (len(cfg["tasks"]) * len(cfg["teacher_hidden"])
                                 * len(cfg["teacher_epochs"]))
    if scale != "smoke":
        assert len(cfg["seeds"]) >= 3


def test_run_teacher_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    data = {"name": "gmm10", "n_train": 256, "n_test": 200}
    out = go.run_teacher(data=data, hidden=[8], epochs=1,
                         teacher_recipe={"batch_size": 64, "lr": 0.03}, seeds=[0, 1],
                         student_hidden=[8], student_recipe={"epochs": 1, "batch_size": 64},
                         losses=["kd", "dist"], temperatures=[1.0, 4.0])
    assert out["teacher"] == "mlp8-1ep"
    assert len(out["teachers"]) == 4 and len(out["students"]) == 8
    for seed in (0, 1):
        t1, t4 = [r for r in out["teachers"] if r["seed"] == seed]
        assert t1["accuracy"] == t4["accuracy"]
        assert 0 <= t1["tv_to_posterior"] <= 1 and t1["kl_to_posterior"] > 0
    ref = go.oracle_reference(data)
    assert 0.5 < ref["bayes_accuracy"] <= 1 and 0 <= ref["posterior_ece"] < 0.2
    df = go.results_frame([{"data": data, "hidden": [8], "epochs": 1, **out}])
    assert df["kl_to_posterior"].notna().all()
    with pytest.raises(ValueError, match="posterior"):
        go.run_teacher(data={"name": "digits", "subset_train": 50, "subset_test": 20},
                       hidden=[8], epochs=1, teacher_recipe={}, seeds=[0],
                       student_hidden=[8], student_recipe={"epochs": 1}, losses=["kd"],
                       temperatures=[1.0])


def test_oracle_scatter_draws_each_loss():
    import matplotlib

    matplotlib.use("Agg")
    from kdlib.plots import beyond

    cells = go.cell_table(go.results_frame(_records()))
    fig = beyond.oracle_scatter(cells)
    assert len(fig.axes) == 4
    assert len(fig.axes[0].collections) == 3  # one scatter per temperature
    assert isinstance(pd.DataFrame(cells), pd.DataFrame)


def test_claims_from_proxy_rows():
    def row(loss, x, y, rho, lo, hi, n=3):
        return {"task": "gmm", "loss": loss, "x": x, "y": y, "rho": rho, "lo": lo, "hi": hi,
                "n_cells": 9, "n_seeds": n}
    corr = pd.DataFrame([
        row("teachers", "teacher_ece_at_tau", "kl_to_posterior", 0.95, 0.9, 0.97),
        row("teachers", "teacher_ece_at_tau", "tv_to_posterior", 0.5, -0.1, 0.8),
        row("kd", "teacher_ece_at_tau", "accuracy", 0.3, 0.1, 0.5),
        row("kd", "kl_to_posterior", "accuracy", -0.3, -0.4, -0.2),
        row("dist", "teacher_ece_at_tau", "accuracy", -0.02, -0.2, 0.03)])
    t = go.claims(corr).set_index("claim")
    assert list(t.index) == ["gmm: ECE ranks teachers as the true KL does",
                             "gmm: ECE ranks teachers as the true TV does",
                             "gmm: DIST insensitive to teacher ECE",
                             "gmm: kd falls as teacher ECE rises",
                             "gmm: kd falls as the teacher's true KL rises"]
    assert t["verdict"].tolist() == ["holds", "inconclusive", "holds", "does not hold",
                                     "holds"]
    assert t.loc["gmm: ECE ranks teachers as the true KL does", "ours"] == "95%"
    assert set(go.claims(corr.assign(n_seeds=2))["verdict"]) == {"inconclusive"}
    with pytest.raises(ValueError, match="rho"):
        go.claims(corr.drop(columns="rho"))


def test_teachers_train_on_the_closed_form_mlp_path(tmp_path, monkeypatch):
    # the cell's teacher is kdlib.train.train's run up to float rounding: same init,
    # batches, loss and SGD (its test accuracy is the teacher_quality accuracy)
    from kdlib.experiments.common import load_data
    from kdlib.train import make_model, predict_logits, train

    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    data = {"name": "gmm10", "n_train": 256, "n_test": 200}
    rec = {"batch_size": 64, "lr": 0.03}
    out = go.run_teacher(data=data, hidden=[8], epochs=2, teacher_recipe=rec, seeds=[1],
                         student_hidden=[8], student_recipe={"epochs": 1, "batch_size": 64},
                         losses=["kd"], temperatures=[2.0], workers=1, stack_mode="loop")
    ds = load_data(data)
    ref = make_model("mlp", ds, seed=1, hidden=(8,))
    train(ref, ds, recipe_from_spec({**rec, "epochs": 2}), seed=1, progress=False,
          eval_every=0)
    acc = float((predict_logits(ref, ds).argmax(1) == ds.test_y).double().mean())
    assert out["teachers"][0]["accuracy"] == pytest.approx(acc, abs=1 / 200 + 1e-9)


def test_dry_run_hook_threads_and_headline():
    cfg = presets.get(go.NAME, "paper", dry_run=True)
    assert cfg["teacher_epochs"] == [1, 2, 3] and cfg["teacher_recipe"]["batch_size"] == 8
    assert cfg["student_recipe"]["epochs"] == 1 and cfg["seeds"] == [0]
    assert [t["n_train"] for t in cfg["tasks"]] == [16, 16]
    assert cfg["torch_threads"] == 1 and cfg["workers"] == 1
    d = presets.get(go.NAME, "default")
    assert d["torch_threads"] == 1 and d["stack_mode"] == "vmap"
    assert all(c["stack_mode"] == "vmap" and c["workers"] == 2 for c in go.grid(d))
    assert go.skipped_tables(cfg) == [] and go.skipped_tables({"tasks": []})
    assert [t["name"] for t in presets.get(go.NAME, "paper", select="pair=gmm100")["tasks"]] \
        == ["gmm100"]
    corr = pd.DataFrame([
        {"task": "gmm10", "loss": "kd", "x": "teacher_ece_at_tau", "y": "accuracy",
         "rho": -0.5, "lo": -0.8, "hi": -0.1, "n_seeds": 3},
        {"task": "gmm10", "loss": "kd", "x": "kl_to_posterior", "y": "accuracy",
         "rho": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_seeds": 3}])
    h = go.headline_figures(corr, "gmm10", ["kd", "dist"])
    assert h["gmm10 spearman acc-ECE kd"].text() == "-0.500 [-0.800, -0.100]"
    assert h["gmm10 spearman acc-KL kd"] == "n/a" and h["gmm10 spearman acc-ECE dist"] == "n/a"


# ------------------------------------------------------------------ plan (kdlib plan)


def _stub_cell(**cell):
    return {"stub": 1}


def test_plan_runs_teachers_and_students_per_cell(tmp_path, monkeypatch):
    from kdlib import sweep
    from kdlib.plan import run_cost

    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    cfg = presets.get(go.NAME, "default")
    runs = go.plan_runs(cfg)
    teachers = [r for r in runs if r.role == "teacher"]
    students = [r for r in runs if r.role == "student"]
    # 1 task x 3 widths x 3 lengths = 9 cells: one teacher stack of 3 seeds each, and per
    # seed one student stack of 2 losses x 5 temperatures
    assert (len(teachers), len(students)) == (9, 27)
    assert {r.members for r in teachers} == {3} and {r.members for r in students} == {10}
    assert [r.epochs for r in teachers[:3]] == [10, 50, 200]
    assert {(r.epochs, r.images, r.teacher) for r in students} == {(30, 2000, "mlp")}
    assert teachers[0].model_kwargs == {"in_features": 2, "hidden": [16]}
    # a 2 -> 16 -> 10 teacher: 3 seeds x 3 x (2*16 + 16*10) MACs per point, 10 epochs
    assert run_cost(teachers[0]) == 10 * 2000 * 3 * 3 * (2 * 16 + 16 * 10)
    assert len({r.key for r in runs}) == 36
    # workers and stack_mode change float rounding only: same keys
    same = go.plan_runs(dict(cfg, workers=1, stack_mode="loop"))
    assert [r.key for r in same] == [r.key for r in runs]
    assert go.plan_runs(dict(cfg, tasks=None)) == []
    assert not (tmp_path / "runs").exists()  # planning writes nothing
    # done: the cell's teachers and students, from the store of the scale
    sweep.run(_stub_cell, go.grid(cfg)[:1], tmp_path / "runs" / "default" / f"{go.NAME}.sqlite",
              namespace=go.NAME, progress=False)
    done = [r for r in go.plan_runs(cfg) if r.done]
    assert [r.role for r in done] == ["teacher"] + ["student"] * 3
    assert all("mlp16-10ep" in r.label for r in done)
