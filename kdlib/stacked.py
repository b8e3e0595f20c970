"""Train many copies of one architecture at once, through the one loop of kdlib.engine.

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

Representations of a stack ("modes"): "loop" (K ordinary modules run one after another),
"vmap" (torch.func: stacked parameters, one vmapped call); more register in
REPRESENTATIONS (a class taking the K modules, with the methods listed in kdlib.engine).
`checkpoint_dir=` makes a call resumable: state.pt (every member's weights, momentum,
BatchNorm statistics, the batch generators, the histories) is written atomically after
every epoch, and the same call after a kill resumes from the last complete epoch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from kdlib._validate import check_fraction, check_int
from kdlib.devices import prepare_model, resolve_device
from kdlib.distillers import full_precision, make_distiller
from kdlib.engine import (
    Engine,
    StackState,
    check_compile,
    momentum_buffers,
    set_momentum_buffers,
    stack_test_logits,
)
from kdlib.losses import (
    STACKED_LOSSES,
    check_temperature,
    stacked_logit_losses,
)
from kdlib.recipe import Recipe
from kdlib.train import (
    as_device_data,
    check_batches,
    check_callback,
    check_checkpoint_dir,
    check_classes,
    check_module,
    check_targets,
    classification_metrics,
    distillation_metrics,
    has_batchnorm,
    predict_logits,
    runtime_config,
)
from kdlib.wide import WideModels

SPEC_KEYS = ("loss", "temperature", "alpha")


class StackedModels:
    """K models of one architecture as stacked parameter/buffer tensors (leading dim K),
    run as one vmapped functional call ("vmap").

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

    def split(self, tensors) -> list[dict]:
        """Tensors aligned with parameters() (K x ... each) -> K dicts {name: tensor}."""
        return [{n: t[i] for n, t in zip(self.params, tensors)} for i in range(self.k)]

    def merge(self, dicts) -> list[torch.Tensor]:
        """K dicts {name: tensor} -> stacked tensors aligned with parameters()."""
        return [torch.stack([d[n] for d in dicts]) for n in self.params]

    def member_states(self) -> list[dict]:
        """K state_dicts; their tensors are views of the stack's (copy before changing)."""
        return [{**{n: p[i].detach() for n, p in self.params.items()},
                 **{n: b[i] for n, b in self.buffers.items()}} for i in range(self.k)]

    def load_member_states(self, states) -> None:
        states = list(states)
        if len(states) != self.k:
            raise ValueError(f"need {self.k} member states, got {len(states)}")
        with torch.no_grad():
            for group in (self.params, self.buffers):
                for n, t in group.items():
                    t.copy_(torch.stack([sd[n] for sd in states]).to(t.device, t.dtype))

    def unstack(self, like: torch.nn.Module) -> list[torch.nn.Module]:
        """K independent modules (copies of `like`) holding the members' weights (CPU)."""
        out = []
        for state in self.member_states():
            m = copy.deepcopy(like).cpu()
            m.load_state_dict({n: t.detach().cpu() for n, t in state.items()})
            out.append(m)
        return out


class LoopedModels:
    """The StackedModels interface over K separate modules, run one after another ("loop").

    On a CPU a grouped (vmapped) convolution is no faster than K separate ones, so there
    the win of training students together is the shared batch and the single teacher
    pass; the students' own forward passes run in a plain loop, exactly as alone. A single
    run (kdlib.train) is a LoopedModels of one. forward(x) -> K x B x C logits.
    """

    def __init__(self, models):
        self.models = list(models)
        if not self.models:
            raise ValueError("need at least one model")
        self.k = len(self.models)
        self.training = True

    def to(self, device):
        self.models = [prepare_model(m, torch.device(device)) for m in self.models]
        return self

    def parameters(self):
        return [p for m in self.models for p in m.parameters()]

    def train(self, mode: bool = True):
        self.training = mode
        for m in self.models:
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def __call__(self, x, per_member: bool = False):
        if per_member:
            return torch.stack([m(xi) for m, xi in zip(self.models, x)])
        if self.k == 1:
            return self.models[0](x).unsqueeze(0)
        return torch.stack([m(x) for m in self.models])

    def split(self, tensors) -> list[dict]:
        tensors, out = list(tensors), []
        for m in self.models:
            names = [n for n, _ in m.named_parameters()]
            out.append(dict(zip(names, tensors[:len(names)])))
            tensors = tensors[len(names):]
        return out

    def merge(self, dicts) -> list[torch.Tensor]:
        return [d[n] for m, d in zip(self.models, dicts) for n, _ in m.named_parameters()]

    def member_states(self) -> list[dict]:
        return [m.state_dict() for m in self.models]

    def load_member_states(self, states) -> None:
        states = list(states)
        if len(states) != self.k:
            raise ValueError(f"need {self.k} member states, got {len(states)}")
        copies = [{n: t.detach().clone() for n, t in sd.items()} for sd in states]
        for m, sd in zip(self.models, copies):  # copies: the states may alias the members
            m.load_state_dict(sd)

    def unstack(self, like: torch.nn.Module) -> list[torch.nn.Module]:
        return self.models


