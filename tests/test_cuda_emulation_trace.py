"""Device calls per time step of the CUDA backend, counted on its host emulation.

torch.ops.fusedrnn_emu.trace records every emulated device call of the shared driver in
order ('G' cuBLAS GEMM, 'K' kernel launch or memset, 'C' device copy, 'A' allocation; see
cuda/emu/emu_launch.h). The time loop of a layer call must be exactly its per-step pattern
repeated T times, with no allocation inside it: one recurrent GEMM and one fused kernel per
step (plus the input GEMM of a narrow input, and the projection GEMM and copy of a projected
LSTM). The same driver runs on the GPU, so these are the GPU's launches per step.
"""

from __future__ import annotations

import re

import pytest
import torch

import fusedrnn  # noqa: F401  (loads the extension)

emu = getattr(torch.ops, "fusedrnn_emu", None)


def _has_trace() -> bool:
    try:
        emu.trace  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_trace(), reason="extension built without the emulation")

GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}


def _traced(fn):
    emu.trace(True)
    try:
        out = fn()
    finally:
        events = emu.trace(False)
    return out, events


def _args(family, T, B, I, H, proj, dtype):
    G, P = GATES[family], proj or H
    g = torch.Generator().manual_seed(0)

    def rnd(*s):
        return (torch.randn(*s, generator=g) * 0.3).to(dtype)

    w = [rnd(G * H, I), rnd(G * H, P), rnd(G * H), rnd(G * H)]
    return rnd(T, B, I), w, rnd(P, H) if proj else None


def _forward(family, x, w, w_hr):
    if family == "lstm":
        return emu.lstm_layer(x, None, None, None, *w, w_hr, False)
    return getattr(emu, f"{family}_layer")(x, None, None, *w, False)


def _backward(family, x, w, w_hr, fwd):
    g = torch.randn_like(fwd[0])
    if family == "lstm":
        out, _, _, ws = fwd
        return emu.lstm_layer_backward(g, None, None, x, None, None, None, *w, w_hr, False, out, ws)
    if family == "gru":
        out, _, ws = fwd
        return emu.gru_layer_backward(g, None, x, None, None, *w, False, out, ws)
    return emu.rnn_tanh_layer_backward(g, None, x, None, None, *w, False, fwd[0])


def _loop(events: str, step: str, T: int) -> None:
    """events = setup, then `step` exactly T times, then teardown; no allocation in the loop."""
    m = re.fullmatch(rf"([^G]*?)((?:{step}){{{T}}})([^G]*)", events)
    assert m, f"expected {T} steps of {step!r} between setup and teardown, got {events!r}"
    assert "A" not in m.group(2)
    # Setup and teardown: allocations and one-off copies/launches, never per step.
    assert len(m.group(1)) + len(m.group(3)) < 40, events


T = 23


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    "family,I,proj,fwd_step,bwd_step",
    [
        ("lstm", 32, 0, "GK", "KG"),  # recurrent GEMM + fused kernel; kernel + dh GEMM
        ("gru", 32, 0, "GK", "KG"),
        ("rnn_tanh", 32, 0, "GK", "KG"),
        ("lstm", 2, 0, "GGK", "KG"),  # narrow input: the step's input GEMM too
        ("lstm", 32, 5, "GKGC", "KGKG"),  # projection GEMM + copy of h; dr, dh_raw GEMM
    ],
    ids=["lstm", "gru", "rnn", "lstm-narrow", "lstm-proj"],
)
def test_launches_and_gemms_per_step(family, I, proj, fwd_step, bwd_step, dtype):
    x, w, w_hr = _args(family, T, 3, I, 8, proj, dtype)
    fwd, events = _traced(lambda: _forward(family, x, w, w_hr))
    _loop(events, fwd_step, T)
    _, events = _traced(lambda: _backward(family, x, w, w_hr, fwd))
    _loop(events, bwd_step, T)


def test_zero_width_input_makes_no_gemm_with_k_zero():
    """I = 0: the step's input GEMM is a zero-fill ('K'), never a cuBLAS call with lda = 0
    (the emulation rejects arguments cuBLAS would reject, see cuda/kernels/cublas_args.h)."""
    x, w, _ = _args("lstm", T, 3, 0, 8, 0, torch.float32)
    fwd, events = _traced(lambda: _forward("lstm", x, w, None))
    _loop(events, "KGK", T)
    cpu = torch.ops.fusedrnn.lstm_layer(x, None, None, None, *w, None, False)
    for a, b in zip(fwd[:3], cpu[:3], strict=True):
        torch.testing.assert_close(a, b)


def test_trace_records_nothing_when_off():
    x, w, _ = _args("gru", 4, 2, 3, 5, 0, torch.float32)
    assert emu.trace(False) == ""
    _forward("gru", x, w, None)
    emu.trace(True)
    assert emu.trace(False) == ""
