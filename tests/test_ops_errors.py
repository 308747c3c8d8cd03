"""Bad input gives a clear RuntimeError naming the argument (never a crash or a silent
wrong answer); empty batches and zero-length sequences give the correct empty result."""

import pytest
import torch

import fusedrnn
import fusedrnn.reference_torch as ref

ops = torch.ops.fusedrnn


def lstm_args(T=4, B=3, I=2, H=5, dtype=torch.float32):
    return dict(
        input=torch.randn(T, B, I, dtype=dtype),
        w_ih=torch.randn(4 * H, I, dtype=dtype),
        w_hh=torch.randn(4 * H, H, dtype=dtype),
        b_ih=torch.randn(4 * H, dtype=dtype),
        b_hh=torch.randn(4 * H, dtype=dtype),
    )


def call_lstm(a, **kw):
    return fusedrnn.lstm_layer(a["input"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], **kw)


@pytest.mark.parametrize(
    "mutate,kw,match",
    [
        (lambda a: a.update(input=torch.randn(4, 3)), {}, r"input to be 3-D \[T, B, I\]"),
        (lambda a: a.update(input=torch.randn(4, 3, 2, 1)), {}, r"input to be 3-D"),
        (lambda a: a.update(input=torch.randn(4, 3, 7)), {}, r"feature size 7 but w_ih expects I = 2"),
        (lambda a: a.update(w_ih=torch.randn(7, 2)), {}, r"w_ih has 7 rows"),
        (lambda a: a.update(w_hh=torch.randn(20, 4)), {}, r"w_hh of shape \[G\*H, P\]"),
        (lambda a: a.update(b_ih=torch.randn(19)), {}, r"b_ih of shape \[G\*H\] = \[20\]"),
        (lambda a: a.update(b_hh=torch.randn(20, 1)), {}, r"b_hh of shape"),
        (lambda a: a.update(w_hh=torch.randn(20, 5, dtype=torch.float64)), {}, r"w_hh to have dtype Float"),
        (lambda a: a.update(input=torch.randn(4, 3, 2, dtype=torch.float64)), {}, r"w_ih to have dtype Double"),
        (lambda a: a.update(input=torch.randn(4, 3, 2).half(), w_ih=torch.randn(20, 2).half(),
                            w_hh=torch.randn(20, 5).half(), b_ih=None, b_hh=None), {},
         r"float32 or float64"),
        (lambda a: a.update(input=torch.ones(4, 3, 2, dtype=torch.long)), {}, r"floating-point"),
        (lambda a: None, dict(h0=torch.randn(2, 5)), r"h0 of shape \[B, P\] = \[3, 5\]"),
        (lambda a: None, dict(c0=torch.randn(3, 4)), r"c0 of shape \[B, H\] = \[3, 5\]"),
        (lambda a: None, dict(h0=torch.randn(3, 5, dtype=torch.float64)), r"h0 to have dtype"),
        (lambda a: None, dict(w_hr=torch.randn(5, 5)), r"proj_size P = 5 must satisfy"),
    ],
)  # fmt: skip
def test_lstm_bad_input(mutate, kw, match):
    a = lstm_args()
    mutate(a)
    with pytest.raises(RuntimeError, match=match):
        call_lstm(a, **kw)


@pytest.mark.parametrize(
    "bs,match",
    [
        (torch.tensor([3, 3, 3]), r"sum to 9 but the packed input has 10 rows"),
        (torch.tensor([3, 4, 3]), r"non-increasing"),
        (torch.tensor([4, 3, 0, 3]), r"must be positive"),
        (torch.tensor([4.0, 3.0, 3.0]), r"1-D int64 CPU tensor"),
        (torch.tensor([[4, 3, 3]]), r"1-D int64 CPU tensor"),
    ],
)
def test_packed_bad_batch_sizes(bs, match):
    x = torch.randn(10, 2)
    with pytest.raises(RuntimeError, match=match):
        fusedrnn.gru_layer(x, torch.randn(15, 2), torch.randn(15, 5), batch_sizes=bs)


