"""A stacked student must behave as the same student trained alone."""

import copy
import dataclasses

import pytest

from kdlib.recipe import Recipe
from kdlib.stacked import StackedModels, distill_stacked, train_stacked
from kdlib.train import distill, make_model, train


@pytest.fixture(scope="module")
def digits64(digits_small):
    """float64 digits: float32 rounding differences between a grouped (stacked) conv and a
    plain conv grow chaotically over SGD steps; float64 shows the mechanism itself is exact."""
    return dataclasses.replace(digits_small, train_x=digits_small.train_x.double(),
                               test_x=digits_small.test_x.double())


@pytest.fixture(scope="module")
def teacher(digits_small):
    t = make_model("resnet8", digits_small, seed=0)
    train(t, digits_small, Recipe(epochs=3, batch_size=64, lr=0.05), progress=False, eval_every=0)
    return t


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_stacked_students_match_students_trained_alone(mode, digits64, teacher):
    # 400 images / batch 64 = 7 steps per epoch: 8 epochs = 56 steps
    recipe = Recipe(epochs=8, batch_size=64, lr=0.05, milestones=(6,))
    specs = [{"loss": "kd", "temperature": 4.0}, {"loss": "dist", "temperature": 4.0},
             {"loss": "kd", "temperature": 1.0}]
    t64 = copy.deepcopy(teacher).double()
    stacked_losses = []
    students = [make_model("resnet8", digits64, seed=7).double() for _ in specs]
    records = distill_stacked(students, t64, digits64, specs, recipe, seed=3, mode=mode,
                              progress=False, step_callback=lambda s, v: stacked_losses.append(v))
    assert len(stacked_losses) == 56
    for i, spec in enumerate(specs):
        alone: list[float] = []
        rec = distill(make_model("resnet8", digits64, seed=7).double(), t64, digits64,
                      spec["loss"], spec["temperature"], recipe, seed=3, progress=False,
                      eval_every=0, on_step=lambda s, v, out=alone: out.append(v))
        stacked = [float(v[i]) for v in stacked_losses]
        diffs = [abs(a - b) for a, b in zip(alone[:50], stacked[:50])]
        assert max(diffs) < 1e-3, (spec, max(diffs))
        # 200 test images: one image is 0.005
        assert abs(rec["metrics"]["accuracy"] - records[i]["metrics"]["accuracy"]) <= 0.01
        assert records[i]["config"]["temperature"] == spec["temperature"]
        assert records[i]["metrics"]["teacher_ece_at_tau"] == pytest.approx(
            rec["metrics"]["teacher_ece_at_tau"])
    # the trained weights were written back into each student and differ between losses
    w = [s.state_dict()["fc.weight"] for s in students]
    assert not (w[0] == w[1]).all()


def test_independent_runs_match_runs_alone(gmm_small):
    recipe = Recipe(epochs=3, batch_size=128, lr=0.03)
    seeds = [0, 1, 2]
    models = [make_model("mlp", gmm_small, seed=s, hidden=(32, 32)) for s in seeds]
    recs = train_stacked(models, gmm_small, recipe, seeds, targets=gmm_small.train_posterior,
                         progress=False)
    for s, rec in zip(seeds, recs):
        alone = train(make_model("mlp", gmm_small, seed=s, hidden=(32, 32)), gmm_small, recipe,
                      seed=s, targets=gmm_small.train_posterior, progress=False)
        for a, b in zip(alone["history"], rec["history"]):
            assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert abs(alone["metrics"]["accuracy"] - rec["metrics"]["accuracy"]) <= 0.004
    # different seeds really are different runs
    assert recs[0]["history"][0]["train_loss"] != recs[1]["history"][0]["train_loss"]


def test_stacked_validation(digits_small, teacher):
    s = make_model("resnet8", digits_small, seed=0)
    r = Recipe(epochs=1)
    with pytest.raises(ValueError, match="one spec per student"):
        distill_stacked([s], teacher, digits_small, [], r, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        distill_stacked([s], teacher, digits_small, [{"loss": "kd", "temperature": -1}], r,
                        progress=False)
    with pytest.raises(ValueError, match="not stackable"):
        distill_stacked([s], teacher, digits_small, [{"loss": "fitnet", "temperature": 1}], r,
                        progress=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        distill_stacked([s], teacher, digits_small, [{"loss": "kd", "temperature": 1}], r,
                        progress=False, mode="grouped")
    with pytest.raises(ValueError, match="one architecture"):
        StackedModels([s, make_model("resnet14", digits_small)])
    with pytest.raises(ValueError, match="one seed per model"):
        train_stacked([s], digits_small, r, seeds=[0, 1], progress=False)


def test_history_has_test_metrics_when_asked(digits_small, teacher):
    specs = [{"loss": "kd", "temperature": 2.0}, {"loss": "dist", "temperature": 2.0}]
    recs = distill_stacked([make_model("resnet8", digits_small, seed=1) for _ in specs], teacher,
                           digits_small, specs, Recipe(epochs=2, batch_size=128), eval_every=1,
                           progress=False)
    for rec in recs:
        assert [h["epoch"] for h in rec["history"]] == [1, 2]
        # the last epoch's test accuracy is the record's final accuracy
        assert rec["history"][-1]["test_accuracy"] == pytest.approx(rec["metrics"]["accuracy"])


def test_newer_logit_losses_stack_like_students_alone(digits_small, one_thread):
    """DKD and the logit-standardized losses run batched in a stack (stacked_logit_losses)
    and give each member the run alone: identical first-step losses, weights within float32
    rounding after one epoch."""
    data = digits_small.subset(n_train=96, n_test=50, seed=0)
    teacher = make_model("resnet8", data, seed=0).eval()
    recipe = Recipe(epochs=1, batch_size=32, lr=0.05)
    specs = [{"loss": "dkd", "temperature": 4.0}, {"loss": "kd_ls", "temperature": 2.0},
             {"loss": "dkd_ls", "temperature": 1.0, "alpha": 0.5}]
    first = []
    students = [make_model("resnet8", data, seed=3) for _ in specs]
    distill_stacked(students, teacher, data, specs, recipe, seed=1, mode="loop", progress=False,
                    step_callback=lambda s, v: first.append(v) if s == 0 else None)
    for i, spec in enumerate(specs):
        alone_first = []
        model = make_model("resnet8", data, seed=3)
        distill(model, teacher, data, spec["loss"], spec["temperature"], recipe,
                alpha=spec.get("alpha", 1.0), seed=1, progress=False, eval_every=0,
                on_step=lambda s, v, out=alone_first: out.append(v) if s == 0 else None)
        assert abs(float(first[0][i]) - alone_first[0]) < 1e-5, spec
        a, b = model.state_dict()["fc.weight"], students[i].state_dict()["fc.weight"]
        assert float((a - b).abs().max()) < 1e-4, spec
