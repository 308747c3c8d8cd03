"""Weights that are not plain parameters, with torch.nn as the oracle: a parametrization
(torch.nn.utils.parametrize: weight_norm, spectral_norm, orthogonal), the old
torch.nn.utils.weight_norm and pruning (a forward pre-hook that sets a plain tensor
attribute), or a plain tensor assigned in a parameter's place. Forward and every gradient match
torch.nn's module in float64; convert / from_torch / to_torch keep such weights, hooks and
parametrizations (a conversion had dropped hooks: silently different outputs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn
from torch.nn.utils import parametrizations, parametrize

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


@pytest.mark.parametrize("how", ["weight_norm", "old_weight_norm", "prune"])
@pytest.mark.parametrize("kind", ["lstm", "lstmcell", "grucell"])
def test_convert_keeps_reparametrized_weights(kind, how):
    torch.manual_seed(0)
    t = KINDS[kind][0](3, 5, dtype=F64, **KINDS[kind][2])
    HOW[how](t, _weight_names(kind)[0])
    x = _input(kind)
    params = list(t.parameters())
    ref = _step(t, x)
    f = fusedrnn.convert(t)
    assert parametrize.type_before_parametrizations(f) is KINDS[kind][1]
    assert parametrize.is_parametrized(f) == (how == "weight_norm")
    assert all(a is b for a, b in zip(f.parameters(), params))
    _assert_same(_step(f, x), ref)
    if how == "weight_norm":
        # torch's tools still work on the converted module: remove_parametrizations leaves
        # the fused class with the computed weight as a parameter.
        parametrize.remove_parametrizations(f, _weight_names(kind)[0])
        assert type(f) is KINDS[kind][1]
        torch.testing.assert_close(_step(f, x)[0], ref[0], rtol=1e-10, atol=1e-12)


def test_convert_keeps_hooks_and_their_handles():
    torch.manual_seed(0)
    net = nn.Sequential(nn.LSTM(3, 5), nn.Identity())
    calls = []
    pre = net[0].register_forward_pre_hook(lambda m, args: calls.append(type(m).__name__))
    net[0].register_forward_hook(lambda m, args, out: (out[0] * 2, out[1]))
    x = _input("lstm").float()
    ref = net[0](x)[0]
    fusedrnn.convert(net)
    assert type(net[0]) is fusedrnn.LSTM
    torch.testing.assert_close(net[0](x)[0], ref, rtol=1e-5, atol=1e-6)
    assert calls == ["LSTM", "LSTM"]
    pre.remove()  # the handle made before the conversion removes the hook from the new module
    net[0](x)
    assert len(calls) == 2


@pytest.mark.parametrize("how", ["weight_norm", "old_weight_norm", "prune"])
@pytest.mark.parametrize("kind", ["gru", "rnncell"])
def test_from_torch_and_to_torch_copy_reparametrized_weights(kind, how):
    tcls, fcls, _ = KINDS[kind]
    name = _weight_names(kind)[0]
    t, _ = _pair(kind)
    HOW[how](t, name)
    x = _input(kind)
    ref = _step(t, x)  # after a forward: weights computed from parameters are graph nodes
    f = fusedrnn.from_torch(t)
    assert parametrize.type_before_parametrizations(f) is fcls
    assert parametrize.is_parametrized(f, name) == (how == "weight_norm")
    assert all(a is not b for a, b in zip(f.parameters(), t.parameters()))
    _assert_same(_step(f, x), ref)
    back = f.to_torch()
    assert parametrize.type_before_parametrizations(back) is tcls
    _assert_same(_step(back, x), ref)
    # Copies: changing the copy's parameters leaves the original's alone.
    with torch.no_grad():
        for p in f.parameters():
            p.add_(1.0)
    _assert_same(_step(t, x), ref)
    assert not torch.equal(_step(f, x)[0], ref[0])


def test_convert_leaves_parametrized_subclasses_alone():
    class MyGRU(nn.GRU):
        pass

    m = MyGRU(3, 5)
    parametrizations.weight_norm(m, "weight_hh_l0")
    assert fusedrnn.convert(m) is m
