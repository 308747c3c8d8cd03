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
    ref = S.TextClassifier(20, "gru", embed=5, hidden=4, layers=2, bidirectional=True,
                           dropout=0.0, backend=torch.nn)  # fmt: skip
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
