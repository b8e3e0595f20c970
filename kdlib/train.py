"""Training and distillation of one model.

    record = train(model, data, recipe)                          # a teacher, cross-entropy
    record = distill(student, teacher, data, "kd", 4.0, recipe)  # a student

Both run through the one loop of `kdlib.engine` as a stack of one member (the stacked
runs of `kdlib.stacked` go through the same loop with K members).

`data` is a `kdlib.data.Dataset` (or a `kdlib.batches.DeviceData` already on the device).
Batches are index slices of tensors on the training device, augmented as whole batches.
The model is trained in place; the returned record is plain data (config, per-epoch
history, final metrics) that pickles, JSON-encodes and goes into a sweep store.

Final metrics are from the LAST epoch (record["metrics_from"] == "last_epoch"): the
engine never selects an epoch on the test set.

Inputs are checked once, at entry: data (via DeviceData), targets and teacher_logits must
be finite, the models' weights finite, loss_kwargs known to the loss. A run whose training
loss becomes NaN/inf stops with `TrainingDiverged` (see `DivergenceGuard`). Models with
BatchNorm layers skip a final training batch of one sample (DeviceData.train_batches,
drop_single). Every record's config holds torch_version, torch_threads and device_name:
a run is bit-identical only for the same seed, thread count, device and torch version.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from kdlib import calibration, fidelity
from kdlib._validate import as_tensor, check_finite_tensor, check_fraction, check_int
from kdlib.batches import DeviceData
from kdlib.devices import channels_last, prepare_model, resolve_device
from kdlib.distillers import (
    FITNET_LOSSES,
    Distiller,
    check_loss_kwargs,
    full_precision,
    loss_options,
    make_distiller,
)
from kdlib.engine import (  # noqa: F401 - re-exported: kdlib.train is their public home
    RUNTIME_KEYS,
    STATE_KEYS,
    DivergenceGuard,
    Engine,
    SingleState,
    TrainingDiverged,
    check_compile,
)
from kdlib.losses import check_temperature
from kdlib.recipe import Recipe

ECE_BINS = 15
# loss_kwargs a user may pass to distill() (FitNet's stage shapes are measured from the models)


# ---------------------------------------------------------------- helpers


def runtime_config(device: torch.device) -> dict:
    """What a CPU/GPU result depends on beyond the run's own settings: the torch version,
    torch's intra-op thread count (float sums are split over threads: 1 and 2 threads differ
    in the last bits) and the device's name. Bit-identical results need all three equal."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"torch_version": str(torch.__version__), "torch_threads": torch.get_num_threads(),
            "device_name": name}


def has_batchnorm(*modules) -> bool:
    """True if any of the modules holds a BatchNorm layer (which cannot train on 1 sample)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               for module in modules for m in module.modules())


def check_module(model, role: str) -> torch.nn.Module:
    """A torch.nn.Module whose parameters and buffers are all finite."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{role} must be a torch.nn.Module, got {type(model).__name__}")
    with torch.no_grad():
        for kind, items in (("parameter", model.named_parameters()),
                            ("buffer", model.named_buffers())):
            for n, t in items:
                if torch.is_floating_point(t) and not bool(torch.isfinite(t).all()):
                    raise ValueError(f"{role} {kind} {n!r} holds NaN/inf values; the "
                                     f"{role} must have finite weights")
    return model


def check_checkpoint_dir(checkpoint_dir):
    """None, or a path (str / os.PathLike) that is a folder or does not exist yet."""
    if checkpoint_dir is None:
        return None
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a folder path (str or pathlib.Path) or None, "
                        f"got {type(checkpoint_dir).__name__}")
    path = Path(checkpoint_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_dir {path} exists and is not a folder; give a folder "
                         f"path (it is created if missing)")
    return path


def check_callback(fn, name: str):
    if fn is not None and not callable(fn):
        raise TypeError(f"{name} must be a callable or None, got {type(fn).__name__}")
    return fn


