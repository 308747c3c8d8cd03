"""The multi-layer, bidirectional stacking shared by the baseline LSTMs (TorchScript, numba) and
the TorchScript LayerNorm LSTM / GRU: copies of a reference module's parameters (same names and
order) and a forward that runs a one-direction layer function per layer and direction,
``hx=None``, time-major input."""

from __future__ import annotations

import torch


class StackedLSTM(torch.nn.Module):
    """Subclasses set ``name`` and implement ``layer(x, h0, c0, *weights)`` -> ``(output, h_n,
    c_n)`` for one direction, the weights being ``weight_names`` of that layer and direction
    (``has_cell = False``: ``layer(x, h0, *weights)`` -> ``(output, h_n)``). ``forward(x)``
    returns ``(output, (h_n, c_n))`` like ``torch.nn.LSTM`` (``(output, h_n)`` without a cell
    state). No packed input, no projection, no batch_first."""

    name = "StackedLSTM"
    weight_names: tuple[str, ...] = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    has_cell = True

    def __init__(self, ref: torch.nn.Module):
        super().__init__()
        if getattr(ref, "proj_size", 0) or ref.batch_first or not ref.bias:
            raise ValueError(f"{self.name} supports time-major, biased, unprojected modules only")
        self.num_layers, self.dirs = ref.num_layers, 2 if ref.bidirectional else 1
        self.hidden_size = ref.hidden_size
        for name, p in ref.named_parameters():
            self.register_parameter(name, torch.nn.Parameter(p.detach().clone()))

    def layer(self, x, h0, *weights):
        raise NotImplementedError

    def forward(self, x):
        zeros = x.new_zeros((x.shape[1], self.hidden_size))
        states = (zeros, zeros) if self.has_cell else (zeros,)
        finals: list[list[torch.Tensor]] = [[] for _ in states]
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.dirs):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                w = [getattr(self, f"{k}_{sfx}") for k in self.weight_names]
                out, *last = self.layer(x.flip(0) if d else x, *states, *w)
                outs.append(out.flip(0) if d else out)
                for acc, s in zip(finals, last):
                    acc.append(s)
            x = outs[0] if self.dirs == 1 else torch.cat(outs, -1)
        stacked = tuple(torch.stack(f) for f in finals)
        return x, (stacked if self.has_cell else stacked[0])
