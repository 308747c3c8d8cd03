"""The persistent small-H forward kernel (cuda/PERSISTENT.md) on its host emulation.

torch.ops.fusedrnn_emu.persistent_forward runs the kernel's phased bodies
(cuda/kernels/persistent.cuh) as a legal schedule of the GPU's, with shared memory and the
buffer each step writes poisoned with NaN, so a missing barrier or a read of the wrong buffer
shows as NaN. Compared with the layer ops (alternating GEMM + pointwise) over block counts
that split the hidden units unevenly, a single block, one block per unit, more blocks than
units, reversed block/thread order, and every dtype.
"""

from __future__ import annotations

import pytest
import torch
from test_cuda_emulation import DEFAULT_GEOMETRY, _emu_available

import fusedrnn  # noqa: F401  (loads the extension)

pytestmark = pytest.mark.skipif(not _emu_available(), reason="extension built without emulation")


def _case(family, T, B, I, H, dtype, bias=True, states=True):
    G = 4 if family == "lstm" else 3
    g = torch.Generator().manual_seed(T * 1000 + H)

    def rnd(*s):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * 0.4).to(dtype)

    return dict(
        x=rnd(T, B, I),
        h0=rnd(B, H) if states else None,
        c0=rnd(B, H) if states and family == "lstm" else None,
        w=[
            rnd(G * H, I),
            rnd(G * H, H),
            rnd(G * H) if bias else None,
            rnd(G * H) if bias else None,
        ],
    )


def _layer(family, a, reverse):
    if family == "lstm":
        out, hn, cn, _ = torch.ops.fusedrnn.lstm_layer(
            a["x"], None, a["h0"], a["c0"], *a["w"], None, reverse, False
        )
        return out, hn, cn
    out, hn, _ = torch.ops.fusedrnn.gru_layer(a["x"], None, a["h0"], *a["w"], reverse, False)
    return out, hn


def _persistent(family, a, reverse, blocks):
    out, hn, cn = torch.ops.fusedrnn_emu.persistent_forward(
        family, a["x"], a["h0"], a["c0"], *a["w"], reverse, blocks
    )
    return (out, hn, cn) if family == "lstm" else (out, hn)


@pytest.fixture(params=[DEFAULT_GEOMETRY, (32, 1, True)], ids=["t256", "t32r"])
def geometry(request):
    torch.ops.fusedrnn_emu.set_launch(*request.param)
    yield request.param
    torch.ops.fusedrnn_emu.set_launch(*DEFAULT_GEOMETRY)


@pytest.mark.parametrize("blocks", [0, 1, 5, 37, 50])  # 0: default (7), 37 = H, 50 > H
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_matches_layer_op_float64(geometry, family, reverse, blocks):
    a = _case(family, 9, 3, 5, 37, torch.float64)
    states = [t.clone() for t in (a["h0"], a["c0"]) if t is not None]
    got = _persistent(family, a, reverse, blocks)
    for before, after in zip(states, (a["h0"], a["c0"])):
        assert torch.equal(before, after), "the initial state was modified"
    want = _layer(family, a, reverse)
    for i, (x, y) in enumerate(zip(got, want, strict=True)):
        assert not torch.isnan(x).any(), f"result {i}: NaN (a race or a missing write)"
        # Same math; only the order of the H-term dot products differs from the GEMM's.
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "dtype,tol",
    [(torch.float32, 2e-5), (torch.float16, 2e-2), (torch.bfloat16, 6e-2)],
    ids=["f32", "f16", "bf16"],
)
@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_matches_layer_op_low_precision(family, dtype, tol):
    a = _case(family, 12, 4, 6, 24, dtype, bias=family == "lstm", states=family == "gru")
    got = _persistent(family, a, False, 0)
    ref = {k: ([t.double() if t is not None else None for t in v] if k == "w" else
               (v.double() if v is not None else None)) for k, v in a.items()}  # fmt: skip
    want = _layer(family, ref, False)
    for x, y in zip(got, want, strict=True):
        assert x.dtype == dtype
        torch.testing.assert_close(x.double(), y, rtol=tol, atol=tol)


def test_empty_sequence_returns_initial_state():
    a = _case("lstm", 0, 2, 3, 5, torch.float64)
    out, hn, cn = _persistent("lstm", a, False, 0)
    assert out.shape == (0, 2, 5)
    torch.testing.assert_close(hn, a["h0"])
    torch.testing.assert_close(cn, a["c0"])


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(family="rnn"), "family"),
        (dict(x=torch.randn(3, 4)), "input must be"),
        (dict(w_hh=torch.randn(10, 4)), "w_hh must be"),
        (dict(blocks=-1), "blocks"),
    ],
)
def test_rejects_bad_arguments(change, match):
    a = _case("lstm", 3, 2, 4, 5, torch.float32)
    args = dict(family="lstm", x=a["x"], w_hh=a["w"][1], blocks=0)
    args.update(change)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fusedrnn_emu.persistent_forward(
            args["family"], args["x"], None, None, a["w"][0], args["w_hh"], None, None, False,
            args["blocks"],
        )  # fmt: skip
