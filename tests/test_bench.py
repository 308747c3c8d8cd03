"""The benchmark suite: runs end to end on tiny workloads and writes its outputs; its numba and
TorchScript baselines agree with torch.nn; its FLOP counts match the documented formulas.
No timing assertions."""

from __future__ import annotations

import json

import pytest
import torch

import fusedrnn
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
    names = ["stock", "stream-h64", "stream-h256", "stream-layer-h64", "mid-packed"]
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
    # the runner passes its sgemm rate: every speed target gets both bounds
    peak = data["meta"]["bound_gflops"]
    assert peak >= data["meta"]["sgemm_peak_gflops"]
    assert peak >= max(r["gflops"] for r in data["results"] if r["status"] == "ok")
    fused, nn = (
        got[("stock", "lstm", "training", "fused")],
        got[("stock", "lstm", "training", "nn")],
    )
    (t,) = [t for t in data["targets"] if t["target"].startswith("training stock lstm")]
    assert t["bound"] == pytest.approx(nn["median_s"] * peak * 1e9 / fused["flops"])
    assert t["ceiling_bound"] == pytest.approx(nn["median_s"] / fused["ceiling_s"])

    md = (tmp_path / "t.md").read_text()
    assert "## Training step" in md and "| stock | lstm |" in md
    assert "| bound at peak rate | bound at GEMM ceiling |" in md
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


@pytest.mark.parametrize(
    "w,cell", [(w, c) for w in wl.FULL for c in w.cells], ids=lambda v: getattr(v, "name", v)
)
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
    assert [w.name for w in wl.select("stream", quick=False)] == [
        "stream-h64", "stream-h256", "stream-layer-h64", "stream-layer-h256"
    ]  # fmt: skip
    assert [w.name for w in wl.select("mid,stock", quick=True)] == ["stock", "mid"]
    assert len(wl.select(None, quick=False)) == 13
    assert [w.name for w in wl.select("layernorm", quick=True)] == ["ln-stock", "ln-sine", "ln-mid"]
    for w in wl.select("layernorm", quick=False):  # the shapes of stock, sine and mid
        twin = wl.select(w.name[3:], quick=False)[0]
        assert (w.B, w.T, w.I, w.H, w.layers) == (twin.B, twin.T, twin.I, twin.H, twin.layers)
        assert w.cells == wl.LN_CELLS and twin.cells == wl.CELLS
    with pytest.raises(ValueError, match="unknown workload"):
        wl.select("huge", quick=False)
    packed = wl.select("mid-packed", quick=False)[0]
    assert packed.batch_sizes()[0] == 64 and sorted(set(packed.batch_sizes())) == [16, 32, 48, 64]


# ---- LayerNorm group (issue 15) -------------------------------------------------------------
LN_IMPLS = ("eager", "fused", "torchscript")


def test_quick_layernorm_run_writes_rows_and_targets(tmp_path):
    rc = main(["bench", "--quick", "--only", "layernorm", "--out", str(tmp_path), "--tag", "ln"])
    assert rc == 0
    data = json.loads((tmp_path / "ln.json").read_text())
    got = {(r["workload"], r["cell"], r["mode"], r["impl"]): r for r in data["results"]}
    # only the LayerNorm implementations run the LayerNorm cells (no torch.nn rows)
    assert {k[3] for k in got} == set(LN_IMPLS)
    assert {k[1] for k in got} == set(wl.LN_CELLS)
    for w in wl.select("layernorm", quick=True):
        for cell in wl.LN_CELLS:
            for mode in ("inference", "training"):
                for impl in LN_IMPLS:
                    r = got[(w.name, cell, mode, impl)]
                    # "ok": validated against the eager baseline (else "invalid")
                    assert r["status"] == "ok", r
                    assert r["flops"] == wl.flops(w, cell, mode == "training") > 0
                    assert r["max_err"] <= 1e-3
                assert got[(w.name, cell, mode, "eager")]["speedup"] == pytest.approx(1.0)
    targets = [t for t in data["targets"] if "torchscript" in t["target"]]
    assert len(targets) == 2 * 3 * 2  # modes x workloads x cells
    for t in targets:
        assert t["measured"] > 0 and t["met"] == (t["measured"] >= 5.0)
    mem = {(m["workload"], m["cell"], m["impl"]): m for m in data["memory"]}
    assert mem[("ln-stock", "lnlstm", "fused")]["base_bytes"] > 0
    assert not any(t["target"].startswith("memory ln-") for t in data["targets"])
    md = (tmp_path / "ln.md").read_text()
    assert "## LayerNorm cells: training step" in md and "| ln-mid | lngru |" in md
    assert "fused >= 5x torchscript" in md


