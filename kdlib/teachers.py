"""Teacher cache: train a teacher once, reuse it everywhere.

    teacher, record = get_teacher("resnet20", "digits", Recipe.preset("default"), seed=0)

Folder. `<cache_dir>/<arch>-<dataset>-<hash>/` where the hash covers everything that
determines the weights: architecture and its keyword arguments, data set name and
contents, the recipe's weight-determining fields, seed, kdlib's CACHE_FORMAT. How often
checkpoints are written (recipe.checkpoint_every) does not change the weights and is
left out, so notebooks that differ only in checkpoint cadence share one teacher.

Files. `final.pt` (weights, training record, key) and the intermediate `epoch_XXXX.pt`,
each with a `.sha256` sidecar (kdlib.checkpoint). A cached file is used only if its hash
matches; a file without its hash, truncated, garbled, written for another key, or whose
tensors do not fit the model is reported with a warning, moved aside to `<name>.bad-<time>`
(never deleted) and the teacher is retrained from seed in a freshly built model. An
interrupted run resumes from `state.pt`; an unusable `state.pt` is moved aside the same
way and training starts over. A full disk raises kdlib.atomic.DiskFullError (the files
already there are left intact); it is never turned into a retrain.

Checkpoint cadence. Whatever the caller's recipe.checkpoint_every, the cache writes
`epoch_XXXX.pt` every `cache_cadence(epochs, checkpoint_every)` epochs: the gcd of the
caller's cadence and a base cadence (the finest of 1, 2, 5, 10, 20, 50, ... epochs giving
at most MAX_BASE_CHECKPOINTS = 30 files: every epoch for runs of up to 30 epochs, every 10
of the paper's 240), or the caller's own cadence where the gcd would exceed 30 files.
Runs of up to 30 epochs therefore serve every cadence from one training; for longer runs
every multiple of the base is always there. If a cached teacher lacks an epoch a caller
needs (say cadence 5 after a first training at cadence 10), get_teacher warns and retrains
it once from seed, writing every gcd(old, new) epochs, so later callers of either cadence
find all their files. record["config"]["recipe"]["checkpoint_every"] is the cadence
written; `teacher_checkpoints(record)` lists only the epochs of the caller's own cadence
(record["checkpoint_epochs"]), whatever else is on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path

import torch

from kdlib._validate import check_int
from kdlib.checkpoint import (
    CorruptCheckpointError,
    hash_path,
    load_checkpoint,
    move_aside,
    save_atomic,
    verify_hash,
)
from kdlib.recipe import Recipe

CACHE_FORMAT = 2  # 2: key without checkpoint_every; SHA-256 sidecars required
DEFAULT_CACHE_DIR = "data/teachers"
# Recipe fields that do not change the trained weights (only which files are written)
NON_WEIGHT_RECIPE_FIELDS = ("checkpoint_every",)
MAX_BASE_CHECKPOINTS = 30
_STATE_KEYS = ("model", "extra", "optimizer", "scheduler", "generator", "history", "config")


def dataset_fingerprint(data) -> str:
    """sha256 over a Dataset's name, shapes and tensor bytes (hex, 16 chars)."""
    h = hashlib.sha256(str(getattr(data, "name", "")).encode())
    for attr in ("train_x", "train_y", "test_x", "test_y"):
        t = getattr(data, attr)
        h.update(f"{attr}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _weight_recipe(recipe: Recipe) -> dict:
    d = recipe.to_dict()
    for field in NON_WEIGHT_RECIPE_FIELDS:
        d.pop(field)
    return d


def teacher_key(arch: str, data, recipe: Recipe, seed: int, model_kwargs=None) -> dict:
    """The plain dict that determines a cached teacher (hashed into its folder name).

    recipe.checkpoint_every (NON_WEIGHT_RECIPE_FIELDS) is not part of it.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    return {"format": CACHE_FORMAT, "arch": arch, "model_kwargs": model_kwargs or {},
            "data": getattr(data, "name", "?"), "data_fingerprint": dataset_fingerprint(data),
            "recipe": _weight_recipe(recipe), "seed": seed}


def teacher_dir(key: dict, cache_dir=DEFAULT_CACHE_DIR) -> Path:
    """`<cache_dir>/<arch>-<data>-<12 hex of sha256(key)>`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{key['arch']}-{key['data']}-{digest}"


def base_cadence(epochs: int) -> int:
    """The finest of 1, 2, 5, 10, 20, 50, ... epochs giving <= MAX_BASE_CHECKPOINTS files."""
    epochs = check_int(epochs, "epochs", minimum=1)
    scale = 1
    while True:
        for step in (1, 2, 5):
            if epochs // (step * scale) <= MAX_BASE_CHECKPOINTS:
                return step * scale
        scale *= 10


def cache_cadence(epochs: int, checkpoint_every: int) -> int:
    """Epochs between the checkpoints the cache writes for a caller asking for every
    `checkpoint_every` epochs (0: none): gcd with base_cadence, or the caller's own
    cadence when the gcd would write more than MAX_BASE_CHECKPOINTS files."""
    base = base_cadence(epochs)
    every = check_int(checkpoint_every, "checkpoint_every", minimum=0)
    if every == 0:
        return base
    g = math.gcd(base, every)
    return g if epochs // g <= MAX_BASE_CHECKPOINTS else every


def needed_epochs(recipe: Recipe) -> list[int]:
    """The epochs at which `recipe` asks for a checkpoint (multiples of checkpoint_every)."""
    c = recipe.checkpoint_every
    return list(range(c, recipe.epochs + 1, c)) if c else []


def _epoch_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.pt"


def _discard(path: Path) -> None:
    """Remove a file kdlib wrote and no longer needs (and its sidecar)."""
    path.unlink(missing_ok=True)
    hash_path(path).unlink(missing_ok=True)


def _warn_and_move(path: Path, why) -> None:
    moved = move_aside(path)
    warnings.warn(f"teacher cache {path} is unusable ({why}); moved aside to {moved.name}, "
                  f"retraining", stacklevel=3)


def check_state_dict(model: torch.nn.Module, state, source) -> None:
    """Raise CorruptCheckpointError unless `state` has exactly `model`'s tensors (names and
    shapes). Checked before load_state_dict, which would copy the matching ones first."""
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{source}: 'model' holds {type(state).__name__}, "
                                     f"not a state dict")
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise CorruptCheckpointError(f"{source} does not fit the model: missing {missing[:5]}, "
                                     f"unexpected {extra[:5]}")
    for name, t in want.items():
        v = state[name]
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(t.shape):
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise CorruptCheckpointError(f"{source}: {name} is {got}, the model has "
                                         f"{tuple(t.shape)}")


