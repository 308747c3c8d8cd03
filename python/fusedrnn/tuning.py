"""The CPU backend's tuning knobs, settable at run time (one process-wide object,
cpp/cpu/tuning.h; environment variables only seed it at import).

========================  =====================================================================
``chunk_rows``            fewest batch rows per thread in a row-parallel time loop (>= 1)
``chunk_max_mflop``       largest step (MFLOP over all rows) split by rows; larger steps use
                          MKL's threads instead (>= 0)
``pack``                  pack the recurrent weight once per layer call (MKL, float32)
``pack_min_steps``        fewest time steps for packing to pay off (>= 1)
``fuse``                  the fused small-H float32 steps (recurrent GEMM in registers), and
                          the backward's dh = dG W_hh in registers (narrow_gemm.h)
``thin``                  products with a thin side (bias gradients, one-feature dW_ih) on
                          fusedrnn's own passes instead of MKL
========================  =====================================================================

Results do not depend on the knobs beyond floating-point rounding; they exist for A/B timing,
tests and machines whose best split differs. ``fusedrnn.build_info()["tuning"]`` reports them.

    with fusedrnn.tuning.override(fuse=False):   # the BLAS path for this block
        model(x)
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from contextlib import contextmanager

from . import _C

_KINDS = {
    "chunk_rows": (int, 1),
    "chunk_max_mflop": (int, 0),
    "pack": (bool, None),
    "pack_min_steps": (int, 1),
    "fuse": (bool, None),
    "thin": (bool, None),
}


def get() -> dict:
    """The current knobs."""
    return dict(_C.get_tuning())


def set(**knobs) -> dict:  # noqa: A001 - fusedrnn.tuning.set reads as intended
    """Sets the given knobs (the others keep their values); returns the previous ones."""
    prev = get()
    new = dict(prev)
    for name, value in knobs.items():
        if name not in _KINDS:
            raise TypeError(f"fusedrnn.tuning: unknown knob {name!r}; known: {', '.join(_KINDS)}")
        kind, low = _KINDS[name]
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError(f"fusedrnn.tuning: {name} must be a bool, got {value!r}")
        elif (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)  # numpy's integers too
            or not low <= value < 2**62  # (the C++ knobs are 64-bit)
        ):
            raise ValueError(
                f"fusedrnn.tuning: {name} must be an int in [{low}, 2**62), got {value!r}"
            )
        new[name] = value if kind is bool else int(value)
    _C.set_tuning(
        new["chunk_rows"],
        new["chunk_max_mflop"],
        new["pack"],
        new["pack_min_steps"],
        new["fuse"],
        new["thin"],
    )
    return prev


@contextmanager
def override(**knobs) -> Iterator[dict]:
    """Sets knobs for the ``with`` block and restores the previous ones after it."""
    prev = set(**knobs)
    try:
        yield get()
    finally:
        set(**prev)
