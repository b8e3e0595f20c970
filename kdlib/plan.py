"""A plan before the spend: every run a selection needs, what is cached, GPU-hours.

Each experiment lists its runs with ``plan_runs(cfg) -> list[PlannedRun]`` (nothing is
trained or loaded). `plan_frame` merges the lists of several notebooks, counts a run that
several notebooks define identically once (same `key`), marks what is already done, and
estimates GPU-hours from a cost model:

    cost of a run = epochs x images x (members x 3 x MACs(model) + 1 x MACs(teacher))

in multiply-accumulates per image (a training step is about three forward passes: forward,
backward through activations and through weights; a distillation adds the teacher's
forward, once per batch for all the members of a stack). Hours = cost / (throughput x
MACs(resnet14) x 3), where `throughput` is resnet14 student-images per second per GPU
while stacked students train: DEFAULT_THROUGHPUT unless measured (``--throughput``, e.g.
the figure `benchmarks/bench_sweep.py` prints on the GPU).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import pandas as pd

ROLES = ("teacher", "assistant", "student")
DEFAULT_THROUGHPUT = 60_000.0
"""resnet14 student-images/s on one H100/H200-class GPU, stacked students of one teacher,
bf16. Not measured with kdlib (no GPU has been lent to its development yet): it is the
middle of the range expected from the stacked engine's per-step cost (12-20 GPU-hours for
the 3.96e9 student-images of the Table 6 protocol). Pass a measured figure instead."""
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "tinyimagenet": 100_000,
                "digits": 1_258}
INPUT_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
                "tinyimagenet": (3, 64, 64), "digits": (1, 8, 8)}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200, "digits": 10,
               "gmm10": 10, "gmm100": 100}


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a plan.

    notebook: who asks for it ("02_temperature_sweep"). role: ROLES. arch: kdlib model name
    (the student's for a stacked cell). dataset: data set name. epochs: training epochs.
    images: training images per epoch. members: models trained together (students of one
    stacked cell; 1 otherwise). teacher: the architecture distilled from (None: trained on
    labels). key: identity of the weights (runs with equal keys are trained once). done:
    already in the cache or the sweep store. label: short human description.
    model_kwargs, teacher_kwargs: extra build_model arguments (MLP widths).
    """

    notebook: str
    role: str
    arch: str
    dataset: str
    epochs: int
    images: int
    key: str
    members: int = 1
    teacher: str | None = None
    done: bool = False
    label: str = ""
    model_kwargs: dict = field(default_factory=dict, hash=False, compare=False)
    teacher_kwargs: dict = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        for name in ("epochs", "images", "members"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.key, str) or not self.key:
            raise TypeError(f"key must be a non-empty string, got {self.key!r}")


def run_key(**fields) -> str:
    """A key from the plain values that determine a run's weights (canonical JSON)."""
    return json.dumps(fields, sort_keys=True, default=str)


def train_images(data_spec: dict) -> int:
    """Training images per epoch of a data spec ({"name", "n_train"/"subset_train", ...})."""
    if not isinstance(data_spec, dict) or "name" not in data_spec:
        raise ValueError(f"data spec must be a dict with a 'name', got {data_spec!r}")
    for k in ("subset_train", "n_train"):
        if data_spec.get(k) is not None:
            return int(data_spec[k])
    name = data_spec["name"]
    if name in TRAIN_IMAGES:
        return TRAIN_IMAGES[name]
    if name.startswith("gmm"):
        return 10_000
    raise ValueError(f"unknown data set {name!r}")


@lru_cache(maxsize=256)
def _macs(arch: str, dataset: str, kwargs_json: str) -> int:
    import torch

    from kdlib.models import build_model

    kwargs = json.loads(kwargs_json)
    classes = NUM_CLASSES.get(dataset, 10)
    if arch == "mlp":
        dims = [kwargs.get("in_features", 2), *kwargs.get("hidden", (64, 64)), classes]
        return int(sum(a * b for a, b in zip(dims, dims[1:], strict=False)))
    shape = INPUT_SHAPES.get(dataset, (3, 32, 32))
    model = build_model(arch, classes, in_channels=shape[0], **kwargs).eval()
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total[0] += output.numel() * k * module.in_channels // module.groups
        elif isinstance(module, torch.nn.Linear):
            total[0] += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total[0]


def macs(arch: str, dataset: str = "cifar100", model_kwargs: dict | None = None) -> int:
    """Multiply-accumulates of one forward pass of one image (convolutions and linear
    layers), for `dataset`'s input shape and class count."""
    if not isinstance(arch, str) or not arch:
        raise TypeError(f"arch must be a model name, got {arch!r}")
    return _macs(arch, dataset, json.dumps(model_kwargs or {}, sort_keys=True))


