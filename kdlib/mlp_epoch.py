"""SGD steps of K stacked MLPs (forward, closed-form backward, SGD with momentum) as a single
TorchScript function, so that a whole epoch (or a stretch of it) runs without returning to
Python.

Why TorchScript: a step of the small MLPs of paper Table 1 is ~20 small ops. From Python each
op costs a few microseconds of interpreter time *with the GIL held*, so two Python threads
training two groups of runs serialize on the GIL and gain nothing. A scripted epoch holds no
GIL while it runs; `kdlib.stacked_mlp` uses that to train groups of runs on separate cores.
The weights may be strided views (K members with any stride between them), which is how
`kdlib.stacked_mlp` hands a worker a contiguous range of members of one flat vector.
`torch.jit.script` is deprecated in recent torch releases (it still works); `steps_function`
falls back to the same function run eagerly (identical results, no thread parallelism) if
scripting is unavailable or fails.

Layouts (K members, B samples, C classes): hidden layer j's weight ws[j] is K x d_in x d_out
(x @ W) with bias bs[j] K x 1 x d_out; the output weight ws[-1] is K x C x d_in (nn.Linear's
layout) with bias bs[-1] K x C x 1, so logits come out as K x C x B (classes before samples:
softmax over the middle dimension is much faster on CPU than over a short last one).
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["mlp_sgd_steps", "mlp_train_steps", "steps_function"]


def mlp_sgd_steps(ws: list[torch.Tensor], bs: list[torch.Tensor], gws: list[torch.Tensor],
                  gbs: list[torch.Tensor], flat_p: torch.Tensor, flat_g: torch.Tensor,
                  xe: torch.Tensor, nq: torch.Tensor, qs: torch.Tensor, batch_size: int,
                  lr: float, momentum: float, weight_decay: float) -> torch.Tensor:
    """Train K MLPs in place on the batches of xe (consecutive runs of batch_size samples, the
    last one may be shorter); returns the logits K x C x M seen by each step (before that
    step's update), for the epoch's loss and accuracy.

    ws/bs: weights and biases (layouts above), views into the flat parameter vector flat_p
    (which holds exactly these K members); gws/gbs: SGD momentum buffers of the same shapes,
    views into flat_g. xe: K x M x d inputs in each member's batch order. nq: K x C x M, minus
    the soft target divided by the size of the batch the sample lands in; qs: K x 1 x M, the
    target's row sum divided by that size.
    The gradient of the batch-mean soft cross-entropy w.r.t. the logits is then
    qs * softmax(z) + nq. SGD as torch.optim.SGD (dampening 0, no Nesterov): buf = momentum *
    buf + grad + weight_decay * p; p -= lr * buf (the first step's buf is grad + wd * p, as
    the buffers start at zero).
    """
    k = xe.shape[0]
    n_layers = len(ws)
    top = n_layers - 1
    ones_col = torch.ones(k, batch_size, 1, dtype=xe.dtype, device=xe.device)
    ones_row = torch.ones(k, 1, batch_size, dtype=xe.dtype, device=xe.device)
    ws_t = [w.transpose(1, 2) for w in ws]  # views: they follow the in-place updates
    zs: list[torch.Tensor] = []
    xs = xe.split(batch_size, 1)
    nqs = nq.split(batch_size, 2)
    qss = qs.split(batch_size, 2)
    for i in range(len(xs)):
        h = xs[i]
        b = h.shape[1]
        col, row = ones_col, ones_row
        if b != batch_size:  # the last, shorter batch
            col, row = ones_col[:, :b], ones_row[:, :, :b]
        acts: list[torch.Tensor] = [h]
        for j in range(top):
            h = torch.baddbmm(bs[j], h, ws[j]).clamp_min_(0.0)
            acts.append(h)
        z = torch.baddbmm(bs[top], ws[top], h.transpose(1, 2))  # K x C x b
        zs.append(z)
        dz = torch.addcmul(nqs[i], torch.softmax(z, 1), qss[i])
        # backward fused with SGD's momentum: buf = momentum * buf + grad
        gws[top].baddbmm_(dz, acts[top], beta=momentum)
        gbs[top].baddbmm_(dz, col, beta=momentum)
        if n_layers > 1:
            dh = torch.bmm(dz.transpose(1, 2), ws[top])  # K x b x d_in
            for j in range(top - 1, -1, -1):
                dzj = torch.ops.aten.threshold_backward(dh, acts[j + 1], 0.0)  # ReLU'
                gws[j].baddbmm_(acts[j].transpose(1, 2), dzj, beta=momentum)
                gbs[j].baddbmm_(row, dzj, beta=momentum)
                if j > 0:
                    dh = torch.bmm(dzj, ws_t[j])
        if weight_decay != 0.0:
            flat_g.add_(flat_p, alpha=weight_decay)
        flat_p.add_(flat_g, alpha=-lr)
    return torch.cat(zs, 2)


def mlp_train_steps(ws: list[torch.Tensor], bs: list[torch.Tensor], gws: list[torch.Tensor],
                    gbs: list[torch.Tensor], flat_p: torch.Tensor, flat_g: torch.Tensor,
                    train_x: torch.Tensor, train_y: torch.Tensor, targets: torch.Tensor,
                    target_sums: torch.Tensor, inv_size: torch.Tensor,
                    member_target: list[int], perms: torch.Tensor, start: int, stop: int,
                    batch_size: int, lr: float, momentum: float,
                    weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The SGD steps on positions [start, stop) of each member's epoch order (start a
    multiple of batch_size); -> (summed soft cross-entropy over those samples per member,
    float64; number of them whose label got the largest logit: argmax hits up to exact ties).

    train_x: N x d, train_y: N labels; targets: T x C x N distinct soft targets (classes
    first), target_sums: T x 1 x N their row sums; member_target: K indices into them;
    perms: K x N epoch orders; inv_size: 1 x 1 x N, 1 / (size of the batch that position in
    the order falls in).
    """
    k = perms.shape[0]
    idx = perms[:, start:stop]
    m = idx.shape[1]
    xe = train_x.index_select(0, idx.reshape(-1)).view(k, m, train_x.shape[1])
    qe = torch.stack([targets[member_target[i]].index_select(1, idx[i]) for i in range(k)])
    qs = torch.stack([target_sums[member_target[i]].index_select(1, idx[i])
                      for i in range(k)])
    inv = inv_size[:, :, start:stop]
    z = mlp_sgd_steps(ws, bs, gws, gbs, flat_p, flat_g, xe, qe * (-inv), qs * inv, batch_size,
                      lr, momentum, weight_decay)
    loss_sums = -(qe * torch.log_softmax(z, 1)).sum([1, 2]).double()
    y = train_y.index_select(0, idx.reshape(-1)).view(k, 1, m)
    correct = (z.gather(1, y) >= z.amax(1, keepdim=True)).sum([1, 2])
    return loss_sums, correct


_SCRIPTED = None


def steps_function(script: bool = True):
    """`mlp_train_steps`, compiled with torch.jit.script when `script` (once per process;
    the eager function if scripting is unavailable). Returns (function, is_scripted)."""
    global _SCRIPTED
    if not isinstance(script, bool):
        raise TypeError(f"script must be True or False, got {script!r}")
    if not script:
        return mlp_train_steps, False
    if _SCRIPTED is None:
        try:
            with warnings.catch_warnings():
                # deprecated, not removed: the warning would reach every notebook
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                _SCRIPTED = torch.jit.script(mlp_train_steps)
        except Exception as err:  # noqa: BLE001 - any scripting failure means: run eagerly
            warnings.warn(f"TorchScript unavailable ({type(err).__name__}: {err}); stacked "
                          "MLPs run eagerly, without parallel groups", RuntimeWarning,
                          stacklevel=2)
            _SCRIPTED = False
    if _SCRIPTED is False:
        return mlp_train_steps, False
    return _SCRIPTED, True
