"""Host emulation of the CUDA LayerNorm LSTM / GRU kernels (torch.ops.fusedrnn_emu.ln_*_stack).

The emulated stack ops run the CUDA programs of cuda/kernels/ln.cuh (one block per row, phases
between block reductions, each phase for every thread of the block in turn, the reduction on the
host in the GPU's order) with the rows each pass writes poisoned with NaN first. They are compared
with the CPU fused ops (torch.ops.fusedrnn.ln_*_stack: outputs, states, saved workspaces and the
backward ops' gradients under the same cotangents) and with the readable reference
(layernorm.reference_stack, autograd through plain torch ops), in float64 to ~1e-12 and in
float32 to rounding, over layers, bidirectional, packed, hx, bias and hidden sizes that are not
multiples of the block size (H = 33, 130, 300 against 32..256 threads, GH up to 1200 columns).
Launch geometries: the GPU's (blocks of up to 256 threads), and small ones (7 or 32 threads, 1
to 3 blocks: grid-stride over rows, several column passes per thread, partial warps) that run
blocks and threads in reverse order.
"""

from __future__ import annotations

import re

import pytest
import torch

import fusedrnn
from fusedrnn import _ops, layernorm

from op_cases import batch_sizes_for, lengths_for


def _emu_available() -> bool:
    try:
        torch.ops.fusedrnn_emu.ln_lstm_stack  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("fusedrnn_emu::ln_lstm_stack", "CPU")


pytestmark = pytest.mark.skipif(
    not _emu_available(), reason="extension built without FUSEDRNN_EMU (host emulation)"
)

CLS = {"ln_lstm": fusedrnn.LayerNormLSTM, "ln_gru": fusedrnn.LayerNormGRU}
# (threads, max_blocks, reverse); the first is the default (emu_launch.h).
DEFAULT_GEOMETRY = (256, 1056, False)
GEOMETRIES = [DEFAULT_GEOMETRY, (32, 2, False), (7, 3, True), (64, 1, True)]


@pytest.fixture(params=GEOMETRIES, ids=lambda g: f"t{g[0]}b{g[1]}{'r' if g[2] else ''}")
def geometry(request):
    torch.ops.fusedrnn_emu.set_launch(*request.param)
    yield request.param
    torch.ops.fusedrnn_emu.set_launch(*DEFAULT_GEOMETRY)


def _case(fam, L, bidir, packed, hx, bias, B, H, T=3, I=4, dtype=torch.float64, seed=0):
    """A module's flat weights (LayerNorm weights moved off 1 / 0) and the stack op's inputs."""
    torch.manual_seed(seed)
    m = CLS[fam](I, H, num_layers=L, bidirectional=bidir, bias=bias, dtype=dtype)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith("layernorm_"):
                p.add_(0.3 * torch.randn_like(p))
    D = 2 if bidir else 1
    bs = batch_sizes_for(lengths_for(B, T)) if packed else None
    x = (torch.randn(int(bs.sum()), I) if packed else torch.randn(T, B, I)).to(dtype)
    h0 = torch.randn(L * D, B, H, dtype=dtype) if hx else None
    c0 = torch.randn(L * D, B, H, dtype=dtype) if hx and fam == "ln_lstm" else None
    return dict(x=x, bs=bs, h0=h0, c0=c0, w=[p.detach() for p in m._flat_weights], L=L,
                bidir=bidir, bias=bias)  # fmt: skip


def _forward(ns, fam, a, need_workspace=True):
    op = getattr(ns, f"{fam}_stack")
    return op(a["x"], a["bs"], a["h0"], a["c0"], a["w"], a["bias"], a["L"], a["bidir"], 0.0,
              False, need_workspace)  # fmt: skip


def _backward(ns, fam, a, fwd, cot):
    op = getattr(ns, f"{fam}_stack_backward")
    out, _, _, saved = fwd
    return op(cot[0], cot[1], cot[2], a["x"], a["bs"], a["h0"], a["c0"], a["w"], a["bias"],
              a["L"], a["bidir"], out, saved, True)  # fmt: skip