# mode -> representation class (constructor takes the K models); "auto" picks one per device
REPRESENTATIONS = {"vmap": StackedModels, "loop": LoopedModels, "wide": WideModels}
AUTO_MODE = {"cuda": "vmap"}  # device type -> mode; any other device: "loop"
STACK_MODES = ("auto", "vmap", "loop", "wide")


def resolve_mode(mode: str, device: torch.device) -> str:
    """The representation "auto" stands for on `device` (vmap on CUDA, loop elsewhere)."""
    modes = ("auto", *REPRESENTATIONS)
    if mode not in modes:
        raise ValueError(f"mode must be one of {list(modes)}, got {mode!r}")
    if mode == "auto":
        return AUTO_MODE.get(torch.device(device).type, "loop")
    return mode


def make_stack(models, mode: str, device: torch.device):
    """The K models in representation `mode` on `device` ("auto": see resolve_mode).
    The models must share one architecture (checked)."""
    mode = resolve_mode(mode, device)
    models = list(models)
    StackedModels(models)  # same architecture check
    return REPRESENTATIONS[mode](models).to(device)


def _sync_back(stack, models) -> None:
    """Write the trained members' weights back into the caller's modules (in place)."""
    for m, s in zip(models, stack.unstack(models[0])):
        if m is not s:
            m.load_state_dict(s.state_dict())


def _apply_carry(engine, carry) -> None:
    """Start SGD from the momentum buffers in carry["momentum"] (K dicts, member names)."""
    if carry is None or engine.start_epoch or not carry.get("momentum"):
        return
    if len(carry["momentum"]) != engine.stack.k:
        raise ValueError(f"carry['momentum'] holds {len(carry['momentum'])} members, the "
                         f"stack has {engine.stack.k}")
    set_momentum_buffers(engine.opt, engine.stack.parameters(),
                         engine.stack.merge(carry["momentum"]))


def _fill_carry(engine, carry) -> None:
    if carry is None:
        return
    bufs = momentum_buffers(engine.opt, engine.stack.parameters())
    carry["momentum"] = (None if any(b is None for b in bufs) else
                         [{n: t.detach().clone() for n, t in d.items()}
                          for d in engine.stack.split(bufs)])


def _check_carry(carry):
    if carry is not None and not isinstance(carry, dict):
        raise TypeError(f"carry must be a dict (empty at first) or None, got "
                        f"{type(carry).__name__}")
    return carry


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
    if loss in ("fitnet", "fitnet_ce"):
        raise ValueError(f"{loss} is not stackable (its regressor differs per student); "
                         "use kdlib.train.distill")
    if not (loss in STACKED_LOSSES or (callable(loss) and not isinstance(loss, str))):
        raise ValueError(f"specs[{i}]['loss'] must be one of {list(STACKED_LOSSES)} or a "
                         f"callable, got {loss!r}")
    return {"loss": loss,
            "temperature": check_temperature(spec.get("temperature"),
                                             f"specs[{i}]['temperature']"),
            "alpha": check_fraction(spec.get("alpha", 1.0), f"specs[{i}]['alpha']")}


