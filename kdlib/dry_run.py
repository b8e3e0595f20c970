"""The dry run: an experiment's presets exactly, with every training cut to a few steps.

``presets.get(name, "paper", dry_run=True)`` keeps every table, pair, chain, temperature,
model, loss and data set of the paper preset and changes only how much work each run does:

    recipes    (dicts with "epochs" and "lr")  epochs -> DRY_EPOCHS, batch_size ->
               DRY_BATCH, no learning-rate milestones, checkpoints as the cut run allows
    data       (dicts with a "name" of a file data set) a stratified DRY_TRAIN-image train
               split and a DRY_TEST-image test split; GMM tasks draw DRY_TRAIN/DRY_TEST samples
    seeds      every "seeds" list keeps its first seed
    n_boot     -> DRY_BOOT bootstrap resamples

so each training is one epoch of two batches of eight images. An experiment whose preset
holds values tied to the epoch count (checkpoint epochs, stage lengths) registers its own
``dry_run`` hook (``presets.register(..., dry_run=fn)``), applied after this generic cut.
Dry-run results go to their own store (``runs/paper-dry-run/``) and say nothing about the
paper's claims: the point is that every cell, table, figure and verdict is computed.
Dependency-free (the command line imports it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

DRY_EPOCHS = 1
DRY_BATCH = 8
DRY_TRAIN = 16
DRY_TEST = 32
DRY_BOOT = 50
FILE_DATASETS = ("cifar10", "cifar100", "tinyimagenet", "digits")
GMM_DATASETS = ("gmm10", "gmm100")


def is_recipe_spec(node) -> bool:
    """A recipe spec dict: has "epochs" and "lr" (kdlib.recipe.recipe_from_spec input)."""
    return isinstance(node, Mapping) and "epochs" in node and "lr" in node


def is_data_spec(node) -> bool:
    """A data spec dict: its "name" is one of kdlib's data sets."""
    return (isinstance(node, Mapping) and isinstance(node.get("name"), str)
            and node["name"] in FILE_DATASETS + GMM_DATASETS)


def cut_recipe(spec: Mapping) -> dict:
    """`spec` with DRY_EPOCHS epochs of DRY_BATCH images, no milestones; a checkpoint
    cadence, if any, becomes every epoch."""
    out = dict(spec)
    out["epochs"] = DRY_EPOCHS
    out["batch_size"] = DRY_BATCH
    out["milestones"] = []
    if out.get("checkpoint_every"):
        out["checkpoint_every"] = 1
    return out


def cut_data(spec: Mapping) -> dict:
    """`spec` reduced to DRY_TRAIN training and DRY_TEST test samples."""
    out = dict(spec)
    if spec["name"] in GMM_DATASETS:
        out["n_train"] = min(int(spec.get("n_train", DRY_TRAIN)), DRY_TRAIN)
        out["n_test"] = min(int(spec.get("n_test", DRY_TEST)), DRY_TEST)
    else:
        out["subset_train"] = min(int(spec.get("subset_train", DRY_TRAIN)), DRY_TRAIN)
        out["subset_test"] = min(int(spec.get("subset_test", DRY_TEST)), DRY_TEST)
    return out


def cut(node):
    """The generic dry-run cut of a preset (a copy; see the module docstring)."""
    if is_recipe_spec(node):
        return cut_recipe({k: cut(v) for k, v in node.items()})
    if is_data_spec(node):
        return cut_data(node)
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if key == "seeds" and isinstance(value, list) and value:
                out[key] = [value[0]]
            elif key == "n_boot" and isinstance(value, int) and not isinstance(value, bool):
                out[key] = min(value, DRY_BOOT)
            else:
                out[key] = cut(value)
        return out
    if isinstance(node, list):
        return [cut(v) for v in node]
    return copy.deepcopy(node)


__all__ = ["DRY_BATCH", "DRY_BOOT", "DRY_EPOCHS", "DRY_TEST", "DRY_TRAIN", "cut",
           "cut_data", "cut_recipe", "is_data_spec", "is_recipe_spec"]