def test_layernorm_target_uses_the_named_implementation():
    from fusedrnn.bench.report import target_checks

    def row(impl, t, mode="training"):
        return {"workload": "ln-stock", "group": "layernorm", "cell": "lnlstm", "mode": mode,
                "impl": impl, "status": "ok", "median_s": t, "speedup": 3.0 / t}  # fmt: skip

    out = target_checks([row("eager", 3.0), row("torchscript", 1.0), row("fused", 0.25),
                         row("torchscript", 1.0, "inference"), row("fused", 0.5, "inference")],
                        [], 100.0)  # fmt: skip
    by = {t["target"]: t for t in out}
    assert by["training ln-stock lnlstm: fused >= 5x torchscript"]["measured"] == 4.0
    assert not by["training ln-stock lnlstm: fused >= 5x torchscript"]["met"]
    assert by["inference ln-stock lnlstm: fused >= 5x torchscript"]["measured"] == 2.0
    # without a torchscript row the target is reported as not met, never skipped silently
    (t,) = target_checks([row("fused", 0.25)], [], 100.0)
    assert t["measured"] is None and not t["met"]


def _result(impl, t, workload="stock", group="stock", cell="lstm", mode="training", **kw):
    """A synthetic "ok" result row as runner.bench_case writes it."""
    r = {"workload": workload, "group": group, "cell": cell, "mode": mode, "impl": impl,
         "status": "ok", "median_s": t, "speedup": None, "flops": 283e6, "ceiling_s": None}  # fmt: skip
    r.update(kw)
    ceil = r["ceiling_s"]
    r.update(gflops=r["flops"] / t / 1e9, ceiling_gflops=r["flops"] / ceil / 1e9 if ceil else 0.0,
             ceiling_frac=ceil / t if ceil else 0.0)  # fmt: skip
    return r


def test_target_bounds_are_baseline_time_over_gemm_time_at_sgemm_peak():
    from fusedrnn.bench.report import target_checks

    rows = [_result("nn", 4.07e-3, speedup=1.0),
            _result("fused", 2.0e-3, speedup=4.07e-3 / 2.0e-3, ceiling_s=1.1e-3),
            _result("torchscript", 3.0e-3, "ln-stock", "layernorm", "lnlstm"),
            _result("eager", 9.0e-3, "ln-stock", "layernorm", "lnlstm"),
            _result("fused", 1.0e-3, "ln-stock", "layernorm", "lnlstm", speedup=9.0)]  # fmt: skip
    by = {t["target"]: t for t in target_checks(rows, [], 100.0)}
    t = by["training stock lstm: speedup >= 3x"]
    # 283 MFLOP at 100 GFLOP/s take 2.83 ms at best: 4.07 / 2.83 = 1.438x < 3x
    assert t["bound"] == pytest.approx(4.07e-3 / 2.83e-3, rel=1e-12)
    assert t["bound"] == pytest.approx(1.43816, abs=1e-5)
    assert t["ceiling_bound"] == pytest.approx(4.07e-3 / 1.1e-3, rel=1e-12)
    assert t["need"] == 3.0 and not t["met"]
    # the LayerNorm target's baseline is the named implementation (torchscript), not eager
    ln = by["training ln-stock lnlstm: fused >= 5x torchscript"]
    assert ln["bound"] == pytest.approx(3.0e-3 / 2.83e-3, rel=1e-12)
    assert ln["ceiling_bound"] is None  # no ceiling_s in the row
    # the bound scales with the peak
    (t2,) = [x for x in target_checks(rows, [], 200.0) if x["target"].startswith("training stock")]
    assert t2["bound"] == pytest.approx(2 * t["bound"], rel=1e-12)


