"""WideModels: K students as one wide network equal K separate networks (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kdlib.models import build_model
from kdlib.wide import WideModels

K = 3
ARCHS = ("resnet8", "resnet14", "wrn_16_1", "mobilenetv2")


def members(arch: str, k: int | None = None, classes: int = 5) -> list[nn.Module]:
    """k float64 models (default K; 2 for mobilenetv2, whose float64 grouped convolutions
    run one group at a time on the CPU) with distinct weights and BatchNorm statistics."""
    k = k or (2 if arch == "mobilenetv2" else K)
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        kwargs = {"in_features": 6, "hidden": (7, 4)} if arch == "mlp" else {}
        m = build_model(arch, classes, **kwargs).double()
        with torch.no_grad():  # non-trivial BN affine and running stats per member
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.2, 0.2)
                    mod.running_mean.uniform_(-0.1, 0.1)
                    mod.running_var.uniform_(0.5, 2.0)
        out.append(m)
    return out


def image(arch: str, b: int = 4, seed: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if arch == "mlp":
        return torch.randn(b, 6, generator=g, dtype=torch.float64)
    return torch.randn(b, 3, 8, 8, generator=g, dtype=torch.float64)


def separate(models, x, per_member=False):
    return torch.stack([m(x[i] if per_member else x) for i, m in enumerate(models)])


def assert_states_equal(got: dict, want: dict, atol: float = 0.0):
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].shape == want[n].shape, n
        assert torch.allclose(got[n].double(), want[n].double(), atol=atol, rtol=0), n


@pytest.mark.parametrize("arch", ARCHS + ("mlp",))
def test_train_mode_forward_grads_and_bn_stats_equal_members(arch):
    models = members(arch)
    wide = WideModels.from_models(models)
    refs = [copy.deepcopy(m).train() for m in models]
    x = image(arch)
    out = wide(x)
    want = separate(refs, x)
    k = len(models)
    assert out.shape == (k, 4, 5)
    assert (out - want).abs().max() < 1e-10
    # gradients of a loss that weighs each member differently
    w = torch.randn(k, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (out * w).sum().backward()
    (want * w).sum().backward()
    grads = wide.split_state({n: p.grad for n, p in wide.named_parameters()})
    for i, ref in enumerate(refs):
        for n, p in ref.named_parameters():
            assert (grads[i][n] - p.grad).abs().max() < 1e-10, (i, n)
    # the train-mode forward updated every member's running statistics as its own would
    for i, state in enumerate(wide.to_state_dicts()):
        assert_states_equal(state, refs[i].state_dict(), atol=1e-12)
    if arch != "mlp":
        nbt = [v for n, v in wide.to_state_dicts()[0].items() if n.endswith("batches_tracked")]
        assert nbt and all(int(v) == 1 for v in nbt)


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_mode_and_per_member_inputs_equal_members(arch):
    models = members(arch)
    wide = WideModels.from_models(models).eval()
    refs = [copy.deepcopy(m).eval() for m in models]
    x = image(arch)
    assert (wide(x) - separate(refs, x)).abs().max() < 1e-10
    xs = torch.stack([image(arch, seed=20 + i) for i in range(len(models))])
    assert (wide(xs, per_member=True) - separate(refs, xs, True)).abs().max() < 1e-10
    # per-member inputs in train mode, then back to a shared one (input attribute restored)
    wide.train()
    for r in refs:
        r.train()
    assert (wide(xs, per_member=True) - separate(refs, xs, True)).abs().max() < 1e-10
    assert (wide(x) - separate(refs, x)).abs().max() < 1e-10


@pytest.mark.parametrize("arch", ("resnet8", "wrn_16_1"))
def test_features_equal_members(arch):
    models = members(arch)
    wide = WideModels.from_models(models).eval()
    logits, pen, stages = wide.features(image(arch))
    for i, m in enumerate(models):
        m.eval()
        l_i, p_i, s_i = m(image(arch), return_features=True)
        assert (logits[i] - l_i).abs().max() < 1e-10
        assert (pen[i] - p_i).abs().max() < 1e-10
        assert len(stages) == len(s_i)
        for a, b in zip(stages, s_i):
            assert a[i].shape == b.shape and (a[i] - b).abs().max() < 1e-10


@pytest.mark.parametrize("arch", ARCHS + ("mlp",))
def test_round_trip_is_exact(arch):
    models = members(arch)
    wide = WideModels.from_models(models)
    for state, m in zip(wide.to_state_dicts(), models):
        want = m.state_dict()
        assert state.keys() == want.keys()
        assert all(torch.equal(state[n], want[n]) for n in want)
    fresh = members(arch)
    for f in fresh:
        for p in f.parameters():
            p.data.zero_()
    wide.load_into(fresh)
    for f, m in zip(fresh, models):
        assert all(torch.equal(a, b) for a, b in zip(f.state_dict().values(),
                                                     m.state_dict().values()))
    back = wide.unstack(models[0])
    assert len(back) == len(models) and all(b is not m for b, m in zip(back, models))
    assert torch.equal(back[-1].fc.weight, models[-1].fc.weight)


def test_sgd_on_wide_tensors_equals_k_optimizers():
    models = members("resnet8")
    refs = [copy.deepcopy(m).train() for m in models]
    wide = WideModels.from_models(models)
    opt = torch.optim.SGD(wide.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opts = [torch.optim.SGD(r.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            for r in refs]
    y = torch.tensor([0, 1, 2, 3])
    for step in range(3):
        x = image("resnet8", seed=step)
        losses = nn.functional.cross_entropy(wide(x).flatten(0, 1), y.repeat(K),
                                             reduction="none").view(K, -1).mean(1)
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
        for r, o in zip(refs, opts):
            o.zero_grad()
            nn.functional.cross_entropy(r(x), y).backward()
            o.step()
    for state, r in zip(wide.to_state_dicts(), refs):
        assert_states_equal(state, r.state_dict(), atol=1e-10)
    # the weights did move (the comparison is not between untouched copies)
    assert (wide.to_state_dicts()[0]["fc.weight"] - models[0].fc.weight).abs().max() > 1e-4


def test_layout_is_member_major_grouped_conv():
    models = members("resnet8", k=2)
    wide = WideModels.from_models(models)
    conv = wide.net.stages[0][0].conv1
    assert conv.weight.shape == (2 * 16, 16, 3, 3)
    assert torch.equal(conv.weight[16:], models[1].stages[0][0].conv1.weight)
    bn = wide.net.stem[1]
    assert bn.num_features == 32
    dw = WideModels.from_models(members("mobilenetv2", k=2)).net.blocks[1][0].depthwise[0]
    assert dw.groups == dw.in_channels  # a member's depthwise conv, K*C groups when run


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least one"):
        WideModels([])
    with pytest.raises(TypeError, match="sequence"):
        WideModels(members("resnet8", k=1)[0])
    a, b = members("resnet8", k=2)
    with pytest.raises(ValueError, match="distinct"):
        WideModels([a, a])
    with pytest.raises(ValueError, match="architecture"):
        WideModels([a, members("resnet14", k=1)[0]])
    with pytest.raises(TypeError, match="cannot widen"):
        WideModels([nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(4))] * 1)
    b.stem[1].num_batches_tracked.fill_(3)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        WideModels([a, b])
    wide = WideModels(members("resnet8", k=2))
    with pytest.raises(ValueError, match="K x B"):
        wide(image("resnet8"), per_member=True)
    with pytest.raises(ValueError, match="expects"):
        wide(torch.zeros(2, 5, 8, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="per_member"):
        wide(image("resnet8"), per_member=1)
    with pytest.raises(ValueError, match="not a tensor of a widened layer"):
        wide.split_state({"nope.weight": torch.zeros(1)})


def test_channels_last_wide_equals_members():
    models = members("resnet8", k=2)
    wide = WideModels.from_models(models).to(memory_format=torch.channels_last)
    assert wide.net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = image("resnet8").contiguous(memory_format=torch.channels_last)
    assert (wide(x) - separate([copy.deepcopy(m) for m in models], x)).abs().max() < 1e-10


def test_head_is_float32_under_autocast_and_bf16_elsewhere():
    models = [m.float() for m in members("resnet8", k=2)]
    wide = WideModels.from_models(models)
    x = image("resnet8").float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = wide(x)
        _, pen, _ = wide.features(x)
    assert out.dtype == torch.float32 and pen.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert WideModels.from_models(models, fp32_head=False)(x).dtype == torch.bfloat16
    # fp32 head on bf16 features: the logits equal the fp32 product of those features
    head = wide.net.fc
    want = torch.einsum("kbi,koi->kbo", pen.float(), head.weight) + head.bias[:, None]
    assert (out - want).abs().max() < 1e-5


def test_wide_is_an_engine_representation_equal_to_the_loop(tmp_path, one_thread):
    """distill_stacked(mode="wide") gives the loop's students (float64, 1e-10), and a
    stacked state written by the wide run resumes in the loop representation."""
    from kdlib.data import load_dataset
    from kdlib.recipe import Recipe
    from kdlib.stacked import distill_stacked
    from kdlib.train import make_model

    data = load_dataset("digits").subset(n_train=64, n_test=32, seed=0)
    data.train_x, data.test_x = data.train_x.double(), data.test_x.double()
    teacher = make_model("resnet8", data, seed=0).double().eval()
    specs = [{"loss": "kd", "temperature": 4.0}, {"loss": "dist", "temperature": 2.0}]
    recipe = Recipe(epochs=2, batch_size=32, lr=0.05, milestones=(1,))

    def run(mode, folder=None):
        students = [make_model("resnet8", data, seed=5).double() for _ in specs]
        recs = distill_stacked(students, teacher, data, specs, recipe, seed=1, mode=mode,
                               progress=False, checkpoint_dir=folder)
        return students, recs

    loop, loop_recs = run("loop")
    wide, wide_recs = run("wide", tmp_path / "state")
    for a, b in zip(loop, wide, strict=True):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(),
                                     strict=True):
            assert torch.allclose(x.double(), y.double(), atol=1e-10, rtol=0), name
    for ra, rb in zip(loop_recs, wide_recs, strict=True):
        assert ra["metrics"]["accuracy"] == rb["metrics"]["accuracy"]
    # the wide run's state (written every epoch) is read by another representation, which
    # says that a resumed run is not bit-identical under other runtime settings
    with pytest.warns(UserWarning, match="stack_mode.*not be bit-identical"):
        again, _ = run("loop", tmp_path / "state")
    for a, b in zip(wide, again, strict=True):
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y)
