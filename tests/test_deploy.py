"""Deployment paths (python/fusedrnn/deploy.py, README "Deploying"): whole-model pickles loaded
with ``weights_only=True``, ONNX export (both exporters, run with onnxruntime against torch.nn)
and AOTInductor packages.

The ONNX tests skip when onnx / onnxruntime (and onnxscript for the dynamo exporter) are not
installed; the AOTInductor test compiles C++ and runs only with ``FUSEDRNN_TEST_AOTI=1``.
"""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn

MODULE_CASES = [
    (fusedrnn.LSTM, dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)),
    (fusedrnn.LSTM, dict(input_size=3, hidden_size=4, proj_size=2, batch_first=True)),
    (fusedrnn.GRU, dict(input_size=3, hidden_size=4, bias=False)),
    (fusedrnn.RNN, dict(input_size=3, hidden_size=4, nonlinearity="relu", num_layers=2)),
    (fusedrnn.LSTMCell, dict(input_size=3, hidden_size=4)),
    (fusedrnn.GRUCell, dict(input_size=3, hidden_size=4, bias=False)),
    (fusedrnn.RNNCell, dict(input_size=3, hidden_size=4, nonlinearity="relu")),
]


def _roundtrip(obj, **load_kwargs):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, **load_kwargs)


def _inputs(module: nn.Module) -> torch.Tensor:
    if isinstance(module, nn.RNNBase):
        return torch.randn(2, 5, module.input_size)
    return torch.randn(2, module.input_size)


# ---- weights_only loading ------------------------------------------------------------------
def test_safe_globals_lists_every_public_module_class():
    public = {
        obj
        for name in fusedrnn.__all__
        if isinstance(obj := getattr(fusedrnn, name), type) and issubclass(obj, nn.Module)
    }
    assert public and set(fusedrnn.safe_globals()) == public
    registered = set(torch.serialization.get_safe_globals())
    assert public <= registered


def test_declared_classes_unpickle_with_torch_code_only():
    # What makes a class safe to admit: unpickling builds it with object.__new__ and hands the
    # state to a __setstate__; none of fusedrnn's classes may define its own hook.
    hooks = ("__reduce__", "__reduce_ex__", "__setstate__", "__getstate__", "__new__")
    for cls in fusedrnn.safe_globals():
        for klass in cls.__mro__:
            if klass.__module__.startswith("fusedrnn"):
                own = [h for h in hooks if h in vars(klass)]
                assert not own, f"{klass.__qualname__} defines {own}"


@pytest.mark.parametrize("cls,kwargs", MODULE_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_whole_module_loads_with_default_weights_only(cls, kwargs):
    module = cls(**kwargs).eval()
    loaded = _roundtrip(module)  # torch.load's default is weights_only=True
    assert type(loaded) is cls
    assert loaded.extra_repr() == module.extra_repr()
    for (name, p), (name2, q) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert name == name2 and torch.equal(p, q)
    x = _inputs(module)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)


@pytest.fixture
def no_registered_globals():
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


def test_unregistered_class_is_refused_and_safe_globals_admits_it(no_registered_globals):
    buf = io.BytesIO()
    torch.save(fusedrnn.GRU(3, 4), buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="fusedrnn.modules.GRU"):
        torch.load(buf)
    buf.seek(0)
    with torch.serialization.safe_globals(fusedrnn.safe_globals()):
        assert type(torch.load(buf)) is fusedrnn.GRU


class WordModel(nn.Module):
    """The shape of PyTorch's examples/word_language_model RNNModel, plus a GRU cell."""

    def __init__(self, ntoken: int = 11, ninp: int = 6, nhid: int = 5) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, 2, dropout=0.2)
        self.extra = nn.GRU(nhid, nhid)
        self.cell = nn.GRUCell(nhid, nhid)
        self.decoder = nn.Linear(nhid, ntoken)

    def forward(self, tokens):
        emb = self.drop(self.encoder(tokens))
        out, _ = self.rnn(emb)
        out, _ = self.extra(out)
        last = self.cell(out[-1])
        return self.decoder(self.drop(torch.cat([out[:-1], last[None]], 0)))