def test_target_bounds_are_none_without_their_data():
    from fusedrnn.bench.report import target_checks

    fused = _result("fused", 2.0e-3, speedup=2.0, ceiling_s=1e-3)
    nn = _result("nn", 4.0e-3, speedup=1.0)
    for peak in (None, 0.0):  # peak missing or not measured
        (t,) = target_checks([nn, fused], [], peak)
        assert t["bound"] is None and t["ceiling_bound"] == pytest.approx(4.0)
    (t,) = target_checks([nn, dict(fused, flops=0)], [], 100.0)
    assert t["bound"] is None
    (t,) = target_checks([fused], [], 100.0)  # no baseline row
    assert t["bound"] is None and t["ceiling_bound"] is None
    (t,) = target_checks([dict(nn, status="invalid"), fused], [], 100.0)
    assert t["bound"] is None
    # the large-workload ceiling row and memory rows carry no bounds
    large = [_result("nn", 0.2, "large", "large", speedup=1.0),
             _result("fused", 0.1, "large", "large", speedup=2.0, ceiling_s=0.08)]  # fmt: skip
    mem = [{"workload": "stock", "cell": "lstm", "impl": "fused", "peak_bytes": 5, "nn_bytes": 10}]
    out = target_checks(large, mem, 100.0)
    assert [t["target"] for t in out] == [
        "training large lstm: speedup >= 1x",
        "training large lstm: >= 90% of GEMM ceiling",
        "memory stock lstm: fused peak <= torch.nn",
    ]
    assert out[0]["bound"] == pytest.approx(0.2 / 2.83e-3)
    assert out[0]["ceiling_bound"] == pytest.approx(2.5)
    for t in out[1:]:
        assert t["bound"] is None and t["ceiling_bound"] is None


def test_bound_rate_is_the_best_gemm_rate_the_run_saw():
    from fusedrnn.bench.report import bound_rate

    rows = [_result("nn", 4.0e-3), _result("fused", 1.0e-3, ceiling_s=2.0e-3)]  # 283, 141.5
    assert bound_rate(rows, 100.0) == pytest.approx(283.0)
    assert bound_rate(rows, 400.0) == 400.0
    assert bound_rate([dict(r, status="invalid") for r in rows], 100.0) == 100.0
    assert bound_rate([], None) is None


def test_targets_table_shows_bounds_and_marks_targets_above_them():
    from fusedrnn.bench.report import markdown, target_checks

    rows = [_result("nn", 4.07e-3, speedup=1.0),
            _result("fused", 3.5e-3, speedup=4.07 / 3.5, ceiling_s=3.0e-3),  # 3x > bound 1.44x
            _result("nn", 4.0e-3, cell="gru", speedup=1.0, flops=90e6),
            _result("fused", 1.6e-3, cell="gru", speedup=2.5, flops=90e6),  # 4x < bound 4.44x
            _result("nn", 1.0e-3, cell="rnn", speedup=1.0, flops=1e6),
            _result("fused", 0.4e-3, cell="rnn", speedup=2.5, flops=1e6)]  # fmt: skip
    mem = [{"workload": "stock", "cell": "lstm", "impl": "fused", "peak_bytes": 5, "nn_bytes": 10}]
    targets = target_checks(rows, mem, 100.0)
    meta = {"tag": "t", "cpu": "cpu", "cpu_capability": "AVX2", "threads": 1, "torch": "x",
            "fusedrnn": "y", "date": "d", "command": "c", "sgemm_peak_gflops": 100.0,
            "min_run_time": 1.0}  # fmt: skip
    md = markdown(meta, rows, mem, targets)
    assert "| target | measured | bound at peak rate | bound at GEMM ceiling | met |" in md
    assert "| training stock lstm: speedup >= 3x | 1.16x | 1.44x | 1.36x | NO (above bound) |" in md
    assert "| training stock gru: speedup >= 4x | 2.50x | 4.44x | - | NO |" in md
    assert "| training stock rnn: speedup >= 2x | 2.50x | 100.00x | - | yes |" in md
    assert "| memory stock lstm: fused peak <= torch.nn | 0.50x | - | - | yes |" in md
    heading = md.index("## Targets")
    assert "square sgemm" in md[heading:] and "not strict" in md[heading:]
    # tables saved before the bounds existed still render
    old = [{"target": "training stock lstm: speedup >= 3x", "measured": 1.5, "met": False}]
    assert "| training stock lstm: speedup >= 3x | 1.50x | - | - | NO |" in markdown(
        meta, rows, mem, old
    )


