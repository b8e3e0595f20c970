"""The lean stacked MLP path must train each member exactly as kdlib.train.train does."""

import dataclasses

import pytest
import torch

from kdlib.recipe import Recipe
from kdlib.stacked_mlp import stack_mlp_weights, stacked_mlp_logits, train_mlps_stacked
from kdlib.train import make_model, train


@pytest.fixture(scope="module")
def gmm64(gmm_small):
    """float64 copy: the two paths then agree to rounding, not just to float32 noise."""
    return dataclasses.replace(gmm_small, train_x=gmm_small.train_x.double(),
                               test_x=gmm_small.test_x.double(),
                               train_posterior=gmm_small.train_posterior.double())


def _soft(data):
    """A tempered posterior: a third, distinct target (rounded to float32 values, as
    kdlib.train.train casts targets to float32)."""
    return torch.softmax(torch.log(data.train_posterior) / 2.0, dim=1).float().double()


@pytest.mark.parametrize("recipe,workers", [
    (Recipe(epochs=3, batch_size=128, lr=0.03, milestones=(2,)), 1),
    (Recipe(epochs=3, batch_size=128, lr=0.03, milestones=(2,)), 2),
    (Recipe(epochs=2, batch_size=300, lr=0.1, momentum=0.0, weight_decay=0.0), 3),
])
def test_members_match_runs_alone_float64(gmm64, recipe, workers):
    # 1000 samples, batch 128: 7 full batches + one of 104 (kept, as the engine does)
    seeds = [0, 1, 2]
    targets = [gmm64.train_posterior, None, _soft(gmm64)]
    models = [make_model("mlp", gmm64, seed=s, hidden=(16, 8)).double() for s in seeds]
    threads = torch.get_num_threads()
    records = train_mlps_stacked(models, gmm64, recipe, seeds, targets=targets,
                                 device="cpu", progress=False, eval_every=1, workers=workers)
    assert torch.get_num_threads() == threads  # worker threads leave the caller's setting
    assert records[0]["config"]["workers"] == workers
    for i, (s, t) in enumerate(zip(seeds, targets)):
        alone = make_model("mlp", gmm64, seed=s, hidden=(16, 8)).double()
        rec = train(alone, gmm64, recipe, seed=s, targets=t, device="cpu", progress=False,
                    eval_every=1)
        for name, p in alone.state_dict().items():
            assert torch.allclose(p, models[i].state_dict()[name], rtol=0, atol=1e-12), (i, name)
        for a, b in zip(rec["history"], records[i]["history"]):
            # the engine sums the epoch loss in float32
            assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
            assert a["train_accuracy"] == b["train_accuracy"]
            assert a["test_accuracy"] == b["test_accuracy"]
            assert a["lr"] == b["lr"]
        assert rec["metrics"]["accuracy"] == records[i]["metrics"]["accuracy"]
        assert records[i]["config"]["targets"] == ("labels" if t is None else "soft")
    # the members really differ
    assert records[0]["history"][-1]["train_loss"] != records[1]["history"][-1]["train_loss"]


def test_members_match_runs_alone_float32(gmm_small):
    recipe = Recipe(epochs=3, batch_size=128, lr=0.03)
    seeds = [3, 4]
    models = [make_model("mlp", gmm_small, seed=s, hidden=(32, 32)) for s in seeds]
    records = train_mlps_stacked(models, gmm_small, recipe, seeds,
                                 targets=gmm_small.train_posterior, progress=False,
                                 device="cpu")
    for s, rec in zip(seeds, records):
        alone = train(make_model("mlp", gmm_small, seed=s, hidden=(32, 32)), gmm_small, recipe,
                      seed=s, targets=gmm_small.train_posterior, progress=False, eval_every=0,
                      device="cpu")
        for a, b in zip(alone["history"], rec["history"]):
            assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert abs(alone["metrics"]["accuracy"] - rec["metrics"]["accuracy"]) <= 0.004


def test_standardized_inputs_and_logits(gmm_small):
    data = dataclasses.replace(gmm_small, mean=(1.0, -2.0), std=(5.0, 4.0))
    recipe = Recipe(epochs=1, batch_size=250, lr=0.05)
    model = make_model("mlp", data, seed=0, hidden=(8,))
    train_mlps_stacked([model], data, recipe, [0], progress=False, device="cpu")
    ref = make_model("mlp", data, seed=0, hidden=(8,))
    train(ref, data, recipe, seed=0, progress=False, eval_every=0, device="cpu")
    for name, p in ref.state_dict().items():
        assert torch.allclose(p, model.state_dict()[name], atol=1e-6), name
    # stacked_mlp_logits of the written-back weights = the module's own forward
    other = make_model("mlp", data, seed=9, hidden=(8,))
    params = stack_mlp_weights([model, other])
    assert [tuple(p.shape) for p in params] == [(2, 2, 8), (2, 1, 8), (2, 10, 8), (2, 10, 1)]
    x = torch.randn(50, 2)
    logits = stacked_mlp_logits(params, x, chunk=16)
    assert logits.shape == (2, 50, 10)
    assert torch.allclose(logits[0], model(x), atol=1e-5)
    assert torch.allclose(logits[1], other(x), atol=1e-5)


