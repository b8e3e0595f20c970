"""Bad inputs, divergence, side effects and determinism in the training path (kdlib issue 11).

Every case here was accepted, ran to the end and failed in a function the user never called,
crashed deep inside torch, or left state behind before the fix. Tiny MLPs on the GMM task
(milliseconds per epoch) unless a case needs convolutions or BatchNorm.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from kdlib.batches import DeviceData
from kdlib.distillers import make_distiller
from kdlib.losses import dist_loss, kd_loss, stacked_kd_dist
from kdlib.recipe import Recipe
from kdlib.stacked import distill_stacked, train_stacked
from kdlib.train import DivergenceGuard, TrainingDiverged, distill, make_model, train

R = Recipe(epochs=2, batch_size=128, lr=0.05)
STEPS = -(-1000 // 128)  # gmm_small: 1000 training samples


def mlp(data, seed=0, hidden=(16, 16)):
    return make_model("mlp", data, seed=seed, hidden=hidden)


class Steps:
    """on_step callback counting the optimizer steps taken."""

    def __init__(self):
        self.n = 0

    def __call__(self, step, loss):
        self.n += 1


@pytest.fixture(scope="module")
def gmm_teacher(gmm_small):
    t = mlp(gmm_small, seed=9)
    train(t, gmm_small, R, progress=False, eval_every=0)
    return t


def with_value(data, field, index, value):
    t = getattr(data, field).clone()
    t.view(-1)[index] = value
    return dataclasses.replace(data, **{field: t})


# ------------------------------------------------------------------ non-finite inputs


@pytest.mark.parametrize("field", ["train_x", "test_x", "train_posterior"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_data_is_refused_at_entry(gmm_small, one_thread, field, value):
    bad = with_value(gmm_small, field, 17, value)
    steps = Steps()
    with pytest.raises(ValueError, match=f"data.{field} must hold finite values.*index"):
        train(mlp(bad), bad, R, progress=False, on_step=steps)
    assert steps.n == 0
    with pytest.raises(ValueError, match=f"data.{field}"):
        DeviceData(bad)


@pytest.mark.parametrize("make_bad, message", [
    (lambda q: q.index_fill(0, torch.tensor([3]), float("nan")), "targets must hold finite"),
    (lambda q: q.index_fill(0, torch.tensor([3]), float("inf")), "targets must hold finite"),
    (lambda q: q - 0.5, "targets must be probabilities >= 0"),
    (lambda q: q * 2.0, "rows must sum to 1"),
])
def test_bad_soft_targets_are_refused_at_entry(gmm_small, one_thread, make_bad, message):
    targets = make_bad(gmm_small.train_posterior.clone())
    steps = Steps()
    with pytest.raises(ValueError, match=message):
        train(mlp(gmm_small), gmm_small, R, targets=targets, progress=False, on_step=steps)
    assert steps.n == 0
    with pytest.raises(ValueError, match=message):
        train_stacked([mlp(gmm_small)], gmm_small, R, [0], targets=targets, progress=False)


def test_non_finite_teacher_weights_and_logits_are_refused(gmm_small, gmm_teacher, one_thread):
    steps = Steps()
    logits = torch.zeros(gmm_small.test_y.shape[0], gmm_small.num_classes)
    logits[5, 2] = float("nan")
    with pytest.raises(ValueError, match="teacher_logits must hold finite"):
        distill(mlp(gmm_small), gmm_teacher, gmm_small, "kd", 2.0, R, progress=False,
                teacher_logits=logits, on_step=steps)
    broken = mlp(gmm_small)
    with torch.no_grad():
        broken.fc.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="teacher parameter 'fc.weight' holds NaN/inf"):
        distill(mlp(gmm_small), broken, gmm_small, "kd", 2.0, R, progress=False, on_step=steps)
    assert steps.n == 0


def test_teacher_logits_with_the_wrong_rows_fail_at_entry(gmm_small, gmm_teacher, one_thread):
    steps = Steps()
    for rows in (499, 1000):
        with pytest.raises(ValueError, match=r"N_test x C = \(500, 10\), got \("):
            distill(mlp(gmm_small), gmm_teacher, gmm_small, "kd", 2.0, R, progress=False,
                    teacher_logits=torch.zeros(rows, 10), on_step=steps)
    assert steps.n == 0


# ------------------------------------------------------------------ divergence


def test_diverging_run_stops_at_the_step_with_epoch_step_loss_and_cause(gmm_small, one_thread):
    losses = []
    hot = R.replace(lr=1e12, momentum=0.0, weight_decay=0.0)
    with pytest.raises(TrainingDiverged) as info:
        train(mlp(gmm_small), gmm_small, hot, progress=False,
              on_step=lambda s, v: losses.append(v))
    msg = str(info.value)
    # stopped at the first non-finite loss, before that step's update and on_step
    assert all(np.isfinite(losses)) and len(losses) < 2 * STEPS
    step = len(losses)
    assert f"epoch {step // STEPS + 1} of 2, step {step % STEPS + 1} of {STEPS}" in msg
    assert f"(global step {step})" in msg
    assert "learning rate too high" in msg and "recipe.lr = 1e+12" in msg
    assert "nan" in msg or "inf" in msg


def test_diverging_distillation_and_stacked_member_are_named(gmm_small, gmm_teacher, one_thread):
    hot = R.replace(lr=1e12, momentum=0.0, weight_decay=0.0)
    with pytest.raises(TrainingDiverged, match="epoch 1 of 2, step"):
        distill(mlp(gmm_small), gmm_teacher, gmm_small, "kd", 2.0, hot, progress=False)
    specs = [{"loss": "kd", "temperature": 2.0}, {"loss": "dist", "temperature": 4.0}]
    with pytest.raises(TrainingDiverged, match=r"of 2 members is non-finite \(student "
                                               r"(0 \(kd at tau 2\)|1 \(dist at tau 4\)): "):
        distill_stacked([mlp(gmm_small), mlp(gmm_small)], gmm_teacher, gmm_small, specs, hot,
                        progress=False)
    with pytest.raises(TrainingDiverged, match=r"run 1 \(seed 5\)"):
        train_stacked([mlp(gmm_small), mlp(gmm_small)], gmm_small, hot, [4, 5], progress=False)


def test_deferred_guard_names_the_exact_step_once_per_epoch():
    """The CUDA mode (no host sync per step), exercised on CPU tensors."""
    guard = DivergenceGuard("cpu", Recipe(epochs=3, lr=0.5), steps_per_epoch=4,
                            members=["a", "b"], deferred=True)
    values = [[1.0, 2.0], [1.0, 2.0], [1.0, 3.0], [float("inf"), 2.0], [float("nan"), 1.0]]
    for i, v in enumerate(values):
        guard.step(torch.tensor(v), 4 + i)  # epoch 2: steps 4..7, then 8 is epoch 3
    with pytest.raises(TrainingDiverged) as info:
        guard.end_epoch()
    msg = str(info.value)
    assert "epoch 2 of 3, step 4 of 4 in that epoch (global step 7)" in msg
    assert "1 of 2 members" in msg and "a: inf" in msg and "recipe.lr = 0.5" in msg
    fine = DivergenceGuard("cpu", Recipe(epochs=1), 4, deferred=True)
    fine.step(torch.tensor(1.0), 0)
    fine.end_epoch()  # finite: no error
    assert DivergenceGuard("cuda", Recipe(epochs=1), 4).deferred
    assert not DivergenceGuard("cpu", Recipe(epochs=1), 4).deferred


# ------------------------------------------------------------------ ignored or unchecked parameters


@pytest.mark.parametrize("loss, kwargs, message", [
    ("kd", {"beta": 2.0}, r"loss 'kd' takes no loss_kwargs; got unknown \['beta'\]"),
    ("dist", {"beta": 1.0, "gama": 2.0}, r"takes only \['beta', 'gamma'\]; got unknown \['gama'\]"),
    ("fitnet", {"weight": 3.0}, r"takes only \['hint_weight', 'stage'\]"),
    ("fitnet", {"student_shape": (16,)}, r"takes only \['hint_weight', 'stage'\]"),
])
def test_unknown_loss_kwargs_are_refused_naming_the_allowed(gmm_small, gmm_teacher, loss,
                                                            kwargs, message):
    steps = Steps()
    with pytest.raises(ValueError, match=message):
        distill(mlp(gmm_small), gmm_teacher, gmm_small, loss, 2.0, R, progress=False,
                loss_kwargs=kwargs, on_step=steps)
    assert steps.n == 0


def test_make_distiller_refuses_unknown_options_and_bad_weights():
    with pytest.raises(ValueError, match="takes no loss_kwargs"):
        make_distiller("kd", 2.0, beta=1.0)
    with pytest.raises(ValueError, match="takes no loss_kwargs"):
        make_distiller(lambda s, t, tau: (s - t).pow(2).mean(), 2.0, scale=1.0)
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        make_distiller("dist", 2.0, beta=-1.0)
    with pytest.raises(TypeError, match="gamma must be a real number"):
        make_distiller("dist", 2.0, gamma="1")


@pytest.mark.parametrize("field, value, exc", [
    ("weight_decay", float("nan"), ValueError), ("weight_decay", float("inf"), ValueError),
    ("weight_decay", "abc", TypeError), ("momentum", "abc", TypeError),
    ("momentum", "0.9", TypeError), ("momentum", float("nan"), ValueError),
    ("momentum", 1.0, ValueError), ("gamma", 2.0, ValueError), ("gamma", "0.1", TypeError),
    ("milestones", 5, TypeError), ("milestones", "12", TypeError),
])
def test_recipe_fields_are_validated_by_name(field, value, exc):
    with pytest.raises(exc, match=f"Recipe.{field}"):
        Recipe(epochs=20, **{field: value})


def test_recipe_stores_plain_numbers():
    r = Recipe(epochs=np.int64(3), batch_size=np.int32(8), lr=np.float32(0.5),
               momentum=np.float32(0.5), weight_decay=np.float64(0.0), milestones=[np.int64(2)])
    assert type(r.momentum) is float and type(r.weight_decay) is float and type(r.lr) is float
    assert type(r.epochs) is int and type(r.batch_size) is int
    json.dumps(r.to_dict())  # numpy scalars would not serialize


@pytest.mark.parametrize("tau", [1e-40, 1e-38, 1e-4, 1e4, 1e20])
def test_temperature_out_of_the_safe_range_is_refused(tau):
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    for fn in (kd_loss, dist_loss):
        with pytest.raises(ValueError, match=r"temperature must be in \[0.001, 1000\]"):
            fn(s, t, tau)
    with pytest.raises(ValueError, match=r"temperature must be in \[0.001, 1000\]"):
        make_distiller("kd", tau)
    with pytest.raises(ValueError, match=r"temperatures\[1\] must be in"):
        stacked_kd_dist(torch.randn(2, 4, 5), t, [1.0, tau], [False, True], [1.0, 1.0],
                        torch.zeros(4, dtype=torch.long))


def test_losses_are_finite_over_the_allowed_temperatures_and_in_16_bit():
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(8, 10, generator=g) * 1e3).requires_grad_()
    t = torch.randn(8, 10, generator=g) * 1e3
    for tau in (1e-3, 1.0, 1e3):
        for fn in (kd_loss, dist_loss):
            value = fn(s, t, tau)
            (grad,) = torch.autograd.grad(value, s)
            assert torch.isfinite(value) and torch.isfinite(grad).all(), (fn.__name__, tau)
    # float16 logits: computed in float32 (z / 0.01 overflows float16's 65504 for |z| > 655)
    s16, t16 = (torch.randn(8, 10, generator=g) * 30).half(), (torch.randn(8, 10) * 30).half()
    for fn, tau in ((kd_loss, 0.01), (dist_loss, 1.0), (dist_loss, 0.01)):
        value = fn(s16, t16, tau)
        assert value.dtype == torch.float32 and torch.isfinite(value), fn.__name__
        assert value == pytest.approx(float(fn(s16.float(), t16.float(), tau)), rel=1e-6)


def test_distill_refuses_a_tiny_temperature_before_training(gmm_small, gmm_teacher):
    with pytest.raises(ValueError, match="temperature must be in"):
        distill(mlp(gmm_small), gmm_teacher, gmm_small, "kd", 1e-40, R, progress=False)


@pytest.mark.parametrize("change, exc, message", [
    ({"alphas": [2.0, 1.0]}, ValueError, r"alphas\[0\] must be in \[0, 1\], got 2"),
    ({"alphas": [1.0, -0.5]}, ValueError, r"alphas\[1\] must be in \[0, 1\]"),
    ({"beta": -1.0}, ValueError, "beta must be finite and >= 0"),
    ({"gamma": float("nan")}, ValueError, "gamma must be finite"),
    ({"labels": torch.tensor([0, 1, 5, 2])}, ValueError, r"labels must lie in \[0, 5\)"),
    ({"labels": torch.tensor([0, -1, 2, 2])}, ValueError, r"labels must lie in \[0, 5\)"),
    ({"labels": torch.tensor([0, 1, 2])}, ValueError, "batch's 4 class indices"),
    ({"labels": torch.tensor([0.0, 1.0, 2.0, 3.0])}, TypeError, "labels must be integer"),
    ({"is_dist": [0, 1]}, TypeError, "is_dist must be K booleans"),
    ({"temperatures": [1.0]}, ValueError, r"temperatures needs one entry per student \(K = 2\)"),
])
def test_stacked_kd_dist_validates_its_arguments(change, exc, message):
    args = {"student_logits": torch.randn(2, 4, 5), "teacher_logits": torch.randn(4, 5),
            "temperatures": [1.0, 2.0], "is_dist": [False, True], "alphas": [1.0, 0.5],
            "labels": torch.tensor([0, 1, 2, 4])}
    assert torch.isfinite(stacked_kd_dist(**args)).all()
    args.update(change)
    with pytest.raises(exc, match=message):
        stacked_kd_dist(**args)


# ------------------------------------------------------------------ side effects


def _teacher_state(t):
    return t.training, [p.requires_grad for p in t.parameters()]


@pytest.mark.parametrize("fail", [False, True])
def test_distill_restores_teacher_mode_and_requires_grad(gmm_small, fail):
    teacher = mlp(gmm_small, seed=3).train()
    teacher.layers[0].weight.requires_grad_(False)  # a mixed pattern must come back exactly
    before = _teacher_state(teacher)

    def on_step(step, loss):
        if fail:
            raise KeyboardInterrupt

    run = lambda: distill(mlp(gmm_small), teacher, gmm_small, "kd", 2.0, R,  # noqa: E731
                          progress=False, on_step=on_step)
    if fail:
        with pytest.raises(KeyboardInterrupt):
            run()
    else:
        run()
    assert _teacher_state(teacher) == before
    assert before == (True, [False, True, True, True, True, True])


@pytest.mark.parametrize("fail", [False, True])
def test_distill_stacked_restores_teacher_mode_and_requires_grad(gmm_small, fail):
    teacher = mlp(gmm_small, seed=3).train()
    before = _teacher_state(teacher)

    def callback(step, losses):
        if fail:
            raise KeyboardInterrupt

    run = lambda: distill_stacked([mlp(gmm_small)], teacher, gmm_small,  # noqa: E731
                                  [{"loss": "kd", "temperature": 2.0}], R, progress=False,
                                  step_callback=callback)
    if fail:
        with pytest.raises(KeyboardInterrupt):
            run()
    else:
        run()
    assert _teacher_state(teacher) == before == (True, [True] * 6)


# ------------------------------------------------------------------ training edge cases


@pytest.fixture(scope="module")
def digits65(digits_small):
    """65 training images: batches of 64 leave a last batch of one sample."""
    return digits_small.subset(n_train=65, n_test=20, seed=0)


def test_batchnorm_model_trains_with_a_last_batch_of_one(digits65, one_thread, tmp_path):
    recipe = Recipe(epochs=2, batch_size=64, lr=0.01)
    steps = Steps()
    rec = train(make_model("mobilenetv2", digits65, seed=0), digits65, recipe,
                progress=False, on_step=steps, eval_every=0)
    assert steps.n == 2  # the one-sample batch is skipped each epoch: 1 step per epoch
    assert np.isfinite(rec["metrics"]["nll"])
    # deterministic and resumable across the skipped batch
    again = train(make_model("mobilenetv2", digits65, seed=0), digits65, recipe,
                  progress=False, eval_every=0, checkpoint_dir=tmp_path)
    assert again["history"] == rec["history"] and again["metrics"] == rec["metrics"]


def test_only_batchnorm_models_skip_the_last_batch_of_one(gmm_small, digits65, one_thread):
    steps = Steps()
    train(mlp(gmm_small), gmm_small, Recipe(epochs=1, batch_size=333), progress=False,
          on_step=steps)
    assert steps.n == 4  # 1000 = 3 * 333 + 1: an MLP (no BatchNorm) still sees every sample
    steps = Steps()
    train(make_model("resnet8", digits65, seed=0), digits65, Recipe(epochs=1, batch_size=32),
          progress=False, on_step=steps)
    assert steps.n == 2  # 65 = 2 * 32 + 1


def test_stacked_batchnorm_students_match_alone_across_the_skipped_batch(digits65, one_thread):
    d64 = dataclasses.replace(digits65, train_x=digits65.train_x.double(),
                              test_x=digits65.test_x.double())
    recipe = Recipe(epochs=2, batch_size=32, lr=0.05)  # 65 = 2 * 32 + 1
    teacher = make_model("resnet8", d64, seed=0).double()
    stacked = []
    distill_stacked([make_model("resnet8", d64, seed=1).double()], teacher, d64,
                    [{"loss": "kd", "temperature": 4.0}], recipe, seed=2, progress=False,
                    step_callback=lambda s, v: stacked.append(float(v[0])))
    alone = []
    distill(make_model("resnet8", d64, seed=1).double(), teacher, d64, "kd", 4.0, recipe,
            seed=2, progress=False, eval_every=0, on_step=lambda s, v: alone.append(v))
    assert len(alone) == len(stacked) == 4
    assert max(abs(a - b) for a, b in zip(alone, stacked)) < 1e-12


def test_callable_loss_returning_a_vector_is_refused_at_the_first_step(gmm_small, gmm_teacher):
    def per_sample(s, t, tau):
        return ((s - t) ** 2).mean(1)

    steps = Steps()
    with pytest.raises(ValueError, match=r"per_sample must return a scalar.*\(128,\).*mean"):
        distill(mlp(gmm_small), gmm_teacher, gmm_small, per_sample, 2.0, R, progress=False,
                on_step=steps)
    assert steps.n == 0
    with pytest.raises(TypeError, match="must return a floating 0-d torch tensor"):
        distill(mlp(gmm_small), gmm_teacher, gmm_small, lambda s, t, tau: 1.0, 2.0, R,
                progress=False)


@pytest.mark.parametrize("stage", [7, 2, -1, 1.0])
def test_fitnet_stage_out_of_range_is_refused_at_setup(gmm_small, gmm_teacher, stage):
    steps = Steps()
    with pytest.raises(ValueError, match=r"stage'\] must be an integer in \[0, 1\] \(the "
                                         r"student has 2 stages, the teacher 2\)"):
        distill(mlp(gmm_small), gmm_teacher, gmm_small, "fitnet", 2.0, R, progress=False,
                loss_kwargs={"stage": stage}, on_step=steps)
    assert steps.n == 0


def test_teacher_as_its_own_student_is_refused(gmm_small, gmm_teacher):
    before = _teacher_state(gmm_teacher)
    with pytest.raises(ValueError, match="same module object"):
        distill(gmm_teacher, gmm_teacher, gmm_small, "kd", 2.0, R, progress=False)
    twin = mlp(gmm_small)
    twin.fc = gmm_teacher.fc  # shares two tensors
    with pytest.raises(ValueError, match="share 2 parameter tensor"):
        distill(twin, gmm_teacher, gmm_small, "kd", 2.0, R, progress=False)
    with pytest.raises(ValueError, match="a student is the teacher"):
        distill_stacked([gmm_teacher], gmm_teacher, gmm_small,
                        [{"loss": "kd", "temperature": 2.0}], R, progress=False)
    s = mlp(gmm_small)
    with pytest.raises(ValueError, match="distinct module objects"):
        distill_stacked([s, s], gmm_teacher, gmm_small,
                        [{"loss": "kd", "temperature": 2.0}] * 2, R, progress=False)
    with pytest.raises(ValueError, match=r"specs\[0\] has unknown keys \['temprature'\]"):
        distill_stacked([s], gmm_teacher, gmm_small, [{"loss": "kd", "temprature": 2.0}], R,
                        progress=False)
    assert _teacher_state(gmm_teacher) == before


# ------------------------------------------------------------------ checkpoint_dir


def test_checkpoint_dir_that_is_a_file_is_refused_at_the_start(gmm_small, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    steps = Steps()
    with pytest.raises(ValueError, match="exists and is not a folder"):
        train(mlp(gmm_small), gmm_small, R, progress=False, checkpoint_dir=path, on_step=steps)
    with pytest.raises(TypeError, match="checkpoint_dir must be a folder path"):
        train(mlp(gmm_small), gmm_small, R, progress=False, checkpoint_dir=3)
    assert steps.n == 0 and path.read_text() == "x"


@pytest.mark.parametrize("garble", [lambda b: b[:100], lambda b: b"not a checkpoint" + b[16:]])
def test_corrupt_state_is_moved_aside_and_training_starts_over(gmm_small, tmp_path, one_thread,
                                                               garble):
    ref = train(mlp(gmm_small), gmm_small, R, progress=False)
    train(mlp(gmm_small), gmm_small, R, progress=False, checkpoint_dir=tmp_path)
    state = tmp_path / "state.pt"
    state.write_bytes(garble(state.read_bytes()))
    for side in tmp_path.glob("state.pt.*"):  # a hash sidecar, if checkpoint.py writes one
        side.unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = train(mlp(gmm_small), gmm_small, R, progress=False, checkpoint_dir=tmp_path)
    moved = list(tmp_path.glob("state.pt.bad-*"))
    assert len(moved) == 1
    text = " ".join(str(w.message) for w in caught)
    assert "unusable" in text and str(moved[0]) in text and "starts over" in text
    assert rec["history"] == ref["history"] and rec["metrics"] == ref["metrics"]


# ------------------------------------------------------------------ determinism record


def test_every_record_states_torch_version_threads_and_device(gmm_small, gmm_teacher):
    want = {"torch_version": str(torch.__version__), "torch_threads": torch.get_num_threads(),
            "device_name": "cpu", "device": "cpu"}
    recs = [train(mlp(gmm_small), gmm_small, R, progress=False, device="cpu"),
            distill(mlp(gmm_small), gmm_teacher, gmm_small, "kd", 2.0, R, progress=False,
                    device="cpu"),
            *distill_stacked([mlp(gmm_small)], gmm_teacher, gmm_small,
                             [{"loss": "dist", "temperature": 2.0}], R, progress=False,
                             device="cpu"),
            *train_stacked([mlp(gmm_small)], gmm_small, R, [0], progress=False, device="cpu")]
    for rec in recs:
        assert {k: rec["config"][k] for k in want} == want, rec["config"]["kind"]
        json.dumps(rec["config"])


def test_resume_with_another_thread_count_warns_and_continues(gmm_small, tmp_path):
    class Stop(Exception):
        pass

    def stop(step, loss):
        if step == STEPS:  # first step of epoch 2
            raise Stop

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(Stop):
            train(mlp(gmm_small), gmm_small, R, progress=False, checkpoint_dir=tmp_path,
                  on_step=stop)
    finally:
        torch.set_num_threads(2)
    try:
        with pytest.warns(UserWarning, match="torch_threads.*not be bit-identical"):
            rec = train(mlp(gmm_small), gmm_small, R, progress=False, checkpoint_dir=tmp_path)
    finally:
        torch.set_num_threads(n)
    assert len(rec["history"]) == 2 and rec["config"]["torch_threads"] == 2
