"""``fusedrnn bench``: profile the fused kernels against torch.nn and friends.

Workloads and FLOP formulas: ``workloads.py``; implementations: ``impls.py`` (with the
TorchScript and numba baselines in ``script_lstm.py`` and ``numba_lstm.py``); validation,
timing, GEMM ceiling and peak memory: ``measure.py``; files written: ``report.py``.
See ``bench/README.md`` at the repository root for what is measured and how to read it.
"""

from .runner import configure, run

__all__ = ["configure", "run"]
