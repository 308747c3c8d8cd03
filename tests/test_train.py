"""fusedrnn.train: BPTT trainer (full and truncated), clipping, early stopping, checkpoints."""

import copy
import warnings

import numpy as np
import pytest
import torch

import fusedrnn
from fusedrnn import data as D
from fusedrnn import train as T


def _sine_windows(n=300, window=12):
    w = D.prepare_windows(D.noisy_sine(n, period=25, noise=0.02), window)
    return T.Windows(w.x_train, w.y_train), T.Windows(w.x_val, w.y_val)


def _cfg(**kw):
    base = dict(epochs=3, batch_size=16, progress=False, patience=None)
    base.update(kw)
    return T.TrainConfig(**base)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_model_uses_the_fused_or_torch_layers():
    for cell, cls in (("rnn", fusedrnn.RNN), ("lstm", fusedrnn.LSTM), ("gru", fusedrnn.GRU)):
        m = T.SequenceRegressor(cell, 2, 5, 2, impl="fused")
        assert type(m.rnn) is cls
        t = T.SequenceRegressor(cell, 2, 5, 2, impl="torch")
        assert type(t.rnn) is getattr(torch.nn, cls.__name__)
        t.load_state_dict(m.state_dict())  # same parameter names and shapes
        y, _ = m(torch.randn(3, 4, 2))
        assert y.shape == (3, 1)
    with pytest.raises(ValueError, match="cell"):
        T.SequenceRegressor("tcn")
    with pytest.raises(ValueError, match="impl"):
        T.SequenceRegressor("gru", impl="cuda")


@pytest.mark.parametrize("cell, op", [("rnn", "rnn_tanh"), ("lstm", "lstm"), ("gru", "gru")])
def test_fused_model_trains_through_the_fused_ops(cell, op):
    from torch.profiler import ProfilerActivity, profile

    m = T.SequenceRegressor(cell, 1, 8, 2, impl="fused")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        y, _ = m(torch.randn(4, 5, 1))
        y.sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert {f"fusedrnn::{op}_stack", f"fusedrnn::{op}_stack_backward"} <= names
    assert not any(n.startswith(("aten::lstm", "aten::gru", "aten::rnn_")) for n in names)


def test_residual_model_starts_as_the_naive_forecast():
    m = T.SequenceRegressor("lstm", 1, 8, 1, residual=True)
    x = torch.randn(4, 6, 1)
    y, _ = m(x)
    assert torch.equal(y, x[:, -1])
    ys, _ = m(x, all_steps=True)
    assert torch.equal(ys, x)


def test_loss_falls_on_sine():
    train, val = _sine_windows()
    torch.manual_seed(0)
    model = T.SequenceRegressor("gru", 1, 16, 1, dropout=0.0)
    h = T.fit(model, train, val, _cfg(epochs=6, batch_size=32, lr=1e-2))
    assert h.epochs == 6 and len(h.val_loss) == 6 and len(h.grad_norm) == 6
    assert h.train_loss[-1] < 0.3 * h.train_loss[0]
    assert h.best_val < h.val_loss[0]


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_fused_and_torch_train_alike(cell):
    train, val = _sine_windows(200)
    torch.manual_seed(1)
    a = T.SequenceRegressor(cell, 1, 8, 2, dropout=0.0, impl="fused")
    b = T.SequenceRegressor(cell, 1, 8, 2, dropout=0.0, impl="torch")
    b.load_state_dict(a.state_dict())
    ha = T.fit(a, train, val, _cfg(epochs=2))
    hb = T.fit(b, train, val, _cfg(epochs=2))
    np.testing.assert_allclose(ha.train_loss, hb.train_loss, rtol=1e-4)
    np.testing.assert_allclose(ha.val_loss, hb.val_loss, rtol=1e-4)


def test_huber_and_sgd_train():
    train, val = _sine_windows()
    model = T.SequenceRegressor("rnn", 1, 8, 1, residual=False)  # a level model: room to learn
    h = T.fit(model, train, val, _cfg(epochs=4, optimizer="sgd", lr=0.05, loss="huber"))
    assert h.train_loss[-1] < h.train_loss[0]


def test_tbptt_with_k1_k2_T_equals_full_bptt():
    torch.manual_seed(2)
    x = torch.randn(3, 10, 2)
    y = torch.randn(3, 10, 1)
    a = T.SequenceRegressor("lstm", 2, 6, 2, dropout=0.0)
    b = copy.deepcopy(a)
    ha = T.fit(a, T.Windows(x, y), None, _cfg(epochs=3, batch_size=3, shuffle=False))
    hb = T.fit(
        b, T.Stream(x, y), None, _cfg(epochs=3, batch_size=3, bptt="truncated", k1=10, k2=10)
    )
    np.testing.assert_allclose(ha.train_loss, hb.train_loss, rtol=1e-6)
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-6, atol=1e-7)


