"""A numba ``@njit`` LSTM (forward and backward): the baseline "write the loop yourself".

The sequential part, which is what an RNN kernel is about, runs in compiled numba code: each
step's recurrent product ``h W_hh^T`` (hand-written loops, the inner one contiguous so LLVM
vectorises it), the gate activations and the state update; in backward, the gate gradients and
``dh_prev = dGates W_hh`` per step in reverse. The time-parallel GEMMs (input projection for all
steps, weight gradients over all steps, input gradient) are single large products done with
``torch.mm`` (BLAS) outside the loop, as any sensible hand-written implementation would.

The numba code is single-threaded (no ``parallel=True``); BLAS calls use torch's threads. All
buffers are torch tensors (viewed as NumPy arrays without a copy), so the profiler's memory
accounting sees them. Gate order i, f, g, o and weight layouts as ``torch.nn.LSTM``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from .stacked_lstm import StackedLSTM


@njit(cache=True)
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@njit(cache=True)
def lstm_forward_loop(xw, w_hh_t, hs, cs, gates):
    """xw [T, B, 4H]: input projection plus both biases. w_hh_t [H, 4H]: W_hh transposed,
    contiguous. hs, cs [T+1, B, H]: index 0 holds h0/c0 on entry; steps 1..T are written (=).
    gates [T, B, 4H] (=): the activated gates i, f, g, o, saved for backward."""
    T, B, G = xw.shape
    H = G // 4
    acc = np.empty(G, dtype=xw.dtype)
    for t in range(T):
        for b in range(B):
            for j in range(G):
                acc[j] = xw[t, b, j]
            for k in range(H):
                hk = hs[t, b, k]
                for j in range(G):
                    acc[j] += hk * w_hh_t[k, j]
            for j in range(H):
                ig = _sigmoid(acc[j])
                fg = _sigmoid(acc[H + j])
                gg = math.tanh(acc[2 * H + j])
                og = _sigmoid(acc[3 * H + j])
                c = fg * cs[t, b, j] + ig * gg
                cs[t + 1, b, j] = c
                hs[t + 1, b, j] = og * math.tanh(c)
                gates[t, b, j] = ig
                gates[t, b, H + j] = fg
                gates[t, b, 2 * H + j] = gg
                gates[t, b, 3 * H + j] = og


@njit(cache=True)
def lstm_backward_loop(grad_out, dh, dc, w_hh, gates, cs, dgates):
    """grad_out [T, B, H]: gradient of the output sequence. dh, dc [B, H]: gradient of h_n/c_n
    on entry, of h0/c0 on exit (updated in place). w_hh [4H, H]. gates, cs: saved by forward.
    dgates [T, B, 4H] (=): gradient of the pre-activation gates."""
    T, B, H = grad_out.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            for j in range(H):
                ig = gates[t, b, j]
                fg = gates[t, b, H + j]
                gg = gates[t, b, 2 * H + j]
                og = gates[t, b, 3 * H + j]
                tc = math.tanh(cs[t + 1, b, j])
                dht = dh[b, j] + grad_out[t, b, j]
                dct = dc[b, j] + dht * og * (1.0 - tc * tc)
                dgates[t, b, j] = dct * gg * ig * (1.0 - ig)
                dgates[t, b, H + j] = dct * cs[t, b, j] * fg * (1.0 - fg)
                dgates[t, b, 2 * H + j] = dct * ig * (1.0 - gg * gg)
                dgates[t, b, 3 * H + j] = dht * tc * og * (1.0 - og)
                dc[b, j] = dct * fg
                dh[b, j] = 0.0
            for j in range(4 * H):
                d = dgates[t, b, j]
                for k in range(H):
                    dh[b, k] += d * w_hh[j, k]


@njit(cache=True)
def lstm_cell_step(x, h, c, w_ih_t, w_hh_t, bias, h_out, c_out):
    """One LSTM step, all in numba: x [B, I], h/c [B, H], w_ih_t [I, 4H], w_hh_t [H, 4H],
    bias [4H] (b_ih + b_hh). Writes h_out, c_out [B, H] (=)."""
    B, I = x.shape  # noqa: E741
    H = h.shape[1]
    G = 4 * H
    acc = np.empty(G, dtype=x.dtype)
    for b in range(B):
        for j in range(G):
            acc[j] = bias[j]
        for k in range(I):
            xk = x[b, k]
            for j in range(G):
                acc[j] += xk * w_ih_t[k, j]
        for k in range(H):
            hk = h[b, k]
            for j in range(G):
                acc[j] += hk * w_hh_t[k, j]
        for j in range(H):
            cy = _sigmoid(acc[H + j]) * c[b, j] + _sigmoid(acc[j]) * math.tanh(acc[2 * H + j])
            c_out[b, j] = cy
            h_out[b, j] = _sigmoid(acc[3 * H + j]) * math.tanh(cy)


class NumbaLSTMLayerFn(torch.autograd.Function):
    """One direction of one LSTM layer, time-major ``x [T, B, I]``."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        xw = torch.addmm(b_ih + b_hh, x.reshape(T * B, -1), w_ih.t()).view(T, B, 4 * H)
        hs = x.new_empty((T + 1, B, H))
        cs = x.new_empty((T + 1, B, H))
        gates = x.new_empty((T, B, 4 * H))
        hs[0] = h0
        cs[0] = c0
        w_hh_t = w_hh.detach().t().contiguous()
        lstm_forward_loop(
            xw.detach().numpy(), w_hh_t.numpy(), hs.numpy(), cs.numpy(), gates.numpy()
        )
        ctx.save_for_backward(x, w_ih, w_hh, hs, cs, gates)
        return hs[1:], hs[T].clone(), cs[T].clone()

    @staticmethod
    def backward(ctx, g_out, g_hn, g_cn):
        x, w_ih, w_hh, hs, cs, gates = ctx.saved_tensors
        T, B, I = x.shape  # noqa: E741
        H = w_hh.shape[1]
        g_out = x.new_zeros((T, B, H)) if g_out is None else g_out.contiguous()
        dh = x.new_zeros((B, H)) if g_hn is None else g_hn.clone()
        dc = x.new_zeros((B, H)) if g_cn is None else g_cn.clone()
        dgates = x.new_empty((T, B, 4 * H))
        lstm_backward_loop(g_out.numpy(), dh.numpy(), dc.numpy(), w_hh.detach().numpy(),
                           gates.numpy(), cs.numpy(), dgates.numpy())  # fmt: skip
        dg = dgates.view(T * B, 4 * H)
        dx = torch.mm(dg, w_ih).view(T, B, I) if ctx.needs_input_grad[0] else None
        dw_ih = torch.mm(dg.t(), x.reshape(T * B, I))
        dw_hh = torch.mm(dg.t(), hs[:-1].reshape(T * B, H))
        db = dg.sum(0)
        return dx, dh, dc, dw_ih, dw_hh, db, db.clone()


