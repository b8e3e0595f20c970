import numpy as np
import pandas as pd
import pytest
import torch

from kdlib import presets
from kdlib.experiments import online_distillation as od
from kdlib.recipe import Recipe, recipe_from_spec

# ------------------------------------------------------------------ stages


def test_stage_recipe_slices_one_schedule():
    full = Recipe(epochs=30, lr=0.05, milestones=(19, 22, 26), checkpoint_every=5)
    s = od.stage_recipe(full, 15, 20)
    assert (s.epochs, s.lr, s.milestones, s.checkpoint_every) == (5, 0.05, (4,), 0)
    s = od.stage_recipe(full, 20, 25)
    assert s.epochs == 5 and s.lr == pytest.approx(0.005) and s.milestones == (2,)
    s = od.stage_recipe(full, 25, 30)
    assert s.lr == pytest.approx(0.0005) and s.milestones == (1,)
    # the stages together reproduce the learning rate of every epoch
    for start in range(0, 30, 5):
        st = od.stage_recipe(full, start, start + 5)
        for e in range(5):
            assert st.lr_at(e) == pytest.approx(full.lr_at(start + e), rel=1e-12)
    assert (s.batch_size, s.momentum, s.weight_decay, s.gamma) == (64, 0.9, 5e-4, 0.1)


def test_stage_recipe_rejects_bad_slices():
    full = Recipe(epochs=10)
    with pytest.raises(ValueError, match="stop"):
        od.stage_recipe(full, 5, 5)
    with pytest.raises(ValueError, match="stop"):
        od.stage_recipe(full, 5, 11)
    with pytest.raises(TypeError, match="Recipe"):
        od.stage_recipe({"epochs": 10}, 0, 5)


def test_teacher_schedule_modes():
    ckpts = [10, 5, 15]
    assert od.teacher_schedule("online", ckpts) == [(5, 5), (10, 10), (15, 15)]
    assert od.teacher_schedule("final", ckpts) == [(5, 15), (10, 15), (15, 15)]
    assert od.teacher_schedule("early", ckpts, early_epoch=5) == [(5, 5), (10, 5), (15, 5)]
    with pytest.raises(ValueError, match="early_epoch"):
        od.teacher_schedule("early", ckpts, early_epoch=7)
    with pytest.raises(ValueError, match="mode"):
        od.teacher_schedule("late", ckpts)
    with pytest.raises(ValueError, match="at least one"):
        od.teacher_schedule("online", [])


def test_stage_seed_is_deterministic_and_distinct():
    seeds = [od.stage_seed(3, s) for s in range(6)]
    assert len(set(seeds)) == 6 and seeds == [od.stage_seed(3, s) for s in range(6)]
    assert od.stage_seed(4, 0) != od.stage_seed(3, 0)
    with pytest.raises(ValueError, match="seed"):
        od.stage_seed(-1, 0)


# ------------------------------------------------------------------ the staged loop


def _tiny():
    from kdlib.data import load_dataset

    return load_dataset("gmm10", n_train=256, n_test=128)


def _mlp(data, seed):
    from kdlib.train import make_model

    return make_model("mlp", data, seed=seed, hidden=(8,))


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_one_stage_equals_distill_stacked():
    from kdlib.stacked import distill_stacked

    data = _tiny()
    teacher = _mlp(data, 9).eval()
    specs = [{"loss": "kd", "temperature": 2.0}, {"loss": "dist", "temperature": 2.0}]
    recipe = Recipe(epochs=2, batch_size=64, lr=0.05)
    a = [_mlp(data, 0) for _ in specs]
    b = [_mlp(data, 0) for _ in specs]
    staged = od.distill_in_stages(a, [(2, teacher)], data, specs, recipe, seed=1)
    direct = distill_stacked(b, teacher, data, specs, recipe, seed=od.stage_seed(1, 0),
                             progress=False)
    assert len(staged) == 1 and len(staged[0]) == 2
    for x, y in zip(a, b):
        torch.testing.assert_close(_flat(x), _flat(y))
    assert staged[0][0]["metrics"]["accuracy"] == direct[0]["metrics"]["accuracy"]


