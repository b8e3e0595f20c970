"""Training recipes: SGD with step decay, as in the CIFAR KD literature.

Presets:
    paper        the CRD/RepDistiller CIFAR recipe (Tian et al., ICLR 2020), which most CIFAR
                 KD papers train with: 240 epochs, lr 0.05 (0.01 for MobileNetV2), /10 at
                 150, 180, 210, batch 64, wd 5e-4. Fan et al. state no recipe; the name is
                 kept for compatibility, and the notebooks call it the CRD recipe.
    paper_200    the 200-epoch schedule Fan et al.'s own tables point to (their Table 5
                 full-trained rows equal Table 4's epoch-200 rows): lr 0.05, /10 at 100, 150,
                 180, a checkpoint every 10 epochs (kdlib's reading, see notebook 04)
    few_trained  that schedule halved: 100 epochs, /10 at 50, 75, 90 (the paper's Table 5
                 teacher: "100 epochs, initiating the learning rate decay after the 50th")
    default      30 epochs, the CRD schedule's shape (embedded data on a laptop CPU)
    smoke        2 epochs (CI)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kdlib._validate import check_int, check_positive, check_real

SMALL_LR_ARCHS = ("mobilenetv2",)  # the literature trains these with lr 0.01


@dataclass(frozen=True)
class Recipe:
    """SGD recipe: lr is multiplied by `gamma` at each epoch in `milestones`.

    checkpoint_every: save the model every that many epochs (0: only the final model).
    Allowed: epochs, batch_size >= 1 (integers); lr finite > 0; milestones strictly
    increasing integers in [1, epochs); gamma in (0, 1]; momentum in [0, 1); weight_decay
    finite >= 0; checkpoint_every integer >= 0. Anything else raises TypeError/ValueError
    naming the field.
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
        """Validate every field (its name, the allowed range) and store plain int/float."""
        ints = {"epochs": 1, "batch_size": 1, "checkpoint_every": 0}
        for field, minimum in ints.items():
            object.__setattr__(self, field, check_int(getattr(self, field), f"Recipe.{field}",
                                                      minimum=minimum))
        object.__setattr__(self, "lr", check_positive(self.lr, "Recipe.lr"))
        gamma = check_real(self.gamma, "Recipe.gamma", 0.0, 1.0)
        if gamma == 0:
            raise ValueError("Recipe.gamma must be in (0, 1] (the factor lr is multiplied by "
                             "at each milestone), got 0")
        momentum = check_real(self.momentum, "Recipe.momentum", 0.0, 1.0)
        if momentum == 1.0:
            raise ValueError("Recipe.momentum must be in [0, 1), got 1.0")
        weight_decay = check_real(self.weight_decay, "Recipe.weight_decay", 0.0)
        for field, value in (("gamma", gamma), ("momentum", momentum),
                             ("weight_decay", weight_decay)):
            object.__setattr__(self, field, value)
        if isinstance(self.milestones, (str, bytes)) or not isinstance(
                self.milestones, (tuple, list, range)):
            raise TypeError(f"Recipe.milestones must be a tuple of epoch numbers, got "
                            f"{type(self.milestones).__name__} ({self.milestones!r})")
        milestones = tuple(check_int(m, f"Recipe.milestones[{i}]", minimum=1)
                           for i, m in enumerate(self.milestones))
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
    "paper_200": Recipe(epochs=200, batch_size=64, lr=0.05, milestones=(100, 150, 180),
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