def _cotangents(fam, fwd):
    out, h_n, c_n, _ = fwd
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(out.shape, generator=g, dtype=out.dtype),
        torch.randn(h_n.shape, generator=g, dtype=out.dtype),
        torch.randn(c_n.shape, generator=g, dtype=out.dtype) if fam == "ln_lstm" else None,
    )


def _flat(res):
    """(grad_input, grad_hx, grad_cx, grad_weights) or (output, h_n, c_n, saved) as one list."""
    return [*res[:3], *res[3]]


def _reference_grads(fam, a, cot):
    """Outputs and gradients of the reference stack (autograd through plain torch ops)."""
    leaves = {k: a[k].clone().requires_grad_() for k in ("x", "h0", "c0") if a[k] is not None}
    w = [t.clone().requires_grad_() for t in a["w"]]
    out, h_n, c_n = layernorm.reference_stack(
        fam, leaves["x"], a["bs"], leaves.get("h0"), leaves.get("c0"), w, num_layers=a["L"],
        bidirectional=a["bidir"], has_biases=a["bias"], dropout=0.0, train=False,
    )  # fmt: skip
    outs = [out, h_n] + ([c_n] if c_n is not None else [])
    cots = [cot[0], cot[1]] + ([cot[2]] if c_n is not None else [])
    grads = torch.autograd.grad(outs, [*leaves.values(), *w], cots)
    return outs, dict(zip([*leaves, *(f"w{i}" for i in range(len(w)))], grads))


CONFIGS = [  # (L, bidir, packed, hx, bias)
    (1, False, False, True, True),
    (2, True, True, False, False),
    (3, False, False, False, True),
    (2, True, False, True, True),
    (1, False, True, True, False),
]
HS = (1, 33, 130, 300)


def _cid(c):
    L, bidir, packed, hx, bias = c
    return f"L{L}{'-bi' if bidir else ''}{'-packed' if packed else ''}" + (
        f"{'-hx' if hx else ''}{'' if bias else '-nobias'}"
    )


def _check_against_cpu(fam, a, rtol, atol):
    emu, cpu = torch.ops.fusedrnn_emu, torch.ops.fusedrnn
    fe, fc = _forward(emu, fam, a), _forward(cpu, fam, a)
    # outputs, states and every saved tensor (layer outputs and workspaces: all columns)
    torch.testing.assert_close(_flat(fe), _flat(fc), rtol=rtol, atol=atol)
    cot = _cotangents(fam, fc)
    ge, gc = _backward(emu, fam, a, fe, cot), _backward(cpu, fam, a, fc, cot)
    torch.testing.assert_close(_flat(ge), _flat(gc), rtol=rtol, atol=atol)
    return fe, ge, cot


# Every configuration with every H, once with B = 1 or B = 3 (alternating over H and configs).
CASES = [(c, (B, H)) for i, c in enumerate(CONFIGS) for k, H in enumerate(HS) for B in (1, 3)
         if (B == 3) == bool((i + k) % 2)]  # fmt: skip


@pytest.mark.parametrize("fam", list(CLS))
@pytest.mark.parametrize("config,size", CASES, ids=[f"{_cid(c)}-B{b}-H{h}" for c, (b, h) in CASES])
def test_float64_matches_cpu_and_reference(fam, config, size):
    L, bidir, packed, hx, bias = config
    B, H = size
    a = _case(fam, L, bidir, packed, hx, bias, B, H)
    fe, ge, cot = _check_against_cpu(fam, a, rtol=1e-10, atol=1e-12)
    outs, grads = _reference_grads(fam, a, cot)
    torch.testing.assert_close(list(fe[: len(outs)]), outs, rtol=1e-10, atol=1e-12)
    got = {"x": ge[0]}
    if hx:
        got["h0"] = ge[1]
        if fam == "ln_lstm":
            got["c0"] = ge[2]
    got.update({f"w{i}": g for i, g in enumerate(ge[3])})
    for name, want in grads.items():
        torch.testing.assert_close(got[name], want, rtol=1e-9, atol=1e-11, msg=f"d{name}")