def test_stages_continue_the_same_students():
    data = _tiny()
    t1, t2 = _mlp(data, 8).eval(), _mlp(data, 9).eval()
    specs = [{"loss": "kd", "temperature": 1.0}]
    recipe = Recipe(epochs=2, batch_size=64, lr=0.05)
    two = [_mlp(data, 0)]
    stages = od.distill_in_stages(two, [(1, t1), (2, t2)], data, specs, recipe, seed=0)
    assert [st[0]["config"]["recipe"]["epochs"] for st in stages] == [1, 1]
    # the first stage alone, continued by hand with the second teacher, gives the same
    from kdlib.stacked import distill_stacked

    # students, momentum included (carry): without it the second stage differs
    one, carry = [_mlp(data, 0)], {}
    distill_stacked(one, t1, data, specs, od.stage_recipe(recipe, 0, 1),
                    seed=od.stage_seed(0, 0), progress=False, carry=carry)
    after_first = _flat(one[0]).clone()
    restarted = [_mlp(data, 0)]
    restarted[0].load_state_dict(one[0].state_dict())
    distill_stacked(one, t2, data, specs, od.stage_recipe(recipe, 1, 2),
                    seed=od.stage_seed(0, 1), progress=False, carry=carry)
    distill_stacked(restarted, t2, data, specs, od.stage_recipe(recipe, 1, 2),
                    seed=od.stage_seed(0, 1), progress=False)
    torch.testing.assert_close(_flat(two[0]), _flat(one[0]))
    assert float((_flat(restarted[0]) - _flat(one[0])).abs().max()) > 1e-4
    assert not torch.equal(_flat(two[0]), after_first)
    # each stage's metrics are measured against that stage's teacher
    from kdlib.train import evaluate

    assert stages[0][0]["metrics"]["teacher_accuracy"] == pytest.approx(
        evaluate(t1, data)["accuracy"])
    assert stages[1][0]["metrics"]["teacher_accuracy"] == pytest.approx(
        evaluate(t2, data)["accuracy"])


def test_distill_in_stages_checks_the_stops():
    data = _tiny()
    t = _mlp(data, 9).eval()
    specs = [{"loss": "kd", "temperature": 1.0}]
    recipe = Recipe(epochs=2)
    with pytest.raises(ValueError, match="end at recipe.epochs"):
        od.distill_in_stages([_mlp(data, 0)], [(1, t)], data, specs, recipe)
    with pytest.raises(ValueError, match="increase strictly"):
        od.distill_in_stages([_mlp(data, 0)], [(2, t), (2, t)], data, specs, recipe)
    with pytest.raises(ValueError, match="at least one"):
        od.distill_in_stages([_mlp(data, 0)], [], data, specs, recipe)


# ------------------------------------------------------------------ tables


def _df():
    rows = []
    for seed in (0, 1):
        for mode, bonus in (("online", 0.02), ("final", 0.0), ("early", -0.01)):
            rows.append({"seed": seed, "mode": mode, "loss": "kd", "temperature": 4.0,
                         "accuracy": 0.9 + bonus + 0.01 * seed,
                         "stage_stop": [5, 10], "stage_teacher_epoch": [5, 10],
                         "stage_accuracy": [0.5, 0.9], "stage_teacher_accuracy": [0.8, 0.95],
                         "stage_teacher_ece_at_tau": [0.1, 0.3 + bonus]})
    return pd.DataFrame(od.results_frame([{"seed": s, "rows": [r for r in rows
                                                               if r["seed"] == s]}
                                          for s in (0, 1)]))


def test_results_and_summary_tables():
    df = _df()
    assert "seed" in df.columns and len(df) == 6
    online = df[(df["mode"] == "online") & (df["seed"] == 0)].iloc[0]
    assert online["mean_teacher_ece_at_tau"] == pytest.approx((0.1 + 0.32) / 2)
    s = od.summary_table(df).set_index("mode")
    assert s.loc["online", "accuracy"] == pytest.approx(0.925)
    assert s.loc["online", "gain_vs_final"] == pytest.approx(0.02)
    assert s.loc["early", "gain_vs_final"] == pytest.approx(-0.01)
    assert s.loc["final", "gain_vs_final"] == 0.0
    assert s.loc["online", "accuracy_sd"] == pytest.approx(np.std([0.92, 0.93], ddof=1))
    assert s.loc["online", "gain_sd"] == pytest.approx(0.0, abs=1e-12)
    long = od.stages_frame(df)
    assert len(long) == 12 and set(long["stop_epoch"]) == {5, 10}
    with pytest.raises(ValueError, match="columns"):
        od.summary_table(df.drop(columns=["mode"]))