def _load_final(final: Path, key: dict, model: torch.nn.Module):
    """(model with the cached weights, record) or raise CorruptCheckpointError."""
    ckpt = load_checkpoint(final, require_hash=True)
    if ckpt.get("key") != key:
        raise CorruptCheckpointError(f"{final} was written for another configuration")
    record = ckpt.get("record")
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise CorruptCheckpointError(f"{final}: 'record' is {type(record).__name__}, "
                                     f"not a training record")
    check_state_dict(model, ckpt.get("model"), final)
    model.load_state_dict(ckpt["model"])
    return model, record


def _usable_state(state: Path, recipe: Recipe, seed: int, device_type: str, cadence: int):
    """Check a leftover state.pt before train() resumes from it: move it aside (with a
    warning) if unusable or written for checkpoints that do not cover `cadence`."""
    if not state.exists():
        return
    try:
        ckpt = load_checkpoint(state)
        missing = [k for k in _STATE_KEYS if k not in ckpt]
        if missing:
            raise CorruptCheckpointError(f"lacks {missing}")
        config = ckpt["config"]
        if not isinstance(config, dict) or not isinstance(config.get("recipe"), dict):
            raise CorruptCheckpointError("holds no run configuration")
        rec = dict(config["recipe"])
        every = rec.pop("checkpoint_every", None)
        if rec != _weight_recipe(recipe) or config.get("seed") != seed:
            raise CorruptCheckpointError("written for another recipe or seed")
        if config.get("device") != device_type:
            raise CorruptCheckpointError(f"written on {config.get('device')}, resuming on "
                                         f"{device_type}")
        if every != cadence:
            raise CorruptCheckpointError(f"writes checkpoints every {every} epochs, "
                                         f"{cadence} are needed")
    except Exception as err:  # any unreadable or unfitting state: start over
        _warn_and_move(state, err)


