"""The CUDA ops on a GPU: float64 gradcheck, parity with the CPU ops and with torch.nn (cuDNN)
in float32 and half/bf16, CUDA-graph capture and replay, torch.compile(mode="reduce-overhead"),
the LayerNorm LSTM / GRU modules against the CPU ones.

Skipped cleanly when the extension was built without CUDA or no GPU is present (the CUDA
kernels' indexing is still tested without a GPU by tests/test_cuda_emulation.py).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import check, layernorm

from op_cases import FAMILIES, GATES, batch_sizes_for, lengths_for

ops = torch.ops.fusedrnn


def _has_cuda_ops() -> bool:
    try:
        return bool(fusedrnn.build_info().get("cuda")) and torch.cuda.is_available()
    except Exception:  # pragma: no cover - a broken build is reported by other tests
        return False


pytestmark = pytest.mark.skipif(
    not _has_cuda_ops(), reason="needs a CUDA build of fusedrnn and a GPU"
)

DEV = "cuda"


@pytest.fixture(autouse=True)
def _no_tf32():
    """float32 references in true float32: cuDNN's RNNs use TF32 by default."""
    with check.true_float32():
        yield


def _weights(family, I, H, P, bias, dtype, device, requires_grad=False, scale=0.5):
    G = GATES[family]

    def rnd(*shape):
        t = torch.randn(*shape, dtype=torch.float64) * scale
        return t.to(device=device, dtype=dtype).requires_grad_(requires_grad)

    return dict(
        w_ih=rnd(G * H, I),
        w_hh=rnd(G * H, P),
        b_ih=rnd(G * H) if bias else None,
        b_hh=rnd(G * H) if bias else None,
        w_hr=rnd(P, H) if P != H else None,
    )


