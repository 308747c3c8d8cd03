"""Host emulation of the CUDA kernels (torch.ops.fusedrnn_emu) against the CPU ops.

The emulated ops run the CUDA kernel bodies (cuda/kernels/*.cuh), compiled for the host, over
the grid/block decomposition of the CUDA launcher, with the rows each kernel must write
poisoned with NaN first. Every op (layer and cell, forward and backward, all families,
projection, packed, reverse) is compared with the CPU op in float32 and float64, under
several launch geometries: the GPU's (256 threads), and small grids whose blocks must loop
(grid-stride) and that run blocks/threads in reverse order. Sizes are not multiples of any
block size, so the bounds checks are exercised. float16/bfloat16 (float carries, T = 1000
against torch.nn's own error): test_cuda_emulation_lowp.py; device calls per step:
test_cuda_emulation_trace.py; the persistent kernel: test_cuda_emulation_persistent.py.
"""

from __future__ import annotations

import pytest
import torch

import fusedrnn  # noqa: F401  (loads the extension)

from op_cases import FAMILIES, GATES, batch_sizes_for, lengths_for

ops = torch.ops.fusedrnn


def _emu_available() -> bool:
    try:
        torch.ops.fusedrnn_emu.lstm_layer  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _emu_available(), reason="extension built without FUSEDRNN_EMU (host emulation)"
)

# (threads, max_blocks, reverse): the GPU launch; a 2-block grid that grid-strides; odd
# block size, reversed order, single block.
GEOMETRIES = [(256, 1056, False), (32, 2, False), (7, 3, True), (64, 1, True)]
DEFAULT_GEOMETRY = GEOMETRIES[0]
# Layer configurations: (T, B, I, H, bias, h0, packed, reverse, proj).
LAYER_CONFIGS = [
    (5, 3, 7, 37, True, True, False, False, 0),
    (4, 5, 6, 19, False, False, False, True, 0),
    (6, 4, 3, 29, True, True, True, False, 0),
    (6, 4, 3, 29, True, False, True, True, 0),
    (1, 1, 1, 1, True, False, False, False, 0),
    (3, 300, 2, 3, True, True, False, False, 0),  # rows * H = 900 > one 256-thread block
]
PROJ_CONFIGS = [
    (5, 3, 7, 37, True, True, False, False, 5),
    (6, 4, 3, 29, False, True, True, True, 11),
]


@pytest.fixture(params=GEOMETRIES, ids=lambda g: f"t{g[0]}b{g[1]}{'r' if g[2] else ''}")
def geometry(request):
    torch.ops.fusedrnn_emu.set_launch(*request.param)
    yield request.param
    torch.ops.fusedrnn_emu.set_launch(*DEFAULT_GEOMETRY)


def _layer_args(family, T, B, I, H, bias, h0, packed, reverse, proj, dtype):
    G, P = GATES[family], proj or H

    def rnd(*shape):
        return torch.randn(*shape, dtype=dtype) * 0.5

    bs = batch_sizes_for(lengths_for(B, T)) if packed else None
    x = rnd(int(bs.sum()), I) if packed else rnd(T, B, I)
    a = dict(
        input=x,
        batch_sizes=bs,
        h0=rnd(B, P) if h0 else None,
        w_ih=rnd(G * H, I),
        w_hh=rnd(G * H, P),
        b_ih=rnd(G * H) if bias else None,
        b_hh=rnd(G * H) if bias else None,
        reverse=reverse,
    )
    if family == "lstm":
        a["c0"] = rnd(B, H) if h0 else None
        a["w_hr"] = rnd(P, H) if proj else None
    return a


