"""On CUDA (skipped without it): the training steps make no host-device synchronisation.

Every step of train, distill and distill_stacked runs under
torch.cuda.set_sync_debug_mode("error"), which raises at the first synchronising call
(.item(), a blocking copy, a value check); setup, the end of each epoch (one read of the
epoch's sums and of the divergence flag) and evaluation run outside it.
"""

from __future__ import annotations

import pytest
import torch

from kdlib.engine import Engine
from kdlib.recipe import Recipe
from kdlib.stacked import distill_stacked
from kdlib.train import distill, make_model, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture()
def sync_free_steps(monkeypatch):
    """Engine.run_epoch (the steps only) under sync debug mode "error"; -> epochs run."""
    original = Engine.run_epoch
    epochs = []

    def strict(self, epoch):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            return original(self, epoch)
        finally:
            torch.cuda.set_sync_debug_mode(0)
            epochs.append(epoch)

    monkeypatch.setattr(Engine, "run_epoch", strict)
    return epochs


@pytest.mark.parametrize("arch", ["resnet14", "wrn_16_1", "mobilenetv2"])
def test_steps_are_sync_free_in_bf16_with_channels_last(arch, sync_free_steps):
    from kdlib.data import load_dataset

    d = load_dataset("digits").subset(n_train=96, n_test=32, seed=0)
    recipe = Recipe(epochs=2, batch_size=32, lr=0.01)
    teacher = make_model("resnet8", d, seed=0)
    train(teacher, d, recipe, device="cuda", progress=False, eval_every=0)
    conv = next(m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    student = make_model(arch, d, seed=1)
    rec = distill(student, teacher, d, "kd", 4.0, recipe, device="cuda", progress=False,
                  eval_every=0)
    assert 0 <= rec["metrics"]["ece"] <= 1
    bn = [m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.running_mean.dtype == torch.float32 for m in bn)
    specs = [{"loss": "kd", "temperature": 2.0}, {"loss": "dist", "temperature": 4.0}]
    recs = distill_stacked([make_model(arch, d, seed=1) for _ in specs], teacher, d, specs,
                           recipe, device="cuda", progress=False)
    assert len(recs) == 2 and len(sync_free_steps) == 6
