"""Seeded fuzzing against torch.nn: random valid configurations agree on outputs, states, every
gradient and forward-mode tangents.

Each case draws a module configuration (mode, sizes including 1 and odd ones, layers, bias,
batch_first, bidirectional, proj_size, dtype) and an input (dense, unbatched, packed with
enforce_sorted True or False, non-contiguous, expanded), with hx given or None, or a cell
configuration. torch.nn is the oracle. ``FUSEDRNN_FUZZ_CASES=N`` runs N cases per group
instead of the quick default (e.g. 2000 for a long soak).
"""

from __future__ import annotations

import os
import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedrnn

N_CASES = int(os.environ.get("FUSEDRNN_FUZZ_CASES", "40"))
MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
TOL = {torch.float64: {"rtol": 1e-9, "atol": 1e-11}, torch.float32: {"rtol": 2e-4, "atol": 2e-5}}


def _pair(mode: str, cfg: dict):
    kw = {k: cfg[k] for k in ("num_layers", "bias", "batch_first", "bidirectional", "dtype")}
    if mode == "LSTM":
        kw["proj_size"] = cfg["proj_size"]
        cls = nn.LSTM
    elif mode == "GRU":
        cls = nn.GRU
    else:
        kw["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
        cls = nn.RNN
    torch_mod = cls(cfg["I"], cfg["H"], **kw)
    return torch_mod, fusedrnn.from_torch(torch_mod)


def _draw_module_case(rng: random.Random) -> dict:
    mode = rng.choice(MODES)
    H = rng.choice([1, 2, 3, 5, 8, 16])
    return {
        "mode": mode,
        "I": rng.choice([1, 2, 3, 7]),
        "H": H,
        "num_layers": rng.choice([1, 1, 2, 3]),
        "bias": rng.random() < 0.7,
        "batch_first": rng.random() < 0.5,
        "bidirectional": rng.random() < 0.4,
        "proj_size": rng.choice([0, 0, rng.randrange(1, H)]) if mode == "LSTM" and H > 1 else 0,
        "dtype": torch.float64 if rng.random() < 0.75 else torch.float32,
        "B": rng.choice([1, 2, 3, 5]),
        "T": rng.choice([1, 2, 4, 7]),
        "input": rng.choice(
            ["dense", "unbatched", "packed_sorted", "packed_unsorted", "noncontiguous", "expanded"]
        ),
        "hx": rng.random() < 0.5,
        "seed": rng.randrange(1 << 30),
    }


def _module_inputs(cfg: dict, mod: nn.RNNBase):
    """(input for both modules, tensors the loss differentiates w.r.t., hx or None)."""
    g = torch.Generator().manual_seed(cfg["seed"])
    dt, B, T, I = cfg["dtype"], cfg["B"], cfg["T"], cfg["I"]
    kind = cfg["input"]

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dt)

    leaves = []
    if kind == "unbatched":
        x = rnd(T, I).requires_grad_()
        leaves.append(x)
        inp = x
    elif kind.startswith("packed"):
        lengths = sorted((rng_len(g, T) for _ in range(B)), reverse=kind == "packed_sorted")
        lengths[0 if kind == "packed_sorted" else -1] = T
        x = rnd(B, T, I).requires_grad_() if cfg["batch_first"] else rnd(T, B, I).requires_grad_()
        leaves.append(x)
        inp = pack_padded_sequence(x, torch.tensor(lengths), batch_first=cfg["batch_first"],
                                   enforce_sorted=kind == "packed_sorted")  # fmt: skip
    else:
        shape = (B, T, I) if cfg["batch_first"] else (T, B, I)
        if kind == "noncontiguous":
            base = rnd(shape[1], shape[0], I + 2).requires_grad_()
            leaves.append(base)
            inp = base.transpose(0, 1)[..., 1 : I + 1]
        elif kind == "expanded":
            base = rnd(1, shape[1], I).requires_grad_()
            leaves.append(base)
            inp = base.expand(shape[0], shape[1], I)
        else:
            inp = rnd(*shape).requires_grad_()
            leaves.append(inp)
    hx = None
    if cfg["hx"]:
        D = 2 if cfg["bidirectional"] else 1
        P = cfg["proj_size"] or cfg["H"]
        lead = (cfg["num_layers"] * D,) + (() if kind == "unbatched" else (B,))
        h = rnd(*lead, P).requires_grad_()
        leaves.append(h)
        hx = h
        if cfg["mode"] == "LSTM":
            c = rnd(*lead, cfg["H"]).requires_grad_()
            leaves.append(c)
            hx = (h, c)
    return inp, leaves, hx


