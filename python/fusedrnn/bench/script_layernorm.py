"""TorchScript LayerNorm LSTM and GRU in the style of PyTorch's ``benchmarks/fastrnns``
(``custom_lstms.py``'s ``LayerNormLSTMCell``, scripted, looped over time in a scripted layer).

The equations are fusedrnn's (``fusedrnn.LayerNormLSTM`` / ``LayerNormGRU``): LayerNorm of each
projection with a gain only, then the biases; the LSTM carries the unnormalised cell state and
normalises it for the output (custom_lstms carries the normalised one). Normalisation is
``F.layer_norm`` (ATen's fused kernel, what ``nn.LayerNorm`` calls; biased variance, eps 1e-5).
As ``script_lstm.py`` (the "premul" variant), the input projection of all steps is one GEMM
and one LayerNorm before the loop (LayerNorm is per row, so this is exact). Autograd runs
through TorchScript's graph executor: the "fuse the pointwise parts with a JIT" baseline.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.nn import functional as F

from .stacked_lstm import StackedLSTM


def ln_lstm_layer(x: Tensor, hx: Tensor, cx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                  b_hh: Tensor, ln_ih: Tensor, ln_hh: Tensor, ln_c: Tensor,
                  ln_c_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    G = w_ih.shape[0]
    H = G // 4
    pre = F.layer_norm(torch.matmul(x, w_ih.t()), [G], ln_ih, None, 1e-5) + (b_ih + b_hh)
    igates = pre.unbind(0)
    outputs: list[Tensor] = []
    for t in range(len(igates)):
        gates = igates[t] + F.layer_norm(torch.mm(hx, w_hh.t()), [G], ln_hh, None, 1e-5)
        ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)
        cx = torch.sigmoid(forgetgate) * cx + torch.sigmoid(ingate) * torch.tanh(cellgate)
        hx = torch.sigmoid(outgate) * torch.tanh(F.layer_norm(cx, [H], ln_c, ln_c_b, 1e-5))
        outputs.append(hx)
    return torch.stack(outputs), hx, cx


def ln_gru_layer(x: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
                 ln_ih: Tensor, ln_hh: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
    G = w_ih.shape[0]
    igates = F.layer_norm(torch.matmul(x, w_ih.t()), [G], ln_ih, b_ih, 1e-5).unbind(0)
    outputs: list[Tensor] = []
    for t in range(len(igates)):
        hgates = F.layer_norm(torch.mm(hx, w_hh.t()), [G], ln_hh, b_hh, 1e-5)
        xr, xz, xn = igates[t].chunk(3, 1)
        hr, hz, hn = hgates.chunk(3, 1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        hx = (1 - z) * n + z * hx
        outputs.append(hx)
    return torch.stack(outputs), hx


# torch.jit.script is deprecated in favour of torch.compile; this baseline is TorchScript on
# purpose (what fastrnns measured), so the deprecation warning is silenced while it compiles.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r".*jit\.script.*deprecated", category=DeprecationWarning
    )
    ln_lstm_layer = torch.jit.script(ln_lstm_layer)
    ln_gru_layer = torch.jit.script(ln_gru_layer)

_LN = ("layernorm_ih_weight", "layernorm_hh_weight")


class ScriptLayerNormLSTM(StackedLSTM):
    """Multi-layer (optionally bidirectional) LayerNorm LSTM on the scripted layer, built from a
    ``fusedrnn.LayerNormLSTM`` (its parameters copied, same names and order)."""

    name = "ScriptLayerNormLSTM"
    weight_names = StackedLSTM.weight_names + _LN + ("layernorm_c_weight", "layernorm_c_bias")

    def layer(self, x, h0, c0, *w):
        return ln_lstm_layer(x, h0, c0, *w)


class ScriptLayerNormGRU(StackedLSTM):
    """Multi-layer (optionally bidirectional) LayerNorm GRU on the scripted layer, built from a
    ``fusedrnn.LayerNormGRU``."""

    name = "ScriptLayerNormGRU"
    weight_names = StackedLSTM.weight_names + _LN
    has_cell = False

    def layer(self, x, h0, *w):
        return ln_gru_layer(x, h0, *w)
