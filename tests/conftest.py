import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


class DiskFull:
    """Writes that fail as a full disk does (OSError 28): a figure's savefig after writing half
    a file, or the rename that would put a result under its final name."""

    def __init__(self, monkeypatch):
        self._mp = monkeypatch

    def figures(self):
        from matplotlib.figure import Figure

        def half_then_fail(self, fname, *a, **k):
            with open(fname, "wb") as f:
                f.write(b"\x89PNG half")
            raise OSError(28, "No space left on device")

        self._mp.setattr(Figure, "savefig", half_then_fail)

    def renames(self, suffix: str):
        real_replace = os.replace

        def replace(src, dst):
            if str(dst).endswith(suffix):
                raise OSError(28, "No space left on device")
            real_replace(src, dst)

        self._mp.setattr(os, "replace", replace)


@pytest.fixture
def disk_full(monkeypatch):
    return DiskFull(monkeypatch)