def rng_len(g: torch.Generator, T: int) -> int:
    return int(torch.randint(1, T + 1, (1,), generator=g))


def _flat_outputs(out):
    y, hidden = out
    y = y.data if isinstance(y, PackedSequence) else y
    return [y, *(hidden if isinstance(hidden, tuple) else (hidden,))]


def _grads(mod, out, leaves, seed):
    flat = _flat_outputs(out)
    g = torch.Generator().manual_seed(seed + 1)
    cot = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in flat]
    wrt = leaves + list(mod.parameters())
    return torch.autograd.grad(flat, wrt, cot, allow_unused=True)


def _module_cases():
    rng = random.Random(1234)
    return [_draw_module_case(rng) for _ in range(N_CASES)]


def _id(cfg):
    return (
        f"{cfg['mode']}-I{cfg['I']}H{cfg['H']}P{cfg['proj_size']}L{cfg['num_layers']}"
        f"{'-bi' if cfg['bidirectional'] else ''}{'-bf' if cfg['batch_first'] else ''}"
        f"{'' if cfg['bias'] else '-nobias'}-B{cfg['B']}T{cfg['T']}-{cfg['input']}"
        f"{'-hx' if cfg['hx'] else ''}-{str(cfg['dtype'])[6:]}"
    )


@pytest.mark.parametrize("cfg", _module_cases(), ids=_id)
def test_module_matches_torch(cfg):
    torch.manual_seed(cfg["seed"])
    ref_mod, fused = _pair(cfg["mode"], cfg)
    tol = TOL[cfg["dtype"]]
    results = []
    for mod in (ref_mod, fused):
        inp, leaves, hx = _module_inputs(cfg, mod)
        out = mod(inp, hx)
        results.append((_flat_outputs(out), _grads(mod, out, leaves, cfg["seed"])))
    (ref_out, ref_g), (f_out, f_g) = results
    for a, b in zip(f_out, ref_out, strict=True):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(f_g, ref_g, strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, **tol)


