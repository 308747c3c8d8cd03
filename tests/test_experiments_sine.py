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
