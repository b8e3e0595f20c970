"""K models of one architecture as ONE wide network (grouped convolutions), lossless both ways.

    wide = WideModels.from_models(students)      # K kdlib models of one architecture
    logits = wide(x)                             # x: B x C x H x W shared -> K x B x classes
    logits = wide(xs, per_member=True)           # xs: K x B x C x H x W   -> K x B x classes
    wide.load_into(students)                     # or wide.to_state_dicts() / wide.unstack(like)

Layout: member k owns channels [k*C, (k+1)*C) of every activation (member-major). Each
Conv2d(Cin, Cout, groups=g) becomes one convolution over K*Cin -> K*Cout channels with
groups=K*g (a depthwise conv, g = Cin, becomes groups=K*Cin); each BatchNorm2d(C) one
BatchNorm2d(K*C), whose per-channel batch statistics, running statistics and affine
parameters are exactly the members' own; each Linear(in, out) a batched product over K heads
(weight K x out x in). Every other layer of kdlib's models (ReLU, residual adds, shortcuts,
average pooling) acts per channel and is left as it is. A shared input is not copied K times:
the first layer sees C channels and runs as ONE dense conv (or linear) to K*Cout outputs with
the same weight tensor, which is the grouped conv of the repeated input.

SGD with momentum and weight decay is elementwise, so one optimizer over the wide tensors is
K optimizers; the members' losses are summed so their gradients do not mix. Unlike
`torch.func.vmap` stacking, the wide network is an ordinary module: BatchNorm stays one
native op (bf16 activations under autocast), and a step dispatches as many ops as one
student alone whatever K (835 against 820 for a resnet14 distillation step).

Supported: kdlib's CIFARResNet (resnet*), WideResNet (wrn_*), MobileNetV2 and MLP; any
other module class raises TypeError (its forward might mix channels).

Interface (that of kdlib.stacked.StackedModels): `k`, `training`, `to(device)`,
`parameters()`, `train(mode)`, `eval()`, `__call__(x, per_member=False)` -> K x B x C,
`unstack(like)` -> K modules; plus `from_models`, `to_state_dicts`, `load_into`,
`features(x)`, `state_dict()` / `load_state_dict()` (the wide tensors, for checkpoints) and
`to(memory_format=torch.channels_last)`.

Measured on the CPU (`python benchmarks/bench_sweep.py --threads 1 --steps 3 --warmup 1`,
torch 2.13 CPU, float32, 1 thread, on a 2-core machine shared with ~10 other jobs, so wall
times are meaningless and CPU time (user + sys) is the figure): one distillation step of
22 resnet14 students from a resnet56 (teacher forward once, students forward, KD/DIST
losses, backward, SGD), batch 64, 3 x 32 x 32, 100 classes; student-images per CPU-second
and ratio to one student at a time (118 img/cpu-s):
    loop (kdlib.stacked "loop")   258 img/cpu-s   2.19x   9,325 ops/step
    wide (this module)            217 img/cpu-s   1.84x     835 ops/step
    vmap (kdlib.stacked "vmap")   155 img/cpu-s   1.31x   1,426 ops/step
A second run (`... --steps 2 --reps loop,wide,wide_cl`, THP_MEM_ALLOC_ENABLE=1) gave
loop 1.91x, wide in channels_last 1.79x, wide 1.37x (single 94 img/cpu-s; CPU figures
scatter by ~25% between runs on the crowded machine). So on the CPU the loop stays the
default, the wide network second and best in channels_last. Its activations are K times
larger (92 MB per resnet14 stage-1 tensor at K = 22, B = 64, freshly mapped every step);
one grouped 3x3 layer at K = 22 costs 983 ms CPU per fwd+bwd in NCHW and 607 ms in
channels_last against 612 ms for 22 separate convolutions. On a GPU the wide network's
~840 ops per step, whatever K, and native bf16 BatchNorm are what matter; measure there
(the same benchmark prints it) before choosing.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from kdlib.models.head import LogitsLinear

__all__ = ["WideModels", "WideConv2d", "WideBatchNorm2d", "WideLinear"]


class WideConv2d(nn.Module):
    """K Conv2d(in_channels, out_channels, groups=g) as one conv of groups K*g.

    weight: K*out x in/g x kh x kw (member k's filters in rows k*out ... (k+1)*out - 1).
    forward: B x K*in x H x W -> B x K*out x H' x W'; a shared B x in x H x W input (the first
    layer) runs as one dense conv (g = 1) or on the input repeated K times (g > 1).
    """

    def __init__(self, k: int, conv: nn.Conv2d):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise TypeError(f"only zero-padded convolutions can be widened, got padding_mode "
                            f"{conv.padding_mode!r}")
        self.k = k
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation, self.groups = conv.padding, conv.dilation, conv.groups
        w = conv.weight
        self.weight = nn.Parameter(w.new_empty((k * w.shape[0],) + tuple(w.shape[1:])),
                                   requires_grad=w.requires_grad)
        self.bias = None if conv.bias is None else nn.Parameter(
            conv.bias.new_empty(k * conv.bias.shape[0]), requires_grad=conv.bias.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.k * self.in_channels:
            groups = self.k * self.groups
        elif c == self.in_channels and self.groups == 1:
            groups = 1  # shared input: one dense conv to K*out channels (same weights)
        elif c == self.in_channels:
            x, groups = x.repeat(1, self.k, 1, 1), self.k * self.groups
        else:
            raise ValueError(f"wide conv expects {self.k} x {self.in_channels} channels (or "
                             f"{self.in_channels} shared), got input of shape {tuple(x.shape)}")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        groups)

    def extra_repr(self) -> str:
        return (f"k={self.k}, {self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, groups={self.groups}")


class WideBatchNorm2d(nn.BatchNorm2d):
    """K BatchNorm2d(C) as one BatchNorm2d(K*C): per-channel statistics are per member."""

    def __init__(self, k: int, bn: nn.BatchNorm2d):
        ref = bn.weight if bn.affine else bn.running_mean
        super().__init__(k * bn.num_features, eps=bn.eps, momentum=bn.momentum,
                         affine=bn.affine, track_running_stats=bn.track_running_stats,
                         device=None if ref is None else ref.device,
                         dtype=None if ref is None else ref.dtype)
        self.k = k
        self.member_features = bn.num_features
        if bn.affine:
            self.weight.requires_grad_(bn.weight.requires_grad)
            self.bias.requires_grad_(bn.bias.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"wide BatchNorm expects B x {self.k} x {self.member_features} "
                             f"channels x H x W, got input of shape {tuple(x.shape)}")
        return super().forward(x)


class WideLinear(nn.Module):
    """K Linear(in, out) as one batched product: weight K x out x in, bias K x out.

    forward: ... x K*in -> ... x K*out (member-major); a shared ... x in input (first layer)
    runs as one linear map to K*out outputs. full_precision: computed in float32 even
    under autocast (the logits head, so losses and calibration metrics see fp32 logits).
    """

    def __init__(self, k: int, linear: nn.Linear, full_precision: bool = False):
        super().__init__()
        self.k, self.in_features, self.out_features = k, linear.in_features, linear.out_features
        self.full_precision = full_precision
        w = linear.weight
        self.weight = nn.Parameter(w.new_empty(k, *w.shape), requires_grad=w.requires_grad)
        self.bias = None if linear.bias is None else nn.Parameter(
            linear.bias.new_empty(k, linear.out_features),
            requires_grad=linear.bias.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.full_precision and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._forward(x.float() if x.dtype != torch.float64 else x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        k, n_in = self.k, self.in_features
        if x.shape[-1] == k * n_in:
            if x.dim() == 2:  # B x K*in -> K x B x in -> baddbmm -> B x K*out
                xk = x.view(x.shape[0], k, n_in).transpose(0, 1)
                wt = self.weight.transpose(1, 2)
                y = (torch.bmm(xk, wt) if self.bias is None
                     else torch.baddbmm(self.bias.unsqueeze(1), xk, wt))
                return y.transpose(0, 1).reshape(x.shape[0], k * self.out_features)
            y = torch.einsum("...ki,koi->...ko", x.unflatten(-1, (k, n_in)), self.weight)
            if self.bias is not None:
                y = y + self.bias
            return y.flatten(-2)
        if x.shape[-1] == n_in:  # shared input
            bias = None if self.bias is None else self.bias.reshape(-1)
            return F.linear(x, self.weight.reshape(k * self.out_features, n_in), bias)
        raise ValueError(f"wide linear expects {k} x {n_in} features (or {n_in} shared), got "
                         f"input of shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"k={self.k}, in_features={self.in_features}, out_features={self.out_features}"


def _supported_classes() -> tuple[type, ...]:
    from kdlib.models import MLP, CIFARResNet, MobileNetV2, WideResNet
    from kdlib.models.mobilenetv2 import InvertedResidual
    from kdlib.models.resnet import BasicBlock
    from kdlib.models.wrn import PreActBlock

    # Modules whose forward acts per channel (besides the layers that are widened).
    return (CIFARResNet, WideResNet, MobileNetV2, MLP, BasicBlock, PreActBlock,
            InvertedResidual, nn.Sequential, nn.ModuleList, nn.Identity, nn.ReLU, nn.ReLU6,
            nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.Flatten)


# attribute the root model's forward checks its input against (kdlib's check_image_input)
_INPUT_ATTRS = ("in_channels", "in_features")


def _check_models(models) -> list[nn.Module]:
    if isinstance(models, nn.Module) or not hasattr(models, "__iter__"):
        raise TypeError(f"models must be a sequence of torch.nn.Module, got "
                        f"{type(models).__name__}")
    models = list(models)
    if not models:
        raise ValueError("need at least one model to widen")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{i}] must be a torch.nn.Module, got {type(m).__name__}")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("models must be distinct module objects (one per member)")
    allowed = _supported_classes()
    widened = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, LogitsLinear)
    for name, mod in models[0].named_modules():
        if type(mod) not in allowed and type(mod) not in widened:
            raise TypeError(f"cannot widen module {name or '<root>'} of type "
                            f"{type(mod).__name__}: only kdlib's CIFARResNet, WideResNet, "
                            f"MobileNetV2 and MLP (and their layers) are known to act per "
                            f"channel")
    ref = {n: (tuple(t.shape), t.dtype, t.device) for n, t in models[0].state_dict().items()}
    for i, m in enumerate(models[1:], 1):
        got = {n: (tuple(t.shape), t.dtype, t.device) for n, t in m.state_dict().items()}
        if type(m) is not type(models[0]) or got != ref:
            raise ValueError(f"models[{i}] differs from models[0] in class, parameter names, "
                             f"shapes, dtypes or devices; all members must share one "
                             f"architecture")
        if [type(a) for a in m.modules()] != [type(a) for a in models[0].modules()]:
            raise ValueError(f"models[{i}] has a different module structure from models[0]")
    return models


def _replace(module: nn.Module, k: int, head: nn.Module | None = None) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Conv2d:
            setattr(module, name, WideConv2d(k, child))
        elif type(child) is nn.BatchNorm2d:
            setattr(module, name, WideBatchNorm2d(k, child))
        elif type(child) in (nn.Linear, LogitsLinear):
            setattr(module, name, WideLinear(k, child, full_precision=child is head))
        else:
            _replace(child, k, head)


class WideModels:
    """K models of one kdlib architecture as one wide network (see the module docstring).

    forward(x): x shared by all members (B x C x H x W, or B x F for an MLP) or per member
    (K x B x ..., per_member=True) -> K x B x num_classes logits (a view; member k's logits
    are exactly those of models[k]). fp32_head: the final linear layer (`fc`) runs in
    float32 under autocast (bf16 everywhere else).
    """

    def __init__(self, models, fp32_head: bool = True):
        models = _check_models(models)
        if not isinstance(fp32_head, bool):
            raise TypeError(f"fp32_head must be True or False, got {fp32_head!r}")
        self.k = len(models)
        base = models[0]
        self.input_attr = next((a for a in _INPUT_ATTRS if hasattr(base, a)), None)
        self.member_input = getattr(base, self.input_attr) if self.input_attr else None
        with torch.no_grad():
            self.net = copy.deepcopy(base)
            _replace(self.net, self.k, getattr(self.net, "fc", None) if fp32_head else None)
        self.net.train(base.training)
        self.load_from(models)

    @classmethod
    def from_models(cls, models, fp32_head: bool = True) -> WideModels:
        """The wide network holding copies of `models`' weights and buffers (same device)."""
        return cls(models, fp32_head)

    # ------------------------------------------------------------------ conversion

    def _layers(self):
        return [(n, m) for n, m in self.net.named_modules()
                if isinstance(m, (WideConv2d, WideBatchNorm2d, WideLinear))]

    @torch.no_grad()
    def load_from(self, models) -> WideModels:
        """Copy the weights and buffers of K ordinary models (one architecture) into the stack.

        Raises ValueError if the models' BatchNorm num_batches_tracked differ (one counter is
        kept per layer, as all members of a stack take the same steps).
        """
        models = _check_models(models)
        if len(models) != self.k:
            raise ValueError(f"need {self.k} models, got {len(models)}")
        per = [dict(m.named_modules()) for m in models]
        for name, wide in self._layers():
            src = [p[name] for p in per]
            if isinstance(wide, WideLinear):
                wide.weight.copy_(torch.stack([s.weight for s in src]))
                if wide.bias is not None:
                    wide.bias.copy_(torch.stack([s.bias for s in src]))
                continue
            for attr in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(wide, attr, None)
                if t is not None:
                    t.copy_(torch.cat([getattr(s, attr) for s in src]))
            if isinstance(wide, WideBatchNorm2d) and wide.num_batches_tracked is not None:
                counts = {int(s.num_batches_tracked) for s in src}
                if len(counts) != 1:
                    raise ValueError(f"{name}.num_batches_tracked differs between members "
                                     f"({sorted(counts)}); a stack keeps one counter")
                wide.num_batches_tracked.fill_(counts.pop())
        return self

    @torch.no_grad()
    def to_state_dicts(self) -> list[dict]:
        """K state_dicts in the members' own format (keys and shapes of the original model),
        detached copies on the stack's device."""
        return [{n: t.clone() for n, t in d.items()}
                for d in self.split_state(self.net.state_dict())]

    def split_state(self, tensors: dict) -> list[dict]:
        """Split a dict of wide tensors keyed like `state_dict()` (weights, gradients,
        momentum buffers) into K dicts of the members' shapes (views, no copies).
        num_batches_tracked, one counter for all members, is given to each."""
        if not isinstance(tensors, dict):
            raise TypeError(f"tensors must be a dict name -> tensor, got "
                            f"{type(tensors).__name__}")
        layers = dict(self._layers())
        out = [{} for _ in range(self.k)]
        for key, t in tensors.items():
            owner, _, attr = key.rpartition(".")
            m = layers.get(owner)
            if m is None or attr not in ("weight", "bias", "running_mean", "running_var",
                                         "num_batches_tracked"):
                raise ValueError(f"{key!r} is not a tensor of a widened layer")
            if attr == "num_batches_tracked":
                parts = [t] * self.k
            elif isinstance(m, WideLinear):
                parts = t.unbind(0)
            else:
                parts = t.chunk(self.k, dim=0)
            for i, p in enumerate(parts):
                out[i][key] = p
        return out

    def _merge_state(self, dicts) -> dict:
        """K dicts of member tensors (keys of state_dict()) -> one dict of wide tensors."""
        if not isinstance(dicts, (list, tuple)) or len(dicts) != self.k:
            raise ValueError(f"need {self.k} dicts, one per member, got {type(dicts).__name__}")
        layers = dict(self._layers())
        out = {}
        for key in dicts[0]:
            owner, _, attr = key.rpartition(".")
            parts = [d[key] for d in dicts]
            if attr == "num_batches_tracked":
                out[key] = parts[0]
            elif isinstance(layers.get(owner), WideLinear):
                out[key] = torch.stack(parts)
            else:
                out[key] = torch.cat(parts)
        return out

    # the representation interface of kdlib.engine (member names = the models' own names)

    def split(self, tensors) -> list[dict]:
        """Tensors aligned with parameters() (gradients, momentum) -> K dicts of the members'
        parameter names and shapes (views)."""
        names = [n for n, _ in self.net.named_parameters()]
        return self.split_state(dict(zip(names, list(tensors), strict=True)))

    def merge(self, dicts) -> list[torch.Tensor]:
        """The inverse of split: K dicts -> wide tensors aligned with parameters()."""
        merged = self._merge_state(dicts)
        return [merged[n] for n, _ in self.net.named_parameters()]

    def member_states(self) -> list[dict]:
        """K state_dicts in the members' own format (views of the live tensors)."""
        return self.split_state(self.net.state_dict())

    def load_member_states(self, states) -> None:
        """Load K member state_dicts (the format of member_states) into the stack."""
        self.net.load_state_dict(self._merge_state(list(states)))

    def load_into(self, models) -> list[nn.Module]:
        """Load member i's weights and buffers into models[i] (same architecture); returns them."""
        models = _check_models(models)
        if len(models) != self.k:
            raise ValueError(f"need {self.k} models, got {len(models)}")
        for m, state in zip(models, self.to_state_dicts()):
            m.load_state_dict(state)
        return models

    def unstack(self, like: nn.Module) -> list[nn.Module]:
        """K independent modules (CPU copies of `like`) holding the members' weights."""
        if not isinstance(like, nn.Module):
            raise TypeError(f"like must be a torch.nn.Module, got {type(like).__name__}")
        out = []
        for state in self.to_state_dicts():
            m = copy.deepcopy(like).cpu()
            m.load_state_dict({n: t.cpu() for n, t in state.items()})
            out.append(m)
        return out

    # ------------------------------------------------------------------ module-like

    @property
    def training(self) -> bool:
        return self.net.training

    def to(self, *args, **kwargs) -> WideModels:
        self.net = self.net.to(*args, **kwargs)
        return self

    def parameters(self) -> list[torch.Tensor]:
        return list(self.net.parameters())

    def named_parameters(self):
        return self.net.named_parameters()

    def train(self, mode: bool = True) -> WideModels:
        if not isinstance(mode, bool):
            raise TypeError(f"mode must be True or False, got {mode!r}")
        self.net.train(mode)
        return self

    def eval(self) -> WideModels:
        return self.train(False)

    def state_dict(self) -> dict:
        """The wide tensors (for checkpoints of the stack; see to_state_dicts per member)."""
        return self.net.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state)

    # ------------------------------------------------------------------ forward

    def _wide_input(self, x: torch.Tensor, per_member: bool) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch tensor, got {type(x).__name__}")
        if not isinstance(per_member, bool):
            raise TypeError(f"per_member must be True or False, got {per_member!r}")
        if not per_member:
            if self.input_attr:
                setattr(self.net, self.input_attr, self.member_input)
            return x
        if x.dim() < 3 or x.shape[0] != self.k:
            raise ValueError(f"per-member input must be K x B x ... with K = {self.k}, got "
                             f"shape {tuple(x.shape)}")
        if self.input_attr:
            setattr(self.net, self.input_attr, self.k * self.member_input)
        # K x B x C x ... -> B x K*C x ... (member-major channels)
        return x.transpose(0, 1).flatten(1, 2)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """B x K*C x ... -> K x B x C x ... (a view)."""
        return t.unflatten(1, (self.k, t.shape[1] // self.k)).transpose(0, 1)

    def __call__(self, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        return self._split(self.net(self._wide_input(x, per_member)))

    def features(self, x: torch.Tensor, per_member: bool = False):
        """(logits, penultimate, stages) of every member, each with a leading K dim."""
        logits, pen, stages = self.net(self._wide_input(x, per_member), return_features=True)
        return self._split(logits), self._split(pen), tuple(self._split(s) for s in stages)
