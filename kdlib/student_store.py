"""The student store: every distilled student's final weights and test logits, kept once.

    <folder>/<digest>.pt    {"key": ..., "model": state_dict, "test_logits": N x C float32,
                             "record": the engine's record (config, history, metrics)}

written with `kdlib.checkpoint.save_atomic` (SHA-256 sidecar) and read with weights_only=True.
A student is identified by what determines its weights (`student_key`): the data set, the
teacher (architecture, options, recipe, seed), the student (architecture, options, recipe),
the loss, its options, tau, alpha and the seed (initialization and batch order). Recipes are
compared by their fields, so "paper", {"preset": "paper"} and the same fields spelled out
are one recipe; how often checkpoints are written and whether a data set may be downloaded
are not part of the key. Students that several notebooks define identically are therefore
trained once, and any later analysis (t-SNE, fidelity, ECE with other bins) reads the
weights or logits instead of retraining.

    results = distill_students(folder, data, teacher_model, teacher_id, "resnet14",
                               recipe_spec, [{"loss": "kd", "temperature": 4.0}], seed=0)

Students missing from the store are trained together with `kdlib.stacked.distill_stacked`
(same initialization and batches, as if the whole list were one stack) and saved.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kdlib._validate import check_int, check_positive

KEY_VERSION = 1
_DATA_IGNORED = ("download",)


def data_key(spec: dict) -> dict:
    """A data spec ({"name", "seed", subsets, load_dataset options}) without the keys that do
    not change the data ("download"), with the default seed 0 filled in."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"data spec must be a dict with a 'name', got {spec!r}")
    out = {k: v for k, v in spec.items() if k not in _DATA_IGNORED}
    out.setdefault("seed", 0)
    return dict(sorted(out.items()))


def recipe_key(spec) -> dict:
    """The Recipe fields of a recipe spec (`kdlib.recipe.recipe_from_spec`), without
    checkpoint_every (how often a run is saved does not change its weights)."""
    from kdlib.recipe import recipe_from_spec

    d = recipe_from_spec(spec).to_dict()
    d.pop("checkpoint_every", None)
    return d


def teacher_id(data: dict, arch: str, recipe, seed: int = 0, kwargs: dict | None = None) -> dict:
    """The part of a student key that names its teacher: data, architecture, options,
    recipe fields and seed (a cached teacher of `kdlib.teachers` is a function of these)."""
    if not isinstance(arch, str) or not arch:
        raise TypeError(f"teacher arch must be a non-empty string, got {arch!r}")
    return {"data": data_key(data), "arch": arch, "kwargs": _plain_kwargs(kwargs),
            "recipe": recipe_key(recipe), "seed": check_int(seed, "teacher seed", minimum=0)}


def _plain_kwargs(kwargs) -> dict:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"model options must be a dict, got {type(kwargs).__name__}")
    return {str(k): (list(v) if isinstance(v, tuple) else v) for k, v in sorted(kwargs.items())
            if k != "num_classes"}


def student_key(teacher: dict, student: str, student_recipe, loss: str, temperature: float,
                seed: int, alpha: float = 1.0, student_kwargs: dict | None = None,
                loss_kwargs: dict | None = None) -> dict:
    """Everything that determines a distilled student's weights, as plain JSON.

    teacher: `teacher_id(...)`; loss: a loss name ("kd", "dist", ...); temperature > 0;
    alpha in [0, 1] (1 = no cross-entropy); seed: initialization and batch order."""
    if not isinstance(teacher, dict) or {"data", "arch", "recipe", "seed"} - set(teacher):
        raise ValueError("teacher must be a teacher_id(...) dict")
    if not isinstance(student, str) or not student:
        raise TypeError(f"student arch must be a non-empty string, got {student!r}")
    if not isinstance(loss, str) or not loss:
        raise TypeError(f"loss must be a loss name such as 'kd', got {loss!r}")
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return {"version": KEY_VERSION, "teacher": teacher, "student": student,
            "student_kwargs": _plain_kwargs(student_kwargs),
            "student_recipe": recipe_key(student_recipe), "loss": loss,
            "loss_kwargs": _plain_kwargs(loss_kwargs),
            "temperature": check_positive(temperature, "temperature"), "alpha": alpha,
            "seed": check_int(seed, "seed", minimum=0)}


