"""Parity grid: fusedrnn.RNN/LSTM/GRU and the cells against torch.nn.

Every case builds the torch module and the fusedrnn module from the same seed (so the
initialisation is checked too), runs both on the same input, and compares outputs, final states
and the gradients of a random linear loss with respect to the input, the initial states and
every parameter. The grid is complete in float64 (tight tolerances) and sampled in float32.
Sizes are small and odd (I=3, H in {1, 5}, B in {1, 3}, T in {1, 4}) to keep it cheap.
"""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedrnn

MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
INPUTS = ("dense", "unbatched", "packed_sorted", "packed_unsorted")
TOL = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}
I_SIZE = 3


def _grid():
    cases = []
    for mode, layers, bidir, bf, bias in itertools.product(
        MODES, (1, 2, 3), (False, True), (False, True), (True, False)
    ):
        for proj in (0, 2) if mode == "LSTM" else (0,):
            for inp, hx in itertools.product(INPUTS, (False, True)):
                i = len(cases)
                H = 5 if (proj or i % 2 == 0) else 1
                B = 3 if i % 3 else 1
                T = 4 if i % 4 else 1
                cases.append((mode, layers, bidir, bf, bias, proj, inp, hx, H, B, T))
    return cases


CASES = _grid()


def _case_id(c):
    mode, layers, bidir, bf, bias, proj, inp, hx, H, B, T = c
    return (
        f"{mode}-L{layers}-{'bi' if bidir else 'uni'}-{'bf' if bf else 'tf'}-"
        f"{'bias' if bias else 'nobias'}-P{proj}-{inp}-{'hx' if hx else 'nohx'}-H{H}B{B}T{T}"
    )


def _make(mode, layers, bidir, bf, bias, proj, H, dtype, seed):
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=bf, bias=bias, dtype=dtype)
    if mode == "LSTM":
        pair = (nn.LSTM, fusedrnn.LSTM)
        kw["proj_size"] = proj
    elif mode == "GRU":
        pair = (nn.GRU, fusedrnn.GRU)
    else:
        pair = (nn.RNN, fusedrnn.RNN)
        kw["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    mods = []
    for cls in pair:
        torch.manual_seed(seed)
        mods.append(cls(I_SIZE, H, **kw))
    return mods


def _flat(result, packed, lstm):
    out, hid = result
    out = out.data if packed else out
    return [out, *(hid if lstm else (hid,))]


def _assert_close(a, b, dtype, what):
    torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def _check_case(case, dtype):
    mode, layers, bidir, bf, bias, proj, inp, use_hx, H, B, T = case
    lstm = mode == "LSTM"
    seed = zlib.crc32(_case_id(case).encode()) % 10_000
    tmod, fmod = _make(mode, layers, bidir, bf, bias, proj, H, dtype, seed)
    # Same constructor, same RNG draws: identical parameters, names and order.
    assert list(tmod.state_dict()) == list(fmod.state_dict())
    for (n, a), b in zip(tmod.state_dict().items(), fmod.state_dict().values()):
        assert torch.equal(a, b), n
    assert repr(tmod) == repr(fmod)

    g = torch.Generator().manual_seed(seed)
    D = 2 if bidir else 1
    P = proj or H
    unbatched = inp == "unbatched"
    packed = inp.startswith("packed")
    shape = (T, I_SIZE) if unbatched else ((B, T, I_SIZE) if bf else (T, B, I_SIZE))
    x = torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)
    hx = None
    leaves = [x]
    if use_hx:
        lead = (layers * D,) if unbatched else (layers * D, B)
        h0 = torch.randn(*lead, P, generator=g, dtype=dtype, requires_grad=True)
        leaves.append(h0)
        hx = h0
        if lstm:
            c0 = torch.randn(*lead, H, generator=g, dtype=dtype, requires_grad=True)
            leaves.append(c0)
            hx = (h0, c0)

    def arg():
        if not packed:
            return x
        if inp == "packed_sorted":
            lengths = sorted([T, max(T - 1, 1), 1][:B], reverse=True)
        else:
            lengths = [max(T - 2, 1), T, 1][:B] if B > 1 else [T]
        return pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=bf, enforce_sorted=inp == "packed_sorted"
        )

    t_res = tmod(arg(), hx)
    f_res = fmod(arg(), hx)
    if packed:
        assert isinstance(f_res[0], PackedSequence)
        assert torch.equal(f_res[0].batch_sizes, t_res[0].batch_sizes)
        for a, b in (
            (f_res[0].sorted_indices, t_res[0].sorted_indices),
            (f_res[0].unsorted_indices, t_res[0].unsorted_indices),
        ):
            assert (a is None and b is None) or torch.equal(a, b)
    t_flat = _flat(t_res, packed, lstm)
    f_flat = _flat(f_res, packed, lstm)
    assert len(t_flat) == len(f_flat)
    for k, (a, b) in enumerate(zip(f_flat, t_flat)):
        assert a.shape == b.shape, (k, a.shape, b.shape)
        _assert_close(a, b, dtype, ["output", "h_n", "c_n"][k])

    weights = [torch.randn(t.shape, generator=g, dtype=dtype) for t in t_flat]
    t_params = list(tmod.parameters())
    f_params = list(fmod.parameters())
    t_grads = torch.autograd.grad(
        sum((t * w).sum() for t, w in zip(t_flat, weights)), leaves + t_params
    )
    f_grads = torch.autograd.grad(
        sum((t * w).sum() for t, w in zip(f_flat, weights)), leaves + f_params
    )
    names = ["input", "h0", "c0"][: len(leaves)] + [n for n, _ in tmod.named_parameters()]
    for name, a, b in zip(names, f_grads, t_grads):
        _assert_close(a, b, dtype, f"grad {name}")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_parity_float64(case):
    _check_case(case, torch.float64)