# main.py's list: the model class and the torch.nn classes it holds.
WORD_MODEL_GLOBALS = [
    WordModel,
    nn.modules.dropout.Dropout,
    nn.modules.sparse.Embedding,
    nn.modules.rnn.LSTM,
    nn.modules.rnn.GRU,
    nn.modules.rnn.GRUCell,
    nn.modules.linear.Linear,
]


def test_converted_mixed_model_loads_inside_a_safe_globals_list():
    model = fusedrnn.convert(WordModel())
    model.extra = model.extra.to_torch()  # one layer back to torch.nn: a mixed model
    assert type(model.rnn) is fusedrnn.LSTM and type(model.cell) is fusedrnn.GRUCell
    assert type(model.extra) is nn.GRU
    model.eval()
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="WordModel"):
        torch.load(buf)  # weights_only is on: the user's own class must be listed
    buf.seek(0)
    with torch.serialization.safe_globals(WORD_MODEL_GLOBALS):
        loaded = torch.load(buf)
    assert type(loaded.rnn) is fusedrnn.LSTM and type(loaded.cell) is fusedrnn.GRUCell
    tokens = torch.randint(0, 11, (7, 3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)


# ---- ONNX ------------------------------------------------------------------------------------
class Zoo(nn.Module):
    """Every module kind and the options ONNX has to express, chained."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(8, 4, num_layers=2, bias=False)
        self.rnn_relu = nn.RNN(4, 3, nonlinearity="relu", bidirectional=True)
        self.rnn_tanh = nn.RNN(6, 3, batch_first=True)
        self.unbatched = nn.LSTM(3, 2)
        self.lstm_cell = nn.LSTMCell(3, 3)
        self.gru_cell = nn.GRUCell(3, 3, bias=False)
        self.rnn_cell = nn.RNNCell(3, 3, nonlinearity="relu")

    def forward(self, x):  # x: [B, T, 3]
        y, (h, c) = self.lstm(x)
        y, h_gru = self.gru(y.transpose(0, 1))
        y, h_relu = self.rnn_relu(y, torch.ones(2, y.shape[1], 3))
        y, h_tanh = self.rnn_tanh(y.transpose(0, 1))
        u, (hu, cu) = self.unbatched(x[0], (torch.zeros(1, 2), torch.ones(1, 2)))
        hc = self.lstm_cell(y[:, -1])
        g = self.gru_cell(hc[0], hc[1])
        r = self.rnn_cell(g)
        return y, h, c, h_gru, h_relu, h_tanh, u, hu, cu, hc[1], g, r


# One ONNX node per layer (both directions in one node); the cells have no ONNX operator.
ZOO_RNN_NODES = {"LSTM": 3, "GRU": 2, "RNN": 2}


def _export(model: nn.Module, x: torch.Tensor, dynamo: bool):
    onnx = pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
        batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
        program = torch.onnx.export(
            model, (x,), dynamo=True, dynamic_shapes=({0: batch, 1: time},), verbose=False
        )
        return program.model_proto
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 1: "time"}})  # fmt: skip
    return onnx.load_from_string(buf.getvalue())


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_uses_standard_operators_and_matches_torch_nn(dynamo):
    ort = pytest.importorskip("onnxruntime")
    reference = Zoo().eval()
    fused = fusedrnn.convert(copy.deepcopy(reference))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proto = _export(fused, torch.randn(3, 4, 3), dynamo)
    assert not [w for w in caught if "falling back" in str(w.message)]
    ops = [n.op_type for n in proto.graph.node]
    assert {op: ops.count(op) for op in ZOO_RNN_NODES} == ZOO_RNN_NODES
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}, "non-standard nodes"

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 6, 3)  # another batch size and length than exported with
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = reference(x)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(torch.from_numpy(g), e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_of_lstm_projection_is_refused(dynamo):
    model = fusedrnn.LSTM(3, 4, proj_size=2).eval()
    with pytest.raises(Exception, match=r"proj_size=2 .*ONNX LSTM operator has no projection"):
        _export(model, torch.randn(5, 2, 3), dynamo)


# ---- AOTInductor ---------------------------------------------------------------------------
class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = fusedrnn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = fusedrnn.GRU(8, 4, bias=False, batch_first=True)
        self.rnn = fusedrnn.RNN(4, 4, nonlinearity="relu", batch_first=True)
        self.cell = fusedrnn.LSTMCell(4, 4)

    def forward(self, x):
        y, (h, _) = self.lstm(x)
        y, _ = self.gru(y)
        y, _ = self.rnn(y)
        return y, h, self.cell(y[:, -1])[1]


LOAD_AND_RUN = """
import sys, torch
import fusedrnn  # registers the fusedrnn ops the compiled code calls
runner = torch._inductor.aoti_load_package(sys.argv[1])
for x, expected in torch.load(sys.argv[2]):
    for got, want in zip(runner(x), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
print("ok")
"""


def test_aoti_package_calls_the_fused_ops_and_matches_eager(tmp_path):
    model = Tagger().eval()
    batch, time = torch.export.Dim("batch", min=2), torch.export.Dim("time", min=2)
    program = torch.export.export(
        model, (torch.randn(2, 5, 3),), dynamic_shapes=({0: batch, 1: time},)
    )
    called = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"fusedrnn.lstm_stack.default", "fusedrnn.gru_stack.default"} <= called
    package = torch._inductor.aoti_compile_and_package(
        program,
        package_path=str(tmp_path / "tagger.pt2"),
        # O0: the generated wrapper compiles in a third of the time; kernels are fusedrnn's
        inductor_configs={"aot_inductor.compile_wrapper_opt_level": "O0"},
    )
    cases = []
    with torch.no_grad():
        for shape in [(2, 5, 3), (3, 7, 3)]:
            x = torch.randn(shape)
            cases.append((x, model(x)))
    torch.save(cases, tmp_path / "cases.pt")
    # A fresh process, as a deployment would load it (the custom ops come from the import).
    run = subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN, package, str(tmp_path / "cases.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


class Packed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 4, num_layers=2, bidirectional=True)

    def forward(self, x, lengths):
        out, h = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return pad_packed_sequence(out)[0], h


def test_onnx_torchscript_export_of_packed_sequences_matches_torch_nn():
    # As for torch.nn, only the TorchScript exporter handles PackedSequence.
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    reference = Packed().eval()
    fused = fusedrnn.convert(copy.deepcopy(reference))
    x, lengths = torch.randn(6, 3, 3), torch.tensor([4, 6, 2])
    buf = io.BytesIO()
    torch.onnx.export(fused, (x, lengths), buf, dynamo=False, input_names=["x", "lengths"])
    proto = onnx.load_from_string(buf.getvalue())
    assert [n.op_type for n in proto.graph.node].count("GRU") == 2
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        expected = reference(x, lengths)
    for g, e in zip(got, expected):
        torch.testing.assert_close(torch.from_numpy(g), e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: fusedrnn.LSTM(4, 8, num_layers=2),
        lambda: fusedrnn.GRUCell(4, 8),
        lambda: fusedrnn.LayerNormGRU(4, 8),
    ],
)
def test_another_threads_onnx_export_leaves_eager_calls_alone(make, monkeypatch):
    """The dynamo exporter's flag is process-wide: while one thread exported an unrelated
    model, fused calls of another thread took the ONNX path (placeholder values, or the
    LayerNorm modules' 'no ONNX operator' error). Only the exporting thread's calls (fake
    tensors, or under Dynamo) count as exporting now."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from fusedrnn import deploy

    if deploy._onnx_flags is None:
        pytest.skip("this torch has no dynamo ONNX exporter flag")
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(3, 4) if isinstance(m, nn.RNNCellBase) else torch.randn(5, 3, 4)
    with torch.no_grad():
        want = m(x)
        monkeypatch.setattr(deploy._onnx_flags, "_is_onnx_exporting", True)  # "another thread"
        got = m(x)
    for a, b in zip(fusedrnn_flat(got), fusedrnn_flat(want)):
        assert torch.equal(a, b)
    assert not deploy.exporting_onnx(x)
    with FakeTensorMode():
        assert deploy.exporting_onnx(torch.randn(2, 3))  # the exporting thread's calls


def fusedrnn_flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in fusedrnn_flat(o)]