def _missing_checkpoints(folder: Path, epochs: list[int]) -> list[int]:
    """Epochs whose checkpoint is absent or fails its hash (those are moved aside)."""
    missing = []
    for e in epochs:
        path = _epoch_path(folder, e)
        if not path.exists():
            missing.append(e)
            continue
        try:
            verify_hash(path, require=True)
        except CorruptCheckpointError as err:
            _warn_and_move(path, err)
            missing.append(e)
    return missing


def _written_cadence(record: dict) -> int:
    """checkpoint_every of the run that wrote a cached record (0 if unknown)."""
    config = record.get("config")
    rec = config.get("recipe") if isinstance(config, dict) else None
    every = rec.get("checkpoint_every") if isinstance(rec, dict) else 0
    return every if isinstance(every, int) and every > 0 else 0


def _check_inputs(arch, data, recipe, seed, cache_dir, progress, model_kwargs):
    if not isinstance(arch, str) or not arch:
        raise TypeError(f"arch must be a model name such as 'resnet20', got {arch!r}")
    if isinstance(data, str):
        from kdlib.data import load_dataset
        data = load_dataset(data)
    from kdlib.data import Dataset
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a kdlib.data.Dataset or a data set name for "
                        f"load_dataset, got {type(data).__name__}")
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe (e.g. Recipe.preset('default')), "
                        f"got {type(recipe).__name__}")
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(cache_dir, str | os.PathLike):
        raise TypeError(f"cache_dir must be a folder path (str or Path), "
                        f"got {type(cache_dir).__name__}")
    if Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise ValueError(f"cache_dir {str(cache_dir)!r} is a file; pass a folder (it is "
                         f"created if missing)")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict or None, got {type(model_kwargs).__name__}")
    return data, seed, dict(model_kwargs or {})


