"""The one training loop of kdlib: every run is a stack of K members (a single run: K = 1).

    engine = Engine(stack, dd, recipe, losses_fn, gens=[gen], device=dev, ...)
    histories, seconds = engine.run()

`train`, `distill` (kdlib.train), `distill_stacked` and `train_stacked` (kdlib.stacked) only
build the stack, the per-step loss function and the records; this module owns SGD (momentum,
weight decay, the recipe's step schedule), the epoch loop, progress, the per-epoch history,
the divergence guard and the resumable state.

A stack (a "representation", see kdlib.stacked: "loop", "vmap"; any other plugs in through
`kdlib.stacked.REPRESENTATIONS`) provides
    k                            number of members
    parameters()                 the tensors SGD updates (leaf tensors, requires_grad)
    train(mode=True) / eval()    training / evaluation mode of every member
    __call__(x, per_member=False)   B x ... shared (or K x B x ... per member) -> K x B x C
    split(tensors)               tensors aligned with parameters() -> K dicts {name: tensor}
                                 in each member's own nn.Module parameter names
    merge(dicts)                 the inverse: K such dicts -> tensors aligned with parameters()
    member_states()              K state_dicts (parameters and buffers, module names; may
                                 be views of the live tensors)
    load_member_states(states)   load K such state_dicts
    unstack(like)                K nn.Modules holding the members' weights
split/merge and member_states make the checkpoint independent of the representation.

One step: losses_fn(x, y, idx) -> (K losses, K x B x C logits) under autocast (bf16 on
CUDA), then the sum of the losses is back-propagated (the members' gradients do not mix)
and one SGD step updates all members. Per epoch, the permutation, crop offsets and flips
are drawn once from the CPU generator(s) and uploaded once (DeviceData.epoch_plan), and the
step makes no host-device synchronisation on CUDA: the learning rate is a device tensor
(fused SGD), losses and hits are summed on the device, the divergence check is deferred to
the end of the epoch. Evaluation logits are computed in fp32 (no autocast).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kdlib.checkpoint import CorruptCheckpointError, load_checkpoint, move_aside, save_atomic
from kdlib.devices import autocast, channels_last
from kdlib.recipe import Recipe

# config keys that describe where a run ran, not what it is: a resume may differ in them
RUNTIME_KEYS = ("torch_version", "torch_threads", "device_name", "stack_mode")
STATE_KEYS = ("model", "extra", "optimizer", "scheduler", "generator", "history", "config")
STACK_STATE_KEYS = ("format", "members", "momentum", "extra", "extra_momentum", "generators",
                    "histories", "config", "epoch")
STACK_FORMAT = "kdlib.engine.stack/1"


# ---------------------------------------------------------------- schedule and optimizer


def lr_schedule(recipe: Recipe) -> list[float]:
    """The learning rate of every 0-based epoch, multiplied by gamma at each milestone
    exactly as torch's MultiStepLR does it (lr_e = lr_{e-1} * gamma), so that runs match
    those made with the scheduler bit for bit. Its values equal recipe.lr_at(e) up to the
    last bit (recipe.lr_at multiplies by gamma ** n instead)."""
    out, lr, ms = [], float(recipe.lr), set(recipe.milestones)
    for epoch in range(recipe.epochs):
        if epoch in ms:
            lr = lr * recipe.gamma
        out.append(lr)
    return out


def make_optimizer(params, recipe: Recipe, device: torch.device):
    """(torch.optim.SGD over `params`, lr tensor or None). On CUDA the learning rate is a
    float32 device tensor and the step is fused (one kernel, no host sync for the lr); on
    the CPU it is a Python float (torch's reference implementation, bit-reproducible)."""
    params = list(params)
    if device.type == "cuda":
        lr_t = torch.tensor(float(recipe.lr), dtype=torch.float32, device=device)
        opt = torch.optim.SGD(params, lr=lr_t, momentum=recipe.momentum,
                              weight_decay=recipe.weight_decay, fused=True)
        return opt, lr_t
    opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    return opt, None


def momentum_buffers(opt, params) -> list:
    """SGD's momentum buffer of each of `params` (None where there is none yet)."""
    return [opt.state.get(p, {}).get("momentum_buffer") for p in params]


def set_momentum_buffers(opt, params, buffers) -> None:
    """Give SGD these momentum buffers (aligned with params; None entries are skipped)."""
    for p, buf in zip(params, buffers):
        if buf is not None:
            opt.state[p]["momentum_buffer"] = buf.detach().to(p.device, p.dtype).clone()


# ---------------------------------------------------------------- divergence


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or inf (inputs were checked finite at entry)."""


class DivergenceGuard:
    """Stops a run at the step whose training loss is NaN/inf, naming epoch, step and loss.

    guard = DivergenceGuard(device, recipe, steps_per_epoch[, members])
    guard.step(loss, step)    # every step; loss: 0-d tensor or a K-vector (stacked members)
    guard.end_epoch()         # once per epoch, before the epoch's checkpoint is written

    CPU (deferred=False): each step's loss is tested at once (a CPU tensor read as Python
    floats: no device sync, about 2 microseconds against steps of milliseconds); the error
    comes before that step's backward pass, so the model keeps the last finite weights.
    Other devices (deferred=True, the default off the CPU): to avoid one host sync per
    step, the first non-finite step and its loss are recorded on the device (a few tiny
    kernels, no sync) and read once per epoch in end_epoch(); the
    error still names the exact step, but comes at the end of its epoch (the weights are
    then non-finite) and before that epoch's state.pt is written, so a resume restarts from
    the last good epoch. `step` is the 0-based global step index, as passed to on_step.
    """

    def __init__(self, device: torch.device, recipe: Recipe, steps_per_epoch: int,
                 members: list[str] | None = None, deferred: bool | None = None):
        self.lr = recipe.lr
        self.epochs = recipe.epochs
        self.steps_per_epoch = steps_per_epoch
        self.members = members
        self.deferred = torch.device(device).type != "cpu" if deferred is None else deferred
        self._bad_step = self._bad_loss = None

    def step(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach()
        if not self.deferred:  # .tolist() of a few CPU floats: ~2 us, a tensor op ~25 us
            if not all(map(math.isfinite, loss.reshape(-1).tolist())):
                self._raise(step, loss)
            return
        bad = ~torch.isfinite(loss).all()
        if self._bad_step is None:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros_like(loss, dtype=torch.float32)
        first = bad & (self._bad_step < 0)
        self._bad_step = torch.where(first, step, self._bad_step)
        self._bad_loss = torch.where(first, loss.float(), self._bad_loss)

    def end_epoch(self) -> None:
        if self.deferred and self._bad_step is not None:
            step = int(self._bad_step)  # the one host sync of the epoch
            if step >= 0:
                self._raise(step, self._bad_loss.cpu())

    def _raise(self, step: int, loss: torch.Tensor) -> None:
        epoch, within = divmod(step, self.steps_per_epoch)
        values = loss.reshape(-1).tolist()
        if self.members is None:
            what = f"the training loss is {values[0]}"
        else:
            bad = [f"{self.members[i]}: {v}" for i, v in enumerate(values)
                   if not math.isfinite(v)]
            what = f"the training loss of {len(bad)} of {len(values)} members is non-finite " \
                   f"({'; '.join(bad)})"
        raise TrainingDiverged(
            f"training diverged at epoch {epoch + 1} of {self.epochs}, step {within + 1} of "
            f"{self.steps_per_epoch} in that epoch (global step {step}): {what}. The inputs "
            f"were checked finite at the start, so the likely cause is a learning rate too "
            f"high for this model and loss (recipe.lr = {self.lr:g}): lower it, e.g. "
            f"Recipe.replace(lr={self.lr / 10:g})")


# ---------------------------------------------------------------- resumable state


def run_settings(config: dict) -> dict:
    """A config without its runtime keys (what must match for a resume)."""
    return {k: v for k, v in config.items() if k not in RUNTIME_KEYS}


def _start_over(state_path: Path, err: Exception) -> None:
    moved = move_aside(state_path)
    warnings.warn(f"checkpoint {state_path} is unusable ({err}); moved aside to {moved}; "
                  f"training starts over from epoch 1", stacklevel=5)


def _read_state(state_path: Path, keys, config: dict):
    """The state dict in state_path, or None (none there; an unusable one is moved aside
    with a warning). One written for other run settings raises ValueError; other runtime
    settings only warn (the result will not be bit-identical)."""
    if not state_path.exists():
        return None
    try:
        state = load_checkpoint(state_path)
        missing = [k for k in keys if k not in state]
        if missing:
            raise CorruptCheckpointError(f"{state_path} lacks {missing}")
    except CorruptCheckpointError as err:
        _start_over(state_path, err)
        return None
    stored = state["config"]
    if not isinstance(stored, dict) or run_settings(stored) != run_settings(config):
        raise ValueError(
            f"{state_path} holds a run with a different configuration; use a fresh "
            f"checkpoint_dir or delete it"
        )
    changed = {k: (stored[k], config[k]) for k in RUNTIME_KEYS  # older states lack them
               if k in stored and k in config and stored[k] != config[k]}
    if changed:
        warnings.warn(f"resuming {state_path} with other runtime settings {changed} "
                      f"(stored, now): the result will not be bit-identical to an "
                      f"uninterrupted run", stacklevel=5)
    return state


class SingleState:
    """state.pt of one run (train/distill), in the format kdlib has always written:
    model, extra (other trained modules), optimizer, scheduler, generator, history, config;
    plus `epoch_XXXX.pt` (model weights) every recipe.checkpoint_every epochs."""

    def __init__(self, checkpoint_dir, config: dict, recipe: Recipe):
        self.dir = Path(checkpoint_dir)
        self.path = self.dir / "state.pt"
        self.config, self.recipe = config, recipe

    def load(self, engine) -> int:
        """Restore engine from state.pt; -> epochs already done (0: start from scratch)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        state = _read_state(self.path, STATE_KEYS, self.config)
        if state is None:
            return 0
        modules = [engine.stack.models[0], *engine.extra_modules]
        backup = [copy.deepcopy(m.state_dict()) for m in modules]
        try:
            if len(state["extra"]) != len(modules) - 1:
                raise ValueError(f"{len(state['extra'])} extra module states for "
                                 f"{len(modules) - 1} modules")
            for m, sd in zip(modules, [state["model"], *state["extra"]]):
                m.load_state_dict(sd)
            engine.opt.load_state_dict(state["optimizer"])
            for g in engine.opt.param_groups:  # this device's SGD kernel (lr: set_lr)
                g["fused"] = engine.lr is not None
                g["foreach"] = None
            engine.gens[0].set_state(state["generator"])
            history = list(state["history"])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as err:
            for m, sd in zip(modules, backup):
                m.load_state_dict(sd)
            _start_over(self.path, err)
            engine.reset_optimizer()
            engine.gens[0].set_state(engine.initial_gen_states[0])
            return 0
        engine.histories = [history]
        return len(history)

    def save(self, engine, epoch: int) -> None:
        model = engine.stack.models[0]
        every = self.recipe.checkpoint_every
        if every and (epoch + 1) % every == 0:
            save_atomic({"model": model.state_dict(), "epoch": epoch + 1,
                         "config": self.config}, self.dir / f"epoch_{epoch + 1:04d}.pt")
        save_atomic({"model": model.state_dict(),
                     "extra": [m.state_dict() for m in engine.extra_modules],
                     "optimizer": engine.opt.state_dict(),
                     "scheduler": {"last_epoch": epoch + 1},  # the lr follows the epoch
                     "generator": engine.gens[0].get_state(),
                     "history": engine.histories[0], "config": self.config}, self.path)


