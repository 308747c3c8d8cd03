"""`fusedrnn stock` and `fusedrnn forecast`: arguments checked before any work, run folders,
atomic results, --resume identity, Ctrl-C, CSV input, horizons/features/targets/folds."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fusedrnn import cli
from fusedrnn import train as T

SMALL = ["--period", "1y", "--window", "10", "--hidden", "6", "--layers", "1", "--epochs", "2"]
ONE = [*SMALL, "--cell", "gru", "--impl", "fused", "--no-plots", "--quiet"]


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if any model starts training."""

    def boom(*a, **k):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(T.Trainer, "fit", boom)


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--clip", "-1", "must be >= 0"),
        ("--patience", "-1", "must be >= 0"),
        ("--lr", "-1", "must be > 0"),
        ("--lr", "nan", "finite"),
        ("--lr", "inf", "finite"),
        ("--threads", "-2", "must be >= 0"),
        ("--device", "mps", "cpu or cuda"),
        ("--device", "banana", "not a device"),
        ("--dropout", "1", "must be < 1"),
        ("--momentum", "nan", "finite"),
        ("--window", "0", "must be >= 1"),
        ("--horizon", "0", "must be >= 1"),
        ("--folds", "0", "must be >= 1"),
        ("--test-fraction", "1.5", "must be < 1"),
        ("--sweep-lr", "0.01,-1", "must be > 0"),
        ("--timeout", "0", "must be > 0"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, no_training, flag, value, says):
    with pytest.raises(SystemExit) as e:
        cli.main(["stock", *ONE, flag, value, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and says in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--season", "--ma"])
def test_baseline_look_back_longer_than_the_history_is_refused(tmp_path, capsys, no_training, flag):
    """A --season / --ma longer than the history before the first test forecast was clipped
    silently (the seasonal naive read day 0); refused before training, naming the most."""
    rc = cli.main(["stock", *ONE, flag, "100000", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{flag} 100000" in err and f"use {flag} <=" in err


@pytest.mark.parametrize("value, says", [("nan", "finite"), ("-5", "must be > 0")])
def test_forecast_timeout_is_checked(capsys, value, says):
    with pytest.raises(SystemExit) as e:
        cli.main(["forecast", "--model", "nowhere.pt", "--timeout", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --timeout" in err and says in err


def test_a_missing_cuda_device_is_refused(tmp_path, capsys, no_training):
    if torch.cuda.is_available():
        bad = f"cuda:{torch.cuda.device_count()}"
    else:
        bad = "cuda"
    with pytest.raises(SystemExit):
        cli.main(["stock", *ONE, "--device", bad, "--out", str(tmp_path)])
    assert "argument --device" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--features", "close,volume"], "no column 'volume'"),
        (["--period", "5 years"], "--period"),
        (["--target", "log-return", "--residual"], "--residual"),
        (["--source", "no/such/file.csv"], "nor an existing file"),
        (["--bptt", "truncated", "--k1", "9", "--k2", "3"], "--k1 <= --k2"),
    ],
)
def test_bad_combinations_fail_before_training(tmp_path, capsys, no_training, extra, says):
    try:
        rc = cli.main(["stock", *ONE, *extra, "--out", str(tmp_path)])
    except SystemExit as e:
        rc, err = e.code, str(e.code)
    else:
        err = capsys.readouterr().err
    assert rc != 0 and says in err + capsys.readouterr().err


def test_unwritable_out_fails_first(tmp_path, no_training):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="--out .*cannot write there"):
        cli.main(["stock", *ONE, "--out", str(blocker / "sub")])


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
    reason="root can write into read-only folders",
)
def test_read_only_out_fails_first(tmp_path, no_training):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(SystemExit, match="cannot write there"):
        cli.main(["stock", *ONE, "--out", str(ro)])


def test_two_runs_into_one_out_do_not_clobber(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["stock", *ONE, "--out", str(out)]) == 0
    assert cli.main(["stock", *ONE, "--seed", "1", "--out", str(out)]) == 0
    runs = sorted(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(runs) == 2
    seeds = [json.loads((r / "metrics.json").read_text())["config"]["seed"] for r in runs]
    assert sorted(seeds) == [0, 1]
    assert json.loads((out / "latest" / "metrics.json").read_text())["config"]["seed"] == 1


def test_ctrl_c_is_one_line_and_leaves_no_files(tmp_path, capsys, monkeypatch):
    calls = []

    def interrupted(self, data, bar):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(T.Trainer, "_epoch_full", interrupted)
    out = tmp_path / "o"
    assert cli.main(["stock", *ONE, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip()
    assert calls and err.count("\n") == 0 and "interrupted" in err and "Traceback" not in err
    assert [p.name for p in out.rglob("*")] == []  # the run folder is gone, nothing partial


def test_ctrl_c_keeps_complete_checkpoints_for_resume(tmp_path, capsys, monkeypatch):
    real = T.Trainer._epoch_full

    def second_epoch_interrupted(self, data, bar):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real(self, data, bar)

    monkeypatch.setattr(T.Trainer, "_epoch_full", second_epoch_interrupted)
    out = tmp_path / "o"
    assert cli.main(["stock", *ONE, "--save-models", "--out", str(out)]) == 130
    assert "checkpoints kept" in capsys.readouterr().err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["gru_fused.pt"]
    assert T.load_checkpoint(files[0])["epoch"] == 1


def test_resume_refuses_another_symbol_or_config(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["stock", *ONE, "--save-models", "--out", str(out)]) == 0
    with pytest.raises(SystemExit, match=r"other data or settings: data\.symbol 'AAPL' -> 'IBM'"):
        cli.main(["stock", *ONE, "--symbol", "IBM", "--resume", "--out", str(out)])
    with pytest.raises(SystemExit, match=r"model\.hidden_size 6 -> 7"):
        cli.main(["stock", *ONE, "--hidden", "7", "--resume", "--out", str(out)])
    with pytest.raises(SystemExit, match="no run with saved models"):
        cli.main(["stock", *ONE, "--resume", str(tmp_path / "nowhere"), "--out", str(out)])


def _csv(path, n=260, blank_at=(100,)):
    dates = np.busday_offset("2020-01-01", np.arange(n), roll="forward")
    rng = np.random.default_rng(0)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    lines = ["date,open,high,low,close,volume"]
    for i, (d, c) in enumerate(zip(dates, close)):
        cell = "" if i in blank_at else f"{c:.4f}"
        lines.append(f"{d},{c * 0.99:.4f},{c * 1.01:.4f},{c * 0.98:.4f},{cell},{1000 + i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_source_is_titled_by_its_file_and_blanks_are_filled(tmp_path, capsys):
    src = _csv(tmp_path / "acme.csv")
    out = tmp_path / "o"
    argv = ["stock", *ONE[:-1], "--period", "max", "--source", str(src), "--out", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "ACME next-day close" in text and "AAPL" not in text
    assert "filled 1 missing close value(s) forward" in text
    m = json.loads((out / "latest" / "metrics.json").read_text())
    assert m["data"]["symbol"] == "ACME" and len(m["data"]["filled"]) == 1


def test_verdict_is_about_significance_not_a_ratio(tmp_path, capsys):
    assert cli.main(["stock", *ONE, "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Beat the naive" not in text
    line = next(ln for ln in text.splitlines() if ln.startswith("GRU/fused: RMSE"))
    assert "Diebold-Mariano p = " in line and "significant" in line
    m = json.loads((tmp_path / "latest" / "metrics.json").read_text())
    r = m["results"][0]
    assert r["beats_naive"] == (r["dm_stat"] < 0 and r["dm_p"] < 0.05)
    for name in ("seasonal naive", "moving average", "linear AR"):
        assert {"mape", "direction", "rmse"} <= set(m["baselines"][name])


def test_horizon_features_log_returns_and_walk_forward_then_forecast(tmp_path, capsys):
    src = _csv(tmp_path / "acme.csv", n=320)
    out = tmp_path / "o"
    argv = ["stock", *ONE, "--period", "max", "--source", str(src), "--horizon", "3"]
    argv += ["--features", "close,volume,high", "--target", "log-return", "--folds", "2"]
    argv += ["--origin", "sliding", "--save-models", "--out", str(out)]
    assert cli.main(argv) == 0
    m = json.loads((out / "latest" / "metrics.json").read_text())
    assert m["data"]["features"] == ["close", "volume", "high"] and m["data"]["horizon"] == 3
    folds = m["backtest"]["folds"]
    assert [f["fold"] for f in folds] == [1, 2] and folds[0]["test"][1] < folds[1]["test"][0]
    first_train = [f["train"][0] for f in folds]
    assert first_train[0] < first_train[1]  # sliding: the training window moves
    assert set(folds[0]["metrics"]) >= {"GRU/fused", "naive", "linear AR"}
    ckpt = T.load_checkpoint(out / "latest" / "models" / "gru_fused_fold2.pt")
    assert ckpt["model_config"]["input_size"] == 3 and ckpt["model_config"]["output_size"] == 3
    assert not ckpt["model_config"]["residual"]  # a log-return model predicts around 0
    capsys.readouterr()
    model = out / "latest" / "models" / "gru_fused_fold2.pt"
    assert cli.main(["forecast", "--model", str(model), "--csv", str(src)]) == 0
    text = capsys.readouterr().out
    last = np.busday_offset("2020-01-01", 319, roll="forward")
    nxt = [str(np.busday_offset(last, k)) for k in (1, 2, 3)]
    for d in nxt:
        assert d in text
    assert "horizon 3, target log-return, features close, volume, high" in text


def test_forecast_command_from_a_stock_model(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["stock", *ONE, "--save-models", "--out", str(out)]) == 0
    capsys.readouterr()
    model = out / "latest" / "models" / "gru_fused.pt"
    assert cli.main(["forecast", "--model", str(model)]) == 0
    text = capsys.readouterr().out
    assert "last close 2013-03-01" in text and "2013-03-04 Mon" in text  # the next business day
    assert cli.main(["forecast", "--model", str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_forecast_help_lists_the_command():
    p = subprocess.run([sys.executable, "-m", "fusedrnn", "forecast", "--help"],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert p.returncode == 0 and "--model" in p.stdout and "--csv" in p.stdout


def test_a_diverging_run_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(T.Trainer, "_epoch_full", lambda self, data, bar: (float("nan"), 0.0))
    out = tmp_path / "o"
    assert cli.main(["stock", *ONE, "--out", str(out)]) == 1
    assert "training diverged" in capsys.readouterr().err
    assert list(out.iterdir()) == []