def check_batches(dd: DeviceData, recipe: Recipe, drop_single: bool) -> int:
    """Steps per epoch; refuses a training split that yields no batch at all."""
    steps = dd.steps_per_epoch(recipe.batch_size, drop_single=drop_single)
    if steps == 0:
        raise ValueError(f"the training split has {dd.num_train} sample(s): a model with "
                         f"BatchNorm needs batches of at least 2")
    return steps


def as_device_data(data, device: torch.device) -> DeviceData:
    """A DeviceData on `device` for a Dataset (moved once) or an existing DeviceData."""
    if isinstance(data, DeviceData):
        if torch.device(data.device).type != device.type:
            raise ValueError(f"data lives on {data.device} but training runs on {device}")
        return data
    if not hasattr(data, "train_x") or not hasattr(data, "num_classes"):
        raise TypeError(
            f"data must be a kdlib.data.Dataset (from load_dataset) or a DeviceData, "
            f"got {type(data).__name__}"
        )
    return DeviceData(data, device)


def output_classes(model: torch.nn.Module, dd: DeviceData) -> int:
    """Number of logits the model produces on one test sample."""
    x = next(iter(dd.test_batches(1))).x
    was_training = model.training
    model.eval()
    with torch.no_grad():
        c = model(x).shape[-1]
    model.train(was_training)
    return int(c)


def check_classes(model, dd: DeviceData, role: str) -> None:
    c = output_classes(model, dd)
    if c != dd.num_classes:
        raise ValueError(f"{role} outputs {c} classes but the data set has {dd.num_classes}")


@torch.no_grad()
def predict_logits(model, data, device="auto", batch_size: int = 1024) -> torch.Tensor:
    """Logits of `model` (eval mode) on the unaugmented test split: N x C float32, on CPU.
    Computed in fp32 (no autocast), so every metric derived from them is too. The model is
    prepared as for training (`kdlib.devices.prepare_model`: channels_last for conv nets,
    in place) and fed inputs in the same format, so a model just trained and the same
    weights loaded from disk give bit-identical logits."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    model = prepare_model(model, dev)
    was_training = model.training
    model.eval()
    out = [model(b.x).float()
           for b in dd.test_batches(batch_size, channels_last=channels_last(dev, model))]
    model.train(was_training)
    return torch.cat(out).cpu()


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """accuracy, ece (15 bins), nll of N x C logits: Python floats, fractions in [0, 1]."""
    probs = logits.float().softmax(1)
    return {
        "accuracy": float((logits.argmax(1) == labels).float().mean()),
        "ece": calibration.ece(probs, labels, n_bins=ECE_BINS),
        "nll": calibration.nll(probs, labels),
    }


def evaluate(model, data, device="auto", batch_size: int = 1024) -> dict:
    """Test accuracy, ECE and NLL of `model` (fractions / nats, Python floats)."""
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    logits = predict_logits(model, dd, dev, batch_size)
    return classification_metrics(logits, dd.test_y.cpu())


def make_model(arch: str, data, seed: int = 0, **kwargs) -> torch.nn.Module:
    """build_model for `data`'s input shape and classes, initialized from `seed`.

    The global RNG is left untouched (fork_rng), so model seeds and data seeds are independent.
    """
    from kdlib.models import build_model

    seed = check_int(seed, "seed", minimum=0)
    shape = tuple(data.input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if len(shape) == 1:
            kwargs.setdefault("in_features", shape[0])
            return build_model(arch, data.num_classes, **kwargs)
        return build_model(arch, data.num_classes, in_channels=shape[0], **kwargs)


# ---------------------------------------------------------------- one run = a stack of one


def _fit(model, dd, recipe, step_loss, *, extra_modules=(), device, seed, checkpoint_dir,
         progress, config, desc, eval_every=1, on_step=None, compile=False):
    """One run through kdlib.engine as a stack of one. step_loss(batch) -> (loss, logits).
    Returns (history, seconds). Models with BatchNorm skip a final batch of one sample."""
    from kdlib.batches import Batch
    from kdlib.stacked import LoopedModels

    stack = LoopedModels([model])

    def losses_fn(x, y, idx):
        loss, logits = step_loss(Batch(x, y, idx))
        return loss.reshape(1), logits.unsqueeze(0)

    state = SingleState(checkpoint_dir, config, recipe) if checkpoint_dir else None
    callback = None if on_step is None else (lambda step, losses: on_step(step,
                                                                            float(losses[0])))
    engine = Engine(stack, dd, recipe, losses_fn, gens=[torch.Generator().manual_seed(seed)],
                    device=device, extra_modules=extra_modules,
                    drop_single=has_batchnorm(model, *extra_modules), on_step=callback,
                    eval_every=eval_every, progress=progress, desc=desc, state=state,
                    compile=compile)
    histories, seconds = engine.run()
    return histories[0], seconds


def _common_checks(recipe, seed, *, progress=True, name=None, eval_every=1, on_step=None,
                   checkpoint_dir=None):
    """Validate the arguments train() and distill() share; returns (seed, eval_every,
    checkpoint_dir as a Path or None)."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a kdlib.recipe.Recipe (e.g. Recipe.preset('default')), "
                        f"got {type(recipe).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None, got {type(name).__name__}")
    check_callback(on_step, "on_step")
    return (check_int(seed, "seed", minimum=0), check_int(eval_every, "eval_every", 0),
            check_checkpoint_dir(checkpoint_dir))