class NumbaLSTM(StackedLSTM):
    """Multi-layer (optionally bidirectional) LSTM on the numba layer (see StackedLSTM)."""

    name = "NumbaLSTM"

    def layer(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        return NumbaLSTMLayerFn.apply(x.contiguous(), h0, c0, w_ih, w_hh, b_ih, b_hh)


class NumbaLSTMCell(torch.nn.Module):
    """``torch.nn.LSTMCell`` equivalent. Under ``torch.no_grad`` one step runs entirely in numba
    (``lstm_cell_step``); with grad it runs the numba layer for T = 1 (autograd)."""

    def __init__(self, ref: torch.nn.LSTMCell):
        super().__init__()
        for name, p in ref.named_parameters():
            self.register_parameter(name, torch.nn.Parameter(p.detach().clone()))

    def forward(self, x, hx):
        h, c = hx
        if torch.is_grad_enabled():
            _, hy, cy = NumbaLSTMLayerFn.apply(
                x[None], h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
            )
            return hy, cy
        hy, cy = torch.empty_like(h), torch.empty_like(c)
        w_ih_t, w_hh_t, bias = self._step_weights()
        lstm_cell_step(
            x.numpy(), h.numpy(), c.numpy(), w_ih_t, w_hh_t, bias, hy.numpy(), cy.numpy()
        )
        return hy, cy

    def _step_weights(self):
        """Transposed weights and the summed bias, cached until a parameter changes (an online
        loop would keep them too)."""
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        key = tuple((p.data_ptr(), p._version) for p in params)
        if getattr(self, "_cache_key", None) != key:
            with torch.no_grad():
                self._cache = (
                    self.weight_ih.t().contiguous().numpy(),
                    self.weight_hh.t().contiguous().numpy(),
                    (self.bias_ih + self.bias_hh).numpy(),
                )
            self._cache_key = key
        return self._cache
