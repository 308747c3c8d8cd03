"""fusedrnn.tuning: the CPU knobs are set and restored in-process, checked, reported by
build_info, and switch the kernels on the next call (no subprocess needed)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn import tuning


def test_get_set_override_restore_and_report():
    before = tuning.get()
    assert set(before) == {
        "chunk_rows",
        "chunk_max_mflop",
        "pack",
        "pack_min_steps",
        "fuse",
        "thin",
    }
    with tuning.override(chunk_rows=3, pack=False) as now:
        assert now["chunk_rows"] == 3 and now["pack"] is False
        assert fusedrnn.build_info()["tuning"] == now
        prev = tuning.set(fuse=False)
        assert prev["fuse"] == before["fuse"] and tuning.get()["fuse"] is False
    assert tuning.get() == before


@pytest.mark.parametrize(
    "knobs,error",
    [
        ({"chunk_rows": 0}, ValueError),
        ({"chunk_rows": 2.5}, ValueError),
        ({"pack_min_steps": True}, ValueError),
        ({"fuse": 1}, TypeError),
        ({"thin": "yes"}, TypeError),
        ({"threads": 2}, TypeError),
        ({"chunk_rows": 2**70}, ValueError),  # was pybind's TypeError
        ({"chunk_max_mflop": 2**63}, ValueError),
    ],
)
def test_bad_knobs_are_refused_by_name(knobs, error):
    before = tuning.get()
    with pytest.raises(error, match=next(iter(knobs))):
        tuning.set(**knobs)
    assert tuning.get() == before


@pytest.mark.skipif(
    fusedrnn.build_info()["cpu_kernels"].upper() not in ("AVX2", "AVX512"),
    reason="the fused LSTM step needs the AVX2 or AVX-512 kernel table",
)
def test_fuse_knob_switches_the_lstm_path_in_process():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 16, dtype=torch.float64)
    fused = fusedrnn.from_torch(ref).float()
    x = torch.randn(12, 5, 3)
    want = ref(x.double())[0]
    outs = {}
    for fuse in (True, False):
        with tuning.override(fuse=fuse):
            outs[fuse] = fused(x)[0]
        torch.testing.assert_close(outs[fuse].double(), want, rtol=1e-5, atol=1e-6)
    # different summation orders: the two paths really ran
    assert not torch.equal(outs[True], outs[False])


def test_row_chunk_knobs_keep_results():
    torch.manual_seed(0)
    m = fusedrnn.GRU(4, 8, 2)
    x = torch.randn(6, 40, 4)
    base = m(x)[0]
    with tuning.override(chunk_rows=1, chunk_max_mflop=1000):
        torch.testing.assert_close(m(x)[0], base, rtol=1e-5, atol=1e-6)
    with tuning.override(chunk_rows=100000):
        torch.testing.assert_close(m(x)[0], base, rtol=1e-5, atol=1e-6)


def test_numpy_integers_are_integers():
    import numpy as np

    before, limit = tuning.get(), fusedrnn.cpu_cache_info()["limit_bytes"]
    try:
        tuning.set(chunk_rows=np.int64(96), pack_min_steps=np.int32(4))
        assert tuning.get()["chunk_rows"] == 96 and tuning.get()["pack_min_steps"] == 4
        fusedrnn.set_cpu_cache_limit(np.int64(1 << 20))
        assert fusedrnn.cpu_cache_info()["limit_bytes"] == 1 << 20
    finally:
        tuning.set(**before)
        fusedrnn.set_cpu_cache_limit(limit)
