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
        input,
        [h],
        batch_sizes,
        reverse,
    )
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
        input,
        [h, c],
        batch_sizes,
        reverse,
    )
    return out, h, c


def gru_layer(input, w_ih, w_hh, b_ih=None, b_hh=None, *, h0=None, batch_sizes=None, reverse=False):
    H = w_hh.shape[1]
    B = _batch(input, batch_sizes, h0)
    h = h0 if h0 is not None else input.new_zeros(B, H)
    out, (h,) = layer(
        lambda x, h: gru_step(x, h, w_ih, w_hh, b_ih, b_hh), input, [h], batch_sizes, reverse
    )
    return out, h


# ---- LayerNorm LSTM / GRU (Ba, Kiros & Hinton 2016, as haste) ------------------------------
LN_EPS = 1e-5


def layer_norm(v, w, b=None):
    """LN(v; w, b) = w (v - mean(v)) / sqrt(var(v) + 1e-5) (+ b) over the last dimension,
    biased variance: what the fused LayerNorm kernels compute."""
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    y = w * ((v - mean) * torch.rsqrt(var + LN_EPS))
    return y + b if b is not None else y


def ln_lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, ln_ih, ln_hh, ln_c, ln_c_b):
    """a = LN(x W_ih^T; ln_ih) + LN(h W_hh^T; ln_hh) + b_ih + b_hh; c' = sigmoid(f) c +
    sigmoid(i) tanh(g); h' = sigmoid(o) tanh(LN(c'; ln_c) + ln_c_b). Returns (h', c')."""
    a = layer_norm(x @ w_ih.t(), ln_ih) + layer_norm(h @ w_hh.t(), ln_hh)
    if b_ih is not None:
        a = a + b_ih + b_hh
    i, f, g, o = a.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(layer_norm(c, ln_c, ln_c_b))
    return h, c


def ln_gru_step(x, h, w_ih, w_hh, b_ih, b_hh, ln_ih, ln_hh):
    """gi = LN(x W_ih^T; ln_ih) + b_ih; gh = LN(h W_hh^T; ln_hh) + b_hh; r, z = sigmoid;
    n = tanh(gi_n + r gh_n); h' = (1 - z) n + z h."""
    gi = layer_norm(x @ w_ih.t(), ln_ih, b_ih)
    gh = layer_norm(h @ w_hh.t(), ln_hh, b_hh)
    xr, xz, xn = gi.chunk(3, dim=1)
    hr, hz, hn = gh.chunk(3, dim=1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def ln_lstm_layer(input, w_ih, w_hh, b_ih, b_hh, ln_ih, ln_hh, ln_c, ln_c_b, *, h0=None, c0=None,
                  batch_sizes=None, reverse=False):  # fmt: skip
    H = w_hh.shape[1]
    B = _batch(input, batch_sizes, h0)
    h = h0 if h0 is not None else input.new_zeros(B, H)
    c = c0 if c0 is not None else input.new_zeros(B, H)
    out, (h, c) = layer(
        lambda x, h, c: ln_lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, ln_ih, ln_hh, ln_c, ln_c_b),
        input,
        [h, c],
        batch_sizes,
        reverse,
    )
    return out, h, c


def ln_gru_layer(
    input, w_ih, w_hh, b_ih, b_hh, ln_ih, ln_hh, *, h0=None, batch_sizes=None, reverse=False
):
    H = w_hh.shape[1]
    B = _batch(input, batch_sizes, h0)
    h = h0 if h0 is not None else input.new_zeros(B, H)
    out, (h,) = layer(
        lambda x, h: ln_gru_step(x, h, w_ih, w_hh, b_ih, b_hh, ln_ih, ln_hh),
        input,
        [h],
        batch_sizes,
        reverse,
    )
    return out, h


def ln_layer_weights(fam, w, bias):
    """One (layer, direction)'s slice of the LayerNorm stack's flat weight list, as keyword
    arguments of ln_{lstm,gru}_layer: [w_ih, w_hh, (b_ih, b_hh), ln_ih, ln_hh, (LSTM: ln_c,
    (ln_c_b))] (the biases, ln_c_b included, only with has_biases)."""
    k = {"w_ih": w[0], "w_hh": w[1], "b_ih": None, "b_hh": None}
    rest = list(w[2:])
    if bias:
        k["b_ih"], k["b_hh"] = rest[0], rest[1]
        rest = rest[2:]
    k["ln_ih"], k["ln_hh"] = rest[0], rest[1]
    if fam == "ln_lstm":
        k["ln_c"] = rest[2]
        k["ln_c_b"] = rest[3] if bias else None
    return k
