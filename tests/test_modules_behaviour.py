"""Drop-in behaviour of the fusedrnn modules beyond the parity grid: batched vs per-sample,
determinism, dropout, errors, state_dict, conversion, fallback, serialisation."""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
from fusedrnn import modules as M

F64 = torch.float64
PAIRS = {
    "rnn": (nn.RNN, fusedrnn.RNN, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, fusedrnn.LSTM, {"proj_size": 2}),
    "gru": (nn.GRU, fusedrnn.GRU, {}),
}
CELL_PAIRS = {
    "rnncell": (nn.RNNCell, fusedrnn.RNNCell, {"nonlinearity": "relu"}),
    "lstmcell": (nn.LSTMCell, fusedrnn.LSTMCell, {}),
    "grucell": (nn.GRUCell, fusedrnn.GRUCell, {}),
}


def _pair(kind, *args, seed=0, **kw):
    tcls, fcls, extra = {**PAIRS, **CELL_PAIRS}[kind]
    kw = {**extra, **kw}
    torch.manual_seed(seed)
    t = tcls(*args, **kw)
    torch.manual_seed(seed)
    f = fcls(*args, **kw)
    return t, f


def _states(hid):
    return list(hid) if isinstance(hid, tuple) else [hid]


# ---- batched vs per-sample, packed vs per-sample, determinism ------------------------------
@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_batched_equals_per_sample(kind):
    _, m = _pair(kind, 3, 5, num_layers=2, bidirectional=True, dtype=F64)
    x = torch.randn(4, 3, 3, dtype=F64)
    out, hid = m(x)
    for b in range(3):
        o, h = m(x[:, b])
        torch.testing.assert_close(o, out[:, b], rtol=1e-12, atol=1e-14)
        for s_b, s in zip(_states(h), _states(hid)):
            torch.testing.assert_close(s_b, s[:, b], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_packed_equals_per_sample(kind):
    _, m = _pair(kind, 3, 5, num_layers=2, bidirectional=True, batch_first=True, dtype=F64)
    lengths = [2, 5, 3]
    x = torch.randn(3, 5, 3, dtype=F64)
    out, hid = m(pack_padded_sequence(x, torch.tensor(lengths), True, enforce_sorted=False))
    padded, _ = pad_packed_sequence(out, batch_first=True)
    for b, n in enumerate(lengths):
        o, h = m(x[b, :n])
        torch.testing.assert_close(o, padded[b, :n], rtol=1e-12, atol=1e-14)
        if n < padded.shape[1]:  # the padding past a sequence's end stays zero
            assert padded[b, n:].abs().max() == 0
        for s_b, s in zip(_states(h), _states(hid)):
            torch.testing.assert_close(s_b, s[:, b], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", sorted(PAIRS) + sorted(CELL_PAIRS))
def test_run_to_run_identical(kind):
    _, m = _pair(kind, 3, 5) if "cell" in kind else _pair(kind, 3, 5, num_layers=2)
    x = torch.randn(3, 3) if "cell" in kind else torch.randn(4, 3, 3)

    def once():
        m.zero_grad()
        res = m(x)
        flat = _states(res) if "cell" in kind else [res[0], *_states(res[1])]
        sum(t.sum() for t in flat).backward()
        return [t.detach().clone() for t in flat] + [p.grad.clone() for p in m.parameters()]

    a, b = once(), once()
    assert all(torch.equal(u, v) for u, v in zip(a, b))


# ---- dropout --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_dropout_zero_training_equals_eval_exactly(kind):
    _, m = _pair(kind, 3, 5, num_layers=3, dropout=0.0)
    x = torch.randn(4, 2, 3)
    a = m.train()(x)[0]
    b = m.eval()(x)[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_training_dropout_same_masks_as_torch(kind):
    """On the CPU torch draws its between-layer masks exactly like F.dropout: same seed, same
    masks, same outputs and gradients."""
    t, f = _pair(kind, 3, 5, num_layers=3, dropout=0.4, bidirectional=True, dtype=F64)
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    torch.manual_seed(7)
    ot = t(x)[0]
    gt = torch.autograd.grad(ot.sum(), [x, *t.parameters()])
    torch.manual_seed(7)
    of = f(x)[0]
    gf = torch.autograd.grad(of.sum(), [x, *f.parameters()])
    torch.testing.assert_close(of, ot, rtol=1e-10, atol=1e-12)
    for a, b in zip(gf, gt):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_training_dropout_masks_and_generator_state_as_torch(dtype):
    """At the stock model's size (2 layers x 64, batch 32, 30 steps: 61440 mask elements, two
    mt19937 draws each) the fused sampler (mask_sampler.h) gives torch.nn's masks and leaves the
    default generator where torch.nn's bernoulli_ leaves it, on every training step."""
    assert fusedrnn.build_info()["cpu_dropout_sampler"] == "fused"
    t, f = _pair("lstm", 1, 64, num_layers=2, dropout=0.2, dtype=dtype)
    x = torch.randn(30, 32, 1, dtype=dtype)
    torch.manual_seed(2026)
    ys_t = [t(x)[0] for _ in range(3)] + [torch.rand(5, dtype=dtype)]
    torch.manual_seed(2026)
    ys_f = [f(x)[0] for _ in range(3)] + [torch.rand(5, dtype=dtype)]
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for a, b in zip(ys_f[:3], ys_t[:3]):
        torch.testing.assert_close(a, b, **tol)
    assert torch.equal(ys_f[3], ys_t[3])
    # The whole generator state (engine and cached normal samples) ends where torch.nn's does.
    torch.manual_seed(5)
    torch.randn(1, dtype=dtype)  # leaves a cached normal sample in the generator
    t(x)
    after_t = torch.get_rng_state()
    torch.manual_seed(5)
    torch.randn(1, dtype=dtype)
    f(x)
    assert torch.equal(torch.get_rng_state(), after_t)
    # The masks differ between the three steps (the generator moved on).
    assert not torch.equal(ys_f[0], ys_f[1])


def test_dropout_mask_of_a_seeded_generator_fork():
    """torch.random.fork_rng restores the default generator around a fused step, as around a
    torch.nn one: the sampler reads and writes the generator's state, not a private copy."""
    m = fusedrnn.GRU(2, 5, num_layers=2, dropout=0.5)
    x = torch.randn(4, 3, 2)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with torch.random.fork_rng():
        a = m(x)[0]
    assert torch.equal(torch.get_rng_state(), before)
    b = m(x)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_training_dropout_statistics():
    """Layer 2 made a pass-through (relu, identity input weights, no recurrence): its output is
    exactly dropout(layer 1 output), so the zero rate is p and survivors are scaled 1/(1-p)."""
    p, H = 0.3, 32
    m = fusedrnn.RNN(4, H, num_layers=2, nonlinearity="relu", dropout=p, dtype=F64)
    with torch.no_grad():
        m.weight_ih_l1.copy_(torch.eye(H, dtype=F64))
        m.weight_hh_l1.zero_()
        m.bias_ih_l1.zero_()
        m.bias_hh_l1.zero_()
        m.weight_ih_l0.abs_()  # layer 1 outputs strictly positive
        m.weight_hh_l0.zero_()
        m.bias_ih_l0.fill_(1.0)
    x = torch.randn(5, 64, 4, dtype=F64).abs()
    clean = m.eval()(x)[0]
    assert (clean > 0).all()
    noisy = m.train()(x)[0]
    zero = noisy == 0
    rate = zero.double().mean().item()
    assert abs(rate - p) < 0.03, rate  # 10240 Bernoulli draws: sd ~0.0045
    torch.testing.assert_close(noisy[~zero], clean[~zero] / (1 - p))
    # Eval is deterministic and dropout-free.
    assert torch.equal(m.eval()(x)[0], clean)


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_eval_deterministic_with_dropout(kind):
    t, f = _pair(kind, 3, 5, num_layers=2, dropout=0.5)
    t.eval(), f.eval()
    x = torch.randn(4, 2, 3)
    a, b = f(x)[0], f(x)[0]
    assert torch.equal(a, b)
    torch.testing.assert_close(a, t(x)[0], rtol=1e-5, atol=1e-6)


def test_dropout_single_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        fusedrnn.LSTM(3, 5, dropout=0.5)


# ---- errors ---------------------------------------------------------------------------------
def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return type(e)
    return None


def _bad_calls():
    r = torch.randn
    return [
        # (kind, ctor kwargs, input, hx[, 'ok' when torch accepts it])
        ("gru", {}, r(2, 3, 4, 3), None),  # 4-D input
        ("gru", {}, r(0, 3, 3), None),  # empty sequence
        ("lstm", {"batch_first": True}, r(3, 0, 3), None),  # empty sequence
        ("gru", {}, r(4, 3, 7), None),  # wrong input_size
        ("gru", {}, r(4, 3, 3), r(2, 4, 5)),  # wrong hx batch
        ("gru", {}, r(4, 3, 3), r(1, 3, 5)),  # wrong hx layers
        ("gru", {}, r(4, 3, 3), r(2, 3, 4)),  # wrong hx hidden
        ("gru", {}, r(4, 3, 3), r(3, 5)),  # 2-D hx with batched input
        ("rnn", {}, r(4, 3), r(2, 1, 5)),  # 3-D hx with unbatched input
        ("rnn", {}, r(4, 3, 3, dtype=F64), None),  # dtype mismatch
        ("rnn", {"batch_first": True}, r(3, 4, 3), r(2, 4, 5)),  # batch is dim 0
        ("lstm", {}, r(4, 3, 3), (r(2, 3, 5), r(2, 3, 5))),  # h of H instead of P
        ("lstm", {}, r(4, 3, 3), (r(2, 3, 2), r(2, 3, 2))),  # c of P instead of H
        ("lstm", {}, r(4, 3, 3), (r(2, 3, 2), r(3, 5))),  # c 2-D
        ("lstm", {}, r(4, 3), (r(2, 2), r(2, 1, 5))),  # unbatched, c 3-D
        ("lstm", {}, r(4, 3, 3), (r(2, 3, 2), r(2, 3, 5)), "ok"),  # control: no error
        ("lstm", {}, "packed", (r(2, 2, 2), r(2, 2, 5))),  # packed, wrong batch
        ("gru", {}, "packed", r(2, 2, 5)),  # packed, wrong batch
        ("gru", {}, "packed", r(2, 3, 4)),  # packed, wrong hidden
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_errors_match_torch(case):
    kind, kw, x, hx, *ok = _bad_calls()[case]
    t, f = _pair(kind, 3, 5, num_layers=2, **kw)
    if isinstance(x, str):
        x = pack_padded_sequence(
            torch.randn(4, 3, 3), torch.tensor([4, 2, 3]), enforce_sorted=False
        )
    expected = _raised(lambda: t(x, hx))
    assert _raised(lambda: f(x, hx)) is expected
    assert (expected is None) == bool(ok)


@pytest.mark.parametrize(
    "kind,x,hx",
    [
        ("rnncell", torch.randn(2, 2, 3), None),  # 3-D input
        ("rnncell", torch.randn(2, 4), None),  # wrong input size
        ("rnncell", torch.randn(2, 3), torch.randn(2, 4)),  # wrong hidden size
        ("grucell", torch.randn(2, 3), torch.randn(3, 5)),  # batch mismatch
        ("grucell", torch.randn(2, 3), torch.randn(1, 2, 5)),  # 3-D hidden
        ("lstmcell", torch.randn(2, 3), (torch.randn(2, 5), torch.randn(2, 4))),
        ("lstmcell", torch.randn(2, 3), (torch.randn(2, 2, 5), torch.randn(2, 5))),
        ("lstmcell", torch.randn(2, 3), (torch.randn(1, 5), torch.randn(2, 5))),
    ],
)
def test_cell_errors_match_torch(kind, x, hx):
    t, f = _pair(kind, 3, 5)
    expected = _raised(lambda: t(x, hx))
    assert expected is not None
    assert _raised(lambda: f(x, hx)) is expected


@pytest.mark.parametrize("kind", sorted(CELL_PAIRS))
@pytest.mark.parametrize("attr", ["input_size", "hidden_size"])
@pytest.mark.parametrize("with_hx", [False, True])
def test_cell_size_attributes_edited_like_torch(kind, attr, with_hx):
    """torch.nn's cells check the input and a given state against the weights, and read
    hidden_size only for a zero state: an edited size attribute changes nothing else."""
    t, f = _pair(kind, 3, 5)
    for m in (t, f):
        setattr(m, attr, 7)
    x = torch.randn(2, 3)
    h = torch.randn(2, 5)
    args = (x, (h, h.clone()) if kind == "lstmcell" else h) if with_hx else (x,)
    expected = _raised(lambda: t(*args))
    assert _raised(lambda: f(*args)) is expected
    if expected is None:
        for a, b in zip(_states(f(*args)), _states(t(*args))):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_an_unknown_mode_runs_torch_nn_forward(kind, monkeypatch):
    """An edited ``mode`` (no fused kernel): torch.nn's forward runs, with its result or its
    error (nn.RNN asserts on it), after a warning that names the mode."""
    monkeypatch.setattr(M, "_warned", set())
    t, f = _pair(kind, 3, 5)
    t.mode = f.mode = "FOO"
    x = torch.randn(4, 2, 3)
    expected = _raised(lambda: t(x))
    with pytest.warns(UserWarning, match="mode 'FOO' has no fused kernel"):
        got = _raised(lambda: f(x))
    assert got is expected
    if expected is None:
        torch.testing.assert_close(f(x)[0], t(x)[0])


@pytest.mark.parametrize(
    "kind,kw",
    [
        ("lstm", {"proj_size": 5}),
        ("lstm", {"proj_size": -1}),
        ("gru", {"proj_size": 2}),
        ("rnn", {"nonlinearity": "sigmoid"}),
        ("gru", {"dropout": 1.5}),
        ("gru", {"num_layers": 0}),
        ("rnn", {"bias": 1}),
    ],
)
def test_constructor_errors_match_torch(kind, kw):
    tcls, fcls, extra = PAIRS[kind]
    kw = {**extra, **kw}
    expected = _raised(lambda: tcls(3, 5, **kw))
    assert expected is not None
    assert _raised(lambda: fcls(3, 5, **kw)) is expected


# ---- state_dict, conversion ------------------------------------------------------------------
@pytest.mark.parametrize("bias", (True, False))
@pytest.mark.parametrize("kind", sorted(PAIRS) + sorted(CELL_PAIRS))
def test_state_dict_strict_both_ways(kind, bias):
    tcls, fcls, extra = {**PAIRS, **CELL_PAIRS}[kind]
    kw = dict(extra, bias=bias)
    if "cell" not in kind:
        kw.update(num_layers=2, bidirectional=True)
    t, f = tcls(3, 5, **kw), fcls(3, 5, **kw)
    assert [(n, p.shape) for n, p in t.named_parameters()] == [
        (n, p.shape) for n, p in f.named_parameters()
    ]
    f.load_state_dict(t.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), f.parameters()))
    f2 = fcls(3, 5, **kw)
    t.load_state_dict(f2.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), f2.parameters()))