def _run_layer(family, x, w, h0=None, c0=None, batch_sizes=None, reverse=False):
    kw = dict(h0=h0, batch_sizes=batch_sizes, reverse=reverse)
    args = (x, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
    if family == "lstm":
        return fusedrnn.lstm_layer(*args, w_hr=w["w_hr"], c0=c0, **kw)
    if family == "gru":
        return fusedrnn.gru_layer(*args, **kw)
    return fusedrnn.rnn_layer(*args, nonlinearity=family.split("_")[1], **kw)


# ---- gradcheck in float64 on the GPU ------------------------------------------------------
@pytest.mark.parametrize(
    "packed,reverse", [(False, False), (False, True), (True, False), (True, True)]
)
@pytest.mark.parametrize("family,proj", [(f, 0) for f in FAMILIES] + [("lstm", 2)])
def test_gradcheck_layer_cuda(family, proj, packed, reverse):
    T, B, I, H = 4, 3, 3, 5
    P = proj or H
    w = _weights(family, I, H, P, True, torch.float64, DEV, requires_grad=True)
    bs = batch_sizes_for(lengths_for(B, T)) if packed else None
    shape = (int(bs.sum()), I) if packed else (T, B, I)
    x = torch.randn(*shape, dtype=torch.float64, device=DEV, requires_grad=True)
    h0 = torch.randn(B, P, dtype=torch.float64, device=DEV, requires_grad=True)
    c0 = torch.randn(B, H, dtype=torch.float64, device=DEV, requires_grad=True)
    names = [k for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr") if w[k] is not None]
    states = (h0, c0) if family == "lstm" else (h0,)

    def f(x, *rest):
        st, ws = rest[: len(states)], rest[len(states) :]
        ww = dict(w, **dict(zip(names, ws)))
        return _run_layer(family, x, ww, *st, batch_sizes=bs, reverse=reverse)

    assert torch.autograd.gradcheck(f, (x, *states, *[w[k] for k in names]), atol=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck_cell_cuda(family):
    B, I, H = 3, 4, 5
    w = _weights(family, I, H, H, True, torch.float64, DEV, requires_grad=True)
    x = torch.randn(B, I, dtype=torch.float64, device=DEV, requires_grad=True)
    hx = torch.randn(B, H, dtype=torch.float64, device=DEV, requires_grad=True)
    cx = torch.randn(B, H, dtype=torch.float64, device=DEV, requires_grad=True)
    ws = (w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
    if family == "lstm":
        assert torch.autograd.gradcheck(lambda *a: fusedrnn.lstm_cell(*a), (x, hx, cx, *ws))
    elif family == "gru":
        assert torch.autograd.gradcheck(lambda *a: fusedrnn.gru_cell(*a), (x, hx, *ws))
    else:
        nl = family.split("_")[1]
        assert torch.autograd.gradcheck(
            lambda *a: fusedrnn.rnn_cell(*a, nonlinearity=nl), (x, hx, *ws)
        )


# ---- parity with the CPU ops (same kernels' math, cuBLAS vs CPU BLAS) ---------------------
@pytest.mark.parametrize("packed,reverse", [(False, False), (True, True)])
@pytest.mark.parametrize("family,proj", [(f, 0) for f in FAMILIES] + [("lstm", 7)])
def test_matches_cpu_ops_float64(family, proj, packed, reverse):
    T, B, I, H = 9, 37, 13, 67  # rows * H not a multiple of the block size
    P = proj or H
    w = _weights(family, I, H, P, True, torch.float64, DEV, requires_grad=True)
    bs = batch_sizes_for(lengths_for(B, T)) if packed else None
    shape = (int(bs.sum()), I) if packed else (T, B, I)
    x = torch.randn(*shape, dtype=torch.float64, device=DEV, requires_grad=True)
    h0 = torch.randn(B, P, dtype=torch.float64, device=DEV, requires_grad=True)
    c0 = (
        torch.randn(B, H, dtype=torch.float64, device=DEV, requires_grad=True)
        if family == "lstm"
        else None
    )
    leaves = [t for t in (x, h0, c0, *w.values()) if t is not None]
    cpu_leaves = [t.detach().cpu().requires_grad_() for t in leaves]
    it = iter(cpu_leaves)
    xc, h0c = next(it), next(it)
    c0c = next(it) if c0 is not None else None
    wc = {k: (next(it) if v is not None else None) for k, v in w.items()}
    out_g = _run_layer(family, x, w, h0, c0, bs, reverse)
    out_c = _run_layer(family, xc, wc, h0c, c0c, bs, reverse)
    for a, b in zip(out_g, out_c):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10)
    gs = [torch.randn_like(o) for o in out_c]
    torch.autograd.backward(out_g, [g.to(DEV) for g in gs])
    torch.autograd.backward(out_c, gs)
    for a, b in zip(leaves, cpu_leaves):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=1e-9, atol=1e-9)


# ---- parity with torch.nn (cuDNN) -----------------------------------------------------------
def _nn_module(family, I, H, P, dtype):
    if family == "lstm":
        m = nn.LSTM(I, H, proj_size=P if P != H else 0)
    elif family == "gru":
        m = nn.GRU(I, H)
    else:
        m = nn.RNN(I, H, nonlinearity=family.split("_")[1])
    return m.to(device=DEV, dtype=dtype)


def _module_weights(m):
    return dict(
        w_ih=m.weight_ih_l0,
        w_hh=m.weight_hh_l0,
        b_ih=m.bias_ih_l0,
        b_hh=m.bias_hh_l0,
        w_hr=getattr(m, "weight_hr_l0", None),
    )


@pytest.mark.parametrize("family,proj", [(f, 0) for f in FAMILIES] + [("lstm", 24)])
def test_matches_cudnn_float32(family, proj):
    T, B, I, H = 11, 19, 33, 65
    P = proj or H
    m = _nn_module(family, I, H, P, torch.float32)
    x = torch.randn(T, B, I, device=DEV)
    ref = m(x)
    with torch.no_grad():
        ours = _run_layer(family, x, _module_weights(m))
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-4)
    h_ref = ref[1][0] if family == "lstm" else ref[1]
    torch.testing.assert_close(ours[1], h_ref[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_low_precision_error_within_2x_of_torch(family, dtype):
    """Error against a float32 reference at most 2x torch.nn's own error in that dtype."""
    T, B, I, H = 16, 8, 32, 64
    m = _nn_module(family, I, H, H, torch.float32)
    x = torch.randn(T, B, I, device=DEV)
    m_lo = _nn_module(family, I, H, H, dtype)
    m_lo.load_state_dict({k: v.to(dtype) for k, v in m.state_dict().items()})
    # The float32 reference sees the same (rounded) weights and input as the low-precision runs.
    m.load_state_dict({k: v.float() for k, v in m_lo.state_dict().items()})
    x_lo = x.to(dtype)
    with torch.no_grad():
        ref = m(x_lo.float())[0]
        try:
            torch_out = m_lo(x_lo)[0]
        except RuntimeError as e:  # pragma: no cover - depends on the cuDNN build
            pytest.skip(f"torch.nn.{type(m_lo).__name__} has no {dtype} kernel here: {e}")
        torch_err = (torch_out.float() - ref).abs().max().item()
        ours = _run_layer(family, x_lo, _module_weights(m_lo))[0]
        assert ours.dtype == dtype
        our_err = (ours.float() - ref).abs().max().item()
    assert our_err <= 2 * torch_err + torch.finfo(dtype).eps, (our_err, torch_err)


def test_packed_matches_cudnn():
    T, B, I, H = 7, 5, 6, 9
    m = _nn_module("lstm", I, H, H, torch.float32)
    lengths = lengths_for(B, T)
    x = torch.randn(T, B, I, device=DEV)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths)
    ref_out, (ref_h, ref_c) = m(packed)
    with torch.no_grad():
        out, h, c = _run_layer(
            "lstm", packed.data, _module_weights(m), batch_sizes=packed.batch_sizes
        )
    torch.testing.assert_close(out, ref_out.data, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h, ref_h[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c, ref_c[0], rtol=1e-4, atol=1e-4)


# ---- CUDA graphs and torch.compile ---------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_graph_capture_and_replay(family):
    T, B, I, H = 6, 4, 5, 33
    w = _weights(family, I, H, H, True, torch.float32, DEV)
    static_x = torch.randn(T, B, I, device=DEV)
    static_g = torch.randn(T, B, H, device=DEV)

    def step(x, g):
        if family == "lstm":
            out, hn, cn, ws = ops.lstm_layer(
                x, None, None, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], None, False
            )
            grads = ops.lstm_layer_backward(g, None, None, x, None, None, None, w["w_ih"],
                                            w["w_hh"], w["b_ih"], w["b_hh"], None, False,
                                            out, ws)  # fmt: skip
        elif family == "gru":
            out, hn, ws = ops.gru_layer(
                x, None, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], False
            )
            grads = ops.gru_layer_backward(
                g, None, x, None, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], False, out, ws
            )
        else:
            op = getattr(ops, f"{family}_layer")
            out, hn = op(x, None, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], False)
            grads = getattr(ops, f"{family}_layer_backward")(
                g, None, x, None, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], False, out
            )
        return (out, hn, *grads)

    _capture_and_replay(step, static_x, static_g)


