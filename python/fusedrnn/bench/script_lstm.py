"""A TorchScript LSTM in the style of PyTorch's ``benchmarks/fastrnns`` (``script_lstm``).

A scripted cell (two ``mm``s, ``chunk``, activations) and a scripted layer loop over time
(``unbind``, a Python-style loop, ``stack``), stacked in a small module. The layer uses the
fastrnns "premul" variant: the input projection of all steps is one GEMM before the loop.
Autograd runs through TorchScript's graph executor (fusing pointwise ops where it can), so this
is the "fuse the pointwise parts with a JIT" baseline. Gate order i, f, g, o as ``torch.nn``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .stacked_lstm import StackedLSTM


def lstm_cell(
    x: Tensor, hx: Tensor, cx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor]:
    gates = torch.mm(x, w_ih.t()) + b_ih + torch.mm(hx, w_hh.t()) + b_hh
    ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)
    ingate = torch.sigmoid(ingate)
    forgetgate = torch.sigmoid(forgetgate)
    cellgate = torch.tanh(cellgate)
    outgate = torch.sigmoid(outgate)
    cy = (forgetgate * cx) + (ingate * cellgate)
    hy = outgate * torch.tanh(cy)
    return hy, cy


def premul_lstm_cell(igates: Tensor, hx: Tensor, cx: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor]:
    gates = igates + torch.mm(hx, w_hh.t())
    ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)
    ingate = torch.sigmoid(ingate)
    forgetgate = torch.sigmoid(forgetgate)
    cellgate = torch.tanh(cellgate)
    outgate = torch.sigmoid(outgate)
    cy = (forgetgate * cx) + (ingate * cellgate)
    hy = outgate * torch.tanh(cy)
    return hy, cy


def lstm_layer(
    x: Tensor, hx: Tensor, cx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    igates = (torch.matmul(x, w_ih.t()) + (b_ih + b_hh)).unbind(0)
    outputs: list[Tensor] = []
    for t in range(len(igates)):
        hx, cx = premul_lstm_cell(igates[t], hx, cx, w_hh)
        outputs.append(hx)
    return torch.stack(outputs), hx, cx


# torch.jit.script is deprecated in favour of torch.compile; this baseline is TorchScript on
# purpose (what fastrnns measured), so the deprecation warning is silenced while it compiles.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r".*jit\.script.*deprecated", category=DeprecationWarning
    )
    lstm_cell = torch.jit.script(lstm_cell)
    premul_lstm_cell = torch.jit.script(premul_lstm_cell)
    lstm_layer = torch.jit.script(lstm_layer)


class ScriptLSTM(StackedLSTM):
    """Multi-layer (optionally bidirectional) LSTM on the scripted layer (see StackedLSTM)."""

    name = "ScriptLSTM"

    def layer(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        return lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh)


class ScriptLSTMCell(torch.nn.Module):
    """``torch.nn.LSTMCell`` equivalent on the scripted cell."""

    def __init__(self, ref: torch.nn.LSTMCell):
        super().__init__()
        for name, p in ref.named_parameters():
            self.register_parameter(name, torch.nn.Parameter(p.detach().clone()))

    def forward(self, x, hx):
        return lstm_cell(
            x, hx[0], hx[1], self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        )