def key_digest(key: dict) -> str:
    """The file name stem of a key: the first 24 hex digits of the SHA-256 of its canonical
    JSON (sorted keys)."""
    if not isinstance(key, dict):
        raise TypeError(f"key must be a dict from student_key, got {type(key).__name__}")
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def student_file(folder, key: dict) -> Path:
    """<folder>/<key_digest(key)>.pt"""
    return Path(folder) / f"{key_digest(key)}.pt"


def load_student(folder, key: dict) -> dict | None:
    """The stored student of `key` ({"key", "model", "test_logits", "record"}), or None when
    it is not there. A corrupt file or one holding another key is moved aside (a warning)
    and treated as missing."""
    import warnings

    from kdlib.checkpoint import CorruptCheckpointError, load_checkpoint, move_aside

    path = student_file(folder, key)
    if not path.is_file():
        return None
    try:
        obj = load_checkpoint(path)
    except CorruptCheckpointError as err:
        warnings.warn(f"student store: {err}; retraining", stacklevel=2)
        move_aside(path)
        return None
    if obj.get("key") != key or not {"model", "test_logits", "record"} <= set(obj):
        warnings.warn(f"student store: {path} does not hold the expected student; retraining",
                      stacklevel=2)
        move_aside(path)
        return None
    return obj


def save_student(folder, key: dict, model, test_logits, record: dict) -> Path:
    """Save a trained student (state_dict on the CPU), its N x C test logits (float32) and
    its record under `student_file(folder, key)`, atomically."""
    import torch

    from kdlib.checkpoint import save_atomic

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    logits = torch.as_tensor(test_logits).detach().float().cpu()
    if logits.ndim != 2:
        raise ValueError(f"test_logits must be N x C, got shape {tuple(logits.shape)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_atomic({"key": key, "model": state, "test_logits": logits,
                        "record": _plain_record(record)}, student_file(folder, key))