def _capture_and_replay(step, static_x, static_g, replays=2):
    """Warm step(x, g) up on a side stream, capture it in a CUDA graph, then replay it on new
    inputs copied into the static ones: each replay must equal an eager call."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step(static_x, static_g)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step(static_x, static_g)
    for _ in range(replays):
        x2, g2 = torch.randn_like(static_x), torch.randn_like(static_g)
        static_x.copy_(x2)
        static_g.copy_(g2)
        graph.replay()
        torch.cuda.synchronize()
        expected = step(x2, g2)
        for a, b in zip(captured, expected):
            torch.testing.assert_close(a, b)


def test_torch_compile_reduce_overhead():
    torch._dynamo.reset()
    T, B, I, H = 5, 3, 4, 17
    w = _weights("lstm", I, H, H, True, torch.float32, DEV, requires_grad=True)

    def loss_fn(x, w_ih, w_hh, b_ih, b_hh):
        out, hn, cn = fusedrnn.lstm_layer(x, w_ih, w_hh, b_ih, b_hh)
        return (out.square().sum() + hn.sum() + cn.sum()) / x.shape[0]

    params = [w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"]]
    compiled = torch.compile(loss_fn, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):
        x = torch.randn(T, B, I, device=DEV)
        got = compiled(x, *params)
        g_got = torch.autograd.grad(got, params)
        want = loss_fn(x, *params)
        g_want = torch.autograd.grad(want, params)
        torch.testing.assert_close(got, want)
        for a, b in zip(g_got, g_want):
            torch.testing.assert_close(a, b)


# ---- issue 16: packed/projected graphs, long half/bf16 runs, big grids, a second GPU ------
def _long_error_ratio(family, dtype, T=1000, B=4, I=8, H=32):
    """max |ours - f64| / max |torch.nn - f64| over the output, h_n (and c_n) and every
    gradient of a T-step layer, both sides in `dtype` on the GPU."""
    torch.manual_seed(0)
    m64 = _nn_module(family, I, H, H, torch.float64)
    m_lo = _nn_module(family, I, H, H, dtype)
    m_lo.load_state_dict({k: v.to(dtype) for k, v in m64.state_dict().items()})
    m64.load_state_dict({k: v.double() for k, v in m_lo.state_dict().items()})
    x = torch.randn(T, B, I, device=DEV).to(dtype)
    g = torch.randn(T, B, H, device=DEV).to(dtype)

    def run(fn, params, xx, gg):
        out = fn(xx)
        return [out[0], out[1], *torch.autograd.grad(out[0], params, gg)]

    def ours(m):
        return lambda xx: _run_layer(family, xx, _module_weights(m))

    def theirs(m):
        return lambda xx: (lambda o: (o[0], o[1][0][0] if family == "lstm" else o[1][0]))(m(xx))

    ref = run(theirs(m64), list(m64.parameters()), x.double(), g.double())
    with torch.backends.cudnn.flags(enabled=True):
        try:
            torch_lo = run(theirs(m_lo), list(m_lo.parameters()), x, g)
        except RuntimeError as e:  # pragma: no cover - depends on the cuDNN build
            pytest.skip(f"torch.nn has no {dtype} kernel here: {e}")
    ours_lo = run(ours(m_lo), list(m_lo.parameters()), x, g)
    ratios = []
    for a, b, r in zip(ours_lo, torch_lo, ref):
        ours_err = (a.double() - r).abs().max().item()
        torch_err = (b.double() - r).abs().max().item()
        ratios.append(ours_err / max(torch_err, torch.finfo(dtype).eps))
    return max(ratios)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_long_sequence_low_precision_error_within_2x_of_cudnn(family, dtype):
    """T = 1000 forward and backward: float carries (c, dc, GRU dh, summed bias) keep the error
    within 2x of cuDNN's own in that dtype (storage-dtype carries drift far beyond it)."""
    assert _long_error_ratio(family, dtype) <= 2.0


