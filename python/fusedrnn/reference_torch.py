"""Readable reference implementations of the fused layer and cell ops, one step at a time
with plain torch ops (differentiable by autograd). Same signatures and results as
fusedrnn.{rnn,lstm,gru}_layer / _cell, packed sequences and reverse included."""

from __future__ import annotations

import torch


def _linear(x, w, b):
    y = x @ w.t()
    return y + b if b is not None else y


def rnn_step(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    pre = _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr=None):
    gates = _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w_hr is not None:
        h = h @ w_hr.t()
    return h, c


def gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
    xr, xz, xn = _linear(x, w_ih, b_ih).chunk(3, dim=1)
    hr, hz, hn = _linear(h, w_hh, b_hh).chunk(3, dim=1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _steps(input, batch_sizes):
    """Per time step: (rows, data slice) for time-major or packed input."""
    if batch_sizes is None:
        return [(input.shape[1], input[t]) for t in range(input.shape[0])]
    out, off = [], 0
    for b in batch_sizes.tolist():
        out.append((b, input[off : off + b]))
        off += b
    return out


def layer(cell, input, states, batch_sizes=None, reverse=False):
    """Runs ``cell(x_t, *states_t) -> new states`` (first state = output) over a sequence.

    ``states``: full-batch initial states. Returns (output, final states)."""
    steps = _steps(input, batch_sizes)
    order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
    states = list(states)
    outs = [None] * len(steps)
    for t in order:
        rows, x = steps[t]
        new = cell(x, *[s[:rows] for s in states])
        new = new if isinstance(new, tuple) else (new,)
        states = [torch.cat([n, s[rows:]], 0) for n, s in zip(new, states)]
        outs[t] = new[0]
    if batch_sizes is None:
        output = torch.stack(outs, 0) if outs else input.new_empty((0, input.shape[1], 0))
    else:
        output = torch.cat(outs, 0) if outs else input.new_empty((0, 0))
    return output, states


def _batch(input, batch_sizes, h0):
    if h0 is not None:
        return h0.shape[0]
    if batch_sizes is None:
        return input.shape[1]
    return int(batch_sizes[0]) if len(batch_sizes) else 0


def rnn_layer(input, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh", h0=None,
              batch_sizes=None, reverse=False):  # fmt: skip
    H = w_hh.shape[1]
    B = _batch(input, batch_sizes, h0)
    h = h0 if h0 is not None else input.new_zeros(B, H)
    out, (h,) = layer(
        lambda x, h: rnn_step(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity),
        input, [h], batch_sizes, reverse,
    )  # fmt: skip
    return out.reshape(*out.shape[:-1], H) if out.numel() == 0 else out, h


def lstm_layer(input, w_ih, w_hh, b_ih=None, b_hh=None, *, w_hr=None, h0=None, c0=None,
               batch_sizes=None, reverse=False):  # fmt: skip
    H = w_ih.shape[0] // 4
    P = w_hh.shape[1]
    B = _batch(input, batch_sizes, h0)
    h = h0 if h0 is not None else input.new_zeros(B, P)
    c = c0 if c0 is not None else input.new_zeros(B, H)
    out, (h, c) = layer(
        lambda x, h, c: lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr),
        input, [h, c], batch_sizes, reverse,
    )  # fmt: skip
    return out, h, c


def gru_layer(input, w_ih, w_hh, b_ih=None, b_hh=None, *, h0=None, batch_sizes=None,
              reverse=False):  # fmt: skip
    H = w_hh.shape[1]
    B = _batch(input, batch_sizes, h0)
    h = h0 if h0 is not None else input.new_zeros(B, H)
    out, (h,) = layer(
        lambda x, h: gru_step(x, h, w_ih, w_hh, b_ih, b_hh), input, [h], batch_sizes, reverse
    )
    return out, h