def test_tbptt_k1_lt_k2_matches_a_hand_written_schedule():
    """TBPTT(k1=2, k2=4) over 6 steps: updates at t=2, 4, 6; each backpropagates 4 steps (from a
    detached state) but takes the loss of the 2 new steps only."""
    torch.manual_seed(3)
    x, y = torch.randn(2, 6, 1), torch.randn(2, 6, 1)
    model = T.SequenceRegressor("gru", 1, 5, 1)
    ref = copy.deepcopy(model)
    cfg = _cfg(epochs=1, batch_size=2, bptt="truncated", k1=2, k2=4, optimizer="sgd", lr=0.1)
    cfg.momentum, cfg.clip_grad_norm = 0.0, None
    T.fit(model, T.Stream(x, y), None, cfg)

    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    mse = torch.nn.MSELoss()

    def step(loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    out, _ = ref(x[:, 0:2], None, all_steps=True)
    step(mse(out, y[:, 0:2]))
    _, s2 = ref(x[:, 0:2], None, all_steps=True)
    out, _ = ref(x[:, 2:4], s2, all_steps=True)
    step(mse(out, y[:, 2:4]))
    out, _ = ref(x[:, 2:6], s2.detach(), all_steps=True)
    step(mse(out[:, 2:], y[:, 4:6]))
    torch.testing.assert_close(_params(model), _params(ref), rtol=1e-6, atol=1e-7)


def test_tbptt_single_series_in_streams_with_context():
    z = D.noisy_sine(400, period=25, noise=0.02).astype(np.float32)[:, None]
    train = T.Stream(z[:279], z[1:280])
    val = T.Stream(z[:339], z[1:340], start=279)
    model = T.SequenceRegressor("gru", 1, 12, 1, dropout=0.0)
    cfg = _cfg(epochs=5, batch_size=4, bptt="truncated", k1=10, k2=20, lr=1e-2)
    h = T.fit(model, train, val, cfg)
    assert h.train_loss[-1] < h.train_loss[0] and h.best_val < h.val_loss[0]
    with pytest.raises(ValueError, match="k1 <= k2"):
        T.TrainConfig(bptt="truncated", k1=5, k2=2)
    with pytest.raises(TypeError, match="Stream"):
        T.fit(model, T.Windows(np.zeros((2, 3, 1)), np.zeros((2, 1))), None, cfg)


def test_clipping_bounds_the_update():
    torch.manual_seed(4)
    x = torch.randn(8, 5, 1)
    y = torch.full((8, 1), 1000.0)  # huge error -> huge gradient
    model = T.SequenceRegressor("rnn", 1, 6, 1)
    before = _params(model).clone()
    cfg = _cfg(epochs=1, batch_size=8, optimizer="sgd", momentum=0.0, lr=1.0, clip_grad_norm=0.05)
    h = T.fit(model, T.Windows(x, y), None, cfg)
    assert h.grad_norm[0] > 100  # the norm before clipping
    assert torch.linalg.vector_norm(_params(model) - before) <= 0.05 * 1.0 + 1e-6


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.0, (64, 4, 1)).astype(np.float32)
    train = T.Windows(x, x[:, -1])  # learn y = last input ...
    val = T.Windows(x, -x[:, -1])  # ... which takes the validation loss the wrong way
    model = T.SequenceRegressor("gru", 1, 8, 1, dropout=0.0, residual=False)
    trainer = T.Trainer(model, _cfg(epochs=50, patience=3, lr=1e-2))
    h = trainer.fit(train, val)
    assert h.stopped_early and h.epochs < 50
    assert h.best_epoch == int(np.argmin(h.val_loss)) < h.epochs - 1
    assert trainer.evaluate(val) == pytest.approx(h.best_val, rel=1e-5)
    assert min(h.val_loss) == h.best_val < h.val_loss[-1]


def test_checkpoint_carries_config_and_loads_weights_only(tmp_path):
    train, val = _sine_windows(200)
    model = T.SequenceRegressor("lstm", 1, 8, 2)
    path = tmp_path / "ck" / "model.pt"
    h = T.fit(model, train, val, _cfg(epochs=2, lr=3e-3, checkpoint=str(path)))
    ck = torch.load(path, weights_only=True)
    assert ck["config"]["lr"] == 3e-3 and ck["epoch"] == 2
    assert ck["model_config"]["cell"] == "lstm" and ck["model_config"]["hidden_size"] == 8
    assert ck["history"]["train_loss"] == h.train_loss
    again = T.model_from_checkpoint(path, impl="torch")
    assert type(again.rnn) is torch.nn.LSTM
    torch.testing.assert_close(_params(again), _params(model))  # best weights, as restored


