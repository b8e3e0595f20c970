"""K independent MLP runs trained at once with batched matrix products and a hand-written
backward pass: the lean path for many small MLPs (e.g. the GMM task of paper Table 1).

    models = [make_model("mlp", data, seed=s, hidden=(64, 64)) for s in seeds]
    records = train_mlps_stacked(models, data, recipe, seeds, targets=[post] * len(seeds))

Member i behaves as `kdlib.train.train(models[i], data, recipe, seed=seeds[i],
targets=targets[i])`: same initialization (the weights of models[i]), the same minibatches
(one `torch.randperm(N)` per epoch from a CPU generator seeded seeds[i], last batch kept),
the same loss (soft cross-entropy, mean over the batch; cross-entropy on labels when a
target is None), and torch's SGD (momentum, weight decay on every parameter, MultiStepLR).

Why it is faster than K separate runs: each layer of a group of members is one
`torch.baddbmm`, the gradients come from the closed form of an MLP's backward pass (no
autograd graph) and go straight into SGD's momentum buffers, the optimizer step is two ops
on one flat parameter vector, each epoch's batches are gathered once, and a whole epoch runs
as one TorchScript call (`kdlib.mlp_epoch`) that holds no GIL. On the CPU the members are
split into `workers` groups trained in parallel threads, one core each. What remains is
mostly the matrix products themselves: the same FLOPs as K separate runs.
Measured on 2 shared CPU cores (5 runs of a 64-64 MLP, 5,000 GMM samples, batch 128, 8
epochs, user+sys CPU time of the process): TorchScript with 2 one-thread workers 0.49 s
(3.6 s wall), TorchScript with 1 worker of 2 intra-op threads 14.5 s (102 s wall), eager
15.5 s (141 s wall): both the scripted epoch and the worker threads pay, and are kept.
It is the specialised MLP backend of kdlib.engine: same lr schedule (engine.lr_schedule),
record format and runtime settings in the config.
Computation is in the weights' dtype (float32, or float64 for exactness checks); no mixed
precision (also on CUDA).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from operator import methodcaller

import torch
from tqdm.auto import tqdm

from kdlib._validate import check_int
from kdlib.batches import normalize, to_float
from kdlib.devices import resolve_device
from kdlib.mlp_epoch import steps_function
from kdlib.recipe import Recipe

__all__ = ["stack_mlp_weights", "stacked_mlp_logits", "train_mlps_stacked"]


def _check_models(models) -> list:
    from kdlib.models import MLP

    models = list(models)
    if not models:
        raise ValueError("need at least one MLP")
    for m in models:
        if not isinstance(m, MLP):
            raise TypeError(f"models must be kdlib.models.MLP instances (build_model('mlp', ...)),"
                            f" got {type(m).__name__}; use kdlib.stacked.train_stacked for others")
    ref = models[0]
    for m in models[1:]:
        if (m.in_features, m.num_classes, m.hidden) != (ref.in_features, ref.num_classes,
                                                        ref.hidden):
            raise ValueError(
                "stacked MLPs must share in_features, num_classes and hidden widths; got "
                f"{(m.in_features, m.num_classes, m.hidden)} and "
                f"{(ref.in_features, ref.num_classes, ref.hidden)}")
    return models


def stack_mlp_weights(models, device="cpu") -> list[torch.Tensor]:
    """[W_1, b_1, ..., W_L, b_L] in the layouts of `kdlib.mlp_epoch`: hidden layers' W_l as
    K x d_in x d_out (the transposed nn.Linear weight) with b_l as K x 1 x d_out; the output
    layer's W_L as K x C x d_in (nn.Linear's own layout) with b_L as K x C x 1; in the models'
    dtype on `device`. models: kdlib.models.MLP instances of one shape."""
    models = _check_models(models)
    device = resolve_device(device)
    params = []
    n_hidden = len(models[0].layers)
    for layer_idx in range(n_hidden + 1):
        last = layer_idx == n_hidden
        lins = [m.fc if last else m.layers[layer_idx] for m in models]
        weights = [lin.weight.detach() if last else lin.weight.detach().t() for lin in lins]
        biases = [lin.bias.detach().unsqueeze(1 if last else 0) for lin in lins]
        params.append(torch.stack(weights).to(device).contiguous())
        params.append(torch.stack(biases).to(device).contiguous())
    return params


def _write_back(models, params) -> None:
    with torch.no_grad():
        for i, m in enumerate(models):
            lins = [*m.layers, m.fc]
            for j, lin in enumerate(lins):
                last = j == len(lins) - 1
                w = params[2 * j][i]
                lin.weight.copy_((w if last else w.t()).to(lin.weight.device))
                b = params[2 * j + 1][i]
                lin.bias.copy_((b[:, 0] if last else b[0]).to(lin.bias.device))


def _forward(params, x):
    """x: K x B x d (or 1 x B x d shared) -> logits K x B x C."""
    h = x
    n_layers = len(params) // 2
    for j in range(n_layers):
        w, b = params[2 * j], params[2 * j + 1]
        if h.shape[0] != w.shape[0]:
            h = h.expand(w.shape[0], -1, -1)
        if j < n_layers - 1:
            h = torch.baddbmm(b, h, w).clamp_min_(0.0)
        else:
            h = torch.baddbmm(b.transpose(1, 2), h, w.transpose(1, 2))
    return h


def stacked_mlp_logits(params, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Logits K x N x C of stacked MLP weights `params` (as `stack_mlp_weights` lays them
    out: [W_1, b_1, ..., W_L, b_L]) on shared inputs x: N x d (already normalized)."""
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            out.append(_forward(params, x[start:start + chunk].unsqueeze(0)))
    return torch.cat(out, dim=1)


