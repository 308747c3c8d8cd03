"""torch.jit.script of fused modules: scripted as their torch.nn twin (same Parameters, one
warning), inside models too; subclasses get a clear error naming torch.compile / torch.export."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn import _scripting

CASES = {
    "rnn_relu": lambda: fusedrnn.RNN(3, 5, num_layers=2, nonlinearity="relu"),
    "lstm_proj_bi": lambda: fusedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2),
    "gru_batch_first": lambda: fusedrnn.GRU(3, 5, batch_first=True),
    "rnn_cell": lambda: fusedrnn.RNNCell(3, 5, nonlinearity="tanh"),
    "lstm_cell": lambda: fusedrnn.LSTMCell(3, 5),
    "gru_cell": lambda: fusedrnn.GRUCell(3, 5, bias=False),
}


@pytest.fixture(autouse=True)
def _fresh_warnings():
    _scripting._warned.clear()
    yield


def _script(module):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scripted = torch.jit.script(module)
    # (torch 2.13 also warns that torch.jit.script itself is deprecated)
    return scripted, [w for w in caught if str(w.message).startswith("torch.jit.script: fusedrnn")]


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _tensors(o)]


class Wrap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


@pytest.mark.parametrize("name", CASES)
def test_scripted_module_matches_the_fused_one_and_shares_its_parameters(name):
    m = CASES[name]().eval()
    x = torch.randn(4, 6, 3) if "cell" not in name else torch.randn(6, 3)
    # Inside a model: a scripted torch.nn.LSTM alone has no callable forward (its forward is
    # overloaded), in torch as here; a cell alone scripts whole.
    scripted, warned = _script(Wrap(m))
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "torch.compile" in message and "torch.export" in message
    assert "fusedrnn" not in str(scripted.graph)
    with torch.no_grad():
        expected, got = Wrap(m)(x), scripted(x)
    for e, g in zip(_tensors(expected), _tensors(got), strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    for pname, p in m.named_parameters():
        assert getattr(scripted.m, pname).data_ptr() == p.data_ptr(), pname


def test_a_module_alone_scripts_like_its_torch_nn_twin():
    cell = fusedrnn.GRUCell(3, 4)
    x = torch.randn(2, 3)
    scripted, _ = _script(cell)
    torch.testing.assert_close(scripted(x), cell(x), atol=1e-5, rtol=1e-5)
    lstm = fusedrnn.LSTM(3, 4)
    scripted, _ = _script(lstm)
    assert scripted.weight_hh_l0.data_ptr() == lstm.weight_hh_l0.data_ptr()
    assert not lstm.weight_hh_l0.is_meta and not scripted.weight_hh_l0.is_meta


def test_the_warning_is_shown_once():
    _, first = _script(fusedrnn.GRU(2, 3))
    _, second = _script(fusedrnn.GRU(2, 3))
    assert (len(first), len(second)) == (1, 0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 8, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def test_a_model_with_a_converted_submodule_scripts_saves_and_loads():
    net = fusedrnn.convert(Net().eval())
    assert isinstance(net.rnn, fusedrnn.LSTM)
    fused_params = list(net.parameters())
    x = torch.randn(2, 7, 3)
    with torch.no_grad():
        expected = net(x)
    scripted, warned = _script(net)
    assert len(warned) == 1
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=1e-5)
    # torch.jit.script's protocol put the torch.nn module into the model (the warning says so);
    # convert swaps the fused one back, with the same Parameters.
    assert type(net.rnn) is nn.LSTM
    assert type(fusedrnn.convert(net).rnn) is fusedrnn.LSTM
    assert all(a is b for a, b in zip(net.parameters(), fused_params, strict=True))


def test_a_subclass_is_a_clear_error_naming_the_fused_paths():
    class MyLSTM(fusedrnn.LSTM):
        def forward(self, input, hx=None):
            return super().forward(input * 2, hx)

    with pytest.raises(RuntimeError, match=r"torch\.jit\.script cannot compile .*MyLSTM") as e:
        torch.jit.script(MyLSTM(2, 3))
    assert "torch.compile" in str(e.value) and "torch.export" in str(e.value)