@pytest.mark.parametrize("case", CASES[::7], ids=_case_id)
def test_parity_float32(case):
    _check_case(case, torch.float32)


# ---- cells -----------------------------------------------------------------------------------
CELLS = {
    "rnn_tanh": (nn.RNNCell, fusedrnn.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNNCell, fusedrnn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTMCell, fusedrnn.LSTMCell, {}),
    "gru": (nn.GRUCell, fusedrnn.GRUCell, {}),
}


@pytest.mark.parametrize("dtype", (torch.float64, torch.float32), ids=str)
@pytest.mark.parametrize("unbatched", (False, True), ids=("batched", "unbatched"))
@pytest.mark.parametrize("use_hx", (False, True), ids=("nohx", "hx"))
@pytest.mark.parametrize("bias", (True, False), ids=("bias", "nobias"))
@pytest.mark.parametrize("H", (1, 5))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_cell_parity(cell, H, bias, use_hx, unbatched, dtype):
    tcls, fcls, kw = CELLS[cell]
    torch.manual_seed(3)
    tmod = tcls(I_SIZE, H, bias=bias, dtype=dtype, **kw)
    torch.manual_seed(3)
    fmod = fcls(I_SIZE, H, bias=bias, dtype=dtype, **kw)
    assert repr(tmod) == repr(fmod)
    for (n, a), b in zip(tmod.state_dict().items(), fmod.state_dict().values()):
        assert torch.equal(a, b), n
    lstm = cell == "lstm"
    lead = () if unbatched else (3,)
    x = torch.randn(*lead, I_SIZE, dtype=dtype, requires_grad=True)
    leaves = [x]
    hx = None
    if use_hx:
        hx = torch.randn(*lead, H, dtype=dtype, requires_grad=True)
        leaves.append(hx)
        if lstm:
            cx = torch.randn(*lead, H, dtype=dtype, requires_grad=True)
            leaves.append(cx)
            hx = (hx, cx)
    t_out = tmod(x, hx)
    f_out = fmod(x, hx)
    t_out = list(t_out) if lstm else [t_out]
    f_out = list(f_out) if lstm else [f_out]
    for a, b in zip(f_out, t_out):
        assert a.shape == b.shape
        _assert_close(a, b, dtype, "output")
    ws = [torch.randn_like(t) for t in t_out]
    t_g = torch.autograd.grad(
        sum((t * w).sum() for t, w in zip(t_out, ws)), leaves + list(tmod.parameters())
    )
    f_g = torch.autograd.grad(
        sum((t * w).sum() for t, w in zip(f_out, ws)), leaves + list(fmod.parameters())
    )
    for a, b in zip(f_g, t_g):
        _assert_close(a, b, dtype, "grad")