def _check_targets(targets, k, n, c, labels, device, dtype):
    """-> (T x C x N distinct targets, classes first; list: member -> target index). None
    entries (and targets=None) mean the one-hot labels (soft CE on a one-hot target is
    cross-entropy)."""
    if targets is None or not isinstance(targets, (list, tuple)):
        targets = [targets] * k
    if len(targets) != k:
        raise ValueError(f"targets: need one entry per model ({k}), got {len(targets)}")
    distinct, index = [], []
    for t in targets:
        pos = next((i for i, u in enumerate(distinct) if u is t), None)
        if pos is None:
            distinct.append(t)
            pos = len(distinct) - 1
        index.append(pos)
    tensors = []
    for t in distinct:
        if t is None:
            tensors.append(torch.nn.functional.one_hot(labels, c).to(device, dtype))
            continue
        if not hasattr(t, "shape"):
            raise TypeError(f"targets must be None, an N_train x C tensor/array or a list of "
                            f"them, got {type(t).__name__}")
        t = torch.as_tensor(t).to(device, dtype)
        if tuple(t.shape) != (n, c):
            raise ValueError(f"targets must be N_train x C = ({n}, {c}), got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
            raise ValueError("targets must be finite, non-negative class probabilities")
        tensors.append(t)
    return torch.stack(tensors).transpose(1, 2).contiguous(), index


def _check_workers(workers, k: int, dev: torch.device) -> int:
    if isinstance(workers, str) and workers == "auto":
        return 1 if dev.type != "cpu" else max(1, min(k, torch.get_num_threads()))
    try:
        workers = check_int(workers, "workers", minimum=1)
    except TypeError:
        raise TypeError(f"workers must be an integer >= 1 or 'auto', got {workers!r}") from None
    if dev.type != "cpu" and workers != 1:
        raise ValueError(f"workers > 1 splits runs over CPU cores; on {dev.type} use 1 or "
                         "'auto'")
    return min(workers, k)


class _Group:
    """Members [lo, hi) of the stack, trained together by one worker: their parameters and
    SGD momentum buffers, each in one flat vector laid out layer by layer (W_1 of every
    member, then b_1, ...) so that the SGD step is one op and every per-layer view is
    contiguous, and their batch-order generators."""

    def __init__(self, params, lo: int, hi: int, seeds):
        self.lo, self.hi = lo, hi
        parts = [p[lo:hi] for p in params]
        self.flat_p = torch.cat([p.reshape(-1) for p in parts])
        self.flat_g = torch.zeros_like(self.flat_p)
        self.params, self.bufs, offset = [], [], 0
        for p in parts:
            self.params.append(self.flat_p[offset:offset + p.numel()].view(p.shape))
            self.bufs.append(self.flat_g[offset:offset + p.numel()].view(p.shape))
            offset += p.numel()
        self.gens = [torch.Generator().manual_seed(s) for s in seeds[lo:hi]]

    def run_epoch(self, fn, tensors, member_target, recipe, lr):
        """One epoch. -> (summed training losses, hits), one per member, CPU tensors."""
        n = tensors[0].shape[0]
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.gens])
        loss_sums, correct = fn(self.params[0::2], self.params[1::2], self.bufs[0::2],
                                self.bufs[1::2], self.flat_p, self.flat_g, *tensors,
                                member_target[self.lo:self.hi],
                                perms.to(tensors[0].device), 0, n, recipe.batch_size, lr,
                                float(recipe.momentum), float(recipe.weight_decay))
        return loss_sums.cpu(), correct.cpu()