def run_cost(run: PlannedRun) -> float:
    """Multiply-accumulates of a whole run (module docstring)."""
    per_image = run.members * 3 * macs(run.arch, run.dataset, run.model_kwargs)
    if run.teacher is not None:
        per_image += macs(run.teacher, run.dataset, run.teacher_kwargs)
    return float(run.epochs) * run.images * per_image


def gpu_hours(cost: float, throughput: float = DEFAULT_THROUGHPUT) -> float:
    """GPU-hours of `cost` multiply-accumulates at `throughput` resnet14 student-images/s."""
    if not isinstance(throughput, (int, float)) or not math.isfinite(throughput) \
            or throughput <= 0:
        raise ValueError(f"throughput must be a finite number > 0 (images/s), got "
                         f"{throughput!r}")
    unit = 3 * macs("resnet14", "cifar100")
    return cost / (throughput * unit) / 3600.0


def plan_frame(runs, throughput: float = DEFAULT_THROUGHPUT) -> pd.DataFrame:
    """One row per planned run (duplicates included) with columns notebook, role, arch,
    teacher, dataset, epochs, images, members, label, done, duplicate (an earlier row has
    the same key: it will not train again), gpu_hours (0 for done and duplicate rows).
    A run is done when any row with its key is (one notebook may know what another
    cannot: its own store)."""
    runs = list(runs)
    for r in runs:
        if not isinstance(r, PlannedRun):
            raise TypeError(f"runs must be PlannedRun objects, got {type(r).__name__}")
    done_keys = {r.key for r in runs if r.done}
    seen: set[str] = set()
    rows = []
    for r in runs:
        duplicate = r.key in seen
        seen.add(r.key)
        done = r.key in done_keys
        hours = 0.0 if (duplicate or done) else gpu_hours(run_cost(r), throughput)
        row = asdict(r)
        row.pop("model_kwargs")
        row.pop("teacher_kwargs")
        row.update(done=done, duplicate=duplicate, gpu_hours=hours,
                   full_gpu_hours=gpu_hours(run_cost(r), throughput))
        rows.append(row)
    return pd.DataFrame(rows, columns=[
        "notebook", "role", "arch", "teacher", "dataset", "epochs", "images", "members",
        "label", "key", "done", "duplicate", "gpu_hours", "full_gpu_hours"])


