"""Train many copies of one architecture at once (torch.func: stacked state + vmap).

Two uses:
  * `distill_stacked`: the students of a temperature sweep that share a teacher. They see
    the same batches; the teacher runs once per batch; each student keeps its own weights,
    optimizer state, BatchNorm statistics, temperature and loss.
  * `train_stacked`: independent runs (e.g. 5 seeds of an MLP on the GMM task), each with
    its own initialization and its own minibatch order, in one vectorized step.

Each member behaves as the same model trained alone by `kdlib.train` with the same seeds:
the batches are drawn from the same generators in the same order, SGD with momentum and
weight decay is elementwise (one optimizer over stacked tensors = K optimizers), and the
losses of the members are summed so their gradients do not mix.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from kdlib._validate import check_choice, check_fraction, check_int
from kdlib.devices import autocast, resolve_device
from kdlib.distillers import full_precision, make_distiller
from kdlib.losses import check_temperature, stacked_kd_dist
from kdlib.recipe import Recipe
from kdlib.train import (
    DivergenceGuard,
    as_device_data,
    check_batches,
    check_callback,
    check_classes,
    check_module,
    check_targets,
    classification_metrics,
    distillation_metrics,
    has_batchnorm,
    predict_logits,
    runtime_config,
)

SPEC_KEYS = ("loss", "temperature", "alpha")


class StackedModels:
    """K models of one architecture as stacked parameter/buffer tensors (leading dim K).

    forward(x): x shared by all members (B x ...) or per member (K x B x ...) ->
    K x B x C logits.
    """

    def __init__(self, models):
        models = list(models)
        if not models:
            raise ValueError("need at least one model to stack")
        shapes = [{n: tuple(t.shape) for n, t in m.state_dict().items()} for m in models]
        if any(type(m) is not type(models[0]) or sh != shapes[0]
               for m, sh in zip(models, shapes)):
            raise ValueError("stacked models must share one architecture (same class, same "
                             "parameter names and shapes)")
        self.k = len(models)
        params, buffers = stack_module_state(models)
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.buffers = {n: b.detach().clone() for n, b in buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")
        self.training = True

    def to(self, device):
        self.params = {n: p.detach().to(device).requires_grad_(True)
                       for n, p in self.params.items()}
        self.buffers = {n: b.to(device) for n, b in self.buffers.items()}
        return self

    def parameters(self):
        return list(self.params.values())

    def train(self, mode: bool = True):
        self.training = mode
        self.base.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def __call__(self, x, per_member: bool = False):
        def one(p, b, xi):
            return functional_call(self.base, (p, b), (xi,))

        in_x = 0 if per_member else None
        return vmap(one, in_dims=(0, 0, in_x), randomness="different")(
            self.params, self.buffers, x)

    def unstack(self, like: torch.nn.Module) -> list[torch.nn.Module]:
        """K independent modules (copies of `like`) holding the members' weights (CPU)."""
        out = []
        for i in range(self.k):
            m = copy.deepcopy(like).cpu()
            state = {n: p[i].detach().cpu() for n, p in self.params.items()}
            state.update({n: b[i].detach().cpu() for n, b in self.buffers.items()})
            m.load_state_dict(state)
            out.append(m)
        return out


class LoopedModels:
    """The StackedModels interface over K separate modules, run one after another.

    On a CPU a grouped (vmapped) convolution is no faster than K separate ones, so there
    the win of training students together is the shared batch and the single teacher
    pass; the students' own forward passes run in a plain loop, exactly as alone.
    forward(x) -> K x B x C logits.
    """

    def __init__(self, models):
        self.models = list(models)
        if not self.models:
            raise ValueError("need at least one model")
        self.k = len(self.models)

    def to(self, device):
        self.models = [m.to(device) for m in self.models]
        return self

    def parameters(self):
        return [p for m in self.models for p in m.parameters()]

    def train(self, mode: bool = True):
        for m in self.models:
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def __call__(self, x, per_member: bool = False):
        if per_member:
            return torch.stack([m(xi) for m, xi in zip(self.models, x)])
        return torch.stack([m(x) for m in self.models])

    def unstack(self, like: torch.nn.Module) -> list[torch.nn.Module]:
        return self.models


STACK_MODES = ("auto", "vmap", "loop")


