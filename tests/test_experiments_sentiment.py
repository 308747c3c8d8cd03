"""``fusedrnn sentiment``: data, tokeniser, metrics, and the command end to end (tiny)."""

import json

import numpy as np
import pytest
import torch

import fusedrnn
from fusedrnn.cli import main
from fusedrnn.experiments import sentiment as S


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is fastest (and kind to a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bundled_tweets_load():
    texts, labels = S.load_tweets()
    assert len(texts) == len(labels) == 12000
    assert set(np.unique(labels)) == {0, 1, 2}
    assert all(isinstance(t, str) and t for t in texts[:100])


def test_tokenize_and_vocab():
    toks = S.tokenize("@united Flight 1234 was LATE!!! #fail http://t.co/x can't")
    assert toks == ["<user>", "flight", "<num>", "was", "late", "!!!", "#", "fail", "<url>",
                    "can't"]  # fmt: skip
    assert S.tokenize("so good \u00f4\u00d6\u00f4 :)") == [
        "so",
        "good",
        "\u00f4\u00f6\u00f4",
        ":",
        ")",
    ]
    v = S.Vocab([["a", "a", "b"]], min_freq=2)
    assert v.encode(["a", "b"]) == [2, S.UNK] and v.encode([]) == [S.UNK]


def test_macro_f1():
    y = np.array([0, 0, 1, 2])
    assert S.macro_f1(y, y) == 1.0
    assert S.macro_f1(y, np.zeros(4, int)) == (2 * 0.5 / 1.5) / 3  # majority: F1 0.667, 0, 0


def test_packed_model_matches_torch_nn_and_ignores_padding():
    torch.manual_seed(0)
    m = S.TextClassifier(20, "gru", embed=5, hidden=4, layers=2, bidirectional=True, dropout=0.0)
    ref = S.TextClassifier(
        20, "gru", embed=5, hidden=4, layers=2, bidirectional=True, dropout=0.0, backend=torch.nn
    )
    ref.load_state_dict(m.state_dict())
    assert isinstance(m.rnn, fusedrnn.GRU)
    x = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2]])
    lengths = torch.tensor([3, 5])
    torch.testing.assert_close(m(x, lengths), ref(x, lengths))
    x2 = x.clone()
    x2[0, 3:] = 11  # padding content must not matter
    torch.testing.assert_close(m(x2, lengths), m(x, lengths))


def test_cli_sentiment_quick(tmp_path, capsys):
    assert main(["sentiment", "--quick", "--cells", "lstm,gru", "--bidirectional",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "majority class" in out and "macro-F1" in out
    res = json.loads((tmp_path / "results.json").read_text())
    for r in res["models"].values():
        t = r["timing"]
        assert abs(t["fused"]["loss"] - t["torch.nn"]["loss"]) < 1e-3


def test_cli_sentiment_layernorm_cells_timed_against_eager(tmp_path, capsys):
    assert main(["sentiment", "--quick", "--cells", "lstm,lnlstm,lngru", "--layers", "2",
                 "--out", str(tmp_path), "--no-plots"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "results.json").read_text())
    assert list(res["models"]) == ["lstm x2", "lnlstm x2", "lngru x2"]
    for name, r in res["models"].items():
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1
        t = r["timing"]
        other = "eager" if name.startswith("ln") else "torch.nn"
        assert set(t) == {"fused", other}
        # same initial weights, batches and dropout masks: the same losses
        assert abs(t["fused"]["loss"] - t[other]["loss"]) < 1e-3
    assert "lnlstm x2" in out and "fused" in out and "vs eager" in out


def test_cli_sentiment_bad_cell_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"--cells: unknown name 'lnrnn' \(choose from .*lnlstm"):
        main(["sentiment", "--quick", "--cells", "lstm,lnrnn", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def _two_class_file(path, n=60):
    lines = ["label\ttext"]
    for i in range(n):
        lines += [f"pos\tgreat fun love it {i}", f"neg\tawful bad hate it {i}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_any_label_set_from_the_file(tmp_path):
    texts, labels, names = S.load_tweets(_two_class_file(tmp_path / "pn.tsv"), with_names=True)
    assert names == ("neg", "pos") and set(labels) == {0, 1} and len(texts) == 120
    assert S.load_tweets(with_names=True)[2] == S.LABELS
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\ttext\npos\tfine\nno tab here\n")
    with pytest.raises(ValueError, match="bad.tsv:3: expected label<TAB>text"):
        S.load_tweets(bad)
    one = tmp_path / "one.tsv"
    one.write_text("label\ttext\npos\ta\npos\tb\n")
    with pytest.raises(ValueError, match="at least two labels"):
        S.load_tweets(one)


def test_two_class_macro_f1_is_over_two_classes():
    y = np.array([0, 0, 0, 1])
    majority = np.zeros(4, int)
    # F1(class 0) = 2 * 0.75 * 1 / 1.75 = 6/7, F1(class 1) = 0: over two classes, not three
    assert S.macro_f1(y, majority, 2) == pytest.approx((6 / 7) / 2)
    assert S.confusion(y, majority, 2).tolist() == [[3, 0], [1, 0]]


def test_cli_sentiment_two_classes_writes_plots(tmp_path, capsys):
    data = _two_class_file(tmp_path / "pn.tsv")
    out = tmp_path / "out"
    assert (
        main(["sentiment", "--quick", "--cells", "gru", "--data", str(data), "--out", str(out)])
        == 0
    )
    assert "2 classes neg" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["classes"] == ["neg", "pos"]
    assert np.asarray(res["models"]["gru"]["confusion"]).shape == (2, 2)
    for name in ("confusion_matrix.png", "learning_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--epochs", "0"),
        ("--dropout", "1.5"),
        ("--threads", "-2"),
    ],
)
def test_cli_sentiment_checks_arguments(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit):
        main(["sentiment", "--quick", flag, value, "--out", str(tmp_path / "o")])
    assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_sentiment_unwritable_out_and_missing_data(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="cannot write there"):
        main(["sentiment", "--quick", "--out", str(blocker / "o")])
    with pytest.raises(SystemExit, match="no such file"):
        main(["sentiment", "--quick", "--data", str(tmp_path / "none.tsv"), "--out", str(tmp_path)])


def test_cli_sentiment_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "train_epoch", interrupted)
    assert main(["sentiment", "--quick", "--cells", "gru", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "fusedrnn sentiment: interrupted, nothing written"
    assert list(tmp_path.iterdir()) == []


def test_quick_keeps_the_values_given_on_the_command_line(tmp_path, monkeypatch):
    """``--quick --epochs 2 --hidden 5``: 2 epochs of 5 units, the rest of --quick's sizes."""
    seen = []

    class Stop(Exception):
        pass

    def prepare(cfg, data):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(S, "prepare", prepare)
    with pytest.raises(Stop):
        main(["sentiment", "--quick", "--epochs", "2", "--hidden", "5", "--out", str(tmp_path)])
    (cfg,) = seen
    assert (cfg.epochs, cfg.hidden, cfg.limit, cfg.embed) == (2, 5, 600, 16)