def test_packed_input_must_be_2d():
    with pytest.raises(RuntimeError, match=r"packed data 2-D \[N, I\]"):
        fusedrnn.gru_layer(torch.randn(5, 2, 2), torch.randn(15, 2), torch.randn(15, 5),
                           batch_sizes=torch.tensor([2, 2, 2, 2, 2]))  # fmt: skip


def test_cell_errors():
    with pytest.raises(RuntimeError, match=r"input to be 2-D \[B, I\]"):
        fusedrnn.gru_cell(torch.randn(3), torch.randn(1, 5), torch.randn(15, 3), torch.randn(15, 5))
    with pytest.raises(RuntimeError, match=r"hx of shape \[B, P\] = \[2, 5\]"):
        fusedrnn.rnn_cell(
            torch.randn(2, 3), torch.randn(3, 5), torch.randn(5, 3), torch.randn(5, 5)
        )
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu'"):
        fusedrnn.rnn_cell(torch.randn(2, 3), torch.randn(2, 5), torch.randn(5, 3),
                          torch.randn(5, 5), nonlinearity="gelu")  # fmt: skip


def test_backward_op_checks_gradient_shapes():
    a = lstm_args()
    out, hn, cn, ws = ops.lstm_layer(
        a["input"], None, None, None, a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], None, False
    )
    with pytest.raises(RuntimeError, match=r"grad_output with shape"):
        ops.lstm_layer_backward(torch.randn(3), None, None, a["input"], None, None, None,
                                a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], None, False, out, ws)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"saved workspace"):
        ops.lstm_layer_backward(None, None, None, a["input"], None, None, None, a["w_ih"],
                                a["w_hh"], a["b_ih"], a["b_hh"], None, False, out, ws[:2])  # fmt: skip