@pytest.mark.parametrize("bias", (True, False), ids=("bias", "nobias"))
@pytest.mark.parametrize("B", (1, 3))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_cell_parameter_gradients_only(cell, B, bias):
    """The online-training case (bench ``stream``): input and state need no gradient, so the
    cell backward skips dx and dh (hx_grad / input_grad false); B = 1 reads the bias
    gradients off dG's single row."""
    tcls, fcls, kw = CELLS[cell]
    tmod = tcls(I_SIZE, 5, bias=bias, dtype=torch.float64, **kw)
    fmod = fcls(I_SIZE, 5, bias=bias, dtype=torch.float64, **kw)
    fmod.load_state_dict(tmod.state_dict())
    x, h = torch.randn(B, I_SIZE, dtype=torch.float64), torch.randn(B, 5, dtype=torch.float64)
    hx = (h, torch.randn(B, 5, dtype=torch.float64)) if cell == "lstm" else h
    grads = []
    for m in (tmod, fmod):
        out = m(x, hx)
        loss = sum((o * (k + 1)).sum() for k, o in enumerate(out)) if cell == "lstm" else out.sum()
        grads.append(torch.autograd.grad(loss, list(m.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wrt", ["params", "weight_hh", "backward_inputs", "x"])
@pytest.mark.parametrize("leaf", ["x", "h", "both"])
@pytest.mark.parametrize("name", ["rnn_tanh", "lstm", "gru", "RNN", "LSTM", "GRU"])
def test_gradients_of_a_subset_of_what_needed_them(name, leaf, wrt):
    """autograd.grad / backward(inputs=...) asking for some of the gradients the forward
    recorded: the weights' alone while x or h needed one too (the cell node saved a weight
    for dx / dh then, and must find it where it put it), or x's alone. Cells, and the T = 1
    one-layer call that runs the cell op."""
    torch.manual_seed(3)
    cell = name.islower()
    tcls = CELLS[name][0] if cell else getattr(nn, name)
    tmod = tcls(I_SIZE, 5, dtype=torch.float64)
    fmod = fusedrnn.from_torch(tmod)
    shape_x, shape_h = ((2, I_SIZE), (2, 5)) if cell else ((1, 2, I_SIZE), (1, 2, 5))
    x0, h0, c0 = (torch.randn(s, dtype=torch.float64) for s in (shape_x, shape_h, shape_h))
    grads = []
    for m in (tmod, fmod):
        x = x0.clone().requires_grad_(leaf in ("x", "both"))
        h = h0.clone().requires_grad_(leaf in ("h", "both"))
        out = m(x, (h, c0) if name.lower() == "lstm" else h)
        loss = (out[0] if isinstance(out, tuple) else out).pow(2).sum()
        params = dict(m.named_parameters())
        if wrt == "backward_inputs":
            loss.backward(inputs=list(params.values()))
            grads.append([p.grad for p in params.values()])
        elif wrt == "x":
            if not x.requires_grad:
                pytest.skip("x needs no gradient here")
            grads.append(torch.autograd.grad(loss, [x]))
        else:
            wanted = params.values() if wrt == "params" else [
                p for n, p in params.items() if n.startswith("weight_hh")
            ]  # fmt: skip
            grads.append(torch.autograd.grad(loss, list(wanted)))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_cell_noncontiguous_input_and_sequence_loop():
    """``cell(x[:, t], h)`` over a batch_first sequence (non-contiguous slices)."""
    torch.manual_seed(1)
    tmod = nn.GRUCell(I_SIZE, 5, dtype=torch.float64)
    fmod = fusedrnn.from_torch(tmod)
    x = torch.randn(3, 4, I_SIZE, dtype=torch.float64)
    ht = hf = None
    for t in range(4):
        ht = tmod(x[:, t], ht)
        hf = fmod(x[:, t], hf)
    _assert_close(hf, ht, torch.float64, "h")
