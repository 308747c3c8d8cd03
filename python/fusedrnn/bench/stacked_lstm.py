"""The multi-layer, bidirectional stacking shared by the baseline LSTMs (TorchScript, numba):
copies of a ``torch.nn.LSTM``'s parameters (same names and order) and a forward that runs a
one-direction layer function per layer and direction, ``hx=None``, time-major input."""

from __future__ import annotations

import torch


class StackedLSTM(torch.nn.Module):
    """Subclasses set ``name`` and implement ``layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh)`` ->
    ``(output, h_n, c_n)`` for one direction. ``forward(x)`` returns ``(output, (h_n, c_n))``
    like ``torch.nn.LSTM``. No packed input, no projection, no batch_first."""

    name = "StackedLSTM"

    def __init__(self, ref: torch.nn.LSTM):
        super().__init__()
        if ref.proj_size or ref.batch_first or not ref.bias:
            raise ValueError(f"{self.name} supports time-major, biased, unprojected LSTMs only")
        self.num_layers, self.dirs = ref.num_layers, 2 if ref.bidirectional else 1
        self.hidden_size = ref.hidden_size
        for name, p in ref.named_parameters():
            self.register_parameter(name, torch.nn.Parameter(p.detach().clone()))

    def layer(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        raise NotImplementedError

    def forward(self, x):
        zeros = x.new_zeros((x.shape[1], self.hidden_size))
        hn, cn = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.dirs):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                w = [
                    getattr(self, f"{k}_{sfx}")
                    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                ]
                out, h, c = self.layer(x.flip(0) if d else x, zeros, zeros, *w)
                outs.append(out.flip(0) if d else out)
                hn.append(h)
                cn.append(c)
            x = outs[0] if self.dirs == 1 else torch.cat(outs, -1)
        return x, (torch.stack(hn), torch.stack(cn))