def plan_totals(frame: pd.DataFrame) -> dict:
    """Totals of a plan_frame: runs asked for, unique, saved by deduplication, done, to
    train; student models; GPU-hours to spend, and what they would be without dedup."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError("frame must be a DataFrame from plan_frame")
    if not len(frame):
        return {"runs": 0, "unique": 0, "saved_by_dedup": 0, "done": 0, "to_train": 0,
                "models_to_train": 0, "gpu_hours": 0.0, "gpu_hours_without_dedup": 0.0,
                "saved_gpu_hours": 0.0}
    frame = frame.astype({"duplicate": bool, "done": bool})
    unique = frame[~frame["duplicate"]]
    todo = unique[~unique["done"]]
    return {"runs": int(len(frame)), "unique": int(len(unique)),
            "saved_by_dedup": int(frame["duplicate"].sum()),
            "done": int(unique["done"].sum()), "to_train": int(len(todo)),
            "models_to_train": int(todo["members"].sum()),
            "gpu_hours": float(todo["gpu_hours"].sum()),
            "gpu_hours_without_dedup": float(frame.loc[~frame["done"], "full_gpu_hours"].sum()),
            "saved_gpu_hours": float(frame.loc[frame["duplicate"] & ~frame["done"],
                                               "full_gpu_hours"].sum())}


def format_plan(frame: pd.DataFrame, throughput: float = DEFAULT_THROUGHPUT) -> str:
    """The plan as text: one line per notebook and role, then the totals."""
    lines = []
    if len(frame):
        grouped = (frame.assign(unique=~frame["duplicate"])
                   .groupby(["notebook", "role"], sort=False)
                   .agg(runs=("key", "size"), unique=("unique", "sum"), done=("done", "sum"),
                        models=("members", "sum"), epochs=("epochs", "max"),
                        gpu_hours=("gpu_hours", "sum")))
        lines.append(grouped.to_string(float_format=lambda v: f"{v:,.4g}"))
    t = plan_totals(frame)
    lines += [
        "",
        f"runs asked for: {t['runs']}; unique: {t['unique']} (deduplication saves "
        f"{t['saved_by_dedup']} runs, {t['saved_gpu_hours']:,.3g} GPU-hours); already done: "
        f"{t['done']}; to train: {t['to_train']} ({t['models_to_train']} models)",
        f"GPU-hours to spend: {t['gpu_hours']:,.4g} (without deduplication "
        f"{t['gpu_hours_without_dedup']:,.4g}) at {throughput:,.0f} resnet14 "
        f"student-images/s per GPU",
    ]
    return "\n".join(lines)


def teacher_run(data: dict, arch: str, recipe_spec, seed: int, label: str = "",
                model_kwargs: dict | None = None, cache_dir=None) -> PlannedRun:
    """The PlannedRun of a teacher from the teacher cache (`kdlib.teachers.get_teacher`),
    keyed as the cache keys it (architecture and its arguments, data spec, the recipe's
    weight-determining fields, seed), so every notebook asking for it counts it once.

    done: the cache already holds it. Finding its folder needs the data set's fingerprint,
    so the data set is loaded when its files are present (nothing is written); a missing
    data set leaves done False.
    """
    from kdlib.recipe import recipe_from_spec

    recipe = recipe_from_spec(recipe_spec)
    weights = recipe.to_dict()
    weights.pop("checkpoint_every")
    spec = {k: v for k, v in data.items() if k != "download"}
    kwargs = dict(model_kwargs or {})
    key = run_key(role="teacher", arch=arch, data=spec, recipe=weights, seed=int(seed),
                  **({"model_kwargs": kwargs} if kwargs else {}))
    return PlannedRun("", "teacher", arch, data["name"], recipe.epochs, train_images(data),
                      key=key, label=label or f"teacher {arch}", model_kwargs=kwargs,
                      done=_teacher_cached(spec, arch, recipe, int(seed), kwargs, cache_dir))


def _teacher_cached(spec, arch, recipe, seed, kwargs, cache_dir) -> bool:
    from kdlib.experiments.common import load_data, missing_data, teacher_cache_dir
    from kdlib.teachers import teacher_dir, teacher_key

    if spec["name"] not in NUM_CLASSES or missing_data(spec):
        return False
    try:
        data = load_data(spec)
    except (OSError, ValueError):  # present but unreadable: not known to be cached
        return False
    folder = teacher_dir(teacher_key(arch, data, recipe, seed, kwargs),
                         cache_dir or teacher_cache_dir())
    return (folder / "final.pt").is_file()


def student_runs(data: dict, teacher: str, teacher_recipe, teacher_seed: int, student: str,
                 student_recipe, specs: list, seed: int, store: str,
                 student_kwargs: dict | None = None, loss_kwargs: dict | None = None,
                 label: str = "", teacher_kwargs: dict | None = None,
                 teacher_extra: dict | None = None) -> list[PlannedRun]:
    """One PlannedRun per student of a group trained together from the student store
    (`kdlib.student_store.distill_students` / `distill_one`): keyed by
    `student_store.student_key`, so a student several notebooks define identically counts
    once; done when the store (runs/<store>/students) holds it. specs: [{"loss",
    "temperature"[, "alpha"]}]. teacher_kwargs: the teacher's build_model arguments;
    teacher_extra: entries the caller adds to the teacher's id (e.g. a control's held-out
    fraction), as it does when it trains them."""
    from kdlib.experiments.common import students_dir
    from kdlib.recipe import recipe_from_spec
    from kdlib.student_store import student_file, student_key, teacher_id

    t_id = {**teacher_id(data, teacher, teacher_recipe, teacher_seed, kwargs=teacher_kwargs),
            **(teacher_extra or {})}
    folder = students_dir(store)
    epochs = recipe_from_spec(student_recipe).epochs
    runs = []
    for spec in specs:
        key = student_key(t_id, student, student_recipe, spec["loss"], spec["temperature"],
                          seed, spec.get("alpha", 1.0), student_kwargs, loss_kwargs)
        runs.append(PlannedRun(
            "", "student", student, data["name"], epochs, train_images(data),
            key=run_key(student=key), teacher=teacher, done=student_file(folder, key).is_file(),
            label=label or f"{teacher} -> {student} {spec['loss']} at tau "
                           f"{spec['temperature']:g}, seed {seed}"))
    return runs


def stored_cells(store, cells: list, namespace: str | None = None) -> list[bool]:
    """For each sweep cell: True when the sweep store file `store` holds its result under
    `namespace`. A missing store means nothing is stored (it is never created)."""
    from pathlib import Path

    from kdlib import sweep

    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise TypeError("cells must be a list of sweep cells (dicts)")
    if not Path(store).is_file():
        return [False] * len(cells)
    held = {r["_key"] for r in sweep.load(store, namespace)}
    return [sweep.cell_key(c, namespace) in held for c in cells]


__all__ = ["DEFAULT_THROUGHPUT", "PlannedRun", "format_plan", "gpu_hours", "macs",
           "plan_frame", "plan_totals", "run_cost", "run_key", "stored_cells", "student_runs",
           "teacher_run",
           "train_images"]
