"""`fusedrnn check` passes on this machine, and fails when the fused side is wrong."""

import pytest
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


def test_check_compares_in_true_float32_and_restores_the_tf32_flags(monkeypatch, capsys):
    """cuDNN's RNNs default to TF32 (~1e-3 off in float32 on Ampere and later): on an H200
    every float32 sequence check failed until the check turned it off for both sides."""
    seen = []
    monkeypatch.setattr(
        check,
        "_checks",
        lambda device, quick: (
            seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
            or []
        ),
    )
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, True
    try:
        assert main(["check", "--quick"]) == 0
        assert seen == [(False, False)]
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (
            True,
            True,
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_check_tolerances_per_device():
    """float32 on CUDA is held to cuDNN parity (1e-4, as tests/test_cuda.py), the CPU to 1e-5;
    both far below the 1e-3 of a kernel that is off by a little."""
    assert check.tolerance(torch.float32, "cpu") == 1e-5
    assert (
        check.tolerance(torch.float32, "cuda") == check.tolerance(torch.float32, "cuda:1") == 1e-4
    )
    assert check.tolerance(torch.float64, "cuda") == check.tolerance(torch.float64, "cpu") == 1e-10


@pytest.mark.parametrize(
    "value, says",
    [("tpu", "not a device"), ("banana", "not a device"), ("mps", "cpu or cuda")]
    + ([] if torch.cuda.is_available() else [("cuda", "no CUDA device")]),
)
def test_a_bad_device_is_a_one_line_argument_error(monkeypatch, capsys, value, says):
    """The same --device type as the other commands: exit 2 naming the option, no checks run."""

    def boom(*a, **k):
        raise AssertionError("checks started before --device was checked")

    monkeypatch.setattr(check, "run_checks", boom)
    with pytest.raises(SystemExit) as e:
        main(["check", "--device", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device" in err and says in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "error, rc, says",
    [
        (OSError(28, "No space left on device"), 1, "fusedrnn check: [Errno 28] No space left"),
        (KeyboardInterrupt(), 130, "fusedrnn check: interrupted"),
    ],
)
def test_io_errors_and_ctrl_c_are_one_line(monkeypatch, capsys, error, rc, says):
    """What a command does not handle itself (a full disk while writing, Ctrl-C) ends in one
    line and an exit code, not a traceback (main is every command's entry point)."""

    def run(args):
        raise error

    monkeypatch.setattr(check, "run", run)
    assert main(["check"]) == rc
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