@pytest.mark.parametrize("family", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("T,B", [(0, 3), (4, 0), (0, 0)])
def test_empty_batch_and_zero_length(family, T, B):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[family]
    I, H = 2, 5
    x = torch.randn(T, B, I, requires_grad=True)
    w_ih = torch.randn(G * H, I, requires_grad=True)
    w_hh = torch.randn(G * H, H, requires_grad=True)
    h0 = torch.randn(B, H, requires_grad=True)
    fn = getattr(fusedrnn, f"{family}_layer")
    outs = fn(x, w_ih, w_hh, h0=h0)
    assert outs[0].shape == (T, B, H)
    assert outs[1].shape == (B, H)
    if T == 0:
        torch.testing.assert_close(outs[1], h0)  # no step: the state passes through
        assert outs[1].data_ptr() != h0.data_ptr() or B == 0
    if family == "lstm":
        assert outs[2].shape == (B, H)
    loss = sum(o.sum() for o in outs)
    gx, gw, gh = torch.autograd.grad(loss, [x, w_ih, h0])
    assert gx.shape == x.shape and gh.shape == h0.shape
    assert torch.count_nonzero(gw) == 0  # nothing ran, so no weight gradient
    if T == 0:
        torch.testing.assert_close(gh, torch.ones_like(h0))


def test_packed_zero_length():
    x = torch.randn(0, 2)
    h0 = torch.randn(3, 5)
    out, hn = fusedrnn.gru_layer(x, torch.randn(15, 2), torch.randn(15, 5), h0=h0,
                                 batch_sizes=torch.zeros(0, dtype=torch.long))  # fmt: skip
    assert out.shape == (0, 5)
    torch.testing.assert_close(hn, h0)


@pytest.mark.parametrize("family", ["rnn", "lstm", "gru"])
def test_non_contiguous_inputs_match_contiguous(family):
    """Transposed, sliced and expanded inputs give the same results as contiguous copies."""
    G = {"rnn": 1, "lstm": 4, "gru": 3}[family]
    T, B, I, H = 6, 3, 4, 5
    x = torch.randn(B, T, 2 * I, dtype=torch.float64).transpose(0, 1)[..., ::2]  # [T,B,I]
    w_ih = torch.randn(I, G * H, dtype=torch.float64).t()  # transposed weights
    w_hh = torch.randn(G * H, 2 * H, dtype=torch.float64)[:, 1::2]
    b_ih = torch.randn(2 * G * H, dtype=torch.float64)[::2]
    b_hh = torch.randn(1, dtype=torch.float64).expand(G * H)
    h0 = torch.randn(H, B, dtype=torch.float64).t()
    assert not any(t.is_contiguous() for t in (x, w_ih, w_hh, b_ih, h0))
    leaves = [t.requires_grad_() for t in (x, w_ih, w_hh, b_ih, b_hh, h0)]
    fn = getattr(fusedrnn, f"{family}_layer")
    a = fn(x, w_ih, w_hh, b_ih, b_hh, h0=h0)
    contig = [t.detach().contiguous().requires_grad_() for t in leaves]
    cx, cw_ih, cw_hh, cb_ih, cb_hh, ch0 = contig
    b = fn(cx, cw_ih, cw_hh, cb_ih, cb_hh, h0=ch0)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    r = getattr(ref, f"{family}_layer")(x, w_ih, w_hh, b_ih, b_hh, h0=h0)
    for u, v in zip(a, r):
        torch.testing.assert_close(u, v)
    gs = [torch.randn_like(o) for o in a]
    for u, v in zip(torch.autograd.grad(a, leaves, gs), torch.autograd.grad(b, contig, gs)):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


def test_mixed_devices_are_refused():
    # Only CPU exists here; the meta device stands in for "another device" (a meta argument
    # routes the call to the fake kernel, which must refuse the mix like the real ones do).
    with pytest.raises(RuntimeError, match=r"expected w_ih on device cpu like input, got meta"):
        fusedrnn.gru_layer(
            torch.randn(3, 2, 2), torch.randn(15, 2, device="meta"), torch.randn(15, 5)
        )
    with pytest.raises(RuntimeError, match=r"expected hx on device meta like input, got cpu"):
        fusedrnn.lstm_cell(torch.randn(3, 2, device="meta"), torch.randn(3, 5),
                           torch.randn(3, 5, device="meta"), torch.randn(20, 2, device="meta"),
                           torch.randn(20, 5, device="meta"))  # fmt: skip


def test_meta_tensors_give_shapes():
    x = torch.randn(7, 3, 2, device="meta")
    out, hn, cn = fusedrnn.lstm_layer(
        x,
        torch.randn(20, 2, device="meta"),
        torch.randn(20, 3, device="meta"),
        w_hr=torch.randn(3, 5, device="meta"),
    )
    assert out.shape == (7, 3, 3) and hn.shape == (3, 3) and cn.shape == (3, 5)


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_inference_skips_workspace_but_not_results(family):
    """Under no_grad the forward skips the workspace; outputs are bit-identical."""
    G = {"lstm": 4, "gru": 3}[family]
    x = torch.randn(6, 3, 4)
    w = [torch.randn(G * 5, 4, requires_grad=True), torch.randn(G * 5, 5, requires_grad=True),
         torch.randn(G * 5), torch.randn(G * 5)]  # fmt: skip
    fn = getattr(fusedrnn, f"{family}_layer")
    with torch.no_grad():
        a = fn(x, *w)
    b = fn(x, *w)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


def test_need_workspace_false_with_grad_is_refused():
    x = torch.randn(3, 2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"need_workspace=False, but its gradient is needed"):
        ops.lstm_layer(x, None, None, None, torch.randn(20, 4), torch.randn(20, 5), None, None,
                       None, False, False)  # fmt: skip


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_inference_allocates_no_workspace(family):
    """need_workspace=False (inference): the workspace comes back with 0 rows, for the layer
    and the stack ops alike, and the fake kernels agree (opcheck)."""
    G, W = {"lstm": (4, 5), "gru": (3, 4)}[family]
    x = torch.randn(6, 3, 4)
    w_ih, w_hh = torch.randn(G * 5, 4), torch.randn(G * 5, 5)
    layer = getattr(ops, f"{family}_layer")
    args = (x, None, None, None, w_ih, w_hh, None, None, None, False, False)
    if family == "gru":
        args = (x, None, None, w_ih, w_hh, None, None, False, False)
    ws = layer(*args)[-1]
    assert ws.shape == (0, W * 5)
    torch.library.opcheck(layer, args)
    stack = getattr(ops, f"{family}_stack")
    sargs = (x, None, None, None, [w_ih, w_hh, torch.randn(G * 5, 5), w_hh], False, 2, False,
             0.0, False, False)  # fmt: skip
    saved = stack(*sargs)[3]
    assert saved[1].shape == (0, W * 5) and saved[5].shape == (0, W * 5)  # layer 0, layer 1
    torch.library.opcheck(stack, sargs)


# ---- None for a required tensor (torch.ops passes it on as an undefined tensor) ---------------
def _cell_call(fn, missing, grad):
    I, H, B = 3, 4, 2
    G = {"lstm": 4, "gru": 3, "rnn": 1}[fn]
    t = {
        "input": torch.randn(B, I),
        "hx": torch.randn(B, H),
        "cx": torch.randn(B, H),
        "w_ih": torch.randn(G * H, I, requires_grad=grad),
        "w_hh": torch.randn(G * H, H, requires_grad=grad),
    }
    t[missing] = None
    if fn == "lstm":
        return fusedrnn.lstm_cell(t["input"], t["hx"], t["cx"], t["w_ih"], t["w_hh"])
    f = fusedrnn.gru_cell if fn == "gru" else fusedrnn.rnn_cell
    return f(t["input"], t["hx"], t["w_ih"], t["w_hh"])


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize(
    "fn,missing",
    [
        ("lstm", "hx"),
        ("lstm", "cx"),
        ("gru", "hx"),
        ("rnn", "hx"),
        ("lstm", "w_ih"),
        ("gru", "w_hh"),
        ("rnn", "input"),
    ],  # fmt: skip
)
def test_cell_none_for_a_required_tensor_is_named(fn, missing, grad):
    """A None state of a cell op crashed the process (its kernel read the undefined tensor)
    without grad, and raised 'tensor does not have a device' with it; a None weight was
    'dtype UNKNOWN_SCALAR'. Each now names the argument."""
    with pytest.raises(RuntimeError, match=rf"\b{missing} is undefined"):
        _cell_call(fn, missing, grad)


def test_cell_op_through_torch_ops_with_none_state():
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    w_ih, w_hh = torch.randn(16, 3), torch.randn(16, 4)
    with pytest.raises(RuntimeError, match="hx is undefined"):
        ops.lstm_cell(x, None, h, w_ih, w_hh, None, None)
    with pytest.raises(RuntimeError, match="cx is undefined"):
        ops.lstm_cell(x, h, None, w_ih, w_hh, None, None)


@pytest.mark.parametrize("fn", ["lstm_layer", "gru_layer", "rnn_layer"])
def test_batch_sizes_on_meta_with_real_input_is_refused(fn):
    """batch_sizes on the meta device made the dispatcher pick the fake kernel for a real
    call: uninitialised results and no error."""
    G = {"lstm_layer": 4, "gru_layer": 3, "rnn_layer": 1}[fn]
    x = torch.randn(10, 3)
    bs = torch.tensor([4, 3, 2, 1], device="meta")
    with pytest.raises(RuntimeError, match="batch_sizes as a CPU int64 tensor"):
        getattr(fusedrnn, fn)(x, torch.randn(G * 5, 3), torch.randn(G * 5, 5), batch_sizes=bs)
