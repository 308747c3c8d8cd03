"""Autograd for the backward ops, so that gradients of gradients (gradgradcheck, gradient
penalties, Hessian-vector products) are exact.

A backward op B(grads, primals) is the vector-Jacobian product of its forward op f. Its own
derivative is taken through the readable reference of f (reference_torch): recompute f with
autograd, form the VJP with create_graph=True, and differentiate that against the incoming
cotangents. The saved forward outputs (output, workspace) that B also reads get None: the
recomputation already carries their dependence on the primals. Slow (a Python time loop), but
it only runs when a graph of the gradient is asked for.
"""

from __future__ import annotations

import torch

from . import reference_torch as ref


def _spec(grads, prims, run):
    return {"grads": grads, "prims": prims, "run": run}


def _rnn_layer_run(nl):
    def run(a):
        return ref.rnn_layer(a["input"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                             nonlinearity=nl, h0=a["h0"], batch_sizes=a["batch_sizes"],
                             reverse=a["reverse"])  # fmt: skip

    return run


def _lstm_layer_run(a):
    return ref.lstm_layer(a["input"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], w_hr=a["w_hr"],
                          h0=a["h0"], c0=a["c0"], batch_sizes=a["batch_sizes"],
                          reverse=a["reverse"])  # fmt: skip


def _gru_layer_run(a):
    return ref.gru_layer(a["input"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], h0=a["h0"],
                         batch_sizes=a["batch_sizes"], reverse=a["reverse"])  # fmt: skip


def _rnn_cell_run(nl):
    def run(a):
        return (ref.rnn_step(a["input"], a["hx"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], nl),)

    return run


def _lstm_cell_run(a):
    return ref.lstm_step(a["input"], a["hx"], a["cx"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])


def _gru_cell_run(a):
    return (ref.gru_step(a["input"], a["hx"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]),)


_RNN_LAYER_ARGS = ["grad_output", "grad_hn", "input", "batch_sizes", "h0", "w_ih", "w_hh",
                   "b_ih", "b_hh", "reverse", "output", "input_grad"]  # fmt: skip
_RNN_PRIMS = ["input", "h0", "w_ih", "w_hh", "b_ih", "b_hh"]
_CELL_PRIMS = ["input", "hx", "w_ih", "w_hh", "b_ih", "b_hh"]

SPECS = {}
for _nl in ("tanh", "relu"):
    SPECS[f"rnn_{_nl}_layer_backward"] = (
        _RNN_LAYER_ARGS, _spec(["grad_output", "grad_hn"], _RNN_PRIMS, _rnn_layer_run(_nl))
    )  # fmt: skip
    SPECS[f"rnn_{_nl}_cell_backward"] = (
        ["grad_hy", "input", "hx", "w_ih", "w_hh", "b_ih", "b_hh", "hy"],
        _spec(["grad_hy"], _CELL_PRIMS, _rnn_cell_run(_nl)),
    )
SPECS["lstm_layer_backward"] = (
    ["grad_output", "grad_hn", "grad_cn", "input", "batch_sizes", "h0", "c0", "w_ih", "w_hh",
     "b_ih", "b_hh", "w_hr", "reverse", "output", "workspace", "input_grad"],
    _spec(["grad_output", "grad_hn", "grad_cn"],
          ["input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"], _lstm_layer_run),
)  # fmt: skip
SPECS["lstm_cell_backward"] = (
    ["grad_hy", "grad_cy", "input", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh", "workspace"],
    _spec(["grad_hy", "grad_cy"], ["input", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh"],
          _lstm_cell_run),
)  # fmt: skip
SPECS["gru_layer_backward"] = (
    ["grad_output", "grad_hn", "input", "batch_sizes", "h0", "w_ih", "w_hh", "b_ih", "b_hh",
     "reverse", "output", "workspace", "input_grad"],
    _spec(["grad_output", "grad_hn"], _RNN_PRIMS, _gru_layer_run),
)  # fmt: skip
SPECS["gru_cell_backward"] = (
    ["grad_hy", "input", "hx", "w_ih", "w_hh", "b_ih", "b_hh", "workspace"],
    _spec(["grad_hy"], _CELL_PRIMS, _gru_cell_run),
)


def _register(name: str, names: list[str], spec: dict) -> None:
    def setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        tensors = [a if isinstance(a, torch.Tensor) else None for a in inputs]
        ctx.save_for_backward(*tensors)
        ctx.plain = [None if isinstance(a, torch.Tensor) else a for a in inputs]

    def backward(ctx, *gg):
        args = {
            n: (t if t is not None else p)
            for n, t, p in zip(names, ctx.saved_tensors, ctx.plain, strict=True)
        }
        prims = [n for n in spec["prims"] if args[n] is not None]
        grads = [n for n in spec["grads"] if args[n] is not None]
        cot = dict(zip(spec["prims"], gg, strict=True))  # B's outputs follow its primals
        live = [n for n in prims if cot[n] is not None and cot[n].numel()]
        result = dict.fromkeys(names)
        if not live or not grads:
            return tuple(result[n] for n in names)
        with torch.enable_grad():
            a = dict(args)
            for n in prims + grads:
                a[n] = args[n].detach().requires_grad_()
            outs = spec["run"](a)
            pairs = [(o, a[g]) for o, g in zip(outs, spec["grads"], strict=False) if g in grads]
            first = torch.autograd.grad(
                [o for o, _ in pairs], [a[n] for n in prims], [g for _, g in pairs],
                create_graph=True, allow_unused=True,
            )  # fmt: skip
            first = dict(zip(prims, first, strict=True))
            terms = [(first[n], cot[n]) for n in live if first[n] is not None]
            if not terms:
                return tuple(result[n] for n in names)
            wrt = prims + grads
            second = torch.autograd.grad(
                [f for f, _ in terms], [a[n] for n in wrt], [c for _, c in terms],
                allow_unused=True,
            )  # fmt: skip
        for n, g in zip(wrt, second, strict=True):
            result[n] = g
        return tuple(result[n] for n in names)

    torch.library.register_autograd(f"fusedrnn::{name}", backward, setup_context=setup)


def register_all() -> None:
    for name, (names, spec) in SPECS.items():
        _register(name, names, spec)