def _jvp_cases():
    rng = random.Random(99)
    cases = []
    for _ in range(max(4, N_CASES // 4)):
        cfg = _draw_module_case(rng)
        cfg["dtype"] = torch.float64
        cfg["input"] = rng.choice(["dense", "unbatched", "packed_sorted"])
        cases.append(cfg)
    return cases


@pytest.mark.parametrize("cfg", _jvp_cases(), ids=_id)
def test_module_forward_mode_matches_torch(cfg):
    """torch.func.jvp with respect to the input and every parameter at once."""
    torch.manual_seed(cfg["seed"])
    ref_mod, fused = _pair(cfg["mode"], cfg)
    results = []
    for mod in (ref_mod, fused):
        inp, leaves, hx = _module_inputs(cfg, mod)
        params = {k: v.detach() for k, v in mod.named_parameters()}
        g = torch.Generator().manual_seed(cfg["seed"] + 7)
        tparams = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
        # pack_padded_sequence has no forward-mode derivative: differentiate the packed data.
        packed = isinstance(inp, PackedSequence)
        x = inp.data.detach() if packed else leaves[0].detach()
        tx = torch.randn(x.shape, generator=g, dtype=x.dtype)

        def f(x, p, inp=inp, hx=hx, mod=mod, packed=packed):
            arg = x
            if packed:
                arg = PackedSequence(x, inp.batch_sizes, inp.sorted_indices, inp.unsorted_indices)
            h = None
            if hx is not None:
                h = tuple(t.detach() for t in hx) if isinstance(hx, tuple) else hx.detach()
            return tuple(_flat_outputs(torch.func.functional_call(mod, p, (arg, h))))

        if mod is ref_mod and packed:
            # torch.nn's packed kernels have no forward-mode derivative (they fail under
            # torch.func.jvp): the oracle is its reverse-over-reverse jvp.
            keys = list(params)

            def g_(x, *pv, f=f, keys=keys):
                return f(x, dict(zip(keys, pv)))

            out = torch.autograd.functional.jvp(g_, (x, *params.values()), (tx, *tparams.values()))
            results.append(out)
        else:
            results.append(torch.func.jvp(f, (x, params), (tx, tparams)))
    (ref_out, ref_t), (f_out, f_t) = results
    for a, b in zip(f_out + f_t, ref_out + ref_t, strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


CELLS = {"RNNCell": nn.RNNCell, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell}


def _cell_cases():
    rng = random.Random(7)
    out = []
    for _ in range(N_CASES):
        out.append(
            {
                "kind": rng.choice(list(CELLS)),
                "I": rng.choice([1, 3, 4]),
                "H": rng.choice([1, 2, 5, 33]),
                "B": rng.choice([1, 3]),
                "bias": rng.random() < 0.7,
                "relu": rng.random() < 0.3,
                "unbatched": rng.random() < 0.3,
                "hx": rng.random() < 0.5,
                "dtype": torch.float64 if rng.random() < 0.75 else torch.float32,
                "seed": rng.randrange(1 << 30),
            }
        )
    return out


def _cell_id(c):
    return (
        f"{c['kind']}-I{c['I']}H{c['H']}B{c['B']}{'' if c['bias'] else '-nobias'}"
        f"{'-relu' if c['relu'] and c['kind'] == 'RNNCell' else ''}"
        f"{'-unbatched' if c['unbatched'] else ''}{'-hx' if c['hx'] else ''}-{str(c['dtype'])[6:]}"
    )


@pytest.mark.parametrize("c", _cell_cases(), ids=_cell_id)
def test_cell_matches_torch_reverse_and_forward_mode(c):
    kw = {"bias": c["bias"], "dtype": c["dtype"]}
    if c["kind"] == "RNNCell" and c["relu"]:
        kw["nonlinearity"] = "relu"
    torch.manual_seed(c["seed"])
    ref_cell = CELLS[c["kind"]](c["I"], c["H"], **kw)
    fused = fusedrnn.from_torch(ref_cell)
    g = torch.Generator().manual_seed(c["seed"])
    lead = () if c["unbatched"] else (c["B"],)
    x = torch.randn(*lead, c["I"], generator=g, dtype=c["dtype"])
    hx = None
    if c["hx"]:
        h = torch.randn(*lead, c["H"], generator=g, dtype=c["dtype"])
        hx = (h, torch.randn_like(h)) if c["kind"] == "LSTMCell" else h
    tx = torch.randn(x.shape, generator=g, dtype=x.dtype)
    results = []
    for cell in (ref_cell, fused):
        xr = x.clone().requires_grad_()
        out = cell(xr, hx)
        outs = out if isinstance(out, tuple) else (out,)
        cot = [torch.ones_like(o) for o in outs]
        grads = torch.autograd.grad(outs, [xr, *cell.parameters()], cot)
        _, tangent = torch.func.jvp(lambda t, cell=cell: cell(t, hx), (x,), (tx,))
        results.append((outs, grads, tangent if isinstance(tangent, tuple) else (tangent,)))
    tol = TOL[c["dtype"]]
    for fa, ra in zip(results[1], results[0], strict=True):
        for a, b in zip(fa, ra, strict=True):
            torch.testing.assert_close(a, b, **tol)