def check_targets(targets, dd: DeviceData) -> torch.Tensor:
    """N_train x C finite probabilities (>= 0, rows summing to 1 within 1e-3), float32."""
    targets = as_tensor(targets, "targets")
    if not torch.is_floating_point(targets):
        raise TypeError(f"targets must be floating point class probabilities, got "
                        f"{targets.dtype}")
    targets = targets.detach().to(torch.float32)
    if tuple(targets.shape) != (dd.num_train, dd.num_classes):
        raise ValueError(f"targets must be N_train x C = ({dd.num_train}, {dd.num_classes}), "
                         f"got {tuple(targets.shape)}")
    check_finite_tensor(targets, "targets")
    if bool((targets < 0).any()):
        raise ValueError(f"targets must be probabilities >= 0, got a minimum of "
                         f"{float(targets.min()):g}")
    err = float((targets.sum(1) - 1).abs().max()) if len(targets) else 0.0
    if err > 1e-3:
        raise ValueError(f"targets rows must sum to 1 (class probabilities), got a row "
                         f"{err:.3g} away from 1")
    return targets


def train(model, data, recipe: Recipe, *, targets=None, device="auto", seed: int = 0,
          checkpoint_dir=None, progress: bool = True, name: str | None = None,
          eval_every: int = 1, on_step=None, compile=False) -> dict:
    """Train `model` with cross-entropy on the labels, or on soft `targets`.

    targets: optional N_train x C probabilities (e.g. a GMM's exact posterior); the loss is
    then the soft cross-entropy. seed: batch order and augmentation. checkpoint_dir: a folder
    (created if missing): write a resumable state every epoch and `epoch_XXXX.pt` every
    recipe.checkpoint_every epochs; rerunning with the same folder resumes (an unreadable
    state.pt is moved aside with a warning and the run starts over). eval_every: test
    metrics in the history every that many epochs (0: only at the end). on_step(step, loss):
    per-step callback. compile: wrap the step's forward pass and loss in torch.compile
    (True; or a backend name such as "aot_eager"); off by default. Raises TrainingDiverged
    if the loss becomes NaN/inf.
    """
    from kdlib.losses import soft_cross_entropy

    seed, eval_every, checkpoint_dir = _common_checks(
        recipe, seed, progress=progress, name=name, eval_every=eval_every, on_step=on_step,
        checkpoint_dir=checkpoint_dir)
    compile = check_compile(compile)
    check_module(model, "model")
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    if targets is not None:
        targets = check_targets(targets, dd)
    model = prepare_model(model, dev)
    check_classes(model, dd, "model")
    if targets is not None:
        targets = targets.to(dev)

    def step_loss(batch):
        logits = model(batch.x)
        if targets is None:
            return F.cross_entropy(full_precision(logits), batch.y), logits
        return soft_cross_entropy(full_precision(logits), targets[batch.idx]), logits

    config = {"kind": "train", "name": name, "recipe": recipe.to_dict(), "seed": seed,
              "targets": "labels" if targets is None else "soft", "device": dev.type,
              "model": type(model).__name__, "data": dd.dataset.name, **runtime_config(dev)}
    history, seconds = _fit(model, dd, recipe, step_loss, device=dev, seed=seed,
                            checkpoint_dir=checkpoint_dir, progress=progress, config=config,
                            desc=name or "train", eval_every=eval_every, on_step=on_step,
                            compile=compile)
    logits = predict_logits(model, dd, dev)
    metrics = classification_metrics(logits, dd.test_y.cpu())
    return {"config": config, "history": history, "metrics": metrics,
            "metrics_from": "last_epoch", "seconds": seconds}


