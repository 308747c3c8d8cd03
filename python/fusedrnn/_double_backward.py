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
        where = [
            (i, k)
            for i, (n, v) in enumerate(zip(names, args))
            if n in diff and v is not None
            for k in (range(len(v)) if isinstance(v, list) else (None,))
        ]
        cots = _flatten(gg)[0]
        if not where or all(c is None for c in cots):
            return grads_out
        kept = []  # the outputs that get a cotangent (and exist)

        def f(*leaves):
            a = {n: (list(v) if isinstance(v, list) else v) for n, v in zip(names, args)}
            for (i, k), t in zip(where, leaves):
                if k is None:
                    a[names[i]] = t
                else:
                    a[names[i]][k] = t
            outs = _flatten(reference_backward(info, a))[0]
            kept[:] = [
                j for j, (o, c) in enumerate(zip(outs, cots)) if o is not None and c is not None
            ]
            return tuple(outs[j] for j in kept)

        # torch.func.vjp, not autograd.grad on detached leaves: requires_grad_() is refused
        # inside torch.func transforms (grad of grad, jacrev of grad)
        leaves = [args[i] if k is None else args[i][k] for i, k in where]
        _, vjp_fn = torch.func.vjp(f, *leaves)
        res = vjp_fn(tuple(cots[j] for j in kept))
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