def make_stack(models, mode: str, device: torch.device):
    """StackedModels ("vmap") or LoopedModels ("loop"); "auto": vmap on CUDA, loop on CPU."""
    if mode not in STACK_MODES:
        raise ValueError(f"mode must be one of {STACK_MODES}, got {mode!r}")
    if mode == "auto":
        mode = "vmap" if device.type == "cuda" else "loop"
    if mode == "vmap":
        return StackedModels(models).to(device)
    StackedModels(models)  # same architecture check
    return LoopedModels(models).to(device)


def _sgd(stack, recipe: Recipe):
    opt = torch.optim.SGD(stack.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, list(recipe.milestones), recipe.gamma)


@torch.no_grad()
def _stacked_test_logits(stack, dd, device, batch_size=1024) -> torch.Tensor:
    stack.eval()
    out = []
    for b in dd.test_batches(batch_size):
        with autocast(device):
            out.append(stack(b.x).float())
    stack.train()
    return torch.cat(out, dim=1).cpu()  # K x N x C


def _end_epoch(histories, stack, dd, device, recipe, epoch, tot, correct, seen, eval_every):
    """Append each member's row for `epoch` (train loss/accuracy, test metrics if due)."""
    test = None
    if eval_every and (epoch + 1) % eval_every == 0:
        logits = _stacked_test_logits(stack, dd, device)
        test = [classification_metrics(logits[i], dd.test_y.cpu()) for i in range(stack.k)]
    for i, h in enumerate(histories):
        row = {"epoch": epoch + 1, "lr": recipe.lr_at(epoch),
               "train_loss": float(tot[i]) / seen, "train_accuracy": float(correct[i]) / seen}
        if test is not None:
            row.update({f"test_{key}": v for key, v in test[i].items()})
        h.append(row)


def _check_common(recipe, seed, eval_every, progress):
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    return check_int(seed, "seed", minimum=0), check_int(eval_every, "eval_every", minimum=0)


def _check_members(models, role: str) -> list:
    models = list(models)
    for i, m in enumerate(models):
        check_module(m, f"{role}s[{i}]")
    if len({id(m) for m in models}) != len(models):
        raise ValueError(f"{role}s must be distinct module objects (one per member); the "
                         f"same module appears more than once")
    return models


def _check_spec(i: int, spec) -> dict:
    if not isinstance(spec, dict):
        raise TypeError(f"specs[{i}] must be a dict with 'loss' and 'temperature', got "
                        f"{type(spec).__name__}")
    unknown = sorted(str(k) for k in spec if k not in SPEC_KEYS)
    if unknown:
        raise ValueError(f"specs[{i}] has unknown keys {unknown}; allowed: {list(SPEC_KEYS)}")
    loss = spec.get("loss")
    if loss == "fitnet":
        raise ValueError("fitnet is not stackable (its regressor differs per student); "
                         "use kdlib.train.distill")
    if not (loss in ("kd", "dist") or (callable(loss) and not isinstance(loss, str))):
        raise ValueError(f"specs[{i}]['loss'] must be 'kd', 'dist' or a callable, got {loss!r}")
    return {"loss": loss,
            "temperature": check_temperature(spec.get("temperature"),
                                             f"specs[{i}]['temperature']"),
            "alpha": check_fraction(spec.get("alpha", 1.0), f"specs[{i}]['alpha']")}


def distill_stacked(students, teacher, data, specs, recipe: Recipe, *, seed: int = 0,
                    device="auto", progress: bool = True, eval_every: int = 0,
                    step_callback=None, mode: str = "auto") -> list[dict]:
    """Distil one teacher into K students at once, all on the same batches.

    specs: one dict per student with "loss" ("kd", "dist" or a callable), "temperature" in
    [1e-3, 1e3] and optionally "alpha" in [0, 1] (default 1.0); no other keys.
    seed: the shared batch order and augmentation.
    eval_every: test metrics every that many epochs in the history (0: only at the end).
    step_callback(step, losses): called with a K-vector of the members' losses per step.
    mode: "vmap" (torch.func stacking: grouped kernels, the fast path on a GPU), "loop" (the
    students' forward passes one after another: the fast path on a CPU, where grouped
    convolutions gain nothing) or "auto" (vmap on CUDA, loop otherwise). Both share the
    batches, the single teacher pass per batch and one optimizer step for all students.
    The teacher's training mode and requires_grad flags are restored afterwards (also on
    errors). A non-finite loss of any student raises kdlib.train.TrainingDiverged.
    Returns one record per student, in the format of `kdlib.train.distill`.
    """
    students = list(students)
    specs = list(specs)
    if len(students) != len(specs) or not students:
        raise ValueError(f"need one spec per student, got {len(students)} students and "
                         f"{len(specs)} specs")
    seed, eval_every = _check_common(recipe, seed, eval_every, progress)
    students = _check_members(students, "student")
    check_module(teacher, "teacher")
    if any(s is teacher for s in students):
        raise ValueError("a student is the teacher module itself; distil into separate models")
    specs = [_check_spec(i, spec) for i, spec in enumerate(specs)]
    check_callback(step_callback, "step_callback")
    check_choice(mode, "mode", STACK_MODES)
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    flags = [p.requires_grad for p in teacher.parameters()]
    was_training = teacher.training
    try:
        return _distill_stacked(students, teacher, dd, specs, recipe, seed, dev, progress,
                                eval_every, step_callback, mode)
    finally:
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)
        teacher.train(was_training)