def _check_distinct(student, teacher) -> None:
    if student is teacher:
        raise ValueError("student and teacher are the same module object; distil into a "
                         "separate model (e.g. make_model(...) or copy.deepcopy(teacher))")
    shared = {id(p) for p in student.parameters()} & {id(p) for p in teacher.parameters()}
    if shared:
        raise ValueError(f"student and teacher share {len(shared)} parameter tensor(s); "
                         f"the student must have its own weights")


def _check_teacher_logits(teacher_logits, dd: DeviceData) -> torch.Tensor:
    t = as_tensor(teacher_logits, "teacher_logits")
    if not torch.is_floating_point(t):
        raise TypeError(f"teacher_logits must be floating point, got {t.dtype}")
    if tuple(t.shape) != (dd.num_test, dd.num_classes):
        raise ValueError(f"teacher_logits must be the teacher's test logits, N_test x C = "
                         f"({dd.num_test}, {dd.num_classes}), got {tuple(t.shape)}")
    return check_finite_tensor(t.detach().float().cpu(), "teacher_logits")


def _fitnet_kwargs(loss_kwargs: dict, student, teacher, dd: DeviceData) -> dict:
    """loss_kwargs plus the per-sample shapes of the hinted stage, checked against the
    number of stages of both models (measured on a probe batch of 2 test images)."""
    x = next(iter(dd.test_batches(2))).x
    was_training = student.training
    with torch.no_grad():
        s_stages = student.eval()(x, return_features=True)[2]
        t_stages = teacher(x, return_features=True)[2]
    student.train(was_training)
    n = min(len(s_stages), len(t_stages))
    stage = loss_kwargs.get("stage", 1)
    if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < n:
        raise ValueError(f"loss_kwargs['stage'] must be an integer in [0, {n - 1}] (the "
                         f"student has {len(s_stages)} stages, the teacher {len(t_stages)}), "
                         f"got {stage!r}")
    return {**loss_kwargs, "student_shape": tuple(s_stages[stage].shape[1:]),
            "teacher_shape": tuple(t_stages[stage].shape[1:])}


def distill(student, teacher, data, loss, temperature: float, recipe: Recipe, *,
            alpha: float = 1.0, device="auto", seed: int = 0, checkpoint_dir=None,
            progress: bool = True, name: str | None = None, loss_kwargs: dict | None = None,
            teacher_logits: torch.Tensor | None = None, eval_every: int = 1,
            on_step=None, compile=False) -> dict:
    """Distil `teacher` into `student` with `loss` (a name of kdlib.distillers.LOSSES: "kd",
    "kd_ls", "dist", "dkd", "dkd_ls", "fitnet", "fitnet_ce"; or a callable
    fn(student_logits, teacher_logits, temperature) -> 0-d tensor) at `temperature` in
    [1e-3, 1e3].

    alpha in [0, 1] weights the distillation term against cross-entropy (paper eq. 2);
    alpha = 1 (no CE) as in the paper's experiments. The teacher runs in eval mode, without
    gradients, once per batch on the same augmented images as the student; its training
    mode and requires_grad flags are restored afterwards (also on errors). student and
    teacher must be distinct modules. loss_kwargs: "dist" takes beta, gamma; "dkd"/"dkd_ls"
    take tckd_weight, nckd_weight; "fitnet"/"fitnet_ce" take hint_weight and stage (0 ..
    number of stages - 1); "kd", "kd_ls" and callables take none.
    teacher_logits: the teacher's N_test x C test logits if already computed (saves one
    pass). Record metrics: student accuracy/ECE/NLL, agreement and mean KL(teacher ||
    student) at T = 1 on the test set, the teacher's accuracy and its ECE at `temperature`.
    compile: as in `train`. Raises TrainingDiverged if the loss becomes NaN/inf.
    """
    seed, eval_every, checkpoint_dir = _common_checks(
        recipe, seed, progress=progress, name=name, eval_every=eval_every, on_step=on_step,
        checkpoint_dir=checkpoint_dir)
    temperature = check_temperature(temperature)
    alpha = check_fraction(alpha, "alpha")
    compile = check_compile(compile)
    check_module(student, "student")
    check_module(teacher, "teacher")
    _check_distinct(student, teacher)
    loss_kwargs = check_loss_kwargs(loss, loss_kwargs, loss_options(loss, user=True))
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    if teacher_logits is not None:
        teacher_logits = _check_teacher_logits(teacher_logits, dd)
    flags = [p.requires_grad for p in teacher.parameters()]
    was_training = teacher.training
    try:
        return _distill(student, teacher, dd, loss, temperature, recipe, alpha, dev, seed,
                        checkpoint_dir, progress, name, loss_kwargs, teacher_logits,
                        eval_every, on_step, compile)
    finally:
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)
        teacher.train(was_training)