def test_interrupted_checkpoint_leaves_the_previous_one(tmp_path, monkeypatch):
    model = T.SequenceRegressor("gru", 1, 4, 1)
    trainer = T.Trainer(model, _cfg())
    path = tmp_path / "ck.pt"
    trainer.save(path)
    good = path.read_bytes()

    def dying_save(obj, f, *a, **k):
        with open(f, "wb") as out:  # torch.save's target: the temporary file's path
            out.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    monkeypatch.setattr(T.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]  # no temp file left
    T.load_checkpoint(path)


def test_resume_continues_identically(tmp_path):
    train, val = _sine_windows(200)
    cfg = dict(epochs=4, lr=3e-3, shuffle=True, seed=7)  # dropout and shuffling use the RNGs

    torch.manual_seed(5)
    a = T.SequenceRegressor("lstm", 1, 8, 2, dropout=0.3)
    init = copy.deepcopy(a.state_dict())
    ha = T.fit(a, train, val, _cfg(**cfg))

    b = T.SequenceRegressor("lstm", 1, 8, 2, dropout=0.3)
    b.load_state_dict(init)
    path = tmp_path / "run.pt"
    T.fit(b, train, val, _cfg(**{**cfg, "epochs": 2, "checkpoint": str(path)}))

    torch.manual_seed(999)  # a fresh process: other weights, other RNG state
    c = T.SequenceRegressor("lstm", 1, 8, 2, dropout=0.3)
    hc = T.fit(c, train, val, _cfg(**cfg), resume=path)
    assert hc.train_loss == ha.train_loss and hc.val_loss == ha.val_loss
    assert torch.equal(_params(c), _params(a))


def test_save_after_fit_and_a_further_fit_continue_identically(tmp_path):
    """fit() leaves the best epoch's weights in the model; a checkpoint saved after it, and a
    second fit with more epochs, still go on from the last epoch, as an uninterrupted run."""
    train, val = _sine_windows(200)
    cfg = dict(epochs=6, lr=0.05, shuffle=True, seed=3)  # a rate that overshoots: best < last
    torch.manual_seed(5)
    a = T.SequenceRegressor("gru", 1, 8, 1)
    init = copy.deepcopy(a.state_dict())
    ha = T.fit(a, train, val, _cfg(**cfg))

    b = T.SequenceRegressor("gru", 1, 8, 1)
    b.load_state_dict(init)
    tb = T.Trainer(b, _cfg(**{**cfg, "epochs": 3}))
    tb.fit(train, val)
    path = tmp_path / "after_fit.pt"
    tb.save(path)
    tb.config.epochs = 6  # the same trainer, further
    hb = tb.fit(train, val)
    assert hb.train_loss == ha.train_loss and torch.equal(_params(b), _params(a))

    torch.manual_seed(999)
    c = T.SequenceRegressor("gru", 1, 8, 1)
    hc = T.fit(c, train, val, _cfg(**cfg), resume=path)
    assert hc.train_loss == ha.train_loss and torch.equal(_params(c), _params(a))


def test_checkpoints_get_the_permissions_of_any_file(tmp_path):
    """mkstemp makes 0600: a checkpoint was unreadable to others where every result file was
    not; it now has what the umask gives a plainly created file."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "c.pt"
    T.save_checkpoint(path, {"x": torch.zeros(2)})
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    """An Adam checkpoint loaded into an SGD trainer (or another rate, batch, seed) without a
    word, its rate replacing the config's; more epochs or another patience are fine."""
    train, val = _sine_windows(150)
    m = T.SequenceRegressor("gru", 1, 4, 1)
    path = tmp_path / "a.pt"
    T.fit(m, train, val, _cfg(epochs=1, checkpoint=str(path)))
    for kw, says in ((dict(optimizer="sgd"), "optimizer 'adam' -> 'sgd'"),
                     (dict(lr=0.1), "lr 0.001 -> 0.1"), (dict(batch_size=8), "batch_size")):  # fmt: skip
        with pytest.raises(ValueError, match=says):
            T.Trainer(T.SequenceRegressor("gru", 1, 4, 1), _cfg(**kw)).resume(path)
    t = T.Trainer(T.SequenceRegressor("gru", 1, 4, 1), _cfg(epochs=5, patience=3))
    t.resume(path)
    assert t.epoch == 1