def test_linear_model_and_epoch_callback(gmm64):
    # hidden=() is multinomial logistic regression: the backward has no ReLU layers
    recipe = Recipe(epochs=2, batch_size=200, lr=0.01)
    seen = []
    model = make_model("mlp", gmm64, seed=1, hidden=()).double()
    recs = train_mlps_stacked([model], gmm64, recipe, [5], progress=False, device="cpu",
                              on_epoch=lambda e, losses: seen.append((e, float(losses[0]))))
    ref = make_model("mlp", gmm64, seed=1, hidden=()).double()
    train(ref, gmm64, recipe, seed=5, progress=False, eval_every=0, device="cpu")
    assert torch.allclose(ref.fc.weight, model.fc.weight, rtol=0, atol=1e-12)
    assert [e for e, _ in seen] == [0, 1]
    assert [v for _, v in seen] == [h["train_loss"] for h in recs[0]["history"]]


def test_eager_steps_match_torchscript(gmm64):
    # script=False runs the very same function eagerly: the compiled one must not differ
    recipe = Recipe(epochs=2, batch_size=128, lr=0.05)
    runs = {}
    for script in (True, False):
        models = [make_model("mlp", gmm64, seed=s, hidden=(8, 8)).double() for s in (0, 1)]
        recs = train_mlps_stacked(models, gmm64, recipe, [0, 1], progress=False, device="cpu",
                                  targets=gmm64.train_posterior, script=script)
        runs[script] = (models, recs)
    for a, b in zip(runs[True][0], runs[False][0]):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(p, q, rtol=0, atol=1e-13), name
    assert [h["train_loss"] for h in runs[True][1][1]["history"]] == pytest.approx(
        [h["train_loss"] for h in runs[False][1][1]["history"]], abs=1e-13)


def test_steps_function_compiles_once():
    from kdlib.mlp_epoch import mlp_train_steps, steps_function

    fn, scripted = steps_function()
    assert scripted and isinstance(fn, torch.jit.ScriptFunction)
    assert steps_function()[0] is fn
    assert steps_function(script=False) == (mlp_train_steps, False)
    with pytest.raises(TypeError, match="True or False"):
        steps_function(script="yes")


def test_validation(gmm_small, digits_small):
    r = Recipe(epochs=1, batch_size=64)
    m = make_model("mlp", gmm_small, seed=0, hidden=(4,))
    with pytest.raises(TypeError, match="MLP instances"):
        train_mlps_stacked([torch.nn.Linear(2, 10)], gmm_small, r, [0], progress=False)
    with pytest.raises(ValueError, match="share in_features"):
        train_mlps_stacked([m, make_model("mlp", gmm_small, hidden=(5,))], gmm_small, r,
                           [0, 1], progress=False)
    with pytest.raises(ValueError, match="one seed per model"):
        train_mlps_stacked([m], gmm_small, r, [0, 1], progress=False)
    with pytest.raises(ValueError, match="N_train x C"):
        train_mlps_stacked([m], gmm_small, r, [0], targets=torch.ones(5, 10), progress=False)
    with pytest.raises(ValueError, match="one entry per model"):
        train_mlps_stacked([m], gmm_small, r, [0], targets=[None, None], progress=False)
    with pytest.raises(ValueError, match="non-negative"):
        train_mlps_stacked([m], gmm_small, r, [0], targets=-gmm_small.train_posterior,
                           progress=False)
    with pytest.raises(ValueError, match="N x d vectors"):
        train_mlps_stacked([make_model("mlp", gmm_small, hidden=(4,))], digits_small, r, [0],
                           progress=False)
    with pytest.raises(TypeError, match="Recipe"):
        train_mlps_stacked([m], gmm_small, {"epochs": 1}, [0], progress=False)
    with pytest.raises(TypeError, match="seed"):
        train_mlps_stacked([m], gmm_small, r, [0.5], progress=False)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        train_mlps_stacked([m], gmm_small, r, [0], progress=False, workers=0)
    with pytest.raises(TypeError, match="integer >= 1 or .auto."):
        train_mlps_stacked([m], gmm_small, r, [0], progress=False, workers="two")