def _distill(student, teacher, dd, loss, temperature, recipe, alpha, dev, seed,
             checkpoint_dir, progress, name, loss_kwargs, teacher_logits, eval_every,
             on_step, compile=False) -> dict:
    student = prepare_model(student, dev)
    teacher = prepare_model(teacher, dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    check_classes(student, dd, "student")
    check_classes(teacher, dd, "teacher")
    if loss in FITNET_LOSSES:
        loss_kwargs = _fitnet_kwargs(loss_kwargs, student, teacher, dd)
    distiller: Distiller = make_distiller(loss, temperature, alpha, **loss_kwargs).to(dev)
    feats = distiller.needs_features

    def step_loss(batch):
        with torch.no_grad():
            t_out = teacher(batch.x, return_features=True) if feats else teacher(batch.x)
        s_out = student(batch.x, return_features=True) if feats else student(batch.x)
        value = distiller(s_out, t_out, batch.y)
        return value, (s_out[0] if feats else s_out)

    loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "callable")
    config = {"kind": "distill", "name": name, "loss": loss_name, "temperature": temperature,
              "alpha": alpha, "recipe": recipe.to_dict(), "seed": seed, "device": dev.type,
              "student": type(student).__name__, "teacher": type(teacher).__name__,
              "data": dd.dataset.name,
              "loss_kwargs": {k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in loss_kwargs.items()}, **runtime_config(dev)}
    history, seconds = _fit(student, dd, recipe, step_loss, extra_modules=[distiller],
                            device=dev, seed=seed, checkpoint_dir=checkpoint_dir,
                            progress=progress, config=config,
                            desc=name or f"{loss_name}@{temperature:g}",
                            eval_every=eval_every, on_step=on_step, compile=compile)
    s_logits = predict_logits(student, dd, dev)
    t_logits = predict_logits(teacher, dd, dev) if teacher_logits is None else teacher_logits
    metrics = distillation_metrics(s_logits, t_logits, dd.test_y.cpu(), temperature)
    return {"config": config, "history": history, "metrics": metrics,
            "metrics_from": "last_epoch", "seconds": seconds}


def distillation_metrics(student_logits, teacher_logits, labels, temperature: float) -> dict:
    """Student accuracy/ECE/NLL, fidelity to the teacher and the teacher's ECE at tau."""
    labels = torch.as_tensor(labels)
    m = classification_metrics(student_logits, labels)
    t = classification_metrics(teacher_logits, labels)
    m.update({
        "agreement": fidelity.agreement(student_logits, teacher_logits),
        "kl_teacher_student": fidelity.mean_kl(teacher_logits, student_logits),
        "teacher_accuracy": t["accuracy"],
        "teacher_ece": t["ece"],
        "teacher_ece_at_tau": calibration.ece(
            calibration.tempered_softmax(teacher_logits, temperature), labels, n_bins=ECE_BINS),
    })
    return m
