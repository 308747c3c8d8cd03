"""The readable reference of every fused op, called by argument name (schema names): the
forward ops through ``reference_torch`` (the stack ops by stacking reference layers with the
op's own dropout masks), the backward ops as the VJP of that reference. Autograd uses them
for forward-mode AD and double backward (``_autograd``, ``_double_backward``)."""

from __future__ import annotations

import torch

from . import reference_torch as ref


def reference_forward(name: str, a: dict) -> tuple:
    """The forward op ``name``'s differentiable outputs, computed by reference_torch from
    its arguments ``a`` (schema names)."""
    fam, _, kind = name.rpartition("_")
    if kind == "stack":
        return reference_stack(fam, a)
    nl = fam.split("_")[1] if fam.startswith("rnn_") else None
    w = (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    if kind == "layer":
        kw = {"h0": a["h0"], "batch_sizes": a["batch_sizes"], "reverse": a["reverse"]}
        if fam == "lstm":
            return tuple(ref.lstm_layer(a["input"], *w, w_hr=a["w_hr"], c0=a["c0"], **kw))
        if fam == "gru":
            return tuple(ref.gru_layer(a["input"], *w, **kw))
        return tuple(ref.rnn_layer(a["input"], *w, nonlinearity=nl, **kw))
    if fam == "lstm":
        return tuple(ref.lstm_step(a["input"], a["hx"], a["cx"], *w))
    if fam == "gru":
        return (ref.gru_step(a["input"], a["hx"], *w),)
    return (ref.rnn_step(a["input"], a["hx"], *w, nl),)


def reference_stack(fam: str, a: dict) -> tuple:
    """The stack op ``fam``_stack by reference layers: (output, h_n, c_n). Dropout masks are
    read from ``a["saved"]`` (the op's own draw; layout in stack_driver.h)."""
    L, D = a["num_layers"], 2 if a["bidirectional"] else 1
    weights, hx, cx = a["weights"], a["hx"], a["cx"]
    per = len(weights) // (L * D)
    bias = a["has_biases"]
    proj = fam == "lstm" and per == (4 if bias else 2) + 1
    saved = a.get("saved")
    masks = [None] * L  # masks[l]: applied to the input of layer l
    for layer in range(1, L):
        m = saved[(layer - 1) * (2 * D + 2) + 2 * D + 1] if saved is not None else None
        masks[layer] = m if m is not None and m.numel() else None
    if a.get("train") and a.get("dropout", 0) > 0 and L > 1 and masks[1] is None:
        raise RuntimeError("reference_stack: dropout is on but no masks were given (saved)")
    x, hs, cs = a["input"], [], []
    for layer in range(L):
        outs = []
        for d in range(D):
            idx = layer * D + d
            w = weights[idx * per : (idx + 1) * per]
            if fam.startswith("ln_"):
                h0 = hx[idx] if hx is not None else None
                kw = {"h0": h0, "batch_sizes": a["batch_sizes"], "reverse": d == 1}
                lw = ref.ln_layer_weights(fam, w, bias)
                if fam == "ln_lstm":
                    res = ref.ln_lstm_layer(x, **lw, c0=cx[idx] if cx is not None else None, **kw)
                else:
                    res = ref.ln_gru_layer(x, **lw, **kw)
                outs.append(res[0])
                hs.append(res[1])
                if fam == "ln_lstm":
                    cs.append(res[2])
                continue
            la = {
                "input": x, "batch_sizes": a["batch_sizes"], "reverse": d == 1,
                "w_ih": w[0], "w_hh": w[1], "b_ih": w[2] if bias else None,
                "b_hh": w[3] if bias else None, "w_hr": w[-1] if proj else None,
                "h0": hx[idx] if hx is not None else None,
                "c0": cx[idx] if cx is not None else None,
            }  # fmt: skip
            res = reference_forward(f"{fam}_layer", la)
            outs.append(res[0])
            hs.append(res[1])
            if fam == "lstm":
                cs.append(res[2])
        x = torch.cat(outs, -1) if D > 1 else outs[0]
        if layer + 1 < L and masks[layer + 1] is not None:
            x = x * masks[layer + 1]
    c_n = torch.stack(cs, 0) if cs else x.new_empty((0,))
    return x, torch.stack(hs, 0), c_n


def reference_backward(info, a: dict) -> tuple:
    """The backward op's results computed from the reference forward: the VJP of
    ``reference_forward`` at ``a``'s inputs against ``a``'s ``grad_*`` cotangents, as the op
    returns them (absent inputs and skipped gradients as empty or zero tensors). ``info``:
    the op's ``_autograd.OpInfo``."""
    prims = [n for n in info.prims if a[n] is not None]

    def f(*p):
        b = dict(a)
        b.update(zip(prims, p))
        return reference_forward(info.name, b)

    outs, vjp_fn = torch.func.vjp(f, *[a[n] for n in prims])
    diff_rets = [info.rets[i] for i in info.diff_outs]
    by_out = {info.rets[i]: g for g, i in info.grad_of.items()}
    cot = tuple(
        a[by_out[r]] if a.get(by_out[r]) is not None else torch.zeros_like(o)
        for r, o in zip(diff_rets, outs)
    )
    grads = dict(zip(prims, vjp_fn(cot)))
    empty = a["input"].new_empty((0,))
    result = []
    for r in info.brets:
        n = r[5:]
        g = grads.get(n)
        if g is None:
            g = empty
        elif not a.get(f"{n}_grad", True):  # input_grad, hx_grad
            g = empty
        result.append(g)
    return tuple(result)
