"""The benchmark suite: runs end to end on tiny workloads and writes its outputs; its numba and
TorchScript baselines agree with torch.nn; its FLOP counts match the documented formulas.
No timing assertions."""

from __future__ import annotations

import json

import pytest
import torch

from fusedrnn.bench import workloads as wl
from fusedrnn.cli import main

numba = pytest.importorskip("numba")


def test_quick_run_writes_outputs(tmp_path):
    rc = main(["bench", "--quick", "--only", "stock,stream,mid-packed", "--out", str(tmp_path),
               "--tag", "t", "--profile"])  # fmt: skip
    assert rc == 0
    for name in ("t.json", "t.md", "t-trace.json", "t-trace.txt"):
        assert (tmp_path / name).stat().st_size > 0, name
    pytest.importorskip("matplotlib")
    assert (tmp_path / "t-speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads((tmp_path / "t.json").read_text())
    rows = data["results"]
    got = {(r["workload"], r["cell"], r["mode"], r["impl"]): r for r in rows}
    names = ["stock", "stream-h64", "stream-h256", "mid-packed"]
    for w in names:
        for cell in wl.CELLS:
            for mode in ("inference", "training"):
                for impl in ("nn", "fused"):
                    r = got[(w, cell, mode, impl)]
                    assert r["status"] == "ok", r
                    assert r["median_s"] > 0 and r["gflops"] > 0 and r["ceiling_frac"] > 0
                    assert r["flops"] == wl.flops(
                        next(x for x in wl.QUICK if x.name == w), cell, mode == "training"
                    )
    # The baselines were validated against torch.nn (else their status would be "invalid").
    for w in ("stock", "stream-h64"):
        for impl in ("torchscript", "numba", "nn-native"):
            if impl == "nn-native" and w.startswith("stream"):
                continue
            for mode in ("inference", "training"):
                assert got[(w, "lstm", mode, impl)]["status"] == "ok"
    assert got[("mid-packed", "lstm", "training", "numba")]["status"] == "skipped"
    assert got[("stock", "gru", "training", "nn-native")]["status"] == "skipped"
    mem = {(m["workload"], m["cell"], m["impl"]): m["peak_bytes"] for m in data["memory"]}
    assert mem[("stock", "lstm", "fused")] > 0 and mem[("stock", "lstm", "nn")] > 0
    assert any(t["target"].startswith("training stock lstm") for t in data["targets"])

    md = (tmp_path / "t.md").read_text()
    assert "## Training step" in md and "| stock | lstm |" in md
    trace = (tmp_path / "t-trace.json").read_text()
    assert "fusedrnn::lstm_stack" in trace and "stock/lstm/fused/training" in trace


@pytest.mark.parametrize("bidir", [False, True])
def test_sequence_baselines_match_torch(bidir):
    from fusedrnn.bench.numba_lstm import NumbaLSTM
    from fusedrnn.bench.script_lstm import ScriptLSTM

    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=bidir)
    x = torch.randn(6, 3, 5)
    ro, (rh, rc) = ref(x)
    g = torch.randn_like(ro)
    ro.backward(g)
    for cls in (ScriptLSTM, NumbaLSTM):
        m = cls(ref)
        for _ in range(3):  # TorchScript specialises over its first calls
            m.zero_grad()
            out, (h, c) = m(x)
            out.backward(g)
            torch.testing.assert_close(out, ro, msg=cls.__name__)
            torch.testing.assert_close(h, rh)
            torch.testing.assert_close(c, rc)
            for (name, p), q in zip(m.named_parameters(), ref.parameters()):
                torch.testing.assert_close(p.grad, q.grad, msg=f"{cls.__name__} {name}")


def test_cell_baselines_match_torch():
    from fusedrnn.bench.numba_lstm import NumbaLSTMCell
    from fusedrnn.bench.script_lstm import ScriptLSTMCell

    torch.manual_seed(1)
    ref = torch.nn.LSTMCell(4, 6)
    x, hx = torch.randn(2, 4), (torch.randn(2, 6), torch.randn(2, 6))
    rh, rc = ref(x, hx)
    rh.backward(torch.ones_like(rh))
    for cls in (ScriptLSTMCell, NumbaLSTMCell):
        m = cls(ref)
        with torch.no_grad():
            h, c = m(x, hx)
        torch.testing.assert_close(h, rh.detach())
        torch.testing.assert_close(c, rc.detach())
        h, _ = m(x, hx)
        h.backward(torch.ones_like(h))
        for p, q in zip(m.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize("w", wl.FULL, ids=lambda w: w.name)
@pytest.mark.parametrize("cell", wl.CELLS)
def test_flops_match_documented_formula(w, cell):
    G, H = wl.GATES[cell], w.H
    N = sum(w.batch_sizes())
    fwd = train = 0
    for layer in range(w.layers):
        i_l = w.I if layer == 0 else H * w.dirs
        fwd += w.dirs * 2 * N * G * H * (i_l + H)
        train += w.dirs * 2 * N * G * H * ((2 if layer == 0 else 3) * i_l + 3 * H)
    assert wl.flops(w, cell, training=False) == fwd
    assert wl.flops(w, cell, training=True) == train


def test_workload_selection():
    assert [w.name for w in wl.select("stream", quick=False)] == ["stream-h64", "stream-h256"]
    assert [w.name for w in wl.select("mid,stock", quick=True)] == ["stock", "mid"]
    assert len(wl.select(None, quick=False)) == 8
    with pytest.raises(ValueError, match="unknown workload"):
        wl.select("huge", quick=False)
    packed = wl.select("mid-packed", quick=False)[0]
    assert packed.batch_sizes()[0] == 64 and sorted(set(packed.batch_sizes())) == [16, 32, 48, 64]