@pytest.mark.parametrize("cell", wl.LN_CELLS)
@pytest.mark.parametrize("bidir", [False, True])
def test_layernorm_baselines_match_fused(cell, bidir):
    """The eager twin and the TorchScript layers compute the fused module's numbers (float64):
    outputs, final states and every parameter's gradient, LayerNorm gains included."""
    from fusedrnn.bench.script_layernorm import ScriptLayerNormGRU, ScriptLayerNormLSTM
    from fusedrnn.layernorm_eager import eager_twin

    torch.manual_seed(0)
    cls = fusedrnn.LayerNormLSTM if cell == "lnlstm" else fusedrnn.LayerNormGRU
    ref = cls(5, 7, num_layers=2, bidirectional=bidir).double()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.startswith("layernorm_"):
                p.uniform_(0.5, 1.5) if "_c_bias" not in name else p.uniform_(-0.5, 0.5)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    ro, rs = ref(x)
    g = torch.randn_like(ro)
    ro.backward(g)
    script = (ScriptLayerNormLSTM if cell == "lnlstm" else ScriptLayerNormGRU)(ref)
    for m in (eager_twin(ref), script):
        assert [n for n, _ in m.named_parameters()] == [n for n, _ in ref.named_parameters()]
        for _ in range(3):  # TorchScript specialises over its first calls
            m.zero_grad()
            out, state = m(x)
            out.backward(g)
            torch.testing.assert_close(out, ro)
            torch.testing.assert_close(state, rs)
            for (name, p), q in zip(m.named_parameters(), ref.parameters()):
                torch.testing.assert_close(p.grad, q.grad, msg=f"{type(m).__name__} {name}")