def _distill_stacked(students, teacher, dd, specs, recipe, seed, dev, progress, eval_every,
                     step_callback, mode):
    teacher = teacher.to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    check_classes(teacher, dd, "teacher")
    for s in students:
        check_classes(s.to(dev), dd, "student")
    distillers = [make_distiller(s["loss"], s["temperature"], s["alpha"]) for s in specs]

    vectorized = all(isinstance(s.get("loss"), str) and s["loss"] in ("kd", "dist")
                     for s in specs)
    taus = torch.tensor([d.temperature for d in distillers], device=dev)
    alphas = torch.tensor([d.alpha for d in distillers], device=dev)
    is_dist = torch.tensor([s["loss"] == "dist" for s in specs], device=dev) if vectorized \
        else None

    def losses_of(s_logits, t_logits, y):
        if vectorized:  # all KD/DIST: a handful of batched ops instead of K small ones
            s32 = full_precision(s_logits)
            return stacked_kd_dist(s32, full_precision(t_logits), taus.to(s32.dtype), is_dist,
                                   alphas.to(s32.dtype), y, check_values=False)
        return torch.stack([d(s_logits[i], t_logits, y) for i, d in enumerate(distillers)])

    stack = make_stack(students, mode, dev)
    opt, sched = _sgd(stack, recipe)
    gen = torch.Generator().manual_seed(seed)
    histories = [[] for _ in students]
    drop_single = has_batchnorm(students[0])  # as kdlib.train.distill does for each alone
    labels = [f"student {i} ({_loss_name(s['loss'])} at tau {s['temperature']:g})"
              for i, s in enumerate(specs)]
    guard = DivergenceGuard(dev, recipe, check_batches(dd, recipe, drop_single), labels)
    step = 0
    t0 = time.perf_counter()
    bar = tqdm(range(recipe.epochs), desc=f"{len(students)} stacked students",
               disable=not progress, leave=False)
    for epoch in bar:
        stack.train()
        tot = torch.zeros(stack.k, device=dev)
        correct = torch.zeros(stack.k, device=dev)
        seen = 0
        for batch in dd.train_batches(recipe.batch_size, gen, augment=True,
                                      drop_single=drop_single):
            with autocast(dev):
                with torch.no_grad():
                    t_logits = teacher(batch.x)
                s_logits = stack(batch.x)
                losses = losses_of(s_logits, t_logits, batch.y)
            guard.step(losses, step)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            n = batch.y.shape[0]
            tot += losses.detach().float() * n
            correct += (s_logits.detach().argmax(-1) == batch.y).sum(1)
            seen += n
            if step_callback is not None:
                step_callback(step, losses.detach().double().cpu())
            step += 1
        guard.end_epoch()
        sched.step()
        _end_epoch(histories, stack, dd, dev, recipe, epoch, tot, correct, seen, eval_every)
        bar.set_postfix(mean_loss=f"{float(tot.mean()) / seen:.3f}")
    bar.close()
    seconds = time.perf_counter() - t0

    s_logits = _stacked_test_logits(stack, dd, dev)
    t_logits = predict_logits(teacher, dd, dev)
    labels = dd.test_y.cpu()
    trained = stack.unstack(students[0])
    for m, s in zip(students, trained):
        if m is not s:
            m.load_state_dict(s.state_dict())
    records = []
    for i, s in enumerate(specs):
        config = {"kind": "distill", "loss": _loss_name(s["loss"]),
                  "temperature": s["temperature"], "alpha": s["alpha"],
                  "recipe": recipe.to_dict(), "seed": seed,
                  "device": dev.type, "student": type(students[0]).__name__,
                  "teacher": type(teacher).__name__, "data": dd.dataset.name,
                  "stacked": stack.k, **runtime_config(dev)}
        records.append({"config": config, "history": histories[i],
                        "metrics": distillation_metrics(s_logits[i], t_logits, labels,
                                                        float(s["temperature"])),
                        "metrics_from": "last_epoch", "seconds": seconds / stack.k})
    return records


