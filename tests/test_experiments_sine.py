"""``fusedrnn sine`` end to end on a tiny setting."""

import json

import numpy as np
import pytest
import torch

from fusedrnn.cli import main
from fusedrnn.experiments import sine


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is fastest (and kind to a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_split_is_chronological_and_windows_are_right():
    s = np.arange(100, dtype=np.float64)
    parts = sine.split(s, 5)
    x, y, idx = parts["train"]
    np.testing.assert_array_equal(x[3, :, 0].numpy(), s[idx[3] - 5 : idx[3]])
    assert y[3] == s[idx[3]]
    assert parts["train"][2].max() < parts["val"][2].min() <= parts["val"][2].max()
    assert parts["val"][2].max() < parts["test"][2].min()


def test_cli_sine_quick(tmp_path, capsys):
    assert main(["sine", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "test MSE" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["models"]) >= {"rnn", "lstm", "gru"}
    assert res["reference_max_diff"] < 1e-5  # fused hidden states == NumPy reference
    for f in ("predictions.png", "scatter.png", "hidden_states.png"):
        assert (tmp_path / f).exists()


# ---- arguments checked before any work; results written atomically ------------------------


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if any model starts training."""

    def boom(*a, **k):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(sine, "train", boom)


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--batch", "0", "must be >= 1"),
        ("--batch", "-5", "must be >= 1"),
        ("--epochs", "0", "must be >= 1"),
        ("--epochs", "-3", "must be >= 1"),
        ("--noise", "nan", "finite"),
        ("--noise", "-1", "must be >= 0"),
        ("--period", "nan", "finite"),
        ("--period", "0", "must be > 2"),
        ("--window", "0", "must be >= 1"),
        ("--points", "0", "must be >= 1"),
        ("--lr", "nan", "finite"),
        ("--lr", "-1", "must be > 0"),
        ("--hidden", "0", "must be >= 1"),
        ("--small-hidden", "0", "must be >= 1"),
        ("--seed", "-1", "must be >= 0"),
        ("--seed", str(2**32), "must be <= 4294967295"),
        ("--patience", "-1", "must be >= 1"),
        ("--models", ",", "use a comma list of rnn, lstm, gru"),
        ("--models", "rnn,transformer", "use a comma list"),
        ("--threads", "-1", "must be >= 0"),
        ("--threads", "100000", "at most 4 x this machine's CPUs"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, no_training, flag, value, says):
    with pytest.raises(SystemExit) as e:
        main(["sine", "--quick", flag, value, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and says in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--window", "5000"], "--window 5000 leaves"),
        (["--points", "40"], "use --points >= 45"),
        (["--quick", "--window", "300"], "--points 400 (--quick)"),
    ],
)
def test_too_few_points_for_the_windows_fail_before_training(tmp_path, capsys, no_training,
                                                             argv, says):  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(["sine", *argv, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_the_fewest_points_the_check_allows_do_run(tmp_path, capsys):
    """The smallest --points the window check accepts trains (one train window) and saves."""
    argv = ["--points", "45", "--epochs", "1", "--hidden", "2", "--small-hidden", "2"]
    assert main(["sine", *argv, "--models", "rnn", "--no-plots", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["config"]["points"] == 45


@pytest.mark.parametrize("under", [False, True])
def test_unwritable_out_fails_before_training(tmp_path, no_training, under):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="--out .*cannot write there"):
        main(["sine", "--quick", "--out", str(blocker / "sub" if under else blocker)])
    assert blocker.read_text() == "not a folder"


def test_a_failing_write_leaves_no_partial_file(tmp_path, monkeypatch, disk_full):
    """A figure that fails halfway (disk full, Ctrl-C) and a failing rename of results.json
    leave nothing at the final names, and no temporary files."""
    disk_full.figures()
    assert (
        main(["sine", "--quick", "--models", "rnn", "--out", str(tmp_path)]) == 1
    )  # one line (cli.main), not a traceback
    assert list(tmp_path.iterdir()) == []

    disk_full.renames("results.json")
    assert (
        main(["sine", "--quick", "--models", "rnn", "--no-plots", "--out", str(tmp_path)]) == 1
    )  # one line (cli.main), not a traceback
    assert list(tmp_path.iterdir()) == []


def test_a_diverging_run_is_one_line_and_writes_nothing(tmp_path, capsys):
    argv = ["sine", "--quick", "--lr", "1e30", "--models", "rnn", "--out", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "--lr" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_quick_keeps_the_values_given_on_the_command_line(monkeypatch):
    """``--quick`` sets its tiny values only where the command line is silent: an explicit
    value wins, the default's own value included."""
    seen = []
    monkeypatch.setattr(sine, "run", lambda args: seen.append(sine._config(args)) or 0)
    default_epochs = sine.SineConfig().epochs
    assert main(["sine", "--quick", "--epochs", str(default_epochs), "--hidden", "3"]) == 0
    assert main(["sine", "--quick"]) == 0
    assert main(["sine", "--hidden", "3"]) == 0
    given, quick, plain = seen
    assert (given.epochs, given.hidden, given.points, given.patience) == (default_epochs, 3, 400, 2)
    assert (quick.epochs, quick.hidden, quick.points) == (3, 8, 400)
    assert (plain.hidden, plain.points) == (3, sine.SineConfig().points)