@pytest.mark.parametrize("allow", [True, False])
def test_half_gemm_honours_reduced_precision_flag(allow):
    old = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = allow
    try:
        assert _long_error_ratio("lstm", torch.float16, T=50, H=128) <= 2.0
    finally:
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = old


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_width_input(family):
    """I = 0 (the narrow-input path with an empty K): no lda = 0 reaches cuBLAS."""
    w = _weights(family, 0, 7, 7, True, torch.float32, DEV)
    x = torch.randn(5, 3, 0, device=DEV)
    got = _run_layer(family, x, w)
    want = _run_layer(
        family, x.cpu(), {k: v.cpu() if v is not None else None for k, v in w.items()}
    )
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5)


def test_grid_larger_than_one_wave():
    """rows * H beyond the resident grid, so every thread loops (grid-stride) on the GPU."""
    props = torch.cuda.get_device_properties(0)
    wave = props.multi_processor_count * props.max_threads_per_multi_processor
    H = 512
    B = wave // H + 37
    m = _nn_module("lstm", 8, H, H, torch.float32)
    x = torch.randn(2, B, 8, device=DEV)
    with torch.no_grad():
        ref = m(x)
        ours = _run_layer("lstm", x, _module_weights(m))
    assert B * H > wave
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[2], ref[1][1][0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["packed", "projected"])
def test_cuda_graph_capture_packed_and_projected(kind):
    T, B, I, H = 6, 5, 4, 16
    P = 7 if kind == "projected" else H
    w = _weights("lstm", I, H, P, True, torch.float32, DEV)
    bs = batch_sizes_for(lengths_for(B, T)) if kind == "packed" else None
    shape = (int(bs.sum()), I) if bs is not None else (T, B, I)
    static_x = torch.randn(*shape, device=DEV)
    static_g = (
        torch.randn(shape[0], P, device=DEV) if bs is not None else torch.randn(T, B, P, device=DEV)
    )

    def step(x, g):
        out, hn, cn, ws = ops.lstm_layer(
            x, bs, None, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], w["w_hr"], False
        )
        grads = ops.lstm_layer_backward(g, None, None, x, bs, None, None, w["w_ih"], w["w_hh"],
                                        w["b_ih"], w["b_hh"], w["w_hr"], False, out, ws)  # fmt: skip
        return (out, hn, cn, *grads)

    _capture_and_replay(step, static_x, static_g)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second GPU (cuda:1)")