def _plain_record(record):
    """The record as weights_only-loadable data (tuples -> lists, numpy/torch scalars ->
    numbers)."""
    if isinstance(record, dict):
        return {str(k): _plain_record(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [_plain_record(v) for v in record]
    if record is None or isinstance(record, (bool, int, float, str)):
        return record
    if hasattr(record, "item"):
        return record.item()
    return str(record)


def distill_students(folder, data, teacher_model, teacher: dict, student: str,
                     student_recipe, specs: list, seed: int, *, student_kwargs=None,
                     progress: bool = False, checkpoint_dir=None,
                     mode: str = "auto") -> list[dict]:
    """Every student of `specs` ([{"loss", "temperature", optional "alpha"}], logit losses
    that `kdlib.stacked.distill_stacked` stacks) distilled from `teacher_model` on `data`
    (a kdlib Dataset), read from the store where it is there, the others trained together
    (shared initialization `seed` and batches) and saved.

    teacher: `teacher_id(...)` of teacher_model. Returns one dict per spec, in order:
    {"key", "record", "test_logits" (N x C float32 CPU tensor), "model" (the student's
    state_dict), "cached" (True when it was read from the store)}.
    checkpoint_dir: where the stacked run keeps its resumable state (distill_stacked's
    checkpoint_dir: a killed run resumes from its last complete epoch); the state is removed
    once every student is saved in the store. mode: distill_stacked's representation."""

    if not isinstance(specs, (list, tuple)) or not specs:
        raise ValueError("specs must be a non-empty list of {'loss', 'temperature'} dicts")
    seed = check_int(seed, "seed", minimum=0)
    keys = []
    for i, s in enumerate(specs):
        if not isinstance(s, dict) or {"loss", "temperature"} - set(s) or \
                set(s) - {"loss", "temperature", "alpha"}:
            raise ValueError(f"specs[{i}] must be {{'loss', 'temperature'[, 'alpha']}}, "
                             f"got {s!r}")
        keys.append(student_key(teacher, student, student_recipe, s["loss"], s["temperature"],
                                seed, s.get("alpha", 1.0), student_kwargs))
    with group_lock(folder, keys):
        return _distill_students(folder, data, teacher_model, student, student_recipe, specs,
                                 seed, keys, student_kwargs, progress, checkpoint_dir, mode)


def group_lock(folder, keys: list):
    """An exclusive cross-process lock for a group of student keys (kdlib.teachers.folder_lock
    on <folder>/.locks/<digest of the keys>): two processes asking for the same students at
    once (notebooks run side by side, sweep workers) train them once; the second waits, then
    reads them. Stale lock files are harmless (the lock dies with its process)."""
    from kdlib.teachers import folder_lock

    digest = key_digest({"group": sorted(key_digest(k) for k in keys)})
    return folder_lock(Path(folder) / ".locks" / digest)


def _distill_students(folder, data, teacher_model, student, student_recipe, specs, seed, keys,
                      student_kwargs, progress, checkpoint_dir=None, mode="auto"):
    from kdlib.recipe import recipe_from_spec
    from kdlib.stacked import distill_stacked
    from kdlib.train import make_model, predict_logits

    found = [load_student(folder, k) for k in keys]
    todo = [i for i, f in enumerate(found) if f is None]
    if todo:
        kwargs = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in _plain_kwargs(student_kwargs).items()}
        models = [make_model(student, data, seed=seed, **kwargs) for _ in todo]
        run_specs = [{"loss": specs[i]["loss"], "temperature": float(specs[i]["temperature"]),
                      "alpha": float(specs[i].get("alpha", 1.0))} for i in todo]
        records = distill_stacked(models, teacher_model, data, run_specs,
                                  recipe_from_spec(student_recipe), seed=seed,
                                  progress=progress, checkpoint_dir=checkpoint_dir, mode=mode)
        for i, model, rec in zip(todo, models, records):
            logits = predict_logits(model, data)
            save_student(folder, keys[i], model, logits, rec)
            found[i] = {"key": keys[i], "model": model.state_dict(), "test_logits": logits,
                        "record": rec, "cached": False}
        if checkpoint_dir is not None:  # every student is in the store: the state is spent
            for name in ("state.pt", "state.pt.sha256"):
                (Path(checkpoint_dir) / name).unlink(missing_ok=True)
    for f in found:
        f.setdefault("cached", True)
    return found


def distill_one(folder, data, teacher_model, teacher: dict, student: str, student_recipe,
                loss: str, temperature: float, seed: int, *, alpha: float = 1.0,
                loss_kwargs: dict | None = None, student_kwargs=None) -> dict:
    """One student distilled with `kdlib.train.distill` (for losses that do not stack, such
    as FitNet's hints with their own regressor), read from the store when it is there, else
    trained (no per-epoch evaluation) and saved. Returns the dict of `distill_students`."""

    seed = check_int(seed, "seed", minimum=0)
    key = student_key(teacher, student, student_recipe, loss, temperature, seed, alpha,
                      student_kwargs, loss_kwargs)
    with group_lock(folder, [key]):
        return _distill_one(folder, data, teacher_model, student, student_recipe, loss,
                            temperature, seed, alpha, loss_kwargs, student_kwargs, key)


def _distill_one(folder, data, teacher_model, student, student_recipe, loss, temperature,
                 seed, alpha, loss_kwargs, student_kwargs, key):
    from kdlib.recipe import recipe_from_spec
    from kdlib.train import distill, make_model, predict_logits

    found = load_student(folder, key)
    if found is not None:
        return {**found, "cached": True}
    kwargs = {k: tuple(v) if isinstance(v, list) else v
              for k, v in _plain_kwargs(student_kwargs).items()}
    model = make_model(student, data, seed=seed, **kwargs)
    rec = distill(model, teacher_model, data, loss, float(temperature),
                  recipe_from_spec(student_recipe), alpha=float(alpha), seed=seed,
                  progress=False, eval_every=0, loss_kwargs=dict(loss_kwargs or {}))
    logits = predict_logits(model, data)
    save_student(folder, key, model, logits, rec)
    return {"key": key, "model": model.state_dict(), "test_logits": logits, "record": rec,
            "cached": False}


__all__ = ["KEY_VERSION", "data_key", "distill_one", "distill_students", "group_lock",
           "key_digest", "load_student", "recipe_key", "save_student", "student_file",
           "student_key", "teacher_id"]
