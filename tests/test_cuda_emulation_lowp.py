"""The CUDA kernels in float16 and bfloat16, on their host emulation (torch.ops.fusedrnn_emu).

Long sequences: a T = 1000 LSTM/GRU layer, forward and backward, against float64. The bound is
a multiple of torch.nn's own error in that dtype on the CPU (same rounded weights and inputs,
same float64 reference): the kernels keep the cell state c, its gradient dc, the GRU's
direct-path dh and the summed bias in float (cpp/include/fusedrnn/step_args.h), so they must
not drift further than torch.nn does. Short layers in every configuration (packed, reverse,
projected, no bias) against the float32 CPU op on the same rounded values.
"""

from __future__ import annotations

import pytest
import torch
from test_cuda_emulation import (
    LAYER_CONFIGS,
    PROJ_CONFIGS,
    _emu_available,
    _layer_args,
    _layer_backward,
    _layer_forward,
)
from torch import nn

import fusedrnn  # noqa: F401  (loads the extension)

pytestmark = pytest.mark.skipif(not _emu_available(), reason="extension built without emulation")

emu = torch.ops.fusedrnn_emu if _emu_available() else None
LOW = [torch.float16, torch.bfloat16]
LOW_IDS = ["f16", "bf16"]
# Our error over torch.nn's (both against float64), at most; measured up to ~1.3 (see report).
RATIO = 2.0


def _grads_nn(m, x, h0, c0, g, family):
    x = x.clone().requires_grad_()
    h = h0[None].clone().requires_grad_()
    c = c0[None].clone().requires_grad_()
    out, hn = m(x, (h, c) if family == "lstm" else h)
    hn = hn[0] if family == "lstm" else hn
    grads = torch.autograd.grad(out, [x, h, *m.parameters()], g)
    return [out, hn[0], grads[0], grads[1][0], *grads[2:]]


def _grads_emu(m, x, h0, c0, g, family):
    w = [p.detach() for p in (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)]
    if family == "lstm":
        out, hn, cn, ws = emu.lstm_layer(x, None, h0, c0, *w, None, False)
        b = emu.lstm_layer_backward(g, None, None, x, None, h0, c0, *w, None, False, out, ws)
        dx, dh0, _dc0, dw_ih, dw_hh, db_ih, db_hh, _ = b
    else:
        out, hn, ws = emu.gru_layer(x, None, h0, *w, False)
        b = emu.gru_layer_backward(g, None, x, None, h0, *w, False, out, ws)
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = b
    return [out, hn, dx, dh0, dw_ih, dw_hh, db_ih, db_hh]


NAMES = ["output", "h_n", "grad_input", "grad_h0", "grad_w_ih", "grad_w_hh", "grad_b_ih",
         "grad_b_hh"]  # fmt: skip


@pytest.fixture
def one_thread():
    """torch.nn's CPU half/bf16 RNNs run one small op per step: with several threads each op
    pays a fork/join (up to 10x slower on 2 busy cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_long_sequence_error_within_a_multiple_of_torch_nn(one_thread, family, dtype):
    T, B, I, H = 1000, 2, 4, 16
    torch.manual_seed(0)
    m_lo = (nn.LSTM if family == "lstm" else nn.GRU)(I, H).to(dtype)
    m64 = (nn.LSTM if family == "lstm" else nn.GRU)(I, H).double()
    m64.load_state_dict({k: v.double() for k, v in m_lo.state_dict().items()})
    x = torch.randn(T, B, I).to(dtype)
    h0, c0 = (torch.randn(B, H) * 0.5).to(dtype), (torch.randn(B, H) * 0.5).to(dtype)
    g = (torch.randn(T, B, H) * 0.1).to(dtype)
    ref = _grads_nn(m64, x.double(), h0.double(), c0.double(), g.double(), family)
    try:
        theirs = _grads_nn(m_lo, x, h0, c0, g, family)
    except RuntimeError as e:  # pragma: no cover - depends on the torch build
        pytest.skip(f"torch.nn has no CPU {dtype} kernel here: {e}")
    ours = _grads_emu(m_lo, x, h0, c0, g, family)
    for name, a, t, r in zip(NAMES, ours, theirs, ref, strict=True):
        assert a.dtype == dtype, name
        ours_err = (a.double() - r.reshape(a.shape)).abs().max().item()
        torch_err = (t.double() - r.reshape(t.shape)).abs().max().item()
        scale = r.abs().max().item()
        floor = torch.finfo(dtype).eps * max(scale, 1.0)  # a quantity torch.nn gets exact
        assert ours_err <= RATIO * max(torch_err, floor), (name, ours_err, torch_err)


_PARAMS = [(f, c) for f in ("rnn_tanh", "lstm", "gru") for c in LAYER_CONFIGS] + [
    ("lstm", c) for c in PROJ_CONFIGS
]


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
@pytest.mark.parametrize(
    "family,config", _PARAMS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(_PARAMS)]
)
def test_short_layers_match_float32(family, config, dtype):
    a = _layer_args(family, *config, dtype)
    a32 = {
        k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
        for k, v in a.items()
    }
    fwd = _layer_forward(emu, family, a)
    ref = _layer_forward(torch.ops.fusedrnn, family, a32)
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.float16 else dict(rtol=8e-2, atol=8e-2)
    for i, (o, r) in enumerate(zip(fwd[:-1] if family != "rnn_tanh" else fwd, ref, strict=False)):
        assert o.dtype == dtype
        torch.testing.assert_close(o.float(), r, **tol, msg=lambda m: f"forward[{i}]: {m}")
    grads = tuple(torch.randn(t.shape).to(dtype) for t in fwd[: 3 if family == "lstm" else 2])
    bwd = _layer_backward(emu, family, a, fwd, grads)
    bref = _layer_backward(torch.ops.fusedrnn, family, a32, ref, tuple(t.float() for t in grads))
    for i, (o, r) in enumerate(zip(bwd, bref, strict=True)):
        assert not torch.isnan(o).any(), f"backward[{i}]: NaN"
        scale = max(r.abs().max().item(), 1.0) if r.numel() else 1.0
        torch.testing.assert_close(
            o.float() / scale, r / scale, **tol, msg=lambda m: f"backward[{i}]: {m}"
        )
