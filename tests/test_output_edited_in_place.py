"""An output edited in place between forward and backward, with torch.nn as the oracle.

torch.nn's RNN and GRU save their own copies of the hidden sequence, so ``out.mul_(2)`` (or
``out += residual``) before backward works there; the fused stack op reads its output as the top
layer's hidden sequence, and raised instead. Now an edited output is recomputed in backward
(cpp/autograd.cpp), and gradients equal torch.nn's. Where dropout masks were drawn (training,
dropout > 0, two or more layers) the edit still raises, as torch.nn's LSTM on the CPU does
for every edit of its output."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn

F64 = torch.float64
KINDS = {
    "rnn": (nn.RNN, fusedrnn.RNN),
    "gru": (nn.GRU, fusedrnn.GRU),
    "lstm": (nn.LSTM, fusedrnn.LSTM),
}


def _pair(kind, **kw):
    tcls, fcls = KINDS[kind]
    torch.manual_seed(0)
    t = tcls(3, 5, dtype=F64, **kw)
    f = fcls(3, 5, dtype=F64, **kw)
    f.load_state_dict(t.state_dict())
    return t, f


def _grads(m, x, edit, packed=False):
    for p in m.parameters():
        p.grad = None
    x = x.clone().requires_grad_()
    inp = (
        pack_padded_sequence(x, torch.tensor([x.shape[0], 1]), enforce_sorted=False)
        if packed
        else x
    )
    out, hid = m(inp)
    if packed:
        out = out.data
    h_n = hid[0] if isinstance(hid, tuple) else hid
    w = torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)
    if edit:
        out.mul_(2.0).add_(1.0)  # in place, before backward
    else:
        out = out * 2.0 + 1.0
    ((out * w).sum() + h_n.pow(2).sum()).backward()
    return [x.grad] + [p.grad for p in m.parameters()]


def _close(a, b):
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_edited_output_gives_the_unedited_gradients(kind, layers, bidir, T):
    t, f = _pair(kind, num_layers=layers, bidirectional=bidir)
    torch.manual_seed(1)
    x = torch.randn(T, 2, 3, dtype=F64)
    ref = _grads(f, x, edit=False)
    _close(_grads(f, x, edit=True), ref)
    _close(ref, _grads(t, x, edit=False))
    if kind != "lstm":  # torch.nn's LSTM (oneDNN on the CPU) refuses the edit itself
        _close(_grads(t, x, edit=True), ref)


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_edited_output_of_a_packed_sequence(kind):
    t, f = _pair(kind, num_layers=2)
    torch.manual_seed(1)
    x = torch.randn(5, 2, 3, dtype=F64)
    _close(_grads(f, x, edit=True, packed=True), _grads(t, x, edit=True, packed=True))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_edit_with_dropout_masks_raises_like_torch_lstm(kind):
    _, f = _pair(kind, num_layers=2, dropout=0.3)
    out, _ = f(torch.randn(4, 2, 3, dtype=F64))
    out.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    # Without masks (eval, or one direction of the top layer only) the edit is fine.
    f.eval()
    out, _ = f(torch.randn(4, 2, 3, dtype=F64))
    out.mul_(2.0)
    out.sum().backward()


def test_edited_output_and_bias_raises():
    _, f = _pair("gru")
    out, _ = f(torch.randn(4, 2, 3, dtype=F64))
    out.mul_(2.0)
    with torch.no_grad():
        f.bias_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="needs its biases unchanged"):
        out.sum().backward()


def test_retain_graph_after_an_edit():
    _, f = _pair("rnn", num_layers=2)
    torch.manual_seed(1)
    x = torch.randn(4, 2, 3, dtype=F64)
    out, _ = f(x)
    out.mul_(3.0)
    first = torch.autograd.grad(out.sum(), f.weight_hh_l1, retain_graph=True)[0]
    second = torch.autograd.grad(out.sum(), f.weight_hh_l1)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        torch.autograd.grad(out.sum(), f.weight_hh_l1)


def test_saved_tensor_hooks_still_pack_the_output():
    """Under saved-tensor hooks (e.g. save_on_cpu) the output is saved for backward as any
    other tensor, so the hooks see it (and an edit raises, as it did before)."""
    _, f = _pair("gru")
    packed = []

    def pack(t):
        packed.append(t.data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = f(torch.randn(4, 2, 3, dtype=F64))
    assert out.data_ptr() in packed
    out.sum().backward()
