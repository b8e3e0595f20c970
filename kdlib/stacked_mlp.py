"""K independent MLP runs trained at once with batched matrix products and a hand-written
backward pass: the lean path for many small MLPs (e.g. the GMM task of paper Table 1).

    models = [make_model("mlp", data, seed=s, hidden=(64, 64)) for s in seeds]
    records = train_mlps_stacked(models, data, recipe, seeds, targets=[post] * len(seeds))

Member i behaves as `kdlib.train.train(models[i], data, recipe, seed=seeds[i],
targets=targets[i])`: same initialization (the weights of models[i]), the same minibatches
(one `torch.randperm(N)` per epoch from a CPU generator seeded seeds[i], last batch kept),
the same loss (soft cross-entropy, mean over the batch; cross-entropy on labels when a
target is None), and torch's SGD (momentum, weight decay on every parameter, MultiStepLR).

Why it is faster than `kdlib.stacked.train_stacked` for MLPs: each layer of all K members is
one `torch.baddbmm` (K x B x d_in @ K x d_in x d_out), the gradients come from the closed
form of an MLP's backward pass (no autograd graph, no vmap/functional_call) and are
accumulated straight into SGD's momentum buffers (buf = momentum * buf + grad in one
`baddbmm_`), weight decay and the step are two foreach ops, each epoch's batches are
gathered once for all members, and nothing is copied to the host inside an epoch. The
remaining cost is mostly the matrix products themselves, the same FLOPs as K separate runs.
Computation is in the weights' dtype (float32, or float64 for exactness checks); no mixed
precision (also on CUDA).
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from kdlib._validate import check_int
from kdlib.batches import normalize, to_float
from kdlib.devices import resolve_device
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
    """[W_1, b_1, ..., W_L, b_L]: hidden layers' W_l as K x d_in x d_out (the transposed
    nn.Linear weight), the output layer's W_L as K x C x d_in (nn.Linear's own layout), biases
    b_l as K x 1 x d_out; in the models' dtype on `device`. (These layouts let every product of
    the backward pass read contiguous operands or a single transposed view.)
    models: kdlib.models.MLP instances of one shape."""
    models = _check_models(models)
    device = resolve_device(device)
    params = []
    n_hidden = len(models[0].layers)
    for layer_idx in range(n_hidden + 1):
        lins = [m.layers[layer_idx] if layer_idx < n_hidden else m.fc for m in models]
        weights = [lin.weight.detach() if layer_idx == n_hidden else lin.weight.detach().t()
                   for lin in lins]
        params.append(torch.stack(weights).to(device).contiguous())
        params.append(torch.stack([lin.bias.detach().unsqueeze(0) for lin in lins]).to(device)
                      .contiguous())
    return params


def _write_back(models, params) -> None:
    with torch.no_grad():
        for i, m in enumerate(models):
            lins = [*m.layers, m.fc]
            for j, lin in enumerate(lins):
                w = params[2 * j][i]
                lin.weight.copy_((w if j == len(lins) - 1 else w.t()).to(lin.weight.device))
                lin.bias.copy_(params[2 * j + 1][i, 0].to(lin.bias.device))


def _forward(params, x):
    """x: K x B x d (or 1 x B x d shared) -> (logits K x B x C, activations per layer input)."""
    acts = [x]
    h = x
    n_layers = len(params) // 2
    for j in range(n_layers):
        w, b = params[2 * j], params[2 * j + 1]
        if h.shape[0] != w.shape[0]:
            h = h.expand(w.shape[0], -1, -1)
        if j < n_layers - 1:
            h = torch.baddbmm(b, h, w).clamp_min_(0.0)
            acts.append(h)
        else:
            h = torch.baddbmm(b, h, w.transpose(1, 2))
    return h, acts


def stacked_mlp_logits(params, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Logits K x N x C of stacked MLP weights `params` (as `stack_mlp_weights` lays them
    out: [W_1, b_1, ..., W_L, b_L]) on shared inputs x: N x d (already normalized)."""
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            out.append(_forward(params, x[start:start + chunk].unsqueeze(0))[0])
    return torch.cat(out, dim=1)


def _check_targets(targets, k, n, c, labels, device, dtype):
    """-> (T x N x C distinct target tensors, K member -> target index). None entries (and
    targets=None) mean the one-hot labels (soft CE on a one-hot target is cross-entropy)."""
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
    return torch.stack(tensors), torch.tensor(index, device=device)


