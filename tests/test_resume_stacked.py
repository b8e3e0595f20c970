"""Stacked runs resume from state.pt: after a SIGKILL of a real process, after an error, in
another representation; the resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from kdlib.checkpoint import load_checkpoint
from kdlib.recipe import Recipe
from kdlib.stacked import distill_stacked, train_stacked
from kdlib.train import make_model

RECIPE = Recipe(epochs=5, batch_size=32, lr=0.05, milestones=(3,))  # 128 / 32 = 4 steps/epoch
STEPS_PER_EPOCH = 4
SPECS = [{"loss": "kd", "temperature": 4.0}, {"loss": "dist", "temperature": 2.0}]


def cell(checkpoint_dir=None, step_callback=None):
    """A small stacked distillation (resnet8 with BatchNorm, 2 students, digits 128/64)."""
    from kdlib.data import load_dataset

    d = load_dataset("digits").subset(n_train=128, n_test=64, seed=0)
    teacher = make_model("resnet8", d, seed=0)
    students = [make_model("resnet8", d, seed=1) for _ in SPECS]
    records = distill_stacked(students, teacher, d, SPECS, RECIPE, seed=3, progress=False,
                              mode="loop", checkpoint_dir=checkpoint_dir,
                              step_callback=step_callback)
    return records, students


CHILD = """
import sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from test_resume_stacked import cell
cell(sys.argv[1], step_callback=lambda step, losses: time.sleep(0.05))
"""


def test_stacked_distillation_killed_with_sigkill_resumes_bit_identical(tmp_path, one_thread):
    ckpt = tmp_path / "cell"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ckpt),
                              str(Path(__file__).parent)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = ckpt / "state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    done = int(load_checkpoint(state)["epoch"])
    assert 1 <= done < RECIPE.epochs  # killed in the middle of the run

    steps = []
    resumed, students = cell(ckpt, step_callback=lambda step, losses: steps.append(step))
    # only the steps of the epochs not yet done were run (and reported)
    assert steps == list(range(done * STEPS_PER_EPOCH, RECIPE.epochs * STEPS_PER_EPOCH))
    ref, ref_students = cell()
    for a, b in zip(resumed, ref):
        assert a["history"] == b["history"] and a["metrics"] == b["metrics"]
        assert a["config"] == b["config"]
    for s, r in zip(students, ref_students):
        for (name, t), u in zip(s.state_dict().items(), r.state_dict().values()):
            assert torch.equal(t, u), name  # weights and BatchNorm statistics
    assert resumed[0]["history"][0]["train_loss"] != resumed[1]["history"][0]["train_loss"]


class Crash(RuntimeError):
    pass


def _mlps(data, seeds):
    return [make_model("mlp", data, seed=s, hidden=(16,)) for s in seeds]


def test_train_stacked_resumes_after_an_error_and_in_another_representation(gmm_small,
                                                                             tmp_path):
    recipe = Recipe(epochs=3, batch_size=250, lr=0.05)  # 4 steps per epoch
    seeds = [0, 1]
    ref = train_stacked(_mlps(gmm_small, seeds), gmm_small, recipe, seeds, progress=False)

    def crash(step, losses):
        if step == 6:  # in epoch 2
            raise Crash

    with pytest.raises(Crash):
        train_stacked(_mlps(gmm_small, seeds), gmm_small, recipe, seeds, progress=False,
                      checkpoint_dir=tmp_path, step_callback=crash)
    assert load_checkpoint(tmp_path / "state.pt")["epoch"] == 1
    models = _mlps(gmm_small, seeds)
    steps = []
    again = train_stacked(models, gmm_small, recipe, seeds, progress=False,
                          checkpoint_dir=tmp_path, step_callback=lambda s, v: steps.append(s))
    assert steps == list(range(4, 12))
    assert [r["history"] for r in again] == [r["history"] for r in ref]
    assert [r["metrics"] for r in again] == [r["metrics"] for r in ref]

    # the state is per member, not per representation: a vmap state resumes as a loop
    # (with a warning: float rounding of the two differs)
    other = tmp_path / "other"
    with pytest.raises(Crash):
        train_stacked(_mlps(gmm_small, seeds), gmm_small, recipe, seeds, progress=False,
                      checkpoint_dir=other, step_callback=crash, mode="vmap")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        looped = train_stacked(_mlps(gmm_small, seeds), gmm_small, recipe, seeds,
                               progress=False, checkpoint_dir=other, mode="loop")
    assert any("stack_mode" in str(w.message) for w in caught)
    for a, b in zip(looped, ref):
        assert a["history"][0] == b["history"][0]  # epoch 1 comes from the state
        assert a["history"][-1]["train_loss"] == pytest.approx(b["history"][-1]["train_loss"],
                                                               abs=1e-5)
    # another configuration in the same folder is refused
    with pytest.raises(ValueError, match="different configuration"):
        train_stacked(_mlps(gmm_small, seeds), gmm_small, recipe.replace(lr=0.1), seeds,
                      progress=False, checkpoint_dir=tmp_path)


def test_unusable_stacked_state_is_moved_aside_and_the_run_starts_over(gmm_small, tmp_path):
    recipe = Recipe(epochs=1, batch_size=500, lr=0.05)
    seeds = [0, 1]
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = train_stacked(_mlps(gmm_small, seeds), gmm_small, recipe, seeds,
                             progress=False, checkpoint_dir=tmp_path)
    assert any("unusable" in str(w.message) for w in caught)
    assert list(tmp_path.glob("state.pt.bad-*"))
    ref = train_stacked(_mlps(gmm_small, seeds), gmm_small, recipe, seeds, progress=False)
    assert [r["history"] for r in recs] == [r["history"] for r in ref]