@pytest.mark.parametrize("cell", wl.LN_CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("train", [False, True])
def test_eager_twin_never_runs_a_fused_op(cell, dtype, train):
    """The eager baseline is a Python loop of plain torch ops: no fusedrnn op is dispatched,
    whether the call is one the fused module's one-call path would take (plain eager CPU,
    T = 1 or more) or not. (It once ran the fused op through that path and timed 1.00x.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    from fusedrnn.layernorm_eager import eager_twin

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.namespace)
            return func(*args, **(kwargs or {}))

    cls = fusedrnn.LayerNormLSTM if cell == "lnlstm" else fusedrnn.LayerNormGRU
    twin = eager_twin(cls(3, 5).to(dtype).train(train))
    for T in (1, 4):
        x = torch.randn(T, 2, 3, dtype=dtype)
        with torch.set_grad_enabled(train), Ops() as ops:
            out, _ = twin(x)
            if train:
                out.sum().backward()
        assert "fusedrnn" not in ops.names and "aten" in ops.names


def test_bench_rejects_cells_no_workload_runs(capsys):
    with pytest.raises(SystemExit, match="no workload runs the cells.*--only layernorm"):
        main(["bench", "--quick", "--only", "stock", "--cells", "lnlstm"])
    with pytest.raises(SystemExit, match="unknown cells.*lnlstm"):
        main(["bench", "--quick", "--cells", "lnrnn"])


def test_eager_twin_copies_configuration_and_refuses_other_modules():
    from fusedrnn.layernorm_eager import EagerLayerNormLSTM, eager_twin

    m = fusedrnn.LayerNormLSTM(3, 4, num_layers=2, batch_first=True, dropout=0.5, bias=False)
    m.eval()
    twin = eager_twin(m)
    assert type(twin) is EagerLayerNormLSTM and not twin.training
    assert (twin.batch_first, twin.dropout, twin.bias, twin.num_layers) == (True, 0.5, False, 2)
    assert all(torch.equal(twin.state_dict()[k], v) for k, v in m.state_dict().items())
    with pytest.raises(TypeError, match="module: expected a fusedrnn.LayerNormLSTM or"):
        eager_twin(torch.nn.LSTM(3, 4))


# ---- arguments checked before the benchmark; results written atomically -------------------


@pytest.fixture
def no_benchmark(monkeypatch):
    """Fails the test if the benchmark starts (the sgemm peak is its first measurement)."""
    from fusedrnn.bench import measure

    def boom(*a, **k):
        raise AssertionError("the benchmark started before the arguments were checked")

    monkeypatch.setattr(measure, "sgemm_gflops", boom)


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--min-run-time", "nan", "finite"),
        ("--min-run-time", "-1", "must be > 0"),
        ("--min-run-time", "0", "must be > 0"),
        ("--threads", "-1", "must be >= 0"),
        ("--threads", "100000", "at most 4 x this machine's CPUs"),
        ("--tag", "a/b", "plain file-name stem"),
        ("--tag", "../../x", "plain file-name stem"),
        ("--tag", ".hidden", "plain file-name stem"),
        ("--tag", "", "plain file-name stem"),
        ("--seed", "-1", "must be >= 0"),
    ],
)
def test_bad_arguments_fail_before_the_benchmark(tmp_path, capsys, no_benchmark, flag, value,
                                                 says):  # fmt: skip
    threads = torch.get_num_threads()
    with pytest.raises(SystemExit) as e:
        main(["bench", "--quick", "--only", "stock", flag, value, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and says in err, err
    assert not (tmp_path / "o").exists()
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("under", [False, True])
def test_unwritable_out_fails_before_the_benchmark(tmp_path, no_benchmark, under):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "sub" if under else blocker
    with pytest.raises(SystemExit, match="--out .*cannot write there"):
        main(["bench", "--quick", "--only", "stock", "--out", str(out), "--tag", "t"])
    assert blocker.read_text() == "not a folder"


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_a_failing_save_leaves_no_partial_file(tmp_path, monkeypatch, disk_full):
    """A failing rename (results) or a plot failing halfway leaves nothing at the final names,
    and no temporary files."""
    from fusedrnn.bench import report

    monkeypatch.setattr(report, "markdown", lambda *a: "# results\n")
    monkeypatch.setattr(report, "plot", lambda *a: False)
    disk_full.renames(".md")  # after the .json: that one stays, whole
    with pytest.raises(OSError, match="No space"):
        report.save(tmp_path, "t", {"tag": "t"}, [], [], [])
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
    assert json.loads((tmp_path / "t.json").read_text())["meta"] == {"tag": "t"}
    monkeypatch.undo()

    pytest.importorskip("matplotlib")
    disk_full.figures()
    with pytest.raises(OSError, match="No space"):
        report.plot([], tmp_path / "t-speedup.png", "t")
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


@pytest.mark.parametrize(
    "model, capability, threads, tag",
    [
        ("AMD EPYC", "AVX512", 2, "amd-epyc-avx512-2t"),
        ("AMD EPYC", "AVX2", 2, "amd-epyc-avx2-2t"),
        ("Intel(R) Xeon(R) CPU @ 2.10GHz", "AVX512", 1, "intel-xeon-2.10ghz-avx512-1t"),
        ("", "DEFAULT", 4, "cpu-default-4t"),
    ],
)
def test_default_tag_names_the_kernel_table(monkeypatch, model, capability, threads, tag):
    """One model name covers machines with different kernel tables (the AMD EPYC with AVX-512
    and with AVX2 only): the default results name tells them apart, so a run on one does not
    overwrite the other's files."""
    from fusedrnn.bench import report

    monkeypatch.setattr(report, "cpu_model", lambda: model)
    assert report.machine_tag(threads, capability) == tag
