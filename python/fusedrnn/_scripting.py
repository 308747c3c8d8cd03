"""TorchScript (``torch.jit.script``) of the fused modules.

TorchScript cannot compile the fused modules' forward (custom ops with Python-registered
autograd and fallbacks), but ``torch.jit.script`` first calls ``__prepare_scriptable__`` on a
module and on each of its submodules and compiles what that returns. The fused modules return
their ``torch.nn`` equivalent holding the very same Parameters, so a model that uses them
scripts, runs, saves and loads (without fusedrnn) like its ``torch.nn`` twin, with a one-time
warning: TorchScript runs torch.nn's kernels, not the fused ones (``torch.compile`` and
``torch.export`` are the paths that keep them), and, by torch.jit.script's protocol, the
replacement also takes the fused submodule's place in the model that was scripted
(``fusedrnn.convert(model)`` swaps it back).

Subclasses of the fused modules may customise ``forward``; they raise a clear error instead.
"""

from __future__ import annotations

import warnings

from torch import nn

_warned: set[type] = set()

SUPPORTED_PATHS = "torch.compile(model) and torch.export.export(model, args) run the fused kernels"


def prepare_scriptable(module: nn.Module) -> nn.Module:
    """What ``torch.jit.script`` compiles in place of the fused ``module``."""
    from .modules import _TO_FUSED, _rebuild

    cls = type(module)
    if cls not in _TO_FUSED.values():
        raise RuntimeError(
            f"torch.jit.script cannot compile {cls.__module__}.{cls.__qualname__}: TorchScript "
            f"does not support fusedrnn's kernels, and only the fusedrnn classes themselves "
            f"(not subclasses, whose forward may differ) convert to their torch.nn equivalent "
            f"for scripting. {SUPPORTED_PATHS}."
        )
    torch_cls = cls._torch_cls
    if cls not in _warned:
        _warned.add(cls)
        warnings.warn(
            f"torch.jit.script: fusedrnn.{cls.__name__} is scripted as torch.nn."
            f"{torch_cls.__name__} with the same Parameters, so TorchScript runs torch.nn's "
            f"kernels, not the fused ones; {SUPPORTED_PATHS}. As torch.jit.script does with "
            f"__prepare_scriptable__, the torch.nn module also replaces the fused one inside "
            f"the model being scripted; fusedrnn.convert(model) swaps it back "
            f"(this warning is shown once)",
            stacklevel=4,
        )
    return _rebuild(module, torch_cls, share=True)
