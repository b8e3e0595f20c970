import warnings

import pytest
import torch

from kdlib import calibration
from kdlib.models import build_model
from kdlib.recipe import Recipe, scaled_milestones
from kdlib.teachers import get_teacher, teacher_checkpoints
from kdlib.train import distill, evaluate, make_model, predict_logits, train

TINY = Recipe(epochs=2, batch_size=64, lr=0.05, milestones=(1,))


# ----------------------------------------------------------------- recipe


def test_recipe_presets_match_reference():
    p = Recipe.preset("paper")
    assert (p.epochs, p.lr, p.milestones, p.batch_size, p.weight_decay, p.momentum) == (
        240, 0.05, (150, 180, 210), 64, 5e-4, 0.9)
    assert Recipe.preset("paper", arch="mobilenetv2").lr == 0.01
    f = Recipe.preset("few_trained")
    assert f.epochs == 100 and f.milestones[0] == 50
    full = Recipe.preset("paper_200")
    assert (full.epochs, full.milestones, full.checkpoint_every) == (200, (100, 150, 180), 10)
    assert f.milestones == tuple(m // 2 for m in full.milestones)  # the schedule halved
    from kdlib.experiments.early_stopped_teacher import PAPER_200_RECIPE
    from kdlib.recipe import recipe_from_spec

    assert recipe_from_spec(PAPER_200_RECIPE) == full
    assert scaled_milestones(240) == (150, 180, 210)
    assert p.lr_at(0) == 0.05 and p.lr_at(150) == pytest.approx(0.005)
    assert p.lr_at(239) == pytest.approx(0.05e-3)


def test_recipe_validation():
    with pytest.raises(ValueError, match="milestones"):
        Recipe(epochs=10, milestones=(5, 12))
    with pytest.raises(ValueError, match="increasing"):
        Recipe(epochs=10, milestones=(6, 5))
    with pytest.raises(ValueError, match="epochs"):
        Recipe(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        Recipe(epochs=2, lr=-1.0)
    with pytest.raises(ValueError, match="unknown recipe preset"):
        Recipe.preset("fast")


# ----------------------------------------------------------------- train / distill


def test_train_record_and_cpu_determinism(gmm_small):
    recs = []
    for _ in range(2):
        m = make_model("mlp", gmm_small, seed=3, hidden=(32,))
        recs.append(train(m, gmm_small, TINY, seed=1, progress=False))
    a, b = recs
    assert a["metrics"] == b["metrics"]  # bit-identical on CPU
    assert a["history"] == b["history"]
    assert a["metrics_from"] == "last_epoch"
    assert set(a["metrics"]) == {"accuracy", "ece", "nll"}
    assert [h["epoch"] for h in a["history"]] == [1, 2]
    assert a["history"][1]["lr"] == pytest.approx(0.005)
    assert a["config"]["recipe"]["epochs"] == 2 and a["config"]["seed"] == 1
    # the final metrics are those of the model as returned
    assert evaluate(m, gmm_small, device="cpu") == b["metrics"]
    # a different data seed changes the run
    m = make_model("mlp", gmm_small, seed=3, hidden=(32,))
    assert train(m, gmm_small, TINY, seed=2, progress=False)["history"] != a["history"]


def test_train_on_posterior_targets(gmm_small):
    m = make_model("mlp", gmm_small, seed=0, hidden=(32,))
    rec = train(m, gmm_small, TINY, targets=gmm_small.train_posterior, progress=False)
    assert rec["config"]["targets"] == "soft"
    with pytest.raises(ValueError, match="targets must be N_train x C"):
        train(m, gmm_small, TINY, targets=torch.ones(3, 10) / 10, progress=False)


@pytest.fixture(scope="module")
def digits_teacher(digits_small):
    t = make_model("resnet8", digits_small, seed=0)
    train(t, digits_small, Recipe(epochs=3, batch_size=64, lr=0.05), progress=False,
          eval_every=0)
    return t


@pytest.mark.parametrize("loss", ["kd", "dist", "fitnet"])
def test_distill_record(loss, digits_small, digits_teacher):
    s = make_model("resnet8", digits_small, seed=1)
    rec = distill(s, digits_teacher, digits_small, loss, 2.0, TINY, progress=False)
    m = rec["metrics"]
    assert set(m) == {"accuracy", "ece", "nll", "agreement", "kl_teacher_student",
                      "teacher_accuracy", "teacher_ece", "teacher_ece_at_tau"}
    t_logits = predict_logits(digits_teacher, digits_small, device="cpu")
    y = digits_small.test_y
    assert m["teacher_ece_at_tau"] == pytest.approx(
        calibration.ece(calibration.tempered_softmax(t_logits, 2.0), y))
    assert m["teacher_accuracy"] == pytest.approx(float((t_logits.argmax(1) == y).float().mean()))
    s_logits = predict_logits(s, digits_small, device="cpu")
    assert m["agreement"] == pytest.approx(
        float((s_logits.argmax(1) == t_logits.argmax(1)).float().mean()))
    assert m["kl_teacher_student"] >= 0
    assert rec["config"]["loss"] == loss and rec["config"]["temperature"] == 2.0
    assert rec["metrics_from"] == "last_epoch"


def test_distill_with_callable_and_alpha(digits_small, digits_teacher):
    calls = []

    def mse(s, t, tau):
        calls.append(tau)
        return ((s - t) ** 2).mean()

    s = make_model("resnet8", digits_small, seed=1)
    rec = distill(s, digits_teacher, digits_small, mse, 3.0, TINY, alpha=0.5, progress=False)
    assert calls and set(calls) == {3.0}
    assert rec["config"]["loss"] == "mse" and rec["config"]["alpha"] == 0.5


def test_distill_validation(digits_small, digits_teacher):
    s = make_model("resnet8", digits_small, seed=1)
    with pytest.raises(ValueError, match="temperature"):
        distill(s, digits_teacher, digits_small, "kd", 0.0, TINY, progress=False)
    with pytest.raises(ValueError, match="alpha"):
        distill(s, digits_teacher, digits_small, "kd", 1.0, TINY, alpha=1.5, progress=False)
    with pytest.raises(ValueError, match="loss must be one of"):
        distill(s, digits_teacher, digits_small, "kl", 1.0, TINY, progress=False)
    wrong = build_model("resnet8", 5, in_channels=1)
    with pytest.raises(ValueError, match="teacher outputs 5 classes but the data set has 10"):
        distill(s, wrong, digits_small, "kd", 1.0, TINY, progress=False)
    with pytest.raises(TypeError, match="recipe"):
        distill(s, digits_teacher, digits_small, "kd", 1.0, {"epochs": 1}, progress=False)
    with pytest.raises(TypeError, match="Dataset"):
        train(s, [1, 2, 3], TINY, progress=False)


# ----------------------------------------------------------------- checkpoints and resume


class Crash(RuntimeError):
    pass


def test_resume_after_interruption_matches_uninterrupted(gmm_small, tmp_path):
    recipe = Recipe(epochs=3, batch_size=128, lr=0.05, checkpoint_every=1)
    full = make_model("mlp", gmm_small, seed=0, hidden=(16,))
    ref = train(full, gmm_small, recipe, seed=0, progress=False)

    steps_per_epoch = -(-1000 // 128)
    model = make_model("mlp", gmm_small, seed=0, hidden=(16,))

    def crash(step, loss):
        if step == steps_per_epoch + 3:  # in the middle of epoch 2
            raise Crash

    with pytest.raises(Crash):
        train(model, gmm_small, recipe, seed=0, progress=False, checkpoint_dir=tmp_path,
              on_step=crash)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_0001.pt"]
    model = make_model("mlp", gmm_small, seed=0, hidden=(16,))
    resumed = train(model, gmm_small, recipe, seed=0, progress=False, checkpoint_dir=tmp_path)
    assert resumed["history"] == ref["history"]
    assert resumed["metrics"] == ref["metrics"]
    for a, b in zip(model.state_dict().values(), full.state_dict().values()):
        assert torch.equal(a, b)
    ck = torch.load(tmp_path / "epoch_0002.pt", weights_only=True)
    assert ck["epoch"] == 2
    # another configuration in the same folder is refused
    with pytest.raises(ValueError, match="different configuration"):
        train(model, gmm_small, recipe.replace(lr=0.1), progress=False, checkpoint_dir=tmp_path)


# ----------------------------------------------------------------- teacher cache


def test_teacher_cache_trains_once_and_survives_corruption(gmm_small, tmp_path, monkeypatch):
    recipe = Recipe(epochs=2, batch_size=128, lr=0.05, checkpoint_every=1)
    kw = {"cache_dir": tmp_path, "progress": False, "model_kwargs": {"hidden": (16,)}}
    t1, r1 = get_teacher("mlp", gmm_small, recipe, seed=0, **kw)
    assert sorted(teacher_checkpoints(r1)) == [1, 2]

    import kdlib.train as engine

    def boom(*a, **k):
        raise AssertionError("should load from the cache, not train")

    monkeypatch.setattr(engine, "train", boom)
    t2, r2 = get_teacher("mlp", gmm_small, recipe, seed=0, **kw)
    assert r2["metrics"] == r1["metrics"]
    for a, b in zip(t1.state_dict().values(), t2.state_dict().values()):
        assert torch.equal(a, b)
    monkeypatch.undo()

    final = next(tmp_path.glob("*/final.pt"))
    final.write_bytes(final.read_bytes()[:100])  # truncate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t3, r3 = get_teacher("mlp", gmm_small, recipe, seed=0, **kw)
    assert any("unusable" in str(w.message) for w in caught)
    assert r3["metrics"] == r1["metrics"]  # retrained, deterministically
    # a different seed is a different teacher
    _, r4 = get_teacher("mlp", gmm_small, recipe, seed=1, **kw)
    assert r4["cache_dir"] != r1["cache_dir"]


def test_recipe_from_spec():
    from kdlib.recipe import recipe_from_spec

    assert recipe_from_spec("paper") == Recipe.preset("paper")
    r = recipe_from_spec({"preset": "default", "epochs": 20, "milestones": [10, 15]})
    assert (r.epochs, r.milestones, r.lr) == (20, (10, 15), 0.05)
    assert recipe_from_spec({"epochs": 3}) == Recipe(epochs=3)
    with pytest.raises(ValueError, match="bad recipe spec"):
        recipe_from_spec({"epochs": 3, "speed": 2})
    with pytest.raises(TypeError, match="preset name or a dict"):
        recipe_from_spec(3)
