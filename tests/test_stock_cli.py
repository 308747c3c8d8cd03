"""`fusedrnn stock` end to end on a small setting: table, plots, metrics, sweep, errors."""

import csv
import json
import os
import subprocess
import sys

import pytest

from fusedrnn import cli

SMALL = ["--period", "1y", "--window", "10", "--hidden", "6", "--layers", "2", "--epochs", "2"]


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_stock_end_to_end(tmp_path, capsys):
    out = tmp_path / "stock"
    rc = cli.main(["stock", *SMALL, "--cell", "rnn,gru", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    # the table: every model with both implementations, the naive baseline, the speed-up
    for word in ("test MSE", "MAE", "RMSE", "speed-up", "naive", "RNN", "GRU", "fused", "torch"):
        assert word in text
    assert "data: bundled" in text
    run = out / "latest"  # each run writes into its own folder; latest -> the last one
    assert run.is_symlink() and run.resolve().parent == out.resolve()
    for name in ("loss_curves.png", "predictions.png", "metrics.png"):
        assert _png(run / name), name
    m = json.loads((run / "metrics.json").read_text())
    assert m["data"]["symbol"] == "AAPL" and m["data"]["source"] == "bundled"
    # every fused model has a measured speed-up, printed in the table as in metrics.json
    timed = {r["cell"]: r["speedup_vs_torch"] for r in m["results"] if "speedup_vs_torch" in r}
    assert set(timed) == {"rnn", "gru"}
    for cell, s in timed.items():
        assert s > 0 and f"{s:.2f}x" in text, cell
    assert [(r["cell"], r["impl"]) for r in m["results"]] == [
        ("rnn", "fused"),
        ("rnn", "torch"),
        ("gru", "fused"),
        ("gru", "torch"),
    ]
    for r in m["results"]:
        assert r["rmse"] > 0 and r["mae"] > 0 and r["train_time_s"] > 0 and r["epochs"] <= 2
        assert r["rmse_vs_naive"] == pytest.approx(r["rmse"] / m["naive"]["rmse"])
    assert "speedup_vs_torch" in m["results"][0]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    # the 4 models, then the baselines (seasonal naive, moving average, linear AR), naive last
    assert rows[-1]["model"] == "naive" and len(rows) == 8
    assert (run / "table.txt").read_text().count("\n") >= 6
    assert not [p for p in run.rglob("*") if p.name.startswith(".")]  # no temporary files


def test_stock_truncated_bptt_fused_only_with_checkpoints(tmp_path, capsys):
    out = tmp_path / "tb"
    argv = ["stock", *SMALL, "--cell", "lstm", "--impl", "fused", "--bptt", "truncated"]
    argv += ["--k1", "5", "--k2", "10", "--batch-size", "4", "--no-plots", "--save-models"]
    assert cli.main([*argv, "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "latest" / "metrics.json").read_text())
    assert [r["impl"] for r in m["results"]] == ["fused"]
    assert m["config"]["bptt"] == "truncated" and m["config"]["k2"] == 10
    assert (out / "latest" / "models" / "lstm_fused.pt").is_file()
    assert not list((out / "latest").glob("*.png"))


def test_stock_sweep(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["stock", *SMALL, "--cell", "gru", "--sweep", "--sweep-hidden", "4,8"]
    argv += ["--sweep-layers", "1", "--sweep-lr", "0.003", "--epochs", "1"]
    assert cli.main([*argv, "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "best GRU on validation" in text
    rows = list(csv.DictReader(open(out / "latest" / "sweep.csv")))
    assert sorted(int(r["hidden"]) for r in rows) == [4, 8]
    assert _png(out / "latest" / "sweep.png")


def test_stock_bad_symbol_is_a_clear_error(tmp_path, capsys):
    rc = cli.main(["stock", "--symbol", "NOPE", "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    assert "not in the bundled data" in capsys.readouterr().err


def test_stock_help_from_the_command_line():
    env = {**os.environ, "COLUMNS": "100"}
    p = subprocess.run(
        [sys.executable, "-m", "fusedrnn", "stock", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert p.returncode == 0
    for opt in ("--symbol", "--source", "--period", "--epochs", "--cell", "--out", "--impl"):
        assert opt in p.stdout
    assert "--sweep" in p.stdout and "--quiet" in p.stdout


def test_stock_resume_continues_from_the_saved_models(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["stock", *SMALL, "--cell", "gru", "--impl", "fused", "--no-plots", "--save-models"]
    argv += ["--patience", "0", "--out", str(out)]
    assert cli.main([*argv, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert cli.main([*argv, "--epochs", "3", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    m = json.loads((out / "latest" / "metrics.json").read_text())
    assert m["results"][0]["epochs"] == 3


@pytest.mark.parametrize("bad", ["corrupt", "not_a_checkpoint"])
def test_stock_resume_checks_every_checkpoint_before_training(tmp_path, capsys, monkeypatch, bad):
    """A bad checkpoint of the second model stopped the run only after the first had trained;
    a pickle that is no checkpoint was an AttributeError traceback. Both are one-line errors
    before any training. A model without a checkpoint trains from scratch, and says so."""
    import torch

    from fusedrnn.train import Trainer

    out = tmp_path / "r"
    argv = ["stock", *SMALL, "--impl", "fused", "--no-plots", "--save-models"]
    argv += ["--patience", "0", "--epochs", "1", "--out", str(out)]
    assert cli.main([*argv, "--cell", "lstm,gru"]) == 0
    models = out / "latest" / "models"
    if bad == "corrupt":
        (models / "gru_fused.pt").write_bytes(b"not a checkpoint")
    else:
        torch.save([1, 2], models / "gru_fused.pt")
    capsys.readouterr()

    def boom(*a, **k):
        raise AssertionError("training started")

    with monkeypatch.context() as mp:
        mp.setattr(Trainer, "fit", boom)
        with pytest.raises(SystemExit, match="cannot resume from .*gru_fused.pt"):
            cli.main(
                [*argv, "--cell", "lstm,gru", "--epochs", "2", "--resume", str(out / "latest")]
            )
    (models / "gru_fused.pt").unlink()
    assert (
        cli.main([*argv, "--cell", "lstm,gru", "--epochs", "2", "--resume", str(out / "latest")])
        == 0
    )
    text = capsys.readouterr().out
    assert "no checkpoint gru_fused.pt" in text and "resumed from" in text


def test_stock_layernorm_cells_beside_plain_ones(tmp_path, capsys):
    """lnlstm/lngru train next to lstm/gru with the same metrics; --impl both pairs the fused
    LayerNorm modules with their eager twins (same initial weights: the first epoch's losses
    agree); a line per pair says whether LayerNorm helped."""
    out = tmp_path / "ln"
    argv = ["stock", "--period", "1y", "--window", "8", "--hidden", "5", "--layers", "2",
            "--epochs", "1", "--cell", "gru,lngru,lnlstm", "--no-plots", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    m = json.loads((out / "latest" / "metrics.json").read_text())
    got = [(r["cell"], r["impl"]) for r in m["results"]]
    assert got == [(c, i) for c in ("gru", "lngru", "lnlstm") for i in ("fused", "torch")]
    by = {(r["cell"], r["impl"]): r for r in m["results"]}
    for cell in ("lngru", "lnlstm"):
        fused, eager = by[(cell, "fused")], by[(cell, "torch")]
        assert fused["model"] == cell.upper() and fused["rmse"] > 0 and fused["dm_p"] >= 0
        assert fused["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-3)
        assert fused["rmse"] == pytest.approx(eager["rmse"], rel=1e-3)
        assert "speedup_vs_torch" in fused
    # the LayerNorm models' parameters include the gains (more than the plain GRU's)
    assert by[("lngru", "fused")]["params"] == by[("gru", "fused")]["params"] + 2 * 3 * 5 * 2
    # one verdict line for LNGRU vs GRU; none for LNLSTM (no plain LSTM in this run)
    assert len(m["layernorm"]) == 1 and m["layernorm"][0].startswith("LayerNorm: LNGRU ")
    assert "vs GRU" in m["layernorm"][0] and m["layernorm"][0] in text
    assert "LNLSTM" in (out / "latest" / "table.txt").read_text()


def test_stock_all_keeps_the_plain_cells_and_bad_cells_are_one_line(tmp_path, capsys):
    from fusedrnn.experiments.stock import _cells

    assert _cells("all") == ["rnn", "lstm", "gru"]  # make demo: unchanged
    assert _cells("LNLSTM, lngru,lngru") == ["lnlstm", "lngru"]
    with pytest.raises(SystemExit) as e:
        cli.main(["stock", "--cell", "lstm,lnrnn", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "argument --cell" in err[-1] and "'lstm,lnrnn'" in err[-1] and "lnlstm" in err[-1]
    assert not (tmp_path / "o").exists()


def test_layernorm_regressor_fused_and_eager_share_weights_and_outputs():
    """SequenceRegressor('lnlstm'/'lngru'): fused = fusedrnn.LayerNorm*, torch = the eager twin;
    one state_dict loads into the other and both give the same forecasts (what --impl both
    and checkpoints rely on)."""
    import torch

    import fusedrnn
    from fusedrnn.layernorm_eager import EagerLayerNormGRU, EagerLayerNormLSTM
    from fusedrnn.train import SequenceRegressor, recurrent_class

    assert recurrent_class("lnlstm") is fusedrnn.LayerNormLSTM
    assert recurrent_class("lngru", "torch") is EagerLayerNormGRU
    for cell in ("lnlstm", "lngru"):
        torch.manual_seed(0)
        fused = SequenceRegressor(cell, 2, 5, num_layers=2, dropout=0.0, residual=False).eval()
        eager = SequenceRegressor(
            cell, 2, 5, num_layers=2, dropout=0.0, impl="torch", residual=False
        ).eval()
        eager.load_state_dict(fused.state_dict())
        assert isinstance(eager.rnn, (EagerLayerNormLSTM, EagerLayerNormGRU))
        x = torch.randn(3, 7, 2)
        torch.testing.assert_close(eager(x)[0], fused(x)[0])
    with pytest.raises(ValueError, match="cell: 'lnrnn' is not one of .*lnlstm"):
        recurrent_class("lnrnn")


def _parse(command, argv):
    """The command's own parser only: nothing runs, even where a bad value is accepted."""
    import argparse
    import importlib

    module = importlib.import_module(cli.COMMANDS[command][0])
    parser = argparse.ArgumentParser(prog=f"fusedrnn {command}")
    module.configure(parser)
    return parser.parse_args(argv)


_BOUNDS = [
    ("--threads", "100000", "at most 4 x this machine's CPUs"),
    ("--seed", str(2**32), "must be <= 4294967295"),
]


@pytest.mark.parametrize(
    "command, flag, value, says",
    [(c, f, v, s) for c in ("stock", "sentiment", "sine", "gradients") for f, v, s in _BOUNDS],
)
def test_threads_and_seed_are_bounded_in_every_command(capsys, command, flag, value, says):
    """Thousands of threads crashed OpenBLAS (a segfault); numpy seeds stop at 2**32 - 1."""
    with pytest.raises(SystemExit) as e:
        _parse(command, [flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and says in err, err