@pytest.mark.parametrize("kind", sorted(PAIRS) + sorted(CELL_PAIRS))
def test_from_torch_to_torch_roundtrip(kind):
    tcls, fcls, extra = {**PAIRS, **CELL_PAIRS}[kind]
    kw = dict(extra) if "cell" in kind else dict(extra, num_layers=2, dropout=0.2, batch_first=True)
    t = tcls(3, 5, dtype=F64, **kw).eval()
    f = fusedrnn.from_torch(t)
    assert type(f) is fcls and not f.training and repr(f) == repr(t)
    assert all(a is not b and torch.equal(a, b) for a, b in zip(t.parameters(), f.parameters()))
    x = torch.randn(2, 3, dtype=F64) if "cell" in kind else torch.randn(2, 4, 3, dtype=F64)
    back = f.to_torch()
    assert type(back) is tcls and repr(back) == repr(t)
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), back.parameters()))
    for out in (f(x), back(x)):
        ref = t(x)
        flat = lambda r: _states(r) if "cell" in kind else [r[0], *_states(r[1])]  # noqa: E731
        for a, b in zip(flat(out), flat(ref)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError):
        fusedrnn.from_torch(nn.Linear(2, 2))


class _MyLSTM(nn.LSTM):
    """A user subclass: convert() must leave it alone (its forward may be custom)."""


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
        self.lstm = nn.LSTM(3, 6, num_layers=2, batch_first=True, proj_size=4)
        self.blocks = nn.ModuleList([nn.GRU(4, 5), nn.RNN(5, 5, nonlinearity="relu")])
        self.cell = nn.GRUCell(5, 5)
        self.shared = self.cell
        self.custom = _MyLSTM(5, 2)
        self.head = nn.Linear(5, 1)

    def forward(self, x):
        o, _ = self.lstm(self.enc(x))
        o, _ = self.blocks[0](o.transpose(0, 1))
        o, h = self.blocks[1](o)
        h = self.shared(o[-1], self.cell(o[0], h[0]))
        o2, _ = self.custom(o)
        return self.head(h).sum() + o2.sum()