def test_library_default_is_the_residual_head_of_the_cli():
    """fit(SequenceRegressor('lstm', 1, H, L, 1), ...) on prices must not lose to the naive
    forecast by a mile (issue 14: the level head gave 4.5x the naive RMSE on AAPL)."""
    s = D.load_prices("AAPL", "5y", "bundled")
    w = D.prepare_windows(s.close, 30)
    model = T.SequenceRegressor("lstm", 1, 16, 1, 1)
    assert model.residual and model.config["residual"]
    T.fit(model, T.Windows(w.x_train, w.y_train), T.Windows(w.x_val, w.y_val), _cfg(epochs=2))
    model.eval()
    with torch.no_grad():
        pred = w.inverse(model(torch.from_numpy(w.x_test))[0][:, 0].numpy())
    actual, naive = s.close[w.t_test], s.close[w.t_test - 1]
    rmse = lambda p: float(np.sqrt(np.mean((p - actual) ** 2)))  # noqa: E731
    assert rmse(pred) < 1.1 * rmse(naive)


def test_residual_head_adds_the_last_close_to_every_horizon():
    m = T.SequenceRegressor("gru", 3, 4, 1, output_size=5)
    x = torch.randn(2, 6, 3)
    y, _ = m(x)
    assert torch.equal(y, x[:, -1, :1].expand(2, 5))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(clip_grad_norm=-1.0), "clip_grad_norm"),
        (dict(clip_grad_norm=float("nan")), "clip_grad_norm"),
        (dict(patience=0), "patience"),
        (dict(patience=-1), "patience"),
        (dict(lr=-1e-3), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(momentum=1.5), "momentum"),
        (dict(eval_batch_size=0), "eval_batch_size"),
        (dict(huber_delta=0.0), "huber_delta"),
        (dict(huber_delta=float("nan")), "huber_delta"),
        (dict(seed=2**70), "seed"),
        (dict(seed=-1), "seed"),
    ],
)
def test_train_config_refuses_silently_wrong_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        T.TrainConfig(**kw)


@pytest.mark.parametrize(
    "kw", [dict(epochs=float("nan")), dict(epochs=2.5), dict(batch_size=True), dict(lr="0.01")]
)
def test_train_config_refuses_wrong_types(kw):
    name = next(iter(kw))
    with pytest.raises(TypeError, match=name):
        T.TrainConfig(**kw)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_output_size_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="output_size"):
        T.SequenceRegressor("gru", 2, 5, 1, output_size=bad)


@pytest.mark.parametrize("out", [1, 3])
def test_predictions_that_do_not_match_the_targets_are_refused(out):
    """output_size 3 against [M, 1] targets (or 1 against [M, 3]) broadcast into a wrong
    loss with only torch's warning."""
    x = torch.randn(40, 6, 2)
    y = torch.randn(40, 4 - out)  # 3 targets for 1 output, 1 for 3
    model = T.SequenceRegressor("gru", 2, 5, 1, output_size=out)
    with pytest.raises(ValueError, match="do not match the targets"):
        T.Trainer(model, _cfg(epochs=1)).fit(T.Windows(x, y))


@pytest.mark.parametrize("holder", ["windows_x", "windows_y", "stream_x"])
def test_nan_or_inf_in_the_data_is_refused(holder):
    x, y = torch.randn(20, 5, 2), torch.randn(20, 1)
    if holder == "windows_x":
        x[3, 2, 1] = float("nan")
    elif holder == "windows_y":
        y[7, 0] = float("inf")
    if holder.startswith("windows"):
        with pytest.raises(ValueError, match=r"Windows\.[xy]: NaN or inf at index"):
            T.Windows(x, y)
    else:
        s = torch.randn(50, 2)
        s[10, 0] = float("nan")
        with pytest.raises(ValueError, match=r"Stream\.x: NaN or inf at index \(0, 10, 0\)"):
            T.Stream(s, torch.randn(50, 1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_of_another_dtype_trains(dtype):
    """The holders cast to float32 before: a float64 (or bfloat16) model could not train. fit
    and predict hand the model data in its own dtype."""
    train, val = _sine_windows()
    model = T.SequenceRegressor("lstm", 1, 6, 1, impl="fused").to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bfloat16 on the CPU: torch.nn's kernels, with a warning
        hist = T.Trainer(model, _cfg(epochs=2)).fit(train, val)
        assert T.Trainer(model, _cfg()).predict(val).dtype == dtype
    assert hist.epochs == 2 and all(np.isfinite(hist.train_loss))
