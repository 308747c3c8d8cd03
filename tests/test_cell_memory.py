"""A cell step's training memory and its saved workspace (cpp/include/fusedrnn/saved_release.h).

torch.nn's LSTM / GRU cell frees its gate workspace before the weight gradients are made
(separate autograd nodes); the fused cell lets go of it at the same point of its one backward
op, unless the graph is kept. Peak memory is counted as `make bench` counts it (the profiler's
allocation events over one step; fusedrnn.bench.measure.peak_step_bytes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn.bench.impls import Impl
from fusedrnn.bench.measure import peak_step_bytes

CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}


@pytest.fixture(autouse=True)
def _empty_buffer_cache():
    """Each test starts from an empty CPU buffer cache, so its warm-up steps leave the blocks
    of its own shapes there, as a training loop's first steps do. The cache hands out a block
    up to 1/8 larger than asked for (cpp/buffers.cpp): blocks left by earlier tests' larger
    shapes (test_cpu_fused_steps.py's) made a 384 KiB weight gradient take a 400 KiB one, and
    the step's peak read 16-41 KiB above torch.nn's."""
    fusedrnn.empty_cpu_cache()


def _inputs(cell, B, I, H):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, I, generator=g)
    hx = torch.randn(B, H, generator=g)
    if cell == "lstm":
        hx = (hx, torch.randn(B, H, generator=g))
    return x, hx, torch.randn(B, H, generator=g)


def _step(m, x, hx, g, **backward):
    def step():
        for p in m.parameters():
            p.grad = None
        out = m(x, hx)
        torch.autograd.backward(out[0] if isinstance(out, tuple) else out, g, **backward)

    return step


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("B,I,H", [(1, 1, 64), (1, 128, 256), (1, 5, 33)])
def test_training_step_peak_is_at_most_torch_nn(cell, B, I, H):
    """The bench's stream rows (B = 1 at H = 64 and 256) and an odd H. Before the release the
    fused LSTM / GRU held 0.5-1.5 KiB more than torch.nn at H = 64. (With B > 1 they still
    hold one [B, H] or [4H] buffer more: the LSTM's dc, the GRU's column sums.)"""
    torch.manual_seed(0)
    ref = CELLS[cell](I, H)
    fused = fusedrnn.from_torch(ref)
    x, hx, g = _inputs(cell, B, I, H)
    peaks = []
    for m in (ref, fused):
        step = _step(m, x, hx, g)
        for _ in range(2):
            step()
        impl = Impl(name="", module=m, call=lambda: None)
        peaks.append(peak_step_bytes(impl, step))
    assert peaks[1] <= peaks[0], f"fused {peaks[1]} B, torch.nn {peaks[0]} B"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_kept_graph_keeps_the_workspace(cell):
    """retain_graph: the second backward reads the same workspace and gives the same
    gradients; a third after a plain one fails as torch.nn's does."""
    torch.manual_seed(0)
    m = fusedrnn.from_torch(CELLS[cell](4, 9))
    x, hx, g = _inputs(cell, 3, 4, 9)
    out = m(x, hx)
    y = out[0] if isinstance(out, tuple) else out
    first = torch.autograd.grad(y, list(m.parameters()), g, retain_graph=True)
    second = torch.autograd.grad(y, list(m.parameters()), g)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        torch.autograd.grad(y, list(m.parameters()), g)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_released_and_kept_workspace_give_the_same_gradients(cell):
    torch.manual_seed(0)
    m = fusedrnn.from_torch(CELLS[cell](4, 9))
    x, hx, g = _inputs(cell, 1, 4, 9)
    grads = []
    for kw in ({}, {"retain_graph": True}, {"create_graph": True}):
        _step(m, x, hx, g, **kw)()
        grads.append([p.grad.detach().clone() for p in m.parameters()])
    for other in grads[1:]:
        for a, b in zip(grads[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gru_bias_gradients_do_not_share_memory():
    """b_hh's gradient is a view of the gate gradients (no copy); b_ih's must not overlap it,
    or accumulating into one would change the other."""
    torch.manual_seed(0)
    m = fusedrnn.from_torch(nn.GRUCell(3, 5))
    x, hx, g = _inputs("gru", 1, 3, 5)
    for _ in range(2):  # the second step accumulates in place into the first step's grads
        m(x, hx).backward(g)
    ref = nn.GRUCell(3, 5)
    ref.load_state_dict(m.state_dict())
    for _ in range(2):
        ref(x, hx).backward(g)
    torch.testing.assert_close(m.bias_ih.grad, ref.bias_ih.grad)
    torch.testing.assert_close(m.bias_hh.grad, ref.bias_hh.grad)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_workspace_modified_in_place_is_refused(cell):
    """The op's workspace output, changed before backward: an error, as save_for_backward's
    version check gives."""
    torch.manual_seed(0)
    H, I = 6, 4
    G = 4 if cell == "lstm" else 3
    w_ih = torch.randn(G * H, I, requires_grad=True)
    w_hh = torch.randn(G * H, H, requires_grad=True)
    x, hx = torch.randn(2, I), torch.randn(2, H)
    if cell == "lstm":
        h, c, ws = torch.ops.fusedrnn.lstm_cell_autograd(x, hx, hx.clone(), w_ih, w_hh, None, None)
    else:
        h, ws = torch.ops.fusedrnn.gru_cell_autograd(x, hx, w_ih, w_hh, None, None)
    ws.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.sum().backward()


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
@pytest.mark.parametrize("I,H", [(1, 64), (128, 256)])
def test_layer_call_at_t1_peak_is_at_most_torch_nn(cell, I, H):
    """The bench's stream-layer rows: a T = 1, B = 1 layer call given its state, backward
    from the output only. The stack op returned its one state gradient as a stacked copy, a
    second [B, H] alive at the peak (RNN: +256 B at H = 64); now a view. (The GRU still holds
    [B, 3H] more than torch.nn here: its [N, 4H] gate gradients and its workspace, which the
    stack op keeps to the end of its backward.)"""
    torch.manual_seed(0)
    ref = {"lstm": nn.LSTM, "rnn": nn.RNN}[cell](I, H)
    fused = fusedrnn.from_torch(ref)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, I, generator=g)
    h = torch.randn(1, 1, H, generator=g)
    hx = (h, torch.randn(1, 1, H, generator=g)) if cell == "lstm" else h
    grad = torch.randn(1, 1, H, generator=g)
    peaks = []
    for m in (ref, fused):

        def step(m=m):
            for p in m.parameters():
                p.grad = None
            torch.autograd.backward(m(x, hx)[0], grad)

        for _ in range(2):
            step()
        peaks.append(peak_step_bytes(Impl(name="", module=m, call=lambda: None), step))
    assert peaks[1] <= peaks[0], f"fused {peaks[1]} B, torch.nn {peaks[0]} B"