def test_convert_in_place():
    torch.manual_seed(0)
    net = _Net().double()
    net.blocks.eval()
    x = torch.randn(2, 4, 3, dtype=F64)
    ref = net(x)
    params = list(net.parameters())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    out = fusedrnn.convert(net)
    assert out is net
    assert type(net.lstm) is fusedrnn.LSTM and type(net.cell) is fusedrnn.GRUCell
    assert type(net.blocks[0]) is fusedrnn.GRU and type(net.blocks[1]) is fusedrnn.RNN
    assert net.shared is net.cell  # sharing preserved
    assert type(net.custom) is _MyLSTM  # subclasses untouched
    assert net.training and not net.blocks[0].training and net.lstm.training
    assert net.blocks[1].nonlinearity == "relu" and net.lstm.proj_size == 4
    new_params = list(net.parameters())
    assert len(new_params) == len(params) and all(a is b for a, b in zip(new_params, params))
    assert all(p.dtype == F64 for p in new_params)
    torch.testing.assert_close(net(x), ref, rtol=1e-12, atol=1e-12)
    # The optimizer built before the conversion still trains the model.
    before = net.lstm.weight_ih_l0.detach().clone()
    net(x).backward()
    opt.step()
    assert not torch.equal(before, net.lstm.weight_ih_l0)
    # Idempotent, and a bare module is replaced.
    assert fusedrnn.convert(net) is net and type(net.lstm) is fusedrnn.LSTM
    assert type(fusedrnn.convert(nn.GRU(2, 3))) is fusedrnn.GRU