@pytest.mark.parametrize("fam", list(CLS))
@pytest.mark.parametrize("H", [33, 130, 300])
def test_launch_geometries(geometry, fam, H):
    """Small blocks (7: partial warps; 32) and grids (1-3 blocks, grid-stride over rows), in
    reverse order: the same results as the CPU op."""
    a = _case(fam, 2, True, True, True, True, 3, H, T=4)
    _check_against_cpu(fam, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fam", list(CLS))
@pytest.mark.parametrize("B,H", [(3, 33), (1, 300)])
def test_float32_matches_cpu(fam, B, H):
    """Two float32 summation orders: at B = 1 the CPU's one-row GEMMs run on its thin passes
    (cpu_backend.h thin_row), the emulation's on plain loops. Against a float64 run both stay
    within 4.2e-5 of it at H = 300 (emulation 3.9e-5, CPU 3.0e-5 at their worst element), so
    they may differ by a little more than 2e-5 there."""
    a = _case(fam, 2, True, True, True, True, B, H, dtype=torch.float32)
    _check_against_cpu(fam, a, rtol=2e-4, atol=2e-5 if H < 300 else 4e-5)


@pytest.mark.parametrize("fam", list(CLS))
def test_inference_without_workspace(fam):
    a = _case(fam, 2, True, False, True, True, 3, 33)
    emu = torch.ops.fusedrnn_emu
    full, lean = _forward(emu, fam, a), _forward(emu, fam, a, need_workspace=False)
    torch.testing.assert_close(list(lean[:3]), list(full[:3]), rtol=0, atol=0)
    cols = _ops._ws_cols(fam, 33)  # 14H + 3 / 10H + 2, padded to 16 (ln_step_args.h)
    assert cols == ((14 * 33 + 3 if fam == "ln_lstm" else 10 * 33 + 2) + 15) // 16 * 16
    workspaces = [t for t in full[3] if t.dim() == 2 and t.shape[1] == cols]
    assert len(workspaces) == 4 and all(t.shape[0] == 3 * 3 for t in workspaces)
    assert not [t for t in lean[3] if t.dim() == 2 and t.shape[1] == cols and t.shape[0] > 0]


@pytest.mark.parametrize("fam", list(CLS))
def test_rejects_half_precision(fam):
    a = _case(fam, 1, False, False, False, True, 2, 5)
    a["x"], a["w"] = a["x"].half(), [w.half() for w in a["w"]]
    with pytest.raises(RuntimeError, match="LayerNorm layers run in float32 or float64"):
        _forward(torch.ops.fusedrnn_emu, fam, a)


@pytest.mark.parametrize("fam", list(CLS))
@pytest.mark.parametrize("I", [3, 12])
def test_one_gemm_and_one_kernel_per_step(fam, I):
    """The device calls of one layer (torch.ops.fusedrnn_emu.trace, emu_launch.h): the input
    side once, then per step one recurrent GEMM and one fused kernel, with no allocation
    inside the loop; backward per step one kernel and one GEMM. The input side: a wide input
    (I*I > G*H) takes the LN pass (after the input GEMM, an ATen call, not traced); a narrow
    one its closed form (ATen calls), whose normalised values for the workspace are one GEMM."""
    T = 9
    a = _case(fam, 1, False, False, True, True, 3, 33 if I == 3 else 5, T=T, I=I)
    emu = torch.ops.fusedrnn_emu
    emu.trace(True)
    try:
        fwd = _forward(emu, fam, a)
    finally:
        events = emu.trace(False)
    side = "G" if I == 3 else "K"
    assert re.fullmatch(rf"A*{side}[AC]*(?:GK){{{T}}}A*", events), events
    emu.trace(True)
    try:
        _backward(emu, fam, a, fwd, _cotangents(fam, fwd))
    finally:
        events = emu.trace(False)
    # the input side's LN backward once after the loop (the closed form, ATen calls only, from
    # 2^20 input-side values: not at this size)
    assert re.fullmatch(rf"A*(?:KG){{{T}}}A*KA*", events), events


@pytest.mark.skipif(not fusedrnn.build_info().get("cuda"), reason="a CPU-only build")
def test_cuda_build_serves_layernorm_modules_with_fused_kernels():
    """A CUDA build registers ln_*_stack (and backward) for CUDA, so the modules on a GPU take
    the fused ops, not the reference loop (checked without a GPU: `make cuda-check`)."""
    assert {("ln_lstm", "cuda"), ("ln_gru", "cuda")} <= layernorm._KERNELS
