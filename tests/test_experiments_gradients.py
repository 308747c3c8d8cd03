"""``fusedrnn gradients``: the measurement is correct (two methods and the NumPy reference
agree) and its numbers show what the experiment claims."""

import numpy as np
import pytest
import torch

from fusedrnn import reference
from fusedrnn.cli import main
from fusedrnn.experiments import gradients as G


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is fastest (and kind to a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("cell", G.CELLS)
def test_cell_and_layer_methods_agree(cell):
    assert G.check_methods(cell, T=8, hidden=6, batch=3) < 1e-10


@pytest.mark.parametrize("cell", G.CELLS)
def test_hidden_grad_norms_match_numpy_reference(cell):
    T, B, I, H = 9, 3, 4, 5
    w = G.init_weights(cell, I, H, 1.1, gate_bias=1.0, seed=3)
    x = G.make_inputs(T, B, I, 0.5, seed=3)
    v = G.loss_direction(B, H, seed=3)
    norms = G.hidden_grad_norms(cell, w, x, v)
    ref = {"rnn": reference.ElmanRNN, "lstm": reference.LSTM, "gru": reference.GRU}[cell](I, H)
    ref.load(*w)
    ref.forward(x.numpy())
    hid = ref.backward(grad_hn=v.numpy())["hidden"]  # [T+1, B, H]
    np.testing.assert_allclose(norms, np.linalg.norm(hid, axis=-1).mean(-1), rtol=1e-9)
    assert norms[-1] == pytest.approx(1.0)  # ||dL/dh_T|| = ||v|| = 1


def test_recurrent_weights_have_the_requested_spectral_radius():
    for cell in G.CELLS:
        w_hh = G.init_weights(cell, 3, 8, 0.8)[1]
        for block in w_hh.split(8):
            assert torch.linalg.eigvals(block).abs().max().item() == pytest.approx(0.8)
            np.testing.assert_allclose(torch.linalg.svdvals(block), 0.8, rtol=1e-12)


def test_rnn_gradient_vanishes_and_explodes_lstm_gru_preserve():
    kw = dict(hidden=16, batch=4, input_scale=0.1)
    rnn_small = G.ratio(G.measure("rnn", 50, 0.5, **kw))
    assert rnn_small < 1e-3  # measured ~1e-15: 0.5^50
    assert rnn_small ** (1 / 50) == pytest.approx(0.5, rel=0.1)  # exponential, rate = radius
    assert G.ratio(G.measure("rnn", 50, 1.3, **kw)) > 1.0  # grows
    for cell in ("lstm", "gru"):
        r = G.ratio(G.measure(cell, 50, 0.5, gate_bias=3.0, **kw))
        assert r > 1e-2 and r > 1e6 * rnn_small
        # with the gate closed (bias 0) the gradient vanishes like the RNN's
        assert G.ratio(G.measure(cell, 50, 1.0, gate_bias=0.0, **kw)) < 1e-3


def test_clipping_tames_the_exploding_case():
    res = G.clipping_demo(T=30, hidden=16, steps=12, lr=0.1, batch=8, seeds=2)
    for run in res["no clipping"]:
        assert max(run["grad_norm"]) > 1.0  # the gradient exceeds the threshold
    for run in res["clip 1"]:
        assert np.isfinite(run["loss"]).all() and np.isfinite(run["final_loss"])
    assert "diverged" in G.format_clipping(res, 1.3, 30, 0.1)


def test_chrono_init():
    import fusedrnn

    lstm, gru = fusedrnn.LSTM(3, 8), fusedrnn.GRU(3, 8)
    G.chrono_init(lstm, 50)
    G.chrono_init(gru, 50)
    f = lstm.bias_ih_l0[8:16] + lstm.bias_hh_l0[8:16]
    assert ((f >= 0) & (f <= np.log(49) + 1e-6)).all()
    torch.testing.assert_close(lstm.bias_ih_l0[:8] + lstm.bias_hh_l0[:8], -f)
    z = gru.bias_ih_l0[8:16] + gru.bias_hh_l0[8:16]
    assert ((z >= 0) & (z <= np.log(49) + 1e-6)).all()


def test_memory_task_runs():
    res = G.memory_task(["rnn", "lstm"], [4], hidden=8, steps=5, batch=8, test_size=50)
    assert set(res) == {"rnn", "lstm"} and 0.0 <= res["lstm"][4] <= 1.0


def test_cli_gradients_quick(tmp_path, capsys):
    assert main(["gradients", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "||dL/dh_0|| / ||dL/dh_T||" in out and "long-range memory" in out
    for f in ("gradient_norms.png", "tanh.png", "clipping.png", "results.json"):
        assert (tmp_path / f).exists()


# ---- arguments checked before any work; results written atomically ------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if any measurement starts."""

    def boom(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(G, "check_methods", boom)


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--clip-lr", "-1", "must be > 0"),
        ("--clip-lr", "0", "must be > 0"),
        ("--hidden", "0", "must be >= 1"),
        ("--hidden", "-3", "must be >= 1"),
        ("--batch", "-2", "must be >= 1"),
        ("--batch", "0", "must be >= 1"),
        ("--clip-steps", "0", "must be >= 1"),
        ("--memory-lengths", "0", "must be >= 1"),
        ("--memory-lengths", "10,x", "not an integer"),
        ("--memory-hidden", "0", "must be >= 1"),
        ("--input-scale", "nan", "finite"),
        ("--input-scale", "-1", "must be >= 0"),
        ("--max-norm", "-1", "must be > 0"),
        ("--max-norm", "0", "must be > 0"),
        ("--max-norm", "nan", "finite"),
        ("--radii", "nan", "finite"),
        ("--radii", "0.5,-1", "must be > 0"),
        ("--lengths", "0", "must be >= 1"),
        ("--lengths", "5,-5", "must be >= 1"),
        ("--lengths", ",", "not a comma-separated list"),
        ("--clip-runs", "0", "must be >= 1"),
        ("--clip-radius", "inf", "finite"),
        ("--memory-steps", "0", "must be >= 1"),
        ("--gate-bias", "nan", "finite"),
        ("--seed", "-1", "must be >= 0"),
        ("--seed", str(2**32), "must be <= 4294967295"),
        ("--cells", ",", "use a comma list of rnn, lstm, gru"),
        ("--cells", "rnn,cnn", "use a comma list"),
        ("--threads", "100000", "at most 4 x this machine's CPUs"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, no_work, flag, value, says):
    with pytest.raises(SystemExit) as e:
        main(["gradients", "--quick", flag, value, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and says in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("under", [False, True])
def test_unwritable_out_fails_before_any_work(tmp_path, no_work, under):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="--out .*cannot write there"):
        main(["gradients", "--quick", "--out", str(blocker / "sub" if under else blocker)])
    assert blocker.read_text() == "not a folder"


def test_a_failing_write_leaves_no_partial_file(tmp_path, monkeypatch, disk_full):
    """A plot that fails halfway and a failing rename of results.json leave nothing at the
    final names, and no temporary files."""
    argv = ["gradients", "--quick", "--cells", "rnn", "--no-memory", "--out", str(tmp_path)]
    disk_full.figures()
    assert main(argv) == 1  # one line (cli.main), not a traceback
    assert list(tmp_path.iterdir()) == []

    disk_full.renames("results.json")
    assert main([*argv, "--no-plots"]) == 1  # one line (cli.main), not a traceback
    assert list(tmp_path.iterdir()) == []


def test_quick_keeps_the_values_given_on_the_command_line(tmp_path, monkeypatch):
    """``--quick --lengths 7 --hidden 5`` sweeps length 7 with 5 units, the rest tiny."""
    seen = {}

    class Stop(Exception):
        pass

    def sweep(cells, lengths, radii, **kw):
        seen.update(lengths=lengths, radii=radii, **kw)
        raise Stop

    monkeypatch.setattr(G, "check_methods", lambda cell: 0.0)
    monkeypatch.setattr(G, "sweep", sweep)
    with pytest.raises(Stop):
        main(["gradients", "--quick", "--lengths", "7", "--hidden", "5", "--out", str(tmp_path)])
    assert seen["lengths"] == [7] and seen["hidden"] == 5
    assert seen["radii"] == [0.5, 1.0, 1.3] and seen["batch"] == 4
