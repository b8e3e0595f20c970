"""Training recipes: SGD with step decay, as in the CIFAR KD literature.

Presets (REFERENCE.md):
    paper        240 epochs, lr 0.05 (0.01 for MobileNetV2), /10 at 150, 180, 210, batch 64, wd 5e-4
    few_trained  100 epochs, lr decay from epoch 50 (the paper's Table 5 teacher)
    default      30 epochs, same shape of schedule (embedded data on a laptop CPU)
    smoke        2 epochs (CI)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kdlib._validate import check_int, check_positive

SMALL_LR_ARCHS = ("mobilenetv2",)  # the literature trains these with lr 0.01


@dataclass(frozen=True)
class Recipe:
    """SGD recipe: lr is multiplied by `gamma` at each epoch in `milestones`.

    checkpoint_every: save the model every that many epochs (0: only the final model).
    """

    epochs: int
    batch_size: int = 64
    lr: float = 0.05
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    checkpoint_every: int = 0

    def __post_init__(self):
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_positive(self.lr, "lr")
        check_positive(self.gamma, "gamma")
        check_int(self.checkpoint_every, "checkpoint_every", minimum=0)
        if not (0.0 <= float(self.momentum) < 1.0):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if float(self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        milestones = tuple(check_int(m, "milestone", minimum=1) for m in self.milestones)
        if list(milestones) != sorted(set(milestones)):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        if milestones and milestones[-1] >= self.epochs:
            raise ValueError(
                f"milestones {milestones} must be < epochs ({self.epochs}): a decay at or after "
                f"the last epoch never takes effect"
            )
        object.__setattr__(self, "milestones", milestones)

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def lr_at(self, epoch: int) -> float:
        """Learning rate used during 0-based `epoch`."""
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    @classmethod
    def preset(cls, name: str, arch: str | None = None, **changes) -> Recipe:
        """A named preset; `arch` lowers lr to 0.01 for MobileNetV2 as in the literature."""
        if name not in PRESETS:
            raise ValueError(f"unknown recipe preset {name!r}; choose one of {sorted(PRESETS)}")
        recipe = PRESETS[name]
        if arch is not None and arch in SMALL_LR_ARCHS:
            recipe = recipe.replace(lr=0.01)
        return recipe.replace(**changes) if changes else recipe


def scaled_milestones(epochs: int, fractions=(0.625, 0.75, 0.875)) -> tuple[int, ...]:
    """Milestones at the paper's fractions of training (150/240, 180/240, 210/240)."""
    epochs = check_int(epochs, "epochs", minimum=1)
    ms = sorted({max(1, round(f * epochs)) for f in fractions})
    return tuple(m for m in ms if m < epochs)


PRESETS = {
    "paper": Recipe(epochs=240, batch_size=64, lr=0.05, milestones=(150, 180, 210),
                    checkpoint_every=10),
    "few_trained": Recipe(epochs=100, batch_size=64, lr=0.05, milestones=(50, 75, 90),
                          checkpoint_every=10),
    "default": Recipe(epochs=30, batch_size=64, lr=0.05, milestones=scaled_milestones(30)),
    "smoke": Recipe(epochs=2, batch_size=64, lr=0.05),
}


def recipe_from_spec(spec) -> Recipe:
    """A Recipe from a plain (JSON-able) spec, as experiment presets and sweep cells hold it:
    a preset name ("paper"), {"preset": name, **changes}, or a dict of Recipe fields
    ({"epochs": 15, "milestones": [9, 11, 13]}). A Recipe is returned as is."""
    if isinstance(spec, Recipe):
        return spec
    if isinstance(spec, str):
        return Recipe.preset(spec)
    if not isinstance(spec, dict):
        raise TypeError(f"recipe spec must be a preset name or a dict, got {type(spec).__name__}")
    spec = dict(spec)
    if "milestones" in spec:
        spec["milestones"] = tuple(spec["milestones"])
    if "preset" in spec:
        return Recipe.preset(spec.pop("preset"), **spec)
    try:
        return Recipe(**spec)
    except TypeError as err:
        raise ValueError(f"bad recipe spec {spec!r}: {err}") from err