def get_teacher(arch: str, data, recipe: Recipe | None = None, seed: int = 0, *,
                cache_dir=DEFAULT_CACHE_DIR, device="auto", progress: bool = True,
                model_kwargs: dict | None = None, pretrained=None):
    """Return (teacher model on the CPU in eval mode, training record), training it on
    first use (see the module docstring for what is cached and how failures recover).

    data: a kdlib.data.Dataset (or a name for load_dataset, loaded from "data/").
    record["checkpoint_epochs"]: the epochs of recipe.checkpoint_every, all on disk.
    pretrained: path of a published CIFAR teacher (RepDistiller/mdistiller files, see
    `kdlib.published.load_published`) to register in the cache instead of training (recipe
    and seed are then not used); see `published_teacher`.
    Two processes asking for the same teacher at once (sweep workers, Dask workers on a
    shared folder) do not both train it: the first holds `<folder>/.lock` (an exclusive
    fcntl lock) while it trains, the others wait and then load its files.
    Raises ValueError/TypeError for bad inputs (an unknown arch included) and
    kdlib.atomic.DiskFullError when the cache's disk is full.
    """
    if pretrained is not None:
        return published_teacher(arch, data, pretrained, cache_dir=cache_dir)
    if recipe is None:
        raise TypeError("get_teacher needs a recipe (e.g. Recipe.preset('default')) unless "
                        "pretrained= names a published teacher file")
    from kdlib.devices import resolve_device
    from kdlib.train import make_model

    data, seed, model_kwargs = _check_inputs(arch, data, recipe, seed, cache_dir, progress,
                                             model_kwargs)
    dev = resolve_device(device)
    fresh = make_model(arch, data, seed=seed, **model_kwargs)  # an unknown arch fails here
    key = teacher_key(arch, data, recipe, seed, model_kwargs)
    folder = teacher_dir(key, cache_dir)
    with folder_lock(folder):
        return _get_locked(arch, data, recipe, seed, dev, progress, model_kwargs, fresh, key,
                           folder)


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold an exclusive lock on `<folder>/.lock` (fcntl.flock; a no-op where fcntl is
    missing) for the duration of a ``with`` block; `folder` is created if missing. A
    process that must wait says so once. The lock file stays (empty); the lock dies with
    the process that holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        yield
        return
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        _warn_and_move(folder, "a file where the cache folder belongs")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish teacher {folder.name} ...",
                  flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _get_locked(arch, data, recipe, seed, dev, progress, model_kwargs, fresh, key, folder):
    final = folder / "final.pt"
    needed = needed_epochs(recipe)
    cadence = cache_cadence(recipe.epochs, recipe.checkpoint_every)

    if folder.exists() and not folder.is_dir():
        _warn_and_move(folder, "a file where the cache folder belongs")
    if final.exists():
        try:
            model, record = _load_final(final, key, fresh)
        except Exception as err:  # every load failure: unusable, moved aside, retrained
            _warn_and_move(final, err)
        else:
            missing = _missing_checkpoints(folder, needed)
            if not missing:
                record = {**record, "cache_dir": str(folder), "checkpoint_epochs": needed}
                return model.eval(), record
            cadence = math.gcd(cadence, _written_cadence(record) or cadence)
            warnings.warn(f"cached teacher {folder} lacks the checkpoints of epochs {missing} "
                          f"(recipe.checkpoint_every={recipe.checkpoint_every}); retraining it "
                          f"from seed to write every {cadence} epochs", stacklevel=3)

    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "state.pt"
    _usable_state(state, recipe, seed, dev.type, cadence)
    model, record = _train(arch, data, recipe.replace(checkpoint_every=cadence), seed, folder,
                           dev, progress, model_kwargs, state)
    record["config"]["arch"] = arch
    record["cache_dir"] = str(folder)
    save_atomic({"model": model.state_dict(), "record": record, "key": key}, final)
    _discard(state)  # final.pt replaces it
    return model.eval(), {**record, "checkpoint_epochs": needed}