@pytest.mark.parametrize("scale", presets.SCALES)
def test_presets_are_valid(scale):
    cfg = presets.get(od.NAME, scale)
    teacher = recipe_from_spec(cfg["teacher_recipe"])
    student = recipe_from_spec(cfg["student_recipe"])
    assert teacher.checkpoint_every > 0
    assert student.epochs == teacher.epochs  # stages are matched epoch for epoch
    ckpts = range(teacher.checkpoint_every, teacher.epochs + 1, teacher.checkpoint_every)
    assert cfg["early_epoch"] in ckpts and cfg["early_epoch"] < teacher.epochs
    assert set(cfg["modes"]) <= set(od.MODES)
    assert len(od.grid(cfg)) == len(cfg["seeds"])


def test_run_seed_and_trajectory_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    data = {"name": "gmm10", "n_train": 256, "n_test": 128}
    teacher_recipe = {"epochs": 2, "batch_size": 64, "lr": 0.05, "checkpoint_every": 1}
    out = od.run_seed(data=data, teacher="mlp", teacher_recipe=teacher_recipe, teacher_seed=0,
                      student="mlp", student_recipe={"epochs": 2, "batch_size": 64},
                      early_epoch=1, modes=["online", "final", "early"], losses=["kd"],
                      temperatures=[2.0], seed=0)
    rows = {r["mode"]: r for r in out["rows"]}
    assert rows["online"]["stage_teacher_epoch"] == [1, 2]
    assert rows["final"]["stage_teacher_epoch"] == [2, 2]
    assert rows["early"]["stage_teacher_epoch"] == [1, 1]
    # the online teacher of the last stage is the final teacher
    assert rows["online"]["stage_teacher_ece_at_tau"][1] == pytest.approx(
        rows["final"]["stage_teacher_ece_at_tau"][0])
    assert rows["early"]["stage_teacher_ece_at_tau"][0] == pytest.approx(
        rows["online"]["stage_teacher_ece_at_tau"][0])
    assert rows["final"]["stage_teacher_ece_at_tau"][0] == rows["final"][
        "stage_teacher_ece_at_tau"][1]
    assert rows["online"]["accuracy"] == rows["online"]["stage_accuracy"][-1]

    traj = od.teacher_trajectory(data, "mlp", teacher_recipe, 0, [1.0, 2.0])
    assert sorted(set(traj["epoch"])) == [1, 2] and len(traj) == 4
    last = traj[(traj["epoch"] == 2) & (traj["temperature"] == 2.0)].iloc[0]
    assert last["ece_at_tau"] == pytest.approx(rows["final"]["teacher_ece_at_tau"])
    assert last["accuracy"] == pytest.approx(rows["final"]["teacher_accuracy"])

    with pytest.raises(ValueError, match="must be equal"):
        od.run_seed(data=data, teacher="mlp", teacher_recipe=teacher_recipe, teacher_seed=0,
                    student="mlp", student_recipe={"epochs": 3}, early_epoch=1,
                    modes=["online"], losses=["kd"], temperatures=[2.0], seed=0)
    with pytest.raises(ValueError, match="checkpoint_every"):
        od.teacher_trajectory(data, "mlp", {"epochs": 2}, 0, [1.0])


def test_plots_draw_the_tables():
    import matplotlib

    matplotlib.use("Agg")
    from kdlib.plots import beyond

    df = _df()
    fig = beyond.online_accuracy(od.summary_table(df))
    assert len(fig.axes[0].patches) == 3
    fig = beyond.online_stages(od.stages_frame(df))
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3
    traj = pd.DataFrame({"epoch": [5, 5, 10, 10], "temperature": [1.0, 4.0, 1.0, 4.0],
                         "accuracy": [0.8, 0.8, 0.9, 0.9], "ece_at_tau": [0.1, 0.4, 0.05, 0.5]})
    fig = beyond.teacher_trajectory(traj, early_epoch=5)
    assert len(fig.axes[1].lines) == 2 + 1  # two temperatures and the early-stop line


