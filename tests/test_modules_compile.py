"""torch.compile (fullgraph, dynamic batch) and torch.export of models using the modules.

Most tests use the ``aot_eager`` backend: it runs Dynamo and AOTAutograd (the fake kernels and
the registered autograd of the ops, forward and backward graphs) without code generation, which
keeps the suite fast on a small machine. One test runs the default inductor backend end to end.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Seq(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        if kind == "lstm":
            self.rnn = fusedrnn.LSTM(
                3, 5, num_layers=2, bidirectional=True, batch_first=True, proj_size=2
            )
            out = 4
        elif kind == "gru":
            self.rnn = fusedrnn.GRU(3, 5, num_layers=2, batch_first=True)
            out = 5
        else:
            self.rnn = fusedrnn.RNN(3, 5, nonlinearity="relu", bidirectional=True)
            out = 10
        self.head = nn.Linear(out, 1)

    def forward(self, x, hx=None):
        o, h = self.rnn(x, hx)
        hs = h if isinstance(h, tuple) else (h,)
        return self.head(o).sum() + sum(t.square().sum() for t in hs)


def _grads(model, x, fn):
    model.zero_grad()
    x = x.detach().requires_grad_()
    loss = fn(x)
    loss.backward()
    return [loss.detach(), x.grad] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_compile_fullgraph_dynamic_batch(kind):
    torch.manual_seed(0)
    model = Seq(kind)
    cnt = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=cnt)
    for B in (2, 3, 5, 6):
        x = torch.randn(B, 4, 3) if model.rnn.batch_first else torch.randn(4, B, 3)
        got = _grads(model, x, compiled)
        ref = _grads(model, x, model)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # One static graph, then one dynamic graph that serves every later batch size.
    assert cnt.frame_count <= 2


def test_compile_with_hidden_state_and_training_dropout():
    torch.manual_seed(0)
    rnn = fusedrnn.LSTM(3, 5, num_layers=3, dropout=0.5)
    compiled = torch.compile(lambda x, hx: rnn(x, hx), fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 2, 3, requires_grad=True)
    hx = (torch.randn(3, 2, 5, requires_grad=True), torch.randn(3, 2, 5))
    out, (h, c) = compiled(x, hx)
    out.sum().backward()
    assert out.shape == (4, 2, 5) and h.shape == c.shape == (3, 2, 5)
    assert x.grad is not None and hx[0].grad is not None
    rnn.eval()
    torch.testing.assert_close(compiled(x, hx)[0], rnn(x, hx)[0])


def test_compile_cells_time_loop():
    torch.manual_seed(0)
    cells = nn.ModuleList([fusedrnn.LSTMCell(3, 5), fusedrnn.GRUCell(5, 5),
                           fusedrnn.RNNCell(5, 5, nonlinearity="relu")])  # fmt: skip

    def fn(x):
        h = c = g = r = None
        for t in range(x.shape[1]):
            h, c = cells[0](x[:, t], None if h is None else (h, c))
            g = cells[1](h, g)
            r = cells[2](g, r)
        return r.sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for B in (2, 3, 4):
        x = torch.randn(B, 3, 3)
        a = _grads(cells, x, compiled)
        b = _grads(cells, x, fn)
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)


def test_compile_packed_input():
    torch.manual_seed(0)
    rnn = fusedrnn.GRU(3, 5, bidirectional=True)
    compiled = torch.compile(lambda p: rnn(p), fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 3, 3)
    p = pack_padded_sequence(x, torch.tensor([2, 4, 3]), enforce_sorted=False)
    (o1, h1), (o2, h2) = compiled(p), rnn(p)
    torch.testing.assert_close(o1.data, o2.data)
    torch.testing.assert_close(h1, h2)


def test_torch_nn_lstm_graph_breaks_but_converted_model_does_not():
    model = nn.Sequential()
    model.rnn = nn.LSTM(3, 5)
    fn = lambda x: model.rnn(x)[0].sum()  # noqa: E731
    with pytest.raises(Exception, match="RNN, GRU, or LSTM|LSTM"):
        torch.compile(fn, fullgraph=True, backend="eager")(torch.randn(4, 2, 3))
    torch._dynamo.reset()
    fusedrnn.convert(model)
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(torch.compile(fn, fullgraph=True, backend="eager")(x), fn(x))


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = fusedrnn.LSTM(3, 5, batch_first=True, proj_size=2)

    def forward(self, x):
        o, (h, c) = self.lstm(x)
        return o.square().sum() + h.sum() + c.sum()


def test_compile_inductor_forward_backward():
    """Default backend, code generation included; batch_first input (strides matter here)."""
    torch.manual_seed(0)
    model = Small()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 4, 3)
    for a, b in zip(_grads(model, x, compiled), _grads(model, x, model)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = fusedrnn.LSTM(
            3, 6, num_layers=2, bidirectional=True, batch_first=True, proj_size=2, dropout=0.3
        )
        self.gru = fusedrnn.GRU(4, 5, batch_first=True)
        self.cell = fusedrnn.GRUCell(5, 5)

    def forward(self, x):
        o, _ = self.lstm(x)
        o, h = self.gru(o)
        return o, self.cell(o[:, -1], h[0])


def test_export_eval_model_dynamic_batch():
    torch.manual_seed(0)
    model = Tagger().eval()
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(model, (torch.randn(2, 4, 3),), dynamic_shapes={"x": {0: batch}})
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {
        "fusedrnn.lstm_stack.default",
        "fusedrnn.gru_stack.default",
        "fusedrnn.gru_cell.default",
    } <= targets
    for B in (1, 5):
        x = torch.randn(B, 4, 3)
        for a, b in zip(ep.module()(x), model(x)):
            torch.testing.assert_close(a, b)
