"""Weights that are not plain parameters, with torch.nn as the oracle: a parametrization
(torch.nn.utils.parametrize: weight_norm, spectral_norm, orthogonal), the old
torch.nn.utils.weight_norm and pruning (a forward pre-hook that sets a plain tensor
attribute), or a plain tensor assigned in a parameter's place. Forward and every gradient match
torch.nn's module in float64 (the cells had raised KeyError: they read their weights from
_parameters only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn
from torch.nn.utils import parametrizations

import fusedrnn

F64 = torch.float64
# torch.nn.utils.weight_norm is deprecated but still used, and still torch.nn's behaviour.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")
KINDS = {
    "rnn": (nn.RNN, fusedrnn.RNN, {"nonlinearity": "relu", "num_layers": 2}),
    "lstm": (nn.LSTM, fusedrnn.LSTM, {"num_layers": 2, "bidirectional": True}),
    "gru": (nn.GRU, fusedrnn.GRU, {"batch_first": True}),
    "rnncell": (nn.RNNCell, fusedrnn.RNNCell, {}),
    "lstmcell": (nn.LSTMCell, fusedrnn.LSTMCell, {}),
    "grucell": (nn.GRUCell, fusedrnn.GRUCell, {}),
}


def _orthogonal(m, name):  # a square weight: W_hh of an RNN, the other gates' rows otherwise
    parametrizations.orthogonal(m, name) if getattr(m, name).shape[0] == getattr(m, name).shape[
        1
    ] else parametrizations.weight_norm(m, name, dim=1)


def _plain_tensor(m, name):
    w = getattr(m, name).detach().clone() * 0.5
    delattr(m, name)
    setattr(m, name, w)


HOW = {
    "weight_norm": lambda m, name: parametrizations.weight_norm(m, name),
    "spectral_norm": lambda m, name: parametrizations.spectral_norm(m, name),
    "orthogonal": _orthogonal,
    "old_weight_norm": lambda m, name: nn.utils.weight_norm(m, name),
    "prune": lambda m, name: prune.l1_unstructured(m, name, amount=0.3),
    "plain_tensor": _plain_tensor,
}


def _weight_names(kind):
    cell = kind.endswith("cell")
    return ("weight_hh", "bias_ih") if cell else ("weight_hh_l0", "bias_ih_l0")


def _pair(kind, seed=0):
    tcls, fcls, kw = KINDS[kind]
    torch.manual_seed(seed)
    t = tcls(3, 5, dtype=F64, **kw)
    f = fcls(3, 5, dtype=F64, **kw)
    f.load_state_dict(t.state_dict())
    return t, f


def _input(kind):
    torch.manual_seed(1)
    if kind.endswith("cell"):
        return torch.randn(4, 3, dtype=F64)
    return torch.randn(4, 6, 3, dtype=F64) if kind == "gru" else torch.randn(6, 4, 3, dtype=F64)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _step(m, x):
    """Output and the gradients of every parameter (the parametrizations' originals too)."""
    for p in m.parameters():
        p.grad = None
    out = _first(m(x))
    torch.autograd.backward(out, torch.ones_like(out) / out.numel())
    return [out.detach()] + [p.grad for p in m.parameters()]


def _assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert (u is None) == (v is None)
        if u is not None:
            torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("how", sorted(HOW))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_forward_and_grads_match_torch(kind, how):
    t, f = _pair(kind)
    x = _input(kind)
    for m in (t, f):
        for name in _weight_names(kind):
            if how != "orthogonal" or name.startswith("weight"):
                torch.manual_seed(2)  # spectral_norm draws its power-iteration vectors
                HOW[how](m, name)
    for _ in range(2):  # spectral_norm updates its vectors on every training call
        _assert_same(_step(t, x), _step(f, x))
    with torch.no_grad():
        torch.testing.assert_close(_first(f(x)), _first(t(x)), rtol=1e-10, atol=1e-12)