def test_claims_paired_by_seed():
    rows = []
    for seed in range(3):
        for mode, bonus in (("online", 0.02 + 0.001 * seed), ("final", 0.0),
                            ("early", -0.01 - 0.002 * seed)):
            rows.append({"seed": seed, "mode": mode, "loss": "kd", "temperature": 4.0,
                         "accuracy": 0.9 + bonus + 0.01 * seed})
    t = od.claims(pd.DataFrame(rows))
    # online 2.0-2.2 points above final in every seed: holds; early below: does not hold
    assert t["claim"].tolist() == ["online teacher's student > final's, kd T=4",
                                   "early teacher's student > final's, kd T=4"]
    assert t["verdict"].tolist() == ["holds", "does not hold"]
    assert t["ours"].tolist() == ["2.10 pp", "-1.20 pp"]
    assert t["n"].tolist() == [3, 3]
    # the seed effect (0.01 * seed) cancels in the pairing: two seeds are too few
    assert set(od.claims(_df())["verdict"]) == {"inconclusive"}
    assert od.claims(_df())["ours"].tolist() == ["2.00 pp", "-1.00 pp"]
    with pytest.raises(ValueError, match="columns"):
        od.claims(pd.DataFrame(rows).drop(columns="mode"))


def test_paper_preset_uses_the_200_epoch_schedule_and_dry_run_maps_it():
    from kdlib import presets

    p = presets.get(od.NAME, "paper")
    t, s = recipe_from_spec(p["teacher_recipe"]), recipe_from_spec(p["student_recipe"])
    assert (t.epochs, t.milestones, t.checkpoint_every) == (200, (100, 150, 180), 10)
    assert s.epochs == 200 and s.milestones == t.milestones and p["early_epoch"] == 140
    # the early teacher is a stage checkpoint, after the first decay
    assert p["early_epoch"] % t.checkpoint_every == 0 and p["early_epoch"] > t.milestones[0]
    d = presets.get(od.NAME, "default")
    assert recipe_from_spec(d["teacher_recipe"]).milestones == (10, 15, 18)
    assert d["early_epoch"] == 14
    dry = presets.get(od.NAME, "paper", dry_run=True)
    td, sd = recipe_from_spec(dry["teacher_recipe"]), recipe_from_spec(dry["student_recipe"])
    assert (td.epochs, td.checkpoint_every, sd.epochs, dry["early_epoch"]) == (2, 1, 2, 1)
    assert od.teacher_schedule("early", [1, 2], dry["early_epoch"]) == [(1, 1), (2, 1)]


def test_skipped_tables(tmp_path, monkeypatch):
    from kdlib import presets

    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    why = od.skipped_tables(presets.get(od.NAME, "paper"))
    assert [t for t, _ in why] == ["online distillation"] and "cifar-100" in why[0][1]
    assert od.skipped_tables(presets.get(od.NAME, "default")) == []


def test_headline_figures_hand_values():
    from kdlib.headline import headline_bundle

    rows = []
    for seed, (on, fi, ea) in enumerate([(0.80, 0.78, 0.79), (0.82, 0.79, 0.78)]):
        for mode, acc in (("online", on), ("final", fi), ("early", ea)):
            rows.append({"seed": seed, "mode": mode, "loss": "kd", "temperature": 4.0,
                         "accuracy": acc})
    traj = pd.DataFrame([{"epoch": 20, "temperature": 1.0, "ece_at_tau": 0.031},
                         {"epoch": 10, "temperature": 1.0, "ece_at_tau": 0.02}])
    figs = od.headline_figures(pd.DataFrame(rows), traj)
    on = figs["online - final teacher's student, kd T=4"]
    # +2 and +3 points: mean 2.5, t-interval 2.5 +- 12.706 * 0.7071 / sqrt(2)
    assert on.value == pytest.approx(0.025)
    assert on.low == pytest.approx(0.025 - 12.706204736 * 0.0070710678 / 2 ** 0.5)
    assert figs["early - final teacher's student, kd T=4"].value == pytest.approx(0.0)
    assert figs["final teacher ECE at T=1"].value == pytest.approx(0.031)
    headline_bundle(**figs)