def train_mlps_stacked(models, data, recipe: Recipe, seeds, *, targets=None, device="auto",
                       progress: bool = True, eval_every: int = 0, on_epoch=None) -> list[dict]:
    """Train K MLPs (kdlib.models.MLP, one shape) at once; run i uses batch order `seeds[i]`.

    data: a kdlib.data.Dataset with vector inputs and augment=False (e.g. a GMM task); its
    mean/std, if set, normalize the inputs as the engine does. targets: None (cross-entropy
    on the labels), one N_train x C probability tensor shared by all runs, or a list of K
    entries (tensor or None = labels). eval_every: test metrics in the history every that
    many epochs (0: only at the end). on_epoch(epoch, losses): called after each epoch with
    the K members' mean training losses (CPU tensor).
    Trains in place (the weights are written back into `models`) and returns one record per
    run in the format of `kdlib.train.train` (metrics from the last epoch).
    """
    from kdlib.train import classification_metrics

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
    params = stack_mlp_weights(models, dev)
    dtype = params[0].dtype

    def prep(x):
        return normalize(to_float(x.to(dev)), data.mean, data.std).to(dtype)

    train_x, test_x = prep(data.train_x), prep(data.test_x)
    train_y, test_y = data.train_y.to(dev), data.test_y.to(dev)
    n, c = len(train_y), data.num_classes
    per_member = list(targets) if isinstance(targets, (list, tuple)) else [targets] * k
    tgt, member_target = _check_targets(per_member, k, n, c, train_y, dev, dtype)
    tgt_sum = tgt.sum(-1, keepdim=True)  # T x N x 1 (1 for probability rows)

    momentum, wd = float(recipe.momentum), float(recipe.weight_decay)
    bufs = [torch.zeros_like(p) for p in params]  # SGD momentum buffers
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    n_layers = len(params) // 2
    bs = recipe.batch_size
    sizes = torch.tensor([min(bs, n - a) for a in range(0, n, bs)], device=dev,
                         dtype=torch.float64)
    # 1 / (size of the batch a sample lands in), by position in the epoch's order
    inv_size = (1.0 / sizes).repeat_interleave(sizes.long()).to(dtype).view(1, n, 1)
    ones = torch.ones(k, 1, bs, device=dev, dtype=dtype)
    histories = [[] for _ in models]
    t0 = time.perf_counter()
    bar = tqdm(range(recipe.epochs), desc=f"{k} stacked MLPs", disable=not progress,
               leave=False)
    for epoch in bar:
        lr = recipe.lr_at(epoch)
        # the epoch's batches of all members, gathered once (K x N x ... in batch order), the
        # targets and their row sums pre-divided by the batch size
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(dev)
        xe = train_x[perms]
        ye = train_y[perms]
        # classes before samples (K x C x N): the softmax and the output gradient then run
        # over a middle dimension, much faster on CPU than over a short last one
        qe = tgt[member_target.unsqueeze(1), perms].mul_(inv_size).transpose(1, 2).contiguous()
        se = tgt_sum[member_target.unsqueeze(1), perms].mul_(inv_size).view(k, 1, n)
        hits = torch.empty(k, n, device=dev, dtype=torch.bool)
        step_means = []  # per step: K, minus the members' mean batch losses
        batches = zip(xe.split(bs, 1), ye.split(bs, 1), qe.split(bs, 2), se.split(bs, 2),
                      hits.split(bs, 1))
        for x, y, q, qsum, hit in batches:  # q: K x C x B, qsum: K x 1 x B, both / B
            logits, acts = _forward(params, x)  # K x B x C
            torch.eq(logits.argmax(-1), y, out=hit)
            logp = torch.log_softmax(logits.transpose(1, 2), dim=1)  # K x C x B
            step_means.append((q * logp).sum((1, 2)))
            # d(mean_b -sum_c q log softmax)/dz = ((sum_c q) softmax - q) / B, as K x C x B
            dz = logp.exp_().mul_(qsum).sub_(q)
            ones_b = ones if x.shape[1] == bs else ones[:, :, :x.shape[1]]
            # backward fused with SGD's momentum: buf = momentum * buf + grad
            j = n_layers - 1
            bufs[2 * j].baddbmm_(dz, acts[j], beta=momentum)
            bufs[2 * j + 1].baddbmm_(ones_b, dz.transpose(1, 2), beta=momentum)
            if n_layers > 1:
                dx = torch.bmm(dz.transpose(1, 2), params[2 * j])  # K x B x d_in
            for j in range(n_layers - 2, -1, -1):  # hidden layers, W_j: K x d_in x d_out
                dz = torch.ops.aten.threshold_backward(dx, acts[j + 1], 0.0)  # ReLU'
                bufs[2 * j].baddbmm_(acts[j].transpose(1, 2), dz, beta=momentum)
                bufs[2 * j + 1].baddbmm_(ones_b, dz, beta=momentum)
                if j:
                    dx = torch.bmm(dz, params[2 * j].transpose(1, 2))
            # torch.optim.SGD's weight decay (grad += wd * p, inside the momentum), then the step
            if wd:
                torch._foreach_add_(bufs, params, alpha=wd)
            torch._foreach_add_(params, bufs, alpha=-lr)
        losses = -(torch.stack(step_means, 1).double() * sizes).sum(1).cpu() / n
        correct = hits.sum(1)
        acc = (correct.double() / n).cpu()
        test = None
        if eval_every and (epoch + 1) % eval_every == 0:
            lg = stacked_mlp_logits(params, test_x).float().cpu()
            test = [classification_metrics(lg[i], test_y.cpu()) for i in range(k)]
        for i, h in enumerate(histories):
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": float(losses[i]),
                   "train_accuracy": float(acc[i])}
            if test is not None:
                row.update({f"test_{key}": v for key, v in test[i].items()})
            h.append(row)
        if on_epoch is not None:
            on_epoch(epoch, losses)
        bar.set_postfix(mean_loss=f"{float(losses.mean()):.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    logits = stacked_mlp_logits(params, test_x).float().cpu()
    _write_back(models, params)
    records = []
    for i in range(k):
        config = {"kind": "train", "recipe": recipe.to_dict(), "seed": seeds[i],
                  "targets": "labels" if per_member[i] is None else "soft", "device": dev.type,
                  "model": "MLP", "hidden": list(models[0].hidden),
                  "data": getattr(data, "name", "?"), "stacked": k, "engine": "stacked_mlp"}
        records.append({"config": config, "history": histories[i],
                        "metrics": classification_metrics(logits[i], test_y.cpu()),
                        "metrics_from": "last_epoch", "seconds": seconds / k})
    return records