def _cpu(d: dict) -> dict:
    """CPU copies (a view of a stacked tensor would save the whole stack's storage)."""
    return {n: (t.detach().to("cpu", copy=True) if isinstance(t, torch.Tensor) else t)
            for n, t in d.items()}


class StackState:
    """state.pt of a stack, independent of its representation: every member's state_dict
    (weights and BatchNorm statistics) and SGD momentum buffers under its own parameter
    names, the other trained modules and their momentum, every batch generator's state,
    every member's history, the run configuration and the number of epochs done."""

    def __init__(self, checkpoint_dir, config: dict):
        self.dir = Path(checkpoint_dir)
        self.path = self.dir / "state.pt"
        self.config = config

    def load(self, engine) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = _read_state(self.path, STACK_STATE_KEYS, self.config)
        if state is None:
            return 0
        stack = engine.stack
        backup = [_cpu(sd) for sd in stack.member_states()]
        try:
            if state["format"] != STACK_FORMAT:
                raise ValueError(f"unknown state format {state['format']!r}")
            k = stack.k
            for key in ("members", "momentum", "generators", "histories"):
                if len(state[key]) != (k if key != "generators" else len(engine.gens)):
                    raise ValueError(f"state holds {len(state[key])} {key} for a stack of {k}")
            if len(state["extra"]) != len(engine.extra_modules):
                raise ValueError("state holds another number of extra modules")
            stack.load_member_states(state["members"])
            for m, sd in zip(engine.extra_modules, state["extra"]):
                m.load_state_dict(sd)
            engine.reset_optimizer()
            if all(state["momentum"]):
                set_momentum_buffers(engine.opt, stack.parameters(),
                                     stack.merge(state["momentum"]))
            extra_params = [p for m in engine.extra_modules for p in m.parameters()]
            set_momentum_buffers(engine.opt, extra_params, state["extra_momentum"])
            for g, s in zip(engine.gens, state["generators"]):
                g.set_state(s)
            histories = [list(h) for h in state["histories"]]
            epoch = int(state["epoch"])
            if any(len(h) != epoch for h in histories):
                raise ValueError("member histories disagree with the epoch count")
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as err:
            stack.load_member_states(backup)
            _start_over(self.path, err)
            engine.reset_optimizer()
            for g, s in zip(engine.gens, engine.initial_gen_states):
                g.set_state(s)
            return 0
        engine.histories = histories
        return epoch

    def save(self, engine, epoch: int) -> None:
        stack = engine.stack
        params = stack.parameters()
        bufs = momentum_buffers(engine.opt, params)
        momentum = ([_cpu(d) for d in stack.split(bufs)] if all(b is not None for b in bufs)
                    else [{} for _ in range(stack.k)])
        extra_params = [p for m in engine.extra_modules for p in m.parameters()]
        save_atomic({"format": STACK_FORMAT,
                     "members": [_cpu(sd) for sd in stack.member_states()],
                     "momentum": momentum,
                     "extra": [m.state_dict() for m in engine.extra_modules],
                     "extra_momentum": [None if b is None else b.detach().cpu() for b in
                                        momentum_buffers(engine.opt, extra_params)],
                     "generators": [g.get_state() for g in engine.gens],
                     "histories": engine.histories, "config": self.config,
                     "epoch": epoch + 1}, self.path)