@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_second_gpu(family):
    """Tensors on cuda:1 while cuda:0 is current: kernels and GEMMs follow the input's device."""
    w = _weights(family, 5, 9, 9, True, torch.float64, "cuda:1")
    x = torch.randn(4, 3, 5, dtype=torch.float64, device="cuda:1")
    with torch.cuda.device(0):
        got = _run_layer(family, x, w)
    assert all(t.device == torch.device("cuda:1") for t in got)
    want = _run_layer(
        family, x.cpu(), {k: v.cpu() if v is not None else None for k, v in w.items()}
    )
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_persistent_kernel_matches_layer_op(family, dtype):
    """The persistent small-H forward (cuda/PERSISTENT.md: one cooperative launch, grid
    barrier per step) against the alternating layer op, H = 192 over the default grid.

    Weights at torch.nn's scale (1/sqrt(H)): at scale 0.5 this recurrence is chaotic, and the
    two dot-product orders (k order here, cuBLAS's there) drift apart by 1e8x over 40 steps,
    on the host emulation exactly as on the GPU (GRU float32: 2.0 at the last step)."""
    T, B, I, H = 40, 16, 24, 192
    w = _weights(family, I, H, H, True, dtype, DEV, scale=H**-0.5)
    x = torch.randn(T, B, I, dtype=dtype, device=DEV)
    h0 = torch.randn(B, H, dtype=dtype, device=DEV)
    c0 = torch.randn(B, H, dtype=dtype, device=DEV) if family == "lstm" else None
    ws = (w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
    got = torch.ops.fusedrnn_cuda.persistent_forward(family, x, h0, c0, *ws, False, 0)
    with torch.no_grad():
        want = _run_layer(family, x, w, h0, c0)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


# ---- LayerNorm LSTM / GRU (cuda/ln_kernels.cuh) -----------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("H", [33, 300])  # 300: more units than a 256-thread block
@pytest.mark.parametrize("cls", ["LayerNormLSTM", "LayerNormGRU"])
def test_layernorm_module_matches_cpu(cls, H, dtype):
    """fusedrnn.LayerNormLSTM / GRU on CUDA run the fused CUDA ops (no fallback warning) and
    match the CPU module: outputs, states and every gradient, packed and bidirectional.

    float64: GPU and CPU agree to 1e-9. float32: both are compared with the CPU module in
    float64, and the GPU's error may be at most twice the CPU's (plus 1e-6 of the tensor's
    scale). A fixed float32 tolerance between the two devices does not hold at H = 300: the
    CPU's own float32 error against float64 exceeds rtol 1e-3 by up to 4.4e-4 there."""
    fam = "ln_lstm" if cls == "LayerNormLSTM" else "ln_gru"
    assert (fam, "cuda") in layernorm._KERNELS
    torch.manual_seed(0)
    cpu = getattr(fusedrnn, cls)(7, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    with torch.no_grad():
        for n, p in cpu.named_parameters():
            if n.startswith("layernorm_"):
                p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(6, 5, 7, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 5, 6, 1])
    runs = [(cpu, "cpu", torch.float64)] if dtype != torch.float64 else []
    runs += [
        (copy.deepcopy(cpu).to(dtype), "cpu", dtype),
        (copy.deepcopy(cpu).to(DEV, dtype), DEV, dtype),
    ]
    results = []
    for m, dev, dt in runs:
        xd = x.to(dev, dt).detach().requires_grad_()
        packed = pack_padded_sequence(xd, lengths, enforce_sorted=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*running the reference implementation")
            out, hid = m(packed)
        states = list(hid) if isinstance(hid, tuple) else [hid]
        ys = [out.data, *states]
        g = torch.Generator().manual_seed(1)
        cots = [torch.randn(y.shape, generator=g, dtype=torch.float64).to(dev, dt) for y in ys]
        grads = torch.autograd.grad(ys, [xd, *m.parameters()], cots)
        results.append([t.detach().cpu().double() for t in (*ys, *grads)])
    if dtype == torch.float64:
        for a, b in zip(results[1], results[0]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        return
    truth, on_cpu, on_gpu = results
    for i, (t, c, g) in enumerate(zip(truth, on_cpu, on_gpu)):
        err_cpu, err_gpu = (c - t).abs().max().item(), (g - t).abs().max().item()
        bound = 2 * err_cpu + 1e-6 * (1 + t.abs().max().item())
        assert err_gpu <= bound, f"tensor {i}: GPU error {err_gpu:.3g}, CPU error {err_cpu:.3g}"


# ---- an output edited in place before backward (cpp/autograd.cpp recomputes it) -----------
@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM", "LayerNormGRU"])
def test_edited_output_is_recomputed_on_the_gpu(cls):
    """``out.mul_(2).add_(1)`` between forward and backward: the stack op's backward finds its
    output edited and recomputes it with the forward op on the GPU; every gradient equals the
    unedited graph's and the CPU module's (float64)."""
    torch.manual_seed(0)
    cpu = getattr(fusedrnn, cls)(3, 33, num_layers=2, dtype=torch.float64)
    gpu = copy.deepcopy(cpu).to(DEV)
    x = torch.randn(5, 4, 3, dtype=torch.float64)

    def grads(m, dev, edit):
        xd = x.to(dev).requires_grad_()
        out, hid = m(xd)
        h_n = hid[0] if isinstance(hid, tuple) else hid
        w = torch.linspace(-1, 1, out.numel(), dtype=torch.float64, device=dev).view_as(out)
        if edit:
            out.mul_(2.0).add_(1.0)
        else:
            out = out * 2.0 + 1.0
        loss = (out * w).sum() + h_n.pow(2).sum()
        return [g.cpu() for g in torch.autograd.grad(loss, [xd, *m.parameters()])]

    want = grads(cpu, "cpu", edit=False)
    for edit in (False, True):
        for a, b in zip(grads(gpu, DEV, edit), want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# ---- cells whose weights are reparametrized (read by attribute, not from _parameters) -------
@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_weight_normed_cell_matches_torch_on_the_gpu(kind):
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    ref = getattr(nn, kind)(3, 17, dtype=torch.float64, device=DEV)
    fused = fusedrnn.from_torch(ref)
    ref, fused = weight_norm(ref, "weight_hh"), weight_norm(fused, "weight_hh")
    x = torch.randn(4, 3, dtype=torch.float64, device=DEV)
    got, want = [], []
    for m, res in ((fused, got), (ref, want)):
        out = m(x)
        h = out[0] if isinstance(out, tuple) else out
        res += [h, *torch.autograd.grad(h.pow(2).sum(), list(m.parameters()))]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