# ---- fallback ---------------------------------------------------------------------------------
def test_fused_supported_follows_dispatcher():
    for mode, op in (("LSTM", "lstm_layer"), ("GRU", "gru_layer"), ("RNN_TANH", "rnn_tanh_layer")):
        for dev, key in (("cpu", "CPU"), ("cuda", "CUDA")):
            has = torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedrnn::{op}", key)
            assert M.fused_supported(mode, dev, torch.float32) == has
    assert M.fused_supported("LSTM", "cpu", torch.float64)
    assert not M.fused_supported("LSTM", "cpu", torch.bfloat16)


@pytest.mark.parametrize("kind", sorted(PAIRS) + sorted(CELL_PAIRS))
def test_fallback_bfloat16_cpu_warns_once(kind, monkeypatch):
    monkeypatch.setattr(M, "_warned", set())
    t, f = _pair(kind, 3, 5, dtype=torch.bfloat16)
    x = torch.randn(2, 3, dtype=torch.bfloat16)
    with pytest.warns(UserWarning, match="falling back") as caught:
        out = f(x)
    assert caught[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(x)  # once only
    ref = t(x)
    for a, b in zip(
        _states(out) if "cell" in kind else [out[0]], _states(ref) if "cell" in kind else [ref[0]]
    ):
        assert torch.equal(a, b)


def test_fallback_when_no_kernel_registered(monkeypatch):
    """A device without a registered kernel (simulated: no kernels at all) runs torch's
    implementation, packed sequences and proj_size included."""
    monkeypatch.setattr(M, "_warned", set())
    monkeypatch.setattr(M, "_KERNELS", frozenset())
    t, f = _pair("lstm", 3, 5, num_layers=2, bidirectional=True)
    x = pack_padded_sequence(torch.randn(4, 3, 3), torch.tensor([4, 1, 3]), enforce_sorted=False)
    with pytest.warns(UserWarning, match="no fused kernel"):
        out, (h, c) = f(x)
    ref, (hr, cr) = t(x)
    assert torch.equal(out.data, ref.data) and torch.equal(h, hr) and torch.equal(c, cr)


# ---- serialisation and module plumbing --------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(PAIRS) + sorted(CELL_PAIRS))
def test_pickle_deepcopy_save_load(kind):
    _, f = _pair(kind, 3, 5) if "cell" in kind else _pair(kind, 3, 5, num_layers=2)
    x = torch.randn(2, 3) if "cell" in kind else torch.randn(4, 2, 3)
    flat = lambda r: _states(r) if "cell" in kind else [r[0], *_states(r[1])]  # noqa: E731
    ref = flat(f(x))
    for g in (pickle.loads(pickle.dumps(f)), copy.deepcopy(f)):
        assert type(g) is type(f)
        assert all(a is not b for a, b in zip(f.parameters(), g.parameters()))
        assert all(torch.equal(a, b) for a, b in zip(flat(g(x)), ref))
    buf = io.BytesIO()
    torch.save(f.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    _, g = _pair(kind, 3, 5, seed=1) if "cell" in kind else _pair(kind, 3, 5, num_layers=2, seed=1)
    g.load_state_dict(sd, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(flat(g(x)), ref))


def test_flatten_parameters_all_weights_and_functional_call():
    t, f = _pair("lstm", 3, 5, num_layers=2, dtype=F64)
    f.flatten_parameters()
    assert [[p.shape for p in w] for w in f.all_weights] == [
        [p.shape for p in w] for w in t.all_weights
    ]
    x = torch.randn(4, 2, 3, dtype=F64)
    new = {n: torch.randn_like(p) for n, p in f.named_parameters()}
    a = torch.func.functional_call(f, new, (x,))[0]
    b = torch.func.functional_call(t, new, (x,))[0]
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_positional_constructor_args_like_torch():
    t = nn.RNN(3, 5, 2, "relu", False, True, 0.0, True)
    f = fusedrnn.RNN(3, 5, 2, "relu", False, True, 0.0, True)
    assert repr(t) == repr(f) and f.nonlinearity == "relu" and f.mode == "RNN_RELU"
    assert [n for n, _ in t.named_parameters()] == [n for n, _ in f.named_parameters()]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_no_grad_calls_skip_autograd_with_identical_results(kind):
    """Calls that autograd cannot record run below the autograd layer (a speed path); they
    must give the recorded path's results, and a forward-AD level must keep the full path."""
    from torch.autograd import forward_ad

    from fusedrnn import _ops

    torch.manual_seed(0)
    m = getattr(fusedrnn, kind)(3, 5).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    recorded = m(x)
    with torch.no_grad():
        fast = m(x)
    flat = lambda r: list(r) if isinstance(r, tuple) else [r]  # noqa: E731
    for a, b in zip(flat(recorded), flat(fast)):
        a = a if torch.is_tensor(a) else a[0]
        b = b if torch.is_tensor(b) else b[0]
        assert a.requires_grad and not b.requires_grad
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)
    assert _ops._below_autograd(False)
    assert not _ops._below_autograd(True)
    with forward_ad.dual_level():
        assert not _ops._below_autograd(False)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_input_without_grad_skips_only_its_gradient(kind):
    """The first layer's backward skips dx when the input needs no gradient; the weight
    gradients must equal those of a run where it does."""
    torch.manual_seed(0)
    m = getattr(fusedrnn, kind)(3, 5, num_layers=2).double()
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    g_skip = torch.autograd.grad(m(x)[0].sum(), list(m.parameters()))
    g_full = torch.autograd.grad(m(x.requires_grad_())[0].sum(), list(m.parameters()))
    for a, b in zip(g_skip, g_full):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# An LSTM's hx that is not two tensors: torch.nn raises RuntimeError from its own checks (a lone
# tensor: "hx and cx should also be 3-D"; three: "lstm expects two hidden states"), TypeError
# for a cell given a lone tensor; the fused modules' error names the argument and is a
# TypeError and a RuntimeError both.
@pytest.mark.parametrize("layernorm", [False, True])
@pytest.mark.parametrize("cell", [False, True])
@pytest.mark.parametrize("bad", ["tensor", "three"])
def test_lstm_hx_not_two_tensors_is_torch_nns_runtime_error(bad, cell, layernorm):
    torch.manual_seed(0)
    x = torch.randn(2, 3) if cell else torch.randn(4, 2, 3)
    # Two layers: with one, torch.nn's index of a lone [1, B, H] tensor's second row fails first
    # (IndexError).
    h = torch.randn(2, 5) if cell else torch.randn(2, 2, 5)
    hx = h if bad == "tensor" else (h, h, h)
    fused = (
        (fusedrnn.LayerNormLSTMCell if layernorm else fusedrnn.LSTMCell)(3, 5)
        if cell
        else (fusedrnn.LayerNormLSTM if layernorm else fusedrnn.LSTM)(3, 5, num_layers=2)
    )
    ref = nn.LSTMCell(3, 5) if cell else nn.LSTM(3, 5, num_layers=2)
    # (nn.LSTMCell passes a lone tensor on to lstm_cell, whose argument parser raises TypeError)
    want = TypeError if cell and bad == "tensor" else RuntimeError
    with pytest.raises(want):
        ref(x, hx)
    for exc in (want, TypeError, fusedrnn.modules.HiddenStateTypeError):
        with pytest.raises(exc, match="expected hx to be a tuple"):
            fused(x, hx)