def distill_stacked(students, teacher, data, specs, recipe: Recipe, *, seed: int = 0,
                    device="auto", progress: bool = True, eval_every: int = 0,
                    step_callback=None, mode: str = "auto", checkpoint_dir=None,
                    carry: dict | None = None, compile=False) -> list[dict]:
    """Distil one teacher into K students at once, all on the same batches.

    specs: one dict per student with "loss" ("kd", "dist" or a callable), "temperature" in
    [1e-3, 1e3] and optionally "alpha" in [0, 1] (default 1.0); no other keys.
    seed: the shared batch order and augmentation.
    eval_every: test metrics every that many epochs in the history (0: only at the end).
    step_callback(step, losses): called with a K-vector of the members' losses (float64,
    CPU) after every step run (after a resume: only the steps run in this call).
    mode: "vmap" (torch.func stacking: grouped kernels, the fast path on a GPU), "loop" (the
    students' forward passes one after another: the fast path on a CPU, where grouped
    convolutions gain nothing), another registered representation, or "auto" (vmap on
    CUDA, loop otherwise). All share the batches, the single teacher pass per batch and one
    optimizer step for all students.
    checkpoint_dir: a folder (created if missing); state.pt is written there atomically after
    every epoch, and the same call with the same folder resumes from the last complete epoch
    (bit-identical on the CPU to an uninterrupted run; an unusable state.pt is moved aside
    with a warning, one of another configuration raises ValueError).
    carry: a dict shared by consecutive calls on the same students (e.g. the stages of an
    online distillation): SGD starts from carry["momentum"] if present and leaves the
    students' final momentum buffers there. compile: as in kdlib.train.train.
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
    checkpoint_dir = check_checkpoint_dir(checkpoint_dir)
    carry = _check_carry(carry)
    compile = check_compile(compile)
    dev = resolve_device(device)
    mode = resolve_mode(mode, dev)
    dd = as_device_data(data, dev)
    flags = [p.requires_grad for p in teacher.parameters()]
    was_training = teacher.training
    try:
        return _distill_stacked(students, teacher, dd, specs, recipe, seed, dev, progress,
                                eval_every, step_callback, mode, checkpoint_dir, carry,
                                compile)
    finally:
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)
        teacher.train(was_training)


def _distill_stacked(students, teacher, dd, specs, recipe, seed, dev, progress, eval_every,
                     step_callback, mode, checkpoint_dir, carry, compile):
    teacher = prepare_model(teacher, dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    check_classes(teacher, dd, "teacher")
    for s in students:
        check_classes(s.to(dev), dd, "student")
    distillers = [make_distiller(s["loss"], s["temperature"], s["alpha"]) for s in specs]

    names = [s["loss"] if isinstance(s["loss"], str) else None for s in specs]
    # named logit losses (KD, DIST, DKD and their standardized forms): stacked_logit_losses,
    # each loss computed on its own members (measured in its docstring); others one by one
    logit_named = all(n in STACKED_LOSSES for n in names)
    names = tuple(names)
    taus = torch.tensor([d.temperature for d in distillers], device=dev)
    alphas = torch.tensor([d.alpha for d in distillers], device=dev)
    stack = make_stack(students, mode, dev)

    def losses_fn(x, y, idx):
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = stack(x)
        if logit_named:  # a handful of batched ops instead of K small ones
            s32 = full_precision(s_logits)
            losses = stacked_logit_losses(s32, full_precision(t_logits), taus.to(s32.dtype),
                                          names, alphas.to(s32.dtype), y, check_values=False)
        else:
            losses = torch.stack([d(s_logits[i], t_logits, y)
                                  for i, d in enumerate(distillers)])
        return losses, s_logits

    drop_single = has_batchnorm(students[0])  # as kdlib.train.distill does for each alone
    check_batches(dd, recipe, drop_single)
    labels = [f"student {i} ({_loss_name(s['loss'])} at tau {s['temperature']:g})"
              for i, s in enumerate(specs)]
    configs = []
    for s in specs:
        configs.append({"kind": "distill", "loss": _loss_name(s["loss"]),
                        "temperature": s["temperature"], "alpha": s["alpha"],
                        "recipe": recipe.to_dict(), "seed": seed,
                        "device": dev.type, "student": type(students[0]).__name__,
                        "teacher": type(teacher).__name__, "data": dd.dataset.name,
                        "stacked": stack.k, **runtime_config(dev)})
    state = None
    if checkpoint_dir is not None:
        state = StackState(checkpoint_dir, _state_config("distill_stacked", configs, mode, dev))
    callback = None if step_callback is None else (
        lambda step, losses: step_callback(step, losses.double().cpu()))
    engine = Engine(stack, dd, recipe, losses_fn, gens=[torch.Generator().manual_seed(seed)],
                    device=dev, drop_single=drop_single, members=labels, on_step=callback,
                    eval_every=eval_every, progress=progress,
                    desc=f"{len(students)} stacked students", state=state, compile=compile)
    _apply_carry(engine, carry)
    histories, seconds = engine.run()
    _fill_carry(engine, carry)

    s_logits = stack_test_logits(stack, dd)
    t_logits = predict_logits(teacher, dd, dev)
    labels = dd.test_y.cpu()
    _sync_back(stack, students)
    return [{"config": config, "history": histories[i],
             "metrics": distillation_metrics(s_logits[i], t_logits, labels,
                                             float(specs[i]["temperature"])),
             "metrics_from": "last_epoch", "seconds": seconds / stack.k}
            for i, config in enumerate(configs)]


def _state_config(kind: str, configs: list[dict], mode: str, dev) -> dict:
    """What a stacked state.pt must match to be resumed: the members' configurations
    (without runtime keys) and, as runtime keys, the torch version, threads, device and
    stack representation (a resume under others warns: not bit-identical)."""
    from kdlib.engine import run_settings

    return {"kind": kind, "members": [run_settings(c) for c in configs], "stack_mode": mode,
            **runtime_config(dev)}


def _loss_name(loss) -> str:
    return loss if isinstance(loss, str) else getattr(loss, "__name__", "fn")


def train_stacked(models, data, recipe: Recipe, seeds, *, targets=None, device="auto",
                  progress: bool = True, eval_every: int = 0, mode: str = "vmap",
                  checkpoint_dir=None, step_callback=None, compile=False) -> list[dict]:
    """Train K independent runs at once; run i uses batch order/augmentation `seeds[i]`.

    targets: None (cross-entropy on labels), one N_train x C probability tensor shared by
    all runs, or a list of K of them (e.g. the posterior at different temperatures).
    mode: the stack representation ("vmap", "loop", "auto", as in distill_stacked).
    checkpoint_dir, step_callback, compile: as in distill_stacked.
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
    check_callback(step_callback, "step_callback")
    checkpoint_dir = check_checkpoint_dir(checkpoint_dir)
    compile = check_compile(compile)
    dev = resolve_device(device)
    mode = resolve_mode(mode, dev)
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

    stack = make_stack(models, mode, dev)

    def losses_fn(x, y, idx):
        logits = full_precision(stack(x, per_member=True))  # K x B x C
        if targets is None:
            per = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            return per.view(k, -1).mean(1), logits
        q = torch.gather(targets, 1, idx.unsqueeze(-1).expand(-1, -1, targets.shape[-1]))
        return torch.stack([soft_cross_entropy(logits[i], q[i]) for i in range(k)]), logits

    drop_single = has_batchnorm(models[0])
    check_batches(dd, recipe, drop_single)
    configs = [{"kind": "train", "recipe": recipe.to_dict(), "seed": seeds[i],
                "targets": "labels" if targets is None else "soft", "device": dev.type,
                "model": type(models[0]).__name__, "data": dd.dataset.name,
                "stacked": k, **runtime_config(dev)} for i in range(k)]
    state = None
    if checkpoint_dir is not None:
        state = StackState(checkpoint_dir, _state_config("train_stacked", configs, mode, dev))
    callback = None if step_callback is None else (
        lambda step, losses: step_callback(step, losses.double().cpu()))
    engine = Engine(stack, dd, recipe, losses_fn,
                    gens=[torch.Generator().manual_seed(s) for s in seeds], device=dev,
                    drop_single=drop_single,
                    members=[f"run {i} (seed {s})" for i, s in enumerate(seeds)],
                    on_step=callback, eval_every=eval_every, progress=progress,
                    desc=f"{k} stacked runs", state=state, compile=compile,
                    per_member_batches=True)
    histories, seconds = engine.run()
    logits = stack_test_logits(stack, dd)
    _sync_back(stack, models)
    return [{"config": configs[i], "history": histories[i],
             "metrics": classification_metrics(logits[i], dd.test_y.cpu()),
             "metrics_from": "last_epoch", "seconds": seconds / k} for i in range(k)]