def train_mlps_stacked(models, data, recipe: Recipe, seeds, *, targets=None, device="auto",
                       progress: bool = True, eval_every: int = 0, on_epoch=None,
                       workers="auto", script: bool = True) -> list[dict]:
    """Train K MLPs (kdlib.models.MLP, one shape) at once; run i uses batch order `seeds[i]`.

    data: a kdlib.data.Dataset with vector inputs and augment=False (e.g. a GMM task); its
    mean/std, if set, normalize the inputs as the engine does. targets: None (cross-entropy
    on the labels), one N_train x C probability tensor shared by all runs, or a list of K
    entries (tensor or None = labels). eval_every: test metrics in the history every that
    many epochs (0: only at the end). on_epoch(epoch, losses): called after each epoch with
    the K members' mean training losses (CPU tensor). workers: on the CPU, the runs are split
    into this many groups of consecutive members, each trained in its own thread on one core
    ("auto": one per torch intra-op thread, at most K, so 2 groups of 3 and 2 runs on 2
    cores; 1 on GPUs). With one worker everything runs in the calling thread with its thread
    settings. The grouping changes only float rounding (members match `train` to 1e-12 in
    float64 with any grouping), but over hundreds of epochs that rounding can move final
    float32 accuracies in the third decimal. script: run the steps as TorchScript (False:
    eagerly, for debugging, and with one worker, as eager ops hold the GIL).
    Trains in place (the weights are written back into `models`) and returns one record per
    run in the format of `kdlib.train.train` (metrics from the last epoch).
    """
    from kdlib.engine import lr_schedule
    from kdlib.train import classification_metrics, runtime_config

    models = _check_models(models)
    seeds = [check_int(s, "seed", minimum=0) for s in seeds]
    k = len(models)
    if len(seeds) != k:
        raise ValueError(f"need one seed per model, got {k} models and {len(seeds)} seeds")
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    eval_every = check_int(eval_every, "eval_every", minimum=0)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if not hasattr(data, "train_x") or not hasattr(data, "num_classes"):
        raise TypeError(f"data must be a kdlib.data.Dataset, got {type(data).__name__}")
    if data.train_x.dim() != 2:
        raise ValueError(f"data must hold N x d vectors for an MLP, got inputs of shape "
                         f"{tuple(data.train_x.shape)}")
    if data.augment:
        raise ValueError("train_mlps_stacked has no augmentation; use data with augment=False "
                         "or kdlib.stacked.train_stacked")
    if models[0].in_features != data.train_x.shape[1] or models[0].num_classes != \
            data.num_classes:
        raise ValueError(f"the MLPs map {models[0].in_features} -> {models[0].num_classes} but "
                         f"the data has {data.train_x.shape[1]} features and "
                         f"{data.num_classes} classes")
    dev = resolve_device(device)
    n_workers = _check_workers(workers, k, dev)
    fn, scripted = steps_function(script)
    if not scripted:
        n_workers = 1  # eager ops hold the GIL: threads would only take turns
    params = stack_mlp_weights(models, dev)
    dtype = params[0].dtype

    def prep(x):
        return normalize(to_float(x.to(dev)), data.mean, data.std).to(dtype)

    train_x, test_x = prep(data.train_x), prep(data.test_x)
    train_y, test_y = data.train_y.to(dev), data.test_y.to(dev)
    n, c = len(train_y), data.num_classes
    per_member = list(targets) if isinstance(targets, (list, tuple)) else [targets] * k
    tgt, member_target = _check_targets(per_member, k, n, c, train_y, dev, dtype)
    tgt_sum = tgt.sum(1, keepdim=True)  # T x 1 x N (1 for probability rows)
    bs = recipe.batch_size
    sizes = torch.tensor([min(bs, n - a) for a in range(0, n, bs)], dtype=torch.float64)
    # 1 / (size of the batch a sample lands in), by position in the epoch's order
    inv_size = (1.0 / sizes).repeat_interleave(sizes.long()).to(dev, dtype).view(1, 1, n)

    bounds = [round(i * k / n_workers) for i in range(n_workers + 1)]
    groups = [_Group(params, lo, hi, seeds) for lo, hi in zip(bounds[:-1], bounds[1:])]
    old_threads = torch.get_num_threads()
    # several workers: threads of one intra-op thread each (more per worker thread makes
    # OpenMP crawl); one worker: the caller's thread and settings
    pool = None
    if n_workers > 1:
        pool = ThreadPoolExecutor(n_workers, initializer=torch.set_num_threads, initargs=(1,))
    tensors = (train_x, train_y, tgt, tgt_sum, inv_size)
    histories = [[] for _ in models]
    t0 = time.perf_counter()
    schedule = lr_schedule(recipe)  # the engine's (torch MultiStepLR's) values, bit for bit
    bar = tqdm(range(recipe.epochs), desc=f"{k} stacked MLPs", disable=not progress,
               leave=False)
    try:
        for epoch in bar:
            lr = schedule[epoch]
            epoch_of = methodcaller("run_epoch", fn, tensors, member_target, recipe, lr)
            results = list((map if pool is None else pool.map)(epoch_of, groups))
            loss_sums = torch.cat([r[0] for r in results])
            correct = torch.cat([r[1] for r in results])
            losses = loss_sums / n
            acc = correct.double() / n
            test = None
            if eval_every and (epoch + 1) % eval_every == 0:
                lg = stacked_mlp_logits(_params_of(groups), test_x).float().cpu()
                test = [classification_metrics(lg[i], test_y.cpu()) for i in range(k)]
            for i, h in enumerate(histories):
                row = {"epoch": epoch + 1, "lr": recipe.lr_at(epoch),
                       "train_loss": float(losses[i]),
                       "train_accuracy": float(acc[i])}
                if test is not None:
                    row.update({f"test_{key}": v for key, v in test[i].items()})
                h.append(row)
            if on_epoch is not None:
                on_epoch(epoch, losses)
            bar.set_postfix(mean_loss=f"{float(losses.mean()):.3f}")
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - t0
    params = _params_of(groups)
    logits = stacked_mlp_logits(params, test_x).float().cpu()
    _write_back(models, params)
    records = []
    for i in range(k):
        config = {"kind": "train", "recipe": recipe.to_dict(), "seed": seeds[i],
                  "targets": "labels" if per_member[i] is None else "soft", "device": dev.type,
                  "model": "MLP", "hidden": list(models[0].hidden),
                  "data": getattr(data, "name", "?"), "stacked": k, "engine": "stacked_mlp",
                  "workers": n_workers, **runtime_config(dev)}
        records.append({"config": config, "history": histories[i],
                        "metrics": classification_metrics(logits[i], test_y.cpu()),
                        "metrics_from": "last_epoch", "seconds": seconds / k})
    return records


def _params_of(groups) -> list[torch.Tensor]:
    """All members' [W_1, b_1, ..., W_L, b_L], concatenated over the groups."""
    if len(groups) == 1:
        return groups[0].params
    return [torch.cat(parts) for parts in zip(*(g.params for g in groups))]
