"""`fusedrnn check` passes on this machine, and fails when the fused side is wrong."""

import torch

import fusedrnn
from fusedrnn import check
from fusedrnn.cli import main


def test_check_passes(capsys):
    assert main(["check", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "lstm_proj vs torch.nn" in out and "gru_cell vs torch.nn" in out
    assert " 0 failed" in out


def test_check_catches_a_wrong_kernel(monkeypatch, capsys):
    real = fusedrnn.from_torch

    def broken(m):
        f = real(m)
        with torch.no_grad():
            next(iter(f.parameters())).mul_(1.001)  # a kernel that is off by a little
        return f

    monkeypatch.setattr(fusedrnn, "from_torch", broken)
    rows = check.run_checks(quick=True)
    assert not any(r["ok"] for r in rows if "vs torch.nn" in r["check"])
    assert main(["check", "--quick"]) == 1
    assert "FAIL" in capsys.readouterr().out
