"""Teacher cache: train a teacher once, reuse it everywhere.

    teacher, record = get_teacher("resnet20", "digits", Recipe.preset("default"), seed=0)

The checkpoint lives in `<cache_dir>/<arch>-<dataset>-<hash>/` where the hash covers
everything that determines the weights (architecture, data set and its contents,
recipe, seed, kdlib's cache format). A truncated or corrupted file is detected,
reported with a warning and retrained; never used silently. Intermediate checkpoints
(recipe.checkpoint_every) stay beside it for early-stopping studies.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from kdlib._validate import check_int
from kdlib.checkpoint import CorruptCheckpointError, load_checkpoint, save_atomic
from kdlib.recipe import Recipe

CACHE_FORMAT = 1
DEFAULT_CACHE_DIR = "data/teachers"


def dataset_fingerprint(data) -> str:
    """sha256 over a Dataset's name, shapes and tensor bytes (hex, 16 chars)."""
    h = hashlib.sha256(str(getattr(data, "name", "")).encode())
    for attr in ("train_x", "train_y", "test_x", "test_y"):
        t = getattr(data, attr)
        h.update(f"{attr}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_key(arch: str, data, recipe: Recipe, seed: int, model_kwargs=None) -> dict:
    """The plain dict that determines a cached teacher (hashed into its folder name)."""
    return {"format": CACHE_FORMAT, "arch": arch, "model_kwargs": model_kwargs or {},
            "data": getattr(data, "name", "?"), "data_fingerprint": dataset_fingerprint(data),
            "recipe": recipe.to_dict(), "seed": seed}


def teacher_dir(key: dict, cache_dir=DEFAULT_CACHE_DIR) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{key['arch']}-{key['data']}-{digest}"


def get_teacher(arch: str, data, recipe: Recipe, seed: int = 0, *, cache_dir=DEFAULT_CACHE_DIR,
                device="auto", progress: bool = True, model_kwargs: dict | None = None):
    """Return (teacher model in eval mode, training record), training it on first use.

    data: a kdlib.data.Dataset (or a name for load_dataset, loaded from "data/").
    """
    from kdlib.train import make_model, train

    if isinstance(data, str):
        from kdlib.data import load_dataset
        data = load_dataset(data)
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    seed = check_int(seed, "seed", minimum=0)
    model_kwargs = dict(model_kwargs or {})
    key = teacher_key(arch, data, recipe, seed, model_kwargs)
    folder = teacher_dir(key, cache_dir)
    final = folder / "final.pt"
    model = make_model(arch, data, seed=seed, **model_kwargs)

    if final.exists():
        try:
            ckpt = load_checkpoint(final)
            if ckpt.get("key") != key:
                raise CorruptCheckpointError(f"{final} was written for another configuration")
            model.load_state_dict(ckpt["model"])
            return model.eval(), ckpt["record"]
        except (CorruptCheckpointError, KeyError, RuntimeError) as err:
            warnings.warn(f"teacher cache {final} is unusable ({err}); retraining", stacklevel=2)
            final.unlink(missing_ok=True)
            (folder / "state.pt").unlink(missing_ok=True)

    folder.mkdir(parents=True, exist_ok=True)
    record = train(model, data, recipe, device=device, seed=seed, checkpoint_dir=folder,
                   progress=progress, name=f"teacher {arch}")
    record["config"]["arch"] = arch
    record["cache_dir"] = str(folder)
    model = model.cpu()
    save_atomic({"model": model.state_dict(), "record": record, "key": key}, final)
    (folder / "state.pt").unlink(missing_ok=True)
    return model.eval(), record


def teacher_checkpoints(record: dict) -> dict[int, Path]:
    """{epoch: path} of the intermediate checkpoints saved beside a cached teacher."""
    folder = Path(record["cache_dir"])
    return {int(p.stem.split("_")[1]): p for p in sorted(folder.glob("epoch_*.pt"))}


def load_weights(model: torch.nn.Module, path) -> torch.nn.Module:
    """Load a kdlib checkpoint's weights into `model` (weights_only=True) and return it."""
    model.load_state_dict(load_checkpoint(path)["model"])
    return model
