"""The training and distillation engine.

    record = train(model, data, recipe)                          # a teacher, cross-entropy
    record = distill(student, teacher, data, "kd", 4.0, recipe)  # a student

`data` is a `kdlib.data.Dataset` (or a `kdlib.batches.DeviceData` already on the device).
Batches are index slices of tensors on the training device, augmented as whole batches.
The model is trained in place; the returned record is plain data (config, per-epoch
history, final metrics) that pickles, JSON-encodes and goes into a sweep store.

Final metrics are from the LAST epoch (record["metrics_from"] == "last_epoch"): the
engine never selects an epoch on the test set.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kdlib import calibration, fidelity
from kdlib._validate import check_int, check_positive
from kdlib.batches import DeviceData
from kdlib.checkpoint import load_checkpoint, save_atomic
from kdlib.devices import autocast, prepare_model, resolve_device
from kdlib.distillers import Distiller, full_precision, make_distiller
from kdlib.recipe import Recipe

ECE_BINS = 15


# ---------------------------------------------------------------- helpers


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
    """Logits of `model` (eval mode) on the unaugmented test split: N x C float32, on CPU."""
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    was_training = model.training
    model.eval()
    out = []
    for b in dd.test_batches(batch_size):
        with autocast(dev):
            out.append(model(b.x).float())
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


# ---------------------------------------------------------------- the loop


def _fit(model, dd, recipe, step_loss, *, extra_modules=(), device, seed, checkpoint_dir,
         progress, config, desc, eval_every=1, on_step=None):
    """Shared SGD loop. step_loss(batch) -> (loss, logits). Returns (history, seconds).

    eval_every: test metrics in the history every that many epochs (0: never).
    on_step(step, loss): called after every optimizer step with the loss as a float.
    """
    params = list(model.parameters())
    for m in extra_modules:
        params += list(m.parameters())
    opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(recipe.milestones), recipe.gamma)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    start_epoch = 0
    state_path = Path(checkpoint_dir) / "state.pt" if checkpoint_dir else None

    if state_path is not None and state_path.exists():
        state = load_checkpoint(state_path)
        if state.get("config") != config:
            raise ValueError(
                f"{state_path} holds a run with a different configuration; use a fresh "
                f"checkpoint_dir or delete it"
            )
        model.load_state_dict(state["model"])
        for m, sd in zip(extra_modules, state["extra"]):
            m.load_state_dict(sd)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        history = list(state["history"])
        start_epoch = len(history)

    step = start_epoch * dd.steps_per_epoch(recipe.batch_size)
    t0 = time.perf_counter()
    bar = tqdm(range(start_epoch, recipe.epochs), desc=desc, disable=not progress,
               initial=start_epoch, total=recipe.epochs, leave=False)
    for epoch in bar:
        model.train()
        for m in extra_modules:
            m.train()
        tot_loss = torch.zeros((), device=device)
        tot_correct = torch.zeros((), device=device)
        seen = 0
        for batch in dd.train_batches(recipe.batch_size, gen, augment=True):
            with autocast(device):
                loss, logits = step_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = batch.y.shape[0]
            tot_loss += loss.detach().float() * n
            tot_correct += (logits.detach().argmax(1) == batch.y).sum()
            seen += n
            if on_step is not None:
                on_step(step, float(loss.detach()))
            step += 1
        sched.step()
        test = evaluate(model, dd, device) if eval_every and (epoch + 1) % eval_every == 0 else {}
        row = {"epoch": epoch + 1, "lr": recipe.lr_at(epoch),
               "train_loss": float(tot_loss) / seen, "train_accuracy": float(tot_correct) / seen,
               **{f"test_{k}": v for k, v in test.items()}}
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                        acc=f"{row.get('test_accuracy', float('nan')):.3f}")
        if state_path is not None:
            if recipe.checkpoint_every and (epoch + 1) % recipe.checkpoint_every == 0:
                save_atomic({"model": model.state_dict(), "epoch": epoch + 1, "config": config},
                            Path(checkpoint_dir) / f"epoch_{epoch + 1:04d}.pt")
            save_atomic({"model": model.state_dict(), "extra": [m.state_dict() for m in
                         extra_modules], "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "generator": gen.get_state(),
                         "history": history, "config": config}, state_path)
    bar.close()
    return history, time.perf_counter() - t0


def _common_checks(recipe, seed):
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a kdlib.recipe.Recipe (e.g. Recipe.preset('default')), "
                        f"got {type(recipe).__name__}")
    return check_int(seed, "seed", minimum=0)


def train(model, data, recipe: Recipe, *, targets=None, device="auto", seed: int = 0,
          checkpoint_dir=None, progress: bool = True, name: str | None = None,
          eval_every: int = 1, on_step=None) -> dict:
    """Train `model` with cross-entropy on the labels, or on soft `targets`.

    targets: optional N_train x C probabilities (e.g. a GMM's exact posterior); the loss is
    then the soft cross-entropy. seed: batch order and augmentation. checkpoint_dir: write a
    resumable state every epoch and `epoch_XXXX.pt` every recipe.checkpoint_every epochs;
    rerunning with the same directory resumes. eval_every: test metrics in the history every
    that many epochs (0: only at the end). on_step(step, loss): per-step callback.
    """
    from kdlib.losses import soft_cross_entropy

    seed = _common_checks(recipe, seed)
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    model = prepare_model(model, dev)
    check_classes(model, dd, "model")
    if targets is not None:
        targets = torch.as_tensor(targets, dtype=torch.float32)
        if tuple(targets.shape) != (dd.num_train, dd.num_classes):
            raise ValueError(f"targets must be N_train x C = ({dd.num_train}, {dd.num_classes}), "
                             f"got {tuple(targets.shape)}")
        targets = targets.to(dev)

    def step_loss(batch):
        logits = model(batch.x)
        if targets is None:
            return F.cross_entropy(full_precision(logits), batch.y), logits
        return soft_cross_entropy(full_precision(logits), targets[batch.idx]), logits

    config = {"kind": "train", "name": name, "recipe": recipe.to_dict(), "seed": seed,
              "targets": "labels" if targets is None else "soft", "device": dev.type,
              "model": type(model).__name__, "data": dd.dataset.name}
    history, seconds = _fit(model, dd, recipe, step_loss, device=dev, seed=seed,
                            checkpoint_dir=checkpoint_dir, progress=progress, config=config,
                            desc=name or "train", eval_every=check_int(eval_every, "eval_every", 0),
                            on_step=on_step)
    logits = predict_logits(model, dd, dev)
    metrics = classification_metrics(logits, dd.test_y.cpu())
    return {"config": config, "history": history, "metrics": metrics,
            "metrics_from": "last_epoch", "seconds": seconds}


def distill(student, teacher, data, loss, temperature: float, recipe: Recipe, *,
            alpha: float = 1.0, device="auto", seed: int = 0, checkpoint_dir=None,
            progress: bool = True, name: str | None = None, loss_kwargs: dict | None = None,
            teacher_logits: torch.Tensor | None = None, eval_every: int = 1,
            on_step=None) -> dict:
    """Distil `teacher` into `student` with `loss` ("kd", "dist", "fitnet" or a callable
    fn(student_logits, teacher_logits, temperature) -> scalar) at `temperature` > 0.

    alpha in [0, 1] weights the distillation term against cross-entropy (paper eq. 2);
    alpha = 1 (no CE) as in the paper's experiments. The teacher stays in eval mode and runs
    once per batch on the same augmented images as the student. teacher_logits: the
    teacher's test logits if already computed (saves one pass).
    Record metrics: student accuracy/ECE/NLL, agreement and mean KL(teacher || student)
    at T = 1 on the test set, the teacher's accuracy and its ECE at `temperature`.
    """
    seed = _common_checks(recipe, seed)
    temperature = check_positive(temperature, "temperature")
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    student = prepare_model(student, dev)
    teacher = prepare_model(teacher, dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    check_classes(student, dd, "student")
    check_classes(teacher, dd, "teacher")
    loss_kwargs = dict(loss_kwargs or {})
    if loss == "fitnet":
        stage = loss_kwargs.get("stage", 1)
        x = next(iter(dd.test_batches(2))).x
        with torch.no_grad():
            s_stages = student.eval()(x, return_features=True)[2]
            t_stages = teacher(x, return_features=True)[2]
        loss_kwargs.setdefault("student_shape", tuple(s_stages[stage].shape[1:]))
        loss_kwargs.setdefault("teacher_shape", tuple(t_stages[stage].shape[1:]))
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
                              for k, v in loss_kwargs.items()}}
    history, seconds = _fit(student, dd, recipe, step_loss, extra_modules=[distiller],
                            device=dev, seed=seed, checkpoint_dir=checkpoint_dir,
                            progress=progress, config=config,
                            desc=name or f"{loss_name}@{temperature:g}",
                            eval_every=check_int(eval_every, "eval_every", 0), on_step=on_step)
    s_logits = predict_logits(student, dd, dev)
    t_logits = (predict_logits(teacher, dd, dev) if teacher_logits is None
                else torch.as_tensor(teacher_logits).float().cpu())
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