def _loss_name(loss) -> str:
    return loss if isinstance(loss, str) else getattr(loss, "__name__", "fn")


def train_stacked(models, data, recipe: Recipe, seeds, *, targets=None, device="auto",
                  progress: bool = True, eval_every: int = 0) -> list[dict]:
    """Train K independent runs at once; run i uses batch order/augmentation `seeds[i]`.

    targets: None (cross-entropy on labels), one N_train x C probability tensor shared by
    all runs, or a list of K of them (e.g. the posterior at different temperatures).
    Member i matches `kdlib.train.train(models[i], data, recipe, seed=seeds[i], ...)`.
    Returns one record per run, in the format of `kdlib.train.train`.
    """
    from kdlib.losses import soft_cross_entropy

    models = list(models)
    seeds = [check_int(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(seeds)]
    if len(models) != len(seeds) or not models:
        raise ValueError(f"need one seed per model, got {len(models)} models and "
                         f"{len(seeds)} seeds")
    _, eval_every = _check_common(recipe, 0, eval_every, progress)
    models = _check_members(models, "model")
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    k = len(models)
    if targets is not None:
        if not isinstance(targets, (list, tuple)):
            targets = [targets] * k
        if len(targets) != k:
            raise ValueError(f"targets: need one tensor per model ({k}), got {len(targets)}")
        targets = torch.stack([check_targets(t, dd) for t in targets]).to(dev)  # K x N x C
    for m in models:
        check_classes(m.to(dev), dd, "model")

    stack = StackedModels(models).to(dev)
    opt, sched = _sgd(stack, recipe)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    histories = [[] for _ in models]
    drop_single = has_batchnorm(models[0])
    guard = DivergenceGuard(dev, recipe, check_batches(dd, recipe, drop_single),
                            [f"run {i} (seed {s})" for i, s in enumerate(seeds)])
    step = 0
    t0 = time.perf_counter()
    bar = tqdm(range(recipe.epochs), desc=f"{k} stacked runs", disable=not progress, leave=False)
    for epoch in bar:
        stack.train()
        tot = torch.zeros(k, device=dev)
        correct = torch.zeros(k, device=dev)
        seen = 0
        iters = [dd.train_batches(recipe.batch_size, g, augment=True, drop_single=drop_single)
                 for g in gens]
        for batches in zip(*iters):
            x = torch.stack([b.x for b in batches])
            y = torch.stack([b.y for b in batches])
            with autocast(dev):
                logits = full_precision(stack(x, per_member=True))  # K x B x C
                if targets is None:
                    per = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
                    losses = per.view(k, -1).mean(1)
                else:
                    idx = torch.stack([b.idx for b in batches])
                    q = torch.gather(targets, 1, idx.unsqueeze(-1).expand(-1, -1,
                                                                           targets.shape[-1]))
                    losses = torch.stack([soft_cross_entropy(logits[i], q[i]) for i in range(k)])
            guard.step(losses, step)
            step += 1
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            n = y.shape[1]
            tot += losses.detach() * n
            correct += (logits.detach().argmax(-1) == y).sum(1)
            seen += n
        guard.end_epoch()
        sched.step()
        _end_epoch(histories, stack, dd, dev, recipe, epoch, tot, correct, seen, eval_every)
        bar.set_postfix(mean_loss=f"{float(tot.mean()) / seen:.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    logits = _stacked_test_logits(stack, dd, dev)
    for m, s in zip(models, stack.unstack(models[0])):
        m.load_state_dict(s.state_dict())
    records = []
    for i in range(k):
        config = {"kind": "train", "recipe": recipe.to_dict(), "seed": seeds[i],
                  "targets": "labels" if targets is None else "soft", "device": dev.type,
                  "model": type(models[0]).__name__, "data": dd.dataset.name,
                  "stacked": k, **runtime_config(dev)}
        records.append({"config": config, "history": histories[i],
                        "metrics": classification_metrics(logits[i], dd.test_y.cpu()),
                        "metrics_from": "last_epoch", "seconds": seconds / k})
    return records
