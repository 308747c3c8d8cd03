"""Autograd for the backward ops, so that gradients of gradients (gradgradcheck, gradient
penalties, Hessian-vector products) are exact.

A backward op B(grads, primals) is the vector-Jacobian product of its forward op f. Its own
derivative is taken through the readable reference (``_autograd.reference_backward``: the
VJP of reference_torch's f, recomputed with autograd) and differentiated against the
incoming cotangents; its forward-mode derivative (e.g. ``torch.func.hessian`` = jacfwd of
jacrev) is the jvp of the same reference. The saved forward results (output, workspace,
saved) that B also reads are constants there: the recomputation already carries their
dependence on the primals. Slow (a Python time loop), but it only runs when a graph of the
gradient is asked for.
"""

from __future__ import annotations

import torch

from ._autograd import OpInfo, _flatten, _nest, register
from ._reference_ops import reference_backward


def _register(fwd_name: str) -> None:
    info = OpInfo(fwd_name)
    names = info.bargs
    # Differentiable arguments of B: the incoming gradients and the primals of f.
    diff = set(info.grad_of) | set(info.prims)

    def setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        flat, lens = _flatten(inputs)
        ctx.save_for_backward(*[a if isinstance(a, torch.Tensor) else None for a in flat])
        ctx.plain = [None if isinstance(a, torch.Tensor) else a for a in flat]
        ctx.lens = lens

    def backward(ctx, *gg):
        flat = [t if t is not None else p for t, p in zip(ctx.saved_tensors, ctx.plain)]
        args = _nest(flat, ctx.lens)
        grads_out = [[None] * len(a) if isinstance(a, list) else None for a in args]
        leaves, where = [], []
        with torch.enable_grad():
            a = {}
            for i, (n, v) in enumerate(zip(names, args)):
                if n in diff and v is not None:
                    if isinstance(v, list):
                        v = [t.detach().requires_grad_() for t in v]
                        leaves += v
                        where += [(i, k) for k in range(len(v))]
                    else:
                        v = v.detach().requires_grad_()
                        leaves.append(v)
                        where.append((i, None))
                a[n] = v
            outs = _flatten(reference_backward(info, a))[0]
            cots = _flatten(gg)[0]
            pairs = [(o, c) for o, c in zip(outs, cots) if c is not None and o.requires_grad]
            if not pairs or not leaves:
                return grads_out
            res = torch.autograd.grad(
                [o for o, _ in pairs], leaves, [c for _, c in pairs], allow_unused=True
            )
        for (i, k), g in zip(where, res):
            if k is None:
                grads_out[i] = g
            else:
                grads_out[i][k] = g
        return grads_out

    register(f"{fwd_name}_backward", setup, backward, lambda a: reference_backward(info, a))


def register_all(forward_names) -> None:
    for name in forward_names:
        _register(name)