def _layer_forward(ns, family, a):
    op = getattr(ns, f"{family}_layer")
    base = (a["input"], a["batch_sizes"], a["h0"])
    w = (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    if family == "lstm":
        return op(*base, a["c0"], *w, a["w_hr"], a["reverse"])
    return op(*base, *w, a["reverse"])


def _layer_backward(ns, family, a, fwd, grads):
    op = getattr(ns, f"{family}_layer_backward")
    tail = (a["input"], a["batch_sizes"], a["h0"])
    w = (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    if family == "lstm":
        out, _, _, ws = fwd
        g_out, g_hn, g_cn = grads
        return op(g_out, g_hn, g_cn, *tail, a["c0"], *w, a["w_hr"], a["reverse"], out, ws)
    if family == "gru":
        out, _, ws = fwd
        return op(grads[0], grads[1], *tail, *w, a["reverse"], out, ws)
    out, _ = fwd
    return op(grads[0], grads[1], *tail, *w, a["reverse"], fwd[0])


def _grads(family, fwd, which, dtype):
    """Incoming gradients: all given, or only some (None = zero)."""
    shapes = [fwd[0].shape, fwd[1].shape] + ([fwd[2].shape] if family == "lstm" else [])
    gs = [torch.randn(s, dtype=dtype) for s in shapes]
    if which == "out":
        gs = [gs[0]] + [None] * (len(gs) - 1)
    elif which == "state":
        gs = [None] + gs[1:]
    return tuple(gs)


def _close(emu, cpu, dtype, what):
    assert len(emu) == len(cpu), what
    # Same math, but the CPU ops may vectorise it (other rounding) and use another GEMM path.
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=5e-5)
    for i, (e, c) in enumerate(zip(emu, cpu)):
        assert not torch.isnan(e).any(), f"{what}[{i}]: NaN (an element was not written)"
        torch.testing.assert_close(e, c, **tol, msg=lambda m: f"{what}[{i}]: {m}")


def _config_id(c):
    T, B, I, H, bias, h0, packed, reverse, proj = c
    flags = "".join(f for f, on in (("b", bias), ("h", h0), ("p", packed), ("r", reverse)) if on)
    return f"T{T}B{B}I{I}H{H}{'P' + str(proj) if proj else ''}-{flags or 'plain'}"


_LAYER_PARAMS = [(f, c) for f in FAMILIES for c in LAYER_CONFIGS] + [
    ("lstm", c) for c in PROJ_CONFIGS
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "family,config", _LAYER_PARAMS, ids=[f"{f}-{_config_id(c)}" for f, c in _LAYER_PARAMS]
)
def test_layer_forward_backward(geometry, family, config, dtype):
    a = _layer_args(family, *config, dtype)
    emu_fwd = _layer_forward(torch.ops.fusedrnn_emu, family, a)
    cpu_fwd = _layer_forward(ops, family, a)
    _close(emu_fwd, cpu_fwd, dtype, f"{family}_layer")
    for which in ("all", "out", "state"):
        g = _grads(family, cpu_fwd, which, dtype)
        emu_bwd = _layer_backward(torch.ops.fusedrnn_emu, family, a, emu_fwd, g)
        cpu_bwd = _layer_backward(ops, family, a, cpu_fwd, g)
        _close(emu_bwd, cpu_bwd, dtype, f"{family}_layer_backward({which})")


def _cell_forward(ns, family, a):
    op = getattr(ns, f"{family}_cell")
    w = (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    if family == "lstm":
        return op(a["input"], a["hx"], a["cx"], *w)
    r = op(a["input"], a["hx"], *w)
    return r if isinstance(r, (tuple, list)) else (r,)


def _cell_backward(ns, family, a, fwd, grads):
    op = getattr(ns, f"{family}_cell_backward")
    w = (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    if family == "lstm":
        return op(grads[0], grads[1], a["input"], a["hx"], a["cx"], *w, fwd[2])
    if family == "gru":
        return op(grads[0], a["input"], a["hx"], *w, fwd[1])
    return op(grads[0], a["input"], a["hx"], *w, fwd[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("B,I,H", [(3, 5, 37), (1, 1, 1), (70, 4, 11)])
@pytest.mark.parametrize("family", FAMILIES)
def test_cell_forward_backward(geometry, family, B, I, H, bias, dtype):
    G = GATES[family]

    def rnd(*shape):
        return torch.randn(*shape, dtype=dtype) * 0.5

    a = dict(input=rnd(B, I), hx=rnd(B, H), w_ih=rnd(G * H, I), w_hh=rnd(G * H, H))
    a["b_ih"], a["b_hh"] = (rnd(G * H), rnd(G * H)) if bias else (None, None)
    if family == "lstm":
        a["cx"] = rnd(B, H)
    emu_fwd = _cell_forward(torch.ops.fusedrnn_emu, family, a)
    cpu_fwd = _cell_forward(ops, family, a)
    _close(emu_fwd, cpu_fwd, dtype, f"{family}_cell")
    grads = (rnd(B, H), rnd(B, H) if family == "lstm" else None)
    emu_bwd = _cell_backward(torch.ops.fusedrnn_emu, family, a, emu_fwd, grads)
    cpu_bwd = _cell_backward(ops, family, a, cpu_fwd, grads)
    _close(emu_bwd, cpu_bwd, dtype, f"{family}_cell_backward")


def test_set_launch_rejects_bad_geometry():
    with pytest.raises(RuntimeError, match="threads"):
        torch.ops.fusedrnn_emu.set_launch(0, 4)
    with pytest.raises(RuntimeError, match="max_blocks"):
        torch.ops.fusedrnn_emu.set_launch(32, 0)
    torch.ops.fusedrnn_emu.set_launch(*DEFAULT_GEOMETRY)


def test_emulation_rejects_other_dtypes():
    a = _layer_args("gru", 2, 2, 3, 5, True, False, False, False, 0, torch.float32)
    f8 = {k: v.to(torch.float8_e4m3fn) if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    with pytest.raises(RuntimeError, match=r"float16 or bfloat16 \(host emulation\)"):
        _layer_forward(torch.ops.fusedrnn_emu, "gru", f8)


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_emulated_forward_without_workspace(family):
    """Inference (need_workspace=False): the kernel bodies skip the workspace and still give
    the CPU op's outputs."""
    G = {"lstm": 4, "gru": 3}[family]
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    w = [torch.randn(G * 37, 4, dtype=torch.float64), torch.randn(G * 37, 37, dtype=torch.float64),
         torch.randn(G * 37, dtype=torch.float64), torch.randn(G * 37, dtype=torch.float64)]  # fmt: skip
    extra = (None,) if family == "lstm" else ()
    pre = (x, None, None, None) if family == "lstm" else (x, None, None)
    emu = getattr(torch.ops.fusedrnn_emu, f"{family}_layer")(*pre, *w, *extra, False, False)
    cpu = getattr(torch.ops.fusedrnn, f"{family}_layer")(*pre, *w, *extra, False, True)
    for a, b in zip(emu[:-1], cpu[:-1], strict=True):  # the workspace itself is not written
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
