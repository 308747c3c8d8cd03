"""A table of bad and borderline inputs: fusedrnn raises where torch.nn raises (with a message
naming the argument), runs where torch.nn runs (with the same results), never crashes.

Malformed PackedSequences run in a subprocess, so that a crash fails one test instead of
killing the run. Also: in-place edits between forward and backward, and concurrent calls."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import fusedrnn


def _modules(kind: str):
    torch.manual_seed(0)
    make = {
        "lstm": lambda: nn.LSTM(3, 4, 2),
        "gru": lambda: nn.GRU(3, 4, 2),
        "rnn": lambda: nn.RNN(3, 4, 2),
        "lstm_cell": lambda: nn.LSTMCell(3, 4),
        "gru_cell": lambda: nn.GRUCell(3, 4),
        "rnn_cell": lambda: nn.RNNCell(3, 4),
    }[kind]
    ref = make()
    return ref, fusedrnn.from_torch(ref)


def _state(kind, lead, H=4):
    h = torch.randn(*lead, H)
    return (h, torch.randn(*lead, H)) if kind.startswith("lstm") else h


LAYER_CASES = {  # name -> (make input and hx, a regex the fusedrnn error must match)
    "input_1d": (lambda k: (torch.randn(3), None), "2D or 3D"),
    "input_4d": (lambda k: (torch.randn(2, 2, 2, 3), None), "2D or 3D"),
    "feature_size": (lambda k: (torch.randn(5, 2, 4), None), "input_size"),
    "int_input": (lambda k: (torch.ones(5, 2, 3, dtype=torch.long), None), "input"),
    "double_input": (lambda k: (torch.randn(5, 2, 3, dtype=torch.float64), None), "input"),
    "hx_batch": (lambda k: (torch.randn(5, 2, 3), _state(k, (2, 3))), "hidden"),
    "hx_layers": (lambda k: (torch.randn(5, 2, 3), _state(k, (1, 2))), "hidden"),
    "hx_size": (lambda k: (torch.randn(5, 2, 3), _state(k, (2, 2), 5)), "hidden"),
    "hx_rank": (lambda k: (torch.randn(5, 2, 3), _state(k, (2,))), "hx"),
    "hx_unbatched_rank": (lambda k: (torch.randn(5, 3), _state(k, (2, 1))), "hx"),
    "hx_dtype": (lambda k: (torch.randn(5, 2, 3), _as(_state(k, (2, 2)), torch.float64)), "hx|cx"),
    "hx_meta": (lambda k: (torch.randn(5, 2, 3), _as(_state(k, (2, 2)), "meta")), "device"),
    "input_meta": (lambda k: (torch.randn(5, 2, 3, device="meta"), None), "device"),
    "T0": (lambda k: (torch.randn(0, 2, 3), None), "sequence length"),
    "B0": (lambda k: (torch.randn(5, 0, 3), None), None),
    "nan_inf": (lambda k: (_nan_inf(torch.randn(5, 2, 3)), None), None),
    "unbatched_ok": (lambda k: (torch.randn(5, 3), _state(k, (2,))), None),
}

CELL_CASES = {
    "input_3d": (lambda k: (torch.randn(2, 2, 3), None), "1D or 2D"),
    "feature_size": (lambda k: (torch.randn(2, 4), None), "input_size"),
    "hx_batch": (lambda k: (torch.randn(2, 3), _state(k, (3,))), "batch size"),
    "hx_size": (lambda k: (torch.randn(2, 3), _state(k, (2,), 5)), "hidden"),
    "hx_3d": (lambda k: (torch.randn(2, 3), _state(k, (1, 2))), "hidden|hx"),
    "double_input": (lambda k: (torch.randn(2, 3, dtype=torch.float64), None), "dtype"),
    "B0": (lambda k: (torch.randn(0, 3), None), None),
    "nan_inf": (lambda k: (_nan_inf(torch.randn(2, 3)), None), None),
    "unbatched_ok": (lambda k: (torch.randn(3), _state(k, ())), None),
}


def _as(state, what):
    return tuple(t.to(what) for t in state) if isinstance(state, tuple) else state.to(what)


def _nan_inf(x):
    x = x.clone()
    x.view(-1)[0] = float("nan")
    x.view(-1)[-1] = float("inf")
    return x


def _run(mod, x, hx):
    try:
        return ("ok", mod(x, hx))
    except Exception as e:  # noqa: BLE001 - compared with torch.nn's behaviour below
        return ("raised", e)


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def _check(kind, make, word):
    ref, fused = _modules(kind)
    torch.manual_seed(1)
    x, hx = make(kind)
    r_status, r = _run(ref, x, hx)
    f_status, f = _run(fused, x, hx)
    assert f_status == r_status, f"torch.nn {r_status} ({r!r}) but fusedrnn {f_status} ({f!r})"
    if r_status == "raised":
        assert word is not None and re.search(word, str(f), re.IGNORECASE), str(f)
        return
    for a, b in zip(_flat(f), _flat(r), strict=True):
        if a.device.type != "meta":
            torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_bad_inputs(kind, case):
    make, word = LAYER_CASES[case]
    _check(kind, make, word)


@pytest.mark.parametrize("kind", ["lstm_cell", "gru_cell", "rnn_cell"])
@pytest.mark.parametrize("case", list(CELL_CASES))
def test_cell_bad_inputs(kind, case):
    make, word = CELL_CASES[case]
    _check(kind, make, word)


PACKED_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from torch import nn
    from torch.nn.utils.rnn import PackedSequence
    import fusedrnn
    kind, case = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    ref = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](3, 4)
    fused = fusedrnn.from_torch(ref)
    data = torch.randn(6, 3)
    bs = {"increasing": [1, 2, 3], "sum_too_big": [3, 2, 2], "zero": [3, 0, 3],
          "negative": [4, -1, 3], "float": None, "cuda_like": None}[case]
    if case == "float":
        bs_t = torch.tensor([3.0, 2.0, 1.0])
    elif case == "cuda_like":
        bs_t = torch.tensor([[3, 2, 1]])
    else:
        bs_t = torch.tensor(bs)
    out = {}
    for name, m in (("torch", ref), ("fused", fused)):
        try:
            m(PackedSequence(data, bs_t))
            out[name] = "ok"
        except Exception as e:
            out[name] = "raised: " + str(e)[:300]
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize(
    "case", ["increasing", "sum_too_big", "zero", "negative", "float", "cuda_like"]
)
def test_malformed_packed_sequences_in_a_subprocess(kind, case):
    proc = subprocess.run([sys.executable, "-c", PACKED_SCRIPT, kind, case],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, f"crashed ({proc.returncode}): {proc.stderr[-2000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["fused"].startswith("raised"), out
    assert "batch_sizes" in out["fused"] or "batch" in out["fused"], out


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("what", ["weight", "input"])
def test_in_place_edit_between_forward_and_backward_raises_like_torch(kind, what):
    results = []
    for mod in _modules(kind):
        x = torch.randn(5, 2, 3, requires_grad=True)
        out = mod(x * 1.0 if what == "weight" else x)[0]
        with torch.no_grad():
            (mod.weight_hh_l0 if what == "weight" else x).add_(1.0)
        try:
            out.sum().backward()
            results.append("ok")
        except RuntimeError as e:
            assert "modified by an inplace operation" in str(e)
            results.append("raised")
    assert results[1] == results[0], results


@pytest.mark.parametrize("kind", ["lstm", "gru_cell"])
def test_concurrent_calls_from_threads_agree_with_serial(kind):
    _, fused = _modules(kind)
    xs = [torch.randn(6, 2, 3) if kind == "lstm" else torch.randn(2, 3) for _ in range(8)]

    def step(x):
        x = x.clone().requires_grad_()
        out = fused(x)
        y = out[0] if isinstance(out, tuple) else out
        (g,) = torch.autograd.grad(y.pow(2).sum(), x)
        return y.detach(), g

    serial = [step(x) for x in xs]
    results = [None] * len(xs)

    def work(i):
        for _ in range(5):
            results[i] = step(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (a, ga), (b, gb) in zip(results, serial):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)


def test_packed_sequence_of_other_dtype_raises_naming_input():
    _, fused = _modules("lstm")
    data = torch.randn(6, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="input"):  # torch.nn raises the same
        fused(PackedSequence(data, torch.tensor([3, 2, 1])))
