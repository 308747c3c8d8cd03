"""Noisy-sine forecasting with fused RNN, LSTM and GRU (``fusedrnn sine``).

The series is ``sin(2 pi t / period) + N(0, noise^2)``; each sample is a window of ``window``
values and the target is the next value. The series is split chronologically into train /
validation / test spans (70/15/15 by target index). Each model is a fused recurrent layer
(``fusedrnn.RNN / LSTM / GRU``, batch_first) with a linear readout of the last output, trained
with Adam on the training windows; the validation MSE decides early stopping and which epoch's
weights are kept. Reported: test MSE per model beside two yardsticks, the noise variance (what a
perfect model of the clean sine would score) and the naive "next = last" forecast.

Plots: predictions vs actual on the test span, actual-vs-predicted scatter, training curves,
and the hidden-state evolution of a small RNN (every hidden unit over time), recomputed step by
step with the NumPy reference (``fusedrnn.reference``) loaded with the trained fused weights as
a cross-check.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import fusedrnn
from fusedrnn import reference
from fusedrnn.train import adam

from ._common import (
    add_config_args,
    add_run_args,
    check_writable,
    choice_list,
    number,
    quick_settings,
    run_with_threads,
    seed_arg,
    usage_error,
    write_atomic,
)

PROG = "fusedrnn sine"
MODELS = {"rnn": fusedrnn.RNN, "lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}
FRACTIONS = (0.7, 0.15, 0.15)  # train / validation / test, by target index


@dataclass
class SineConfig:
    points: int = 1500  # length of the series
    period: float = 50.0  # sine period in steps
    noise: float = 0.1  # std of the added Gaussian noise
    window: int = 30  # input steps per sample
    hidden: int = 32  # hidden size of the compared models
    small_hidden: int = 6  # hidden size of the RNN whose hidden units are plotted
    epochs: int = 60  # upper bound; early stopping usually ends sooner
    patience: int = 6  # epochs without validation improvement before stopping
    batch: int = 64  # sequences per training batch
    lr: float = 5e-3  # Adam learning rate
    seed: int = 0  # seeds the noise, initialisation and batches


def noisy_sine(n: int, period: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    return np.sin(2 * np.pi * t / period) + noise * rng.standard_normal(n)


def windows(series: np.ndarray, window: int):
    """``X [M, window, 1]`` and next-value targets ``y [M]``, target index ``window..N-1``."""
    idx = np.arange(window, len(series))
    x = np.stack([series[i - window : i] for i in idx])[..., None]
    return x.astype(np.float32), series[idx].astype(np.float32), idx


def split_sizes(n: int, window: int, fractions=FRACTIONS) -> tuple[int, int, int]:
    """How many windows :func:`split` gives each span, without building them."""
    b0, b1 = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    return max(0, b0 - window), max(0, b1 - max(window, b0)), max(0, n - max(window, b1))


def split(series: np.ndarray, window: int, fractions=FRACTIONS):
    """Chronological train/val/test split by target index; windows may reach back."""
    x, y, idx = windows(series, window)
    n = len(series)
    b0, b1 = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    parts = {}
    for name, m in (("train", idx < b0), ("val", (idx >= b0) & (idx < b1)), ("test", idx >= b1)):
        parts[name] = (torch.from_numpy(x[m]), torch.from_numpy(y[m]), idx[m])
    return parts


class Forecaster(nn.Module):
    """Fused recurrent layer -> linear readout of the last step."""

    def __init__(self, cell: str, hidden: int):
        super().__init__()
        self.rnn = MODELS[cell](1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out = self.rnn(x)[0]
        return self.head(out[:, -1]).squeeze(-1)


def _mse(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return nn.functional.mse_loss(model(x), y).item()


def train(model: nn.Module, parts, cfg: SineConfig) -> dict:
    """Adam with early stopping on validation MSE; restores the best epoch's weights."""
    x, y, _ = parts["train"]
    xv, yv, _ = parts["val"]
    opt = adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, best_epoch, waited = float("inf"), None, 0, 0
    hist = {"train": [], "val": []}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), cfg.batch):
            b = perm[i : i + cfg.batch]
            loss = nn.functional.mse_loss(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(b)
        val = _mse(model, xv, yv)
        hist["train"].append(total / len(x))
        hist["val"].append(val)
        if val < best - 1e-7:
            best, best_state, best_epoch, waited = val, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    if best_state is None:  # no epoch with a finite validation MSE: nothing worth keeping
        raise FloatingPointError(f"validation MSE {hist['val'][-1]} after every epoch")
    model.load_state_dict(best_state)
    return {"best_epoch": best_epoch, "epochs_run": len(hist["val"]), "best_val": best, **hist}


def hidden_trace(model: Forecaster, series: np.ndarray):
    """Run the small RNN over ``series`` as one sequence: fused hidden states [T, H] and the
    NumPy reference's, from the same weights."""
    x = torch.tensor(series, dtype=torch.float32)[None, :, None]  # [B=1, T, I=1] batch_first
    with torch.no_grad():
        fused = model.rnn(x)[0][0].numpy()
    ref = reference.from_torch(model.rnn)
    ref_out = ref.forward(series[:, None, None])[0][:, 0]
    return fused, ref_out


def _save(fig, path: Path) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _plots(out: Path, series, parts, preds, hists, trace, trace_series):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, yt, it = parts["test"]
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(it, yt.numpy(), "k.", ms=3, label="actual (noisy)")
    for name, p in preds.items():
        ax.plot(it, p, lw=1.2, label=f"{name}")
    ax.set_title("next-step forecasts on the test span")
    ax.set_xlabel("t")
    ax.legend()
    fig.tight_layout()
    _save(fig, out / "predictions.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, len(preds), figsize=(4 * len(preds), 4), squeeze=False)
    for ax, (name, p) in zip(axes[0], preds.items()):
        ax.scatter(yt.numpy(), p, s=6, alpha=0.6)
        lo, hi = float(yt.min()), float(yt.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_title(f"{name}: actual vs predicted")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
    fig.tight_layout()
    _save(fig, out / "scatter.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, h in hists.items():
        ax.semilogy(h["train"], label=f"{name} train")
        ax.semilogy(h["val"], "--", label=f"{name} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out / "training.png")
    plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    axes[0].plot(trace_series, "k", lw=1)
    axes[0].set_title("input (noisy sine)")
    for j in range(trace.shape[1]):
        axes[1].plot(trace[:, j], lw=1, label=f"h[{j}]")
    axes[1].set_title(f"hidden state of a small RNN ({trace.shape[1]} units) over time")
    axes[1].set_xlabel("t")
    axes[1].legend(ncol=min(trace.shape[1], 8), fontsize=8)
    fig.tight_layout()
    _save(fig, out / "hidden_states.png")
    plt.close(fig)


def format_table(rows: dict, noise_var: float, naive: float) -> str:
    head = f"{'model':<12} | {'test MSE':>9} | {'best epoch':>10} | {'epochs':>6} | {'train s':>7}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(
            f"{name:<12} | {r['test_mse']:9.5f} | {r['best_epoch']:>10} | {r['epochs_run']:>6} |"
            f" {r['seconds']:7.1f}"
        )
    lines.append(f"{'naive last':<12} | {naive:9.5f} |")
    lines.append(f"{'noise var':<12} | {noise_var:9.5f} |   (floor: error of the clean sine)")
    return "\n".join(lines)


_CHECKS = {
    "points": number(int, 1),
    # sampled once per step, a sine needs more than two steps per period (Nyquist)
    "period": number(float, 2, lo_open=True, note=" steps (Nyquist)"),
    "noise": number(float, 0),
    "window": number(int, 1),
    "hidden": number(int, 1),
    "small_hidden": number(int, 1),
    "epochs": number(int, 1),
    "patience": number(int, 1),
    "batch": number(int, 1),
    "lr": number(float, 0, lo_open=True),
    "seed": seed_arg,
}


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--models", type=choice_list(MODELS), default="rnn,lstm,gru",
      help="comma list of rnn, lstm, gru")  # fmt: skip
    add_config_args(parser, SineConfig, _CHECKS)
    a("--out", default="out/sine", help="folder for plots and results.json")
    a("--no-plots", action="store_true", help="skip the plots")
    add_run_args(parser)


def _config(args) -> SineConfig:
    cfg = SineConfig(**{f: getattr(args, f) for f in asdict(SineConfig())})
    for k, v in quick_settings(args, points=400, epochs=3, patience=2, hidden=8).items():
        setattr(cfg, k, v)
    return cfg


def _check_sizes(cfg: SineConfig, quick: bool) -> None:
    """Every span needs a window (an empty validation span would leave nothing to keep)."""
    if min(split_sizes(cfg.points, cfg.window)) > 0:
        return
    need = max(1, int((cfg.window + 1) / FRACTIONS[0]) - 2)  # train needs window + 1 points
    while min(split_sizes(need, cfg.window)) == 0:
        need += 1
    points = f"--points {cfg.points}" + (" (--quick)" if quick else "")
    usage_error(
        PROG,
        f"--window {cfg.window} leaves a train/validation/test span (70/15/15%) without windows"
        f" in {points}: use --points >= {need} or a smaller --window",
    )


def run(args) -> int:
    _check_sizes(_config(args), args.quick and "points" not in getattr(args, "_given", ()))
    check_writable(args.out, PROG)
    try:
        return run_with_threads(args, _run)
    except FloatingPointError as e:  # a diverging run (too high --lr): say so, write nothing
        print(f"{PROG}: training diverged ({e}); try a lower --lr", file=sys.stderr)
        return 1


def _run(args) -> int:
    t0 = time.perf_counter()
    cfg = _config(args)
    models = args.models
    out = Path(args.out)
    torch.manual_seed(cfg.seed)
    series = noisy_sine(cfg.points, cfg.period, cfg.noise, cfg.seed)
    parts = split(series, cfg.window)
    xt, yt, it = parts["test"]
    print(
        f"fusedrnn sine: {cfg.points} points, period {cfg.period:g}, noise {cfg.noise:g}, window "
        f"{cfg.window}; windows train/val/test = "
        + "/".join(str(len(parts[k][0])) for k in ("train", "val", "test"))
    )

    rows, preds, hists = {}, {}, {}
    for name in models:
        torch.manual_seed(cfg.seed)
        model = Forecaster(name, cfg.hidden)
        t = time.perf_counter()
        h = train(model, parts, cfg)
        secs = time.perf_counter() - t
        model.eval()
        with torch.no_grad():
            p = model(xt).numpy()
        rows[name] = {
            "test_mse": float(np.mean((p - yt.numpy()) ** 2)),
            "best_epoch": h["best_epoch"],
            "epochs_run": h["epochs_run"],
            "best_val": h["best_val"],
            "seconds": secs,
        }
        preds[name], hists[name] = p, h
    naive = float(np.mean((xt[:, -1, 0] - yt).numpy() ** 2))

    # the small RNN whose every hidden unit is plotted
    torch.manual_seed(cfg.seed)
    small = Forecaster("rnn", cfg.small_hidden)
    t = time.perf_counter()
    hs = train(small, parts, cfg)
    with torch.no_grad():
        small_mse = nn.functional.mse_loss(small(xt), yt).item()
    rows[f"rnn (H={cfg.small_hidden})"] = {
        "test_mse": small_mse,
        "best_epoch": hs["best_epoch"],
        "epochs_run": hs["epochs_run"],
        "best_val": hs["best_val"],
        "seconds": time.perf_counter() - t,
    }
    span = series[it[0] : it[0] + min(4 * int(cfg.period), len(series) - it[0])]
    trace, ref_trace = hidden_trace(small, span)
    ref_diff = float(np.max(np.abs(trace - ref_trace)))

    print()
    print(format_table(rows, cfg.noise**2, naive))
    print(f"\nsmall RNN hidden states: fused vs NumPy reference max |diff| = {ref_diff:.1e}")
    if not args.no_plots:
        _plots(out, series, parts, preds, hists, trace, span)
    write_atomic(
        out / "results.json",
        json.dumps(
            {
                "config": asdict(cfg),
                "models": rows,
                "naive_mse": naive,
                "noise_var": cfg.noise**2,
                "reference_max_diff": ref_diff,
            },
            indent=1,
        ),
    )
    print(f"plots and results.json in {out}/ ({time.perf_counter() - t0:.1f} s)")
    return 0