# ---------------------------------------------------------------- the loop


@torch.no_grad()
def stack_test_logits(stack, dd, batch_size: int = 1024) -> torch.Tensor:
    """K x N_test x C fp32 logits of the stack in eval mode on the test split (CPU); images
    in the training format (channels_last where the engine uses it), as predict_logits."""
    was = getattr(stack, "training", True)
    stack.eval()
    batches = dd.test_batches(batch_size, channels_last=channels_last(dd.device))
    out = [stack(b.x).float() for b in batches]
    stack.train(was)
    return torch.cat(out, dim=1).cpu()


class Engine:
    """One training run of a stack; see the module docstring.

    stack: a representation (module docstring). dd: kdlib.batches.DeviceData on `device`.
    losses_fn(x, y, idx) -> (K-vector of losses, K x B x C logits). gens: one CPU generator
    whose batches all members share, or with per_member_batches=True one per member (then
    x, y, idx are K x B x ...).
    extra_modules: other trained modules (e.g. a FitNet regressor) whose parameters SGD
    updates too. drop_single: skip a final batch of one sample (BatchNorm). members: labels
    of the members for the divergence message (None: a single run). on_step(step, losses):
    after every optimizer step, with the detached K losses on the device. eval_every: test
    metrics in the history every that many epochs (0: never). state: SingleState/StackState
    or None (no checkpoint). compile: wrap losses_fn in torch.compile (True: inductor, with
    CUDA graphs on CUDA; a string: that backend).
    """

    def __init__(self, stack, dd, recipe: Recipe, losses_fn, *, gens, device, extra_modules=(),
                 drop_single=False, members=None, on_step=None, eval_every=0, progress=True,
                 desc="train", state=None, compile=False, per_member_batches=False):
        self.stack, self.dd, self.recipe = stack, dd, recipe
        self.device = torch.device(device)
        self.gens = list(gens)
        self.shared = not per_member_batches
        if len(self.gens) != (1 if self.shared else stack.k):
            raise ValueError(f"need {1 if self.shared else stack.k} batch generator(s), got "
                             f"{len(self.gens)}")
        self.initial_gen_states = [g.get_state() for g in self.gens]
        self.extra_modules = list(extra_modules)
        self.drop_single = drop_single
        self.on_step, self.eval_every = on_step, eval_every
        self.progress, self.desc, self.state = progress, desc, state
        self.steps_per_epoch = dd.steps_per_epoch(recipe.batch_size, drop_single=drop_single)
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training split has {dd.num_train} sample(s): a model with "
                             f"BatchNorm needs batches of at least 2")
        self.schedule = lr_schedule(recipe)
        self.guard = DivergenceGuard(self.device, recipe, self.steps_per_epoch, members)
        self.channels_last = channels_last(self.device)  # batches in the models' format
        self.losses_fn = _compiled(losses_fn, compile, self.device)
        self.reset_optimizer()
        self.histories = [[] for _ in range(stack.k)]
        self.start_epoch = 0 if state is None else state.load(self)
        self.step = self.start_epoch * self.steps_per_epoch

    def params(self) -> list:
        return [*self.stack.parameters(), *(p for m in self.extra_modules
                                            for p in m.parameters())]

    def reset_optimizer(self) -> None:
        self.opt, self.lr = make_optimizer(self.params(), self.recipe, self.device)

    def set_lr(self, epoch: int) -> None:
        value = self.schedule[epoch]
        if self.lr is not None:
            self.lr.fill_(value)  # a host-to-device copy of one scalar, once per epoch
        for g in self.opt.param_groups:
            g["lr"] = value if self.lr is None else self.lr

    def plans(self):
        return [self.dd.epoch_plan(self.recipe.batch_size, g, True, False, self.drop_single,
                                   self.channels_last) for g in self.gens]

    def run_epoch(self, epoch: int):
        """The steps of one epoch. -> (K summed losses, K hits, samples seen), the sums on
        the device. On CUDA nothing here waits for the device (unless on_step does)."""
        self.stack.train()
        for m in self.extra_modules:
            m.train()
        self.set_lr(epoch)
        k = self.stack.k
        tot = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device)
        seen = 0
        plans = self.plans()
        for i in range(len(plans[0])):
            if self.shared:
                x, y, idx = plans[0][i]
            else:
                parts = [p[i] for p in plans]
                x, y, idx = (torch.stack([b[j] for b in parts]) for j in range(3))
            with autocast(self.device):
                losses, logits = self.losses_fn(x, y, idx)
            self.guard.step(losses, self.step)
            self.opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            self.opt.step()
            n = y.shape[-1]
            tot += losses.detach().float() * n
            correct += (logits.detach().argmax(-1) == y).sum(-1)
            seen += n
            if self.on_step is not None:
                self.on_step(self.step, losses.detach())
            self.step += 1
        return tot, correct, seen

    def end_epoch(self, epoch: int, tot, correct, seen: int) -> None:
        """Divergence check, history rows (test metrics when due), state.pt."""
        from kdlib.train import classification_metrics

        self.guard.end_epoch()
        test = None
        if self.eval_every and (epoch + 1) % self.eval_every == 0:
            logits = stack_test_logits(self.stack, self.dd)
            labels = self.dd.test_y.cpu()
            test = [classification_metrics(logits[i], labels) for i in range(self.stack.k)]
        tot, correct = tot.cpu().tolist(), correct.cpu().tolist()
        lr = self.recipe.lr_at(epoch)
        for i, h in enumerate(self.histories):
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": tot[i] / seen,
                   "train_accuracy": correct[i] / seen}
            if test is not None:
                row.update({f"test_{key}": v for key, v in test[i].items()})
            h.append(row)
        if self.state is not None:
            self.state.save(self, epoch)

    def run(self):
        """Train the remaining epochs. -> (K histories, seconds spent in this call)."""
        benchmark = torch.backends.cudnn.benchmark
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels
        try:
            return self._run()
        finally:
            torch.backends.cudnn.benchmark = benchmark

    def _run(self):
        t0 = time.perf_counter()
        bar = tqdm(range(self.start_epoch, self.recipe.epochs), desc=self.desc,
                   disable=not self.progress, initial=self.start_epoch,
                   total=self.recipe.epochs, leave=False)
        for epoch in bar:
            self.end_epoch(epoch, *self.run_epoch(epoch))
            rows = [h[-1] for h in self.histories]
            if self.stack.k == 1:
                shown = {"loss": f"{rows[0]['train_loss']:.3f}"}
                if "test_accuracy" in rows[0]:  # evaluated this epoch (eval_every)
                    shown["acc"] = f"{rows[0]['test_accuracy']:.3f}"
                else:
                    shown["train_acc"] = f"{rows[0]['train_accuracy']:.3f}"
                bar.set_postfix(shown)
            else:
                mean = sum(r["train_loss"] for r in rows) / len(rows)
                bar.set_postfix(mean_loss=f"{mean:.3f}")
        bar.close()
        return self.histories, time.perf_counter() - t0


def _compiled(fn, compile, device: torch.device):
    if compile is False or compile is None:
        return fn
    if compile is True:
        mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs
        return torch.compile(fn, mode=mode, dynamic=False)
    if isinstance(compile, str):
        return torch.compile(fn, backend=compile, dynamic=False)
    raise TypeError(f"compile must be True, False or a torch.compile backend name, got "
                    f"{compile!r}")


def check_compile(compile):
    """True/False or a torch.compile backend name (e.g. 'inductor', 'aot_eager')."""
    if isinstance(compile, bool):
        return compile
    if isinstance(compile, str) and compile:
        return compile
    raise TypeError(f"compile must be True, False or a torch.compile backend name (e.g. "
                    f"'inductor'), got {compile!r}")
