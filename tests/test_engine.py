"""kdlib.engine: the schedule, momentum carried across calls, the representation interface,
optional torch.compile."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdlib.engine import lr_schedule, make_optimizer
from kdlib.recipe import Recipe
from kdlib.stacked import LoopedModels, StackedModels, distill_stacked, make_stack
from kdlib.train import make_model, train


def test_lr_schedule_is_multisteplr_bit_for_bit():
    recipe = Recipe(epochs=12, lr=0.05, milestones=(3, 7, 9), gamma=0.1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(recipe.milestones), recipe.gamma)
    expected = []
    for _ in range(recipe.epochs):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lr_schedule(recipe) == expected  # exact floats
    assert lr_schedule(recipe)[:4] == [0.05, 0.05, 0.05, 0.05 * 0.1]
    assert lr_schedule(recipe)[-1] == pytest.approx(recipe.lr_at(11), rel=1e-14)
    opt, lr_t = make_optimizer([torch.zeros(1, requires_grad=True)], recipe,
                               torch.device("cpu"))
    assert lr_t is None and opt.param_groups[0]["lr"] == 0.05  # a float on the CPU


@pytest.fixture(scope="module")
def gmm64(gmm_small):
    return dataclasses.replace(gmm_small, train_x=gmm_small.train_x.double(),
                               test_x=gmm_small.test_x.double())


def test_carry_continues_momentum_across_calls(gmm64):
    """Full-batch steps (1000 samples, batch 1000): two 1-epoch calls with `carry` equal one
    2-epoch call (the batch order only reorders a sum); without carry momentum restarts."""
    specs = [{"loss": "kd", "temperature": 2.0}, {"loss": "dist", "temperature": 4.0}]
    teacher = make_model("mlp", gmm64, seed=5, hidden=(16,)).double()

    def students():
        return [make_model("mlp", gmm64, seed=1, hidden=(16,)).double() for _ in specs]

    two = Recipe(epochs=2, batch_size=1000, lr=0.5, momentum=0.9)
    one = two.replace(epochs=1)
    whole = students()
    distill_stacked(whole, teacher, gmm64, specs, two, seed=0, progress=False)
    carried, restarted = students(), students()
    carry: dict = {}
    for seed in (0, 1):
        distill_stacked(carried, teacher, gmm64, specs, one, seed=seed, progress=False,
                        carry=carry)
        distill_stacked(restarted, teacher, gmm64, specs, one, seed=seed, progress=False)
    assert len(carry["momentum"]) == 2
    assert set(carry["momentum"][0]) == {n for n, _ in whole[0].named_parameters()}
    for w, c, r in zip(whole, carried, restarted):
        for (name, a), b in zip(w.state_dict().items(), c.state_dict().values()):
            assert torch.allclose(a, b, rtol=0, atol=1e-12), name
        gap = max(float((a - x).abs().max()) for a, x in zip(w.state_dict().values(),
                                                              r.state_dict().values()))
        assert gap > 1e-4  # restarting momentum is a real change
    with pytest.raises(TypeError, match="carry must be a dict"):
        distill_stacked(students(), teacher, gmm64, specs, one, progress=False, carry=[])


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_representation_split_merge_and_member_states_round_trip(mode, gmm_small):
    models = [make_model("mlp", gmm_small, seed=s, hidden=(8, 4)) for s in (0, 1, 2)]
    stack = make_stack(models, mode, torch.device("cpu"))
    assert isinstance(stack, {"loop": LoopedModels, "vmap": StackedModels}[mode])
    params = stack.parameters()
    per_member = stack.split(params)
    assert len(per_member) == 3
    for m, d in zip(models, per_member):
        assert list(d) == [n for n, _ in m.named_parameters()]
        for n, p in m.named_parameters():
            assert torch.equal(d[n], p)
    merged = stack.merge(per_member)
    assert all(torch.equal(a, b) for a, b in zip(merged, params))
    states = stack.member_states()
    assert all(torch.equal(states[1][n], t) for n, t in models[1].state_dict().items())
    x = gmm_small.test_x[:5]
    before = stack(x)
    assert before.shape == (3, 5, gmm_small.num_classes)
    stack.load_member_states([states[2], states[0], states[1]])  # rotate the members
    after = stack(x)
    assert torch.allclose(after[0], before[2]) and torch.allclose(after[1], before[0])
    with pytest.raises(ValueError, match="mode must be one of"):
        make_stack(models, "grouped", torch.device("cpu"))


def test_compile_gives_the_eager_run(gmm_small):
    """compile wraps the step's forward pass and loss in torch.compile; the aot_eager
    backend (dynamo + AOTAutograd, no code generation) keeps this test short."""
    dynamo = pytest.importorskip("torch._dynamo")
    if not dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this Python/platform")
    recipe = Recipe(epochs=1, batch_size=250, lr=0.05)
    eager = train(make_model("mlp", gmm_small, seed=0, hidden=(16,)), gmm_small, recipe,
                  progress=False)
    dynamo.reset()
    dynamo.utils.counters.clear()
    compiled = train(make_model("mlp", gmm_small, seed=0, hidden=(16,)), gmm_small, recipe,
                     progress=False, compile="aot_eager")
    assert dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # really compiled
    assert compiled["history"][0]["train_loss"] == pytest.approx(
        eager["history"][0]["train_loss"], abs=1e-6)
    assert compiled["metrics"]["accuracy"] == pytest.approx(eager["metrics"]["accuracy"],
                                                            abs=0.004)
    with pytest.raises(TypeError, match="compile must be"):
        train(make_model("mlp", gmm_small, seed=0), gmm_small, recipe, progress=False,
              compile=1)