def published_teacher(arch: str, data, path, *, cache_dir=DEFAULT_CACHE_DIR):
    """(teacher, record) for a published CIFAR teacher file, registered in the cache.

    The file is read with `kdlib.published.load_published` (refused whole when it holds
    another architecture) and copied into ``<cache_dir>/<arch>-published-<hash>/final.pt``
    (hashed, keyed by the file's SHA-256 and class count), so later calls and other
    processes load the verified copy. The returned teacher takes batches of `data` as kdlib
    normalizes them (its train-split statistics) and re-normalizes them to the constants it
    was trained with (`kdlib.published.renormalized`). record: {"published": {"path",
    "sha256", "form", "epoch", "accuracy"}, "normalization": name, "config": {"arch"},
    "cache_dir"}.
    """
    from kdlib.atomic import sha256_file
    from kdlib.published import load_published, renormalized

    if not isinstance(arch, str) or not arch:
        raise TypeError(f"arch must be a model name such as 'resnet56', got {arch!r}")
    if isinstance(data, str):
        from kdlib.data import load_dataset
        data = load_dataset(data)
    if not isinstance(path, (str, os.PathLike)) or not Path(path).is_file():
        raise FileNotFoundError(f"pretrained teacher file {path!r} does not exist")
    digest = sha256_file(path)
    key = {"format": CACHE_FORMAT, "arch": arch, "data": "published",
           "sha256": digest, "num_classes": data.num_classes}
    folder = teacher_dir(key, cache_dir)
    final = folder / "final.pt"
    with folder_lock(folder):
        model = None
        if final.exists():
            try:
                ckpt = load_checkpoint(final, require_hash=True)
                if ckpt.get("key") != key:
                    raise CorruptCheckpointError(f"{final} was written for another file")
                from kdlib.train import make_model
                model = make_model(arch, data)
                check_state_dict(model, ckpt.get("model"), final)
                model.load_state_dict(ckpt["model"])
                record = ckpt["record"]
            except Exception as err:
                _warn_and_move(final, err)
                model = None
        if model is None:
            model = load_published(arch, path, num_classes=data.num_classes)
            meta = dict(model.published_meta)
            record = {"published": {"path": os.fspath(path), "sha256": digest,
                                    **{k: meta.get(k) for k in ("form", "epoch", "accuracy")}},
                      "normalization": model.input_normalization.name,
                      "config": {"arch": arch}}
            folder.mkdir(parents=True, exist_ok=True)
            save_atomic({"model": model.state_dict(), "record": record, "key": key}, final)
    from kdlib.published import PUBLISHED_CIFAR100

    model.input_normalization = PUBLISHED_CIFAR100
    return renormalized(model.eval(), data).eval(), {**record, "cache_dir": str(folder)}


def _train(arch, data, recipe, seed, folder, dev, progress, model_kwargs, state):
    """Train a freshly built model in `folder` (resuming from state.pt when present);
    one retry from scratch if resuming fails for any reason but a full disk."""
    from kdlib.atomic import DiskFullError
    from kdlib.train import make_model, train

    def run():
        model = make_model(arch, data, seed=seed, **model_kwargs)
        # eval_every=0: no per-epoch test evaluation (nothing reads a teacher's history of
        # test metrics; the final metrics are computed once at the end either way)
        record = train(model, data, recipe, device=dev, seed=seed, checkpoint_dir=folder,
                       progress=progress, name=f"teacher {arch}", eval_every=0)
        return model.cpu(), record

    if not state.exists():
        return run()
    try:
        return run()
    except DiskFullError:
        raise
    except Exception as err:
        if not state.exists():
            raise
        _warn_and_move(state, f"resuming failed: {err}")
        return run()


def teacher_checkpoints(record: dict) -> dict[int, Path]:
    """{epoch: path} of the intermediate checkpoints of a cached teacher: those of the
    caller's recipe.checkpoint_every (record["checkpoint_epochs"]) when the record comes
    from get_teacher, else every `epoch_*.pt` in its folder."""
    if not isinstance(record, dict) or "cache_dir" not in record:
        raise TypeError("record must be a training record from get_teacher (with 'cache_dir')")
    folder = Path(record["cache_dir"])
    found = {int(m.group(1)): p for p in sorted(folder.glob("epoch_*.pt"))
             if (m := re.fullmatch(r"epoch_(\d+)\.pt", p.name))}
    wanted = record.get("checkpoint_epochs")
    if wanted is None:
        return found
    return {e: found[e] for e in wanted if e in found}


def load_weights(model: torch.nn.Module, path, *, require_hash: bool = True) -> torch.nn.Module:
    """Load a kdlib checkpoint's weights into `model` (weights_only=True) and return it.

    The file must match its `.sha256` sidecar (require_hash=False also accepts a file
    without one) and hold exactly the model's tensors; otherwise CorruptCheckpointError
    is raised and `model` is left unchanged.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ckpt = load_checkpoint(path, require_hash=require_hash)
    check_state_dict(model, ckpt.get("model"), path)
    model.load_state_dict(ckpt["model"])
    return model
