"""LayerNorm LSTM / GRU in eager PyTorch: twins of ``fusedrnn.LayerNormLSTM`` / ``LayerNormGRU``
(same constructor, parameters, ``state_dict``, forward and outputs) that always run the readable
reference ``layernorm.reference_stack``: a Python loop over time steps, every step a handful of
torch ops (two ``mm``, the row mean and variance, the gates), differentiated by autograd.

torch.nn has no LayerNorm LSTM, so this is what a user without fusedrnn writes: the eager
baseline of ``fusedrnn bench --only layernorm`` and the ``torch`` side of
``fusedrnn stock --impl both`` / ``fusedrnn sentiment`` for the LayerNorm cells.
"""

from __future__ import annotations

from torch import nn

from .layernorm import LayerNormGRU, LayerNormLSTM, reference_stack

__all__ = ["EagerLayerNormGRU", "EagerLayerNormLSTM", "eager_twin"]


class _Eager:
    def _fast_step(self, input, hx):
        return None  # never the fused op: the forward goes on to _stack below

    def _stack(self, x, batch_sizes, h0, c0):
        fam = "ln_lstm" if self.mode == "LSTM" else "ln_gru"
        return reference_stack(fam, x, batch_sizes, h0, c0, self._flat_weights,
                               num_layers=self.num_layers, bidirectional=self.bidirectional,
                               has_biases=self.bias, dropout=self.dropout,
                               train=self.training)  # fmt: skip


class EagerLayerNormLSTM(_Eager, LayerNormLSTM):
    """:class:`fusedrnn.LayerNormLSTM`'s equations and interface, as an eager Python loop."""


class EagerLayerNormGRU(_Eager, LayerNormGRU):
    """:class:`fusedrnn.LayerNormGRU`'s equations and interface, as an eager Python loop."""


_TWINS = {LayerNormLSTM: EagerLayerNormLSTM, LayerNormGRU: EagerLayerNormGRU}


def eager_twin(module: nn.Module) -> nn.Module:
    """An eager copy of a fused LayerNorm module: same configuration, a copy of its weights,
    same device, dtype and training mode."""
    cls = next((e for f, e in _TWINS.items() if type(module) in (f, e)), None)
    if cls is None:
        raise TypeError(
            f"module: expected a fusedrnn.LayerNormLSTM or LayerNormGRU, got {type(module).__name__}"
        )
    w = module.weight_ih_l0
    twin = cls(module.input_size, module.hidden_size, num_layers=module.num_layers,
               bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
               bidirectional=module.bidirectional, device=w.device, dtype=w.dtype)  # fmt: skip
    twin.load_state_dict(module.state_dict())
    return twin.train(module.training)
