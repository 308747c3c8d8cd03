"""The main job: forecast tomorrow's close with RNN vs LSTM vs GRU on real daily prices.

Data: daily adjusted closes (default: AAPL, the last 5 years of the data bundled with the
package, 2008-03 to 2013-03; ``--source auto`` tries yfinance, then the disk cache). Split
chronologically 70/15/15 into train/validation/test, MinMax-scaled on the training span only,
cut into windows of ``--window`` days -> the next day's close.

Models: ``--layers`` stacked recurrent layers of ``--hidden`` units, dropout between them, a
linear head on the last step. Each cell is trained with the fused kernels (``fusedrnn.RNN`` /
``LSTM`` / ``GRU``) and, with ``--impl both`` (the default), again with ``torch.nn``'s layers
from the same initial weights, so the table shows what the fused kernels buy (speed-up per
training epoch) and that the results agree. Adam, MSE, gradient clipping, early stopping on the
validation loss (best weights restored).

Reported on the test span, in dollars: MSE, MAE, RMSE, next to the naive forecaster
"tomorrow's close = today's close". A model whose RMSE is above the naive one's has not learned
anything useful about the next day, and the table says so.

Writes to ``--out`` (default ./out/stock): metrics.json, metrics.csv, loss_curves.png,
predictions.png, metrics.png (and sweep.csv / sweep.json / sweep.png with ``--sweep``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

CELLS = ("rnn", "lstm", "gru")


def _csv_list(kind):
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None

    return parse


def _cells(text: str) -> list[str]:
    cells = list(CELLS) if text == "all" else [c.strip().lower() for c in text.split(",")]
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise argparse.ArgumentTypeError(f"--cell: {text!r}; use all or a list of rnn,lstm,gru")
    return cells


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.epilog = (
        "Example: fusedrnn stock --symbol MSFT --period max --cell lstm,gru --epochs 30. "
        "Without a network, --source auto falls back to the cache, then the bundled data "
        "(AAPL, MSFT, IBM, GOOG daily, 2000-2013, public-domain Quandl WIKI prices)."
    )
    d = parser.add_argument_group("data")
    d.add_argument("--symbol", default="AAPL", help="ticker symbol")
    d.add_argument(
        "--source",
        default="bundled",
        help="bundled (shipped with fusedrnn), auto (yfinance, then cache, then bundled), "
        "yfinance, cache, or a path to a CSV with date and close columns",
    )
    d.add_argument(
        "--period",
        default="5y",
        help="trailing span to use, e.g. 5y, 18mo, max (bundled data ends 2013-03-01)",
    )
    d.add_argument("--window", type=int, default=30, help="days of history per input window")
    d.add_argument("--timeout", type=float, default=10.0, help="yfinance connection timeout, s")

    m = parser.add_argument_group("model")
    m.add_argument("--cell", type=_cells, default="all", help="all, or a list, e.g. lstm,gru")
    m.add_argument("--hidden", type=int, default=64, help="hidden units per layer")
    m.add_argument("--layers", type=int, default=2, help="stacked recurrent layers")
    m.add_argument("--dropout", type=float, default=0.2, help="dropout between layers")
    m.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="predict the change from the last close (head starts at zero = the naive "
        "forecast) rather than the level, which a test span above the training range needs",
    )
    m.add_argument(
        "--impl",
        choices=("both", "fused", "torch"),
        default="both",
        help="fused kernels, torch.nn layers, or both (compares speed and results)",
    )

    t = parser.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=60, help="most epochs per model")
    t.add_argument("--patience", type=int, default=8, help="early stopping patience (0 = off)")
    t.add_argument(
        "--batch-size",
        type=int,
        default=argparse.SUPPRESS,
        help="windows per step (default: 32); with --bptt truncated, the number of parallel "
        "streams the training span is cut into (default: 4)",
    )
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    t.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="optimizer")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--loss", choices=("mse", "huber"), default="mse", help="training loss")
    t.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0 = off)")
    t.add_argument(
        "--bptt",
        choices=("full", "truncated"),
        default="full",
        help="full: BPTT through each window; truncated: one stateful pass over the training "
        "span in --batch-size parallel streams, TBPTT(k1, k2)",
    )
    t.add_argument("--k1", type=int, default=30, help="truncated BPTT: steps between updates")
    t.add_argument("--k2", type=int, default=30, help="truncated BPTT: steps backpropagated")
    t.add_argument("--device", default="cpu", help="cpu or cuda (the fused CUDA kernels)")
    t.add_argument("--seed", type=int, default=0, help="seed for weights, dropout, shuffling")
    t.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0 = torch's default); at batch 32 x hidden 64 a step is too "
        "small to split across cores, and extra threads only add synchronisation (and stall "
        "badly when the cores are shared)",
    )

    o = parser.add_argument_group("output")
    o.add_argument("--out", default="out/stock", help="folder for plots, metrics and models")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    o.add_argument(
        "--save-models",
        action="store_true",
        help="write a checkpoint per model to OUT/models after every epoch (atomically)",
    )
    o.add_argument(
        "--resume",
        action="store_true",
        help="continue each model from its checkpoint in OUT/models, where there is one",
    )
    o.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")

    s = parser.add_argument_group("sweep")
    s.add_argument(
        "--sweep",
        action="store_true",
        help="instead of the comparison: hidden x layers x lr study for each --cell "
        "(fused kernels), model chosen on validation loss",
    )
    s.add_argument("--sweep-hidden", type=_csv_list(int), default="32,64,128", help="hidden sizes")
    s.add_argument("--sweep-layers", type=_csv_list(int), default="1,2", help="layer counts")
    s.add_argument("--sweep-lr", type=_csv_list(float), default="0.001,0.003", help="rates")


# --------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------


def _train_config(args, desc: str):
    from fusedrnn.train import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        loss=args.loss,
        clip_grad_norm=args.clip or None,
        patience=args.patience or None,
        bptt=args.bptt,
        k1=args.k1,
        k2=args.k2,
        seed=args.seed,
        progress=False if args.quiet else None,
        desc=desc,
    )


def _datasets(w, bptt: str):
    """Train/val/test holders for the trainer; test predictions come out for w.t_test."""
    from fusedrnn.train import Stream, Windows

    if bptt == "full":
        return (
            Windows(w.x_train, w.y_train),
            Windows(w.x_val, w.y_val),
            Windows(w.x_test, w.y_test),
        )
    z = w.scaled.astype(np.float32)[:, None]
    b0, b1 = w.bounds
    train = Stream(z[: b0 - 1], z[1:b0])
    val = Stream(z[: b1 - 1], z[1:b1], start=b0 - 1)
    test = Stream(z[:-1], z[1:], start=b1 - 1)
    return train, val, test


def _metrics(pred: np.ndarray, actual: np.ndarray) -> dict:
    err = pred - actual
    mse = float(np.mean(err**2))
    return {"mse": mse, "mae": float(np.mean(np.abs(err))), "rmse": math.sqrt(mse)}


def _train_one(args, w, cell: str, impl: str, init_state, hidden, layers, lr, log):
    """Train one model; returns (result dict, model, history, test predictions in $)."""
    import torch

    from fusedrnn.train import SequenceRegressor, Trainer

    torch.manual_seed(args.seed)
    model = SequenceRegressor(
        cell,
        1,
        hidden,
        layers,
        1,
        dropout=args.dropout if layers > 1 else 0.0,
        impl=impl,
        residual=args.residual,
    )
    if init_state is not None:  # the same initial weights for both implementations
        model.load_state_dict(init_state)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(args.device)
    cfg = _train_config(args, f"{cell}/{impl}")
    cfg.lr = lr
    name = f"{cell}_{impl}" if not args.sweep else f"{cell}_{impl}_h{hidden}_l{layers}_lr{lr:g}"
    ckpt = Path(args.out) / "models" / f"{name}.pt"
    cfg.checkpoint = str(ckpt) if args.save_models else None
    train, val, test = _datasets(w, args.bptt)
    trainer = Trainer(model, cfg)
    if args.resume and ckpt.exists():
        try:
            trainer.resume(ckpt)
        except (RuntimeError, KeyError, ValueError) as e:
            raise SystemExit(f"fusedrnn stock: cannot resume from {ckpt}: {e}") from None
        log(f"  {cell.upper():4s} {impl:5s} resumed from {ckpt} after epoch {trainer.epoch}")
    t0 = time.perf_counter()
    hist = trainer.fit(train, val)
    wall = time.perf_counter() - t0
    pred = trainer.predict(test)
    pred = pred.cpu()
    if args.bptt == "full":
        pred = pred[:, 0].numpy()
    else:
        pred = pred[0, w.t_test - 1, 0].numpy()
    pred_usd = w.inverse(pred)
    result = {
        "model": cell.upper(),
        "cell": cell,
        "impl": impl,
        "hidden": hidden,
        "layers": layers,
        "lr": lr,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": hist.epochs,
        "best_epoch": hist.best_epoch + 1,
        "val_loss": hist.best_val,
        "train_time_s": hist.train_time,
        "wall_time_s": wall,
        "epoch_ms": 1000 * float(np.median(hist.epoch_time)) if hist.epoch_time else 0.0,
        **_metrics(pred_usd, w.series[w.t_test]),
    }
    if args.save_models:
        result["checkpoint"] = str(ckpt)
    log(
        f"  {cell.upper():4s} {impl:5s} {hist.epochs:3d} epochs (best {hist.best_epoch + 1}) "
        f"{hist.train_time:6.1f} s  test RMSE ${result['rmse']:.3f}"
    )
    return result, model, hist, pred_usd, init


def _fmt_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(  # noqa: E731
        str(c).ljust(widths[i]) if i < 2 else str(c).rjust(widths[i]) for i, c in enumerate(r)
    )
    sep = "  ".join("-" * x for x in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _plots(out: Path, w, series, results, histories, preds, naive_pred, loss) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    cells = list(dict.fromkeys(r["cell"] for r in results))
    impls = list(dict.fromkeys(r["impl"] for r in results))

    # loss curves: one panel per cell; fused solid, torch dashed
    fig, axes = plt.subplots(1, len(cells), figsize=(4.6 * len(cells), 3.6), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        for impl in impls:
            h = histories.get((cell, impl))
            if h is None:
                continue
            ls = "-" if impl == "fused" else "--"
            ep = np.arange(1, h.epochs + 1)
            ax.plot(ep, h.train_loss, ls, color="C0", label=f"train ({impl})")
            ax.plot(ep, h.val_loss, ls, color="C1", label=f"validation ({impl})")
            ax.axvline(h.best_epoch + 1, color="0.6", lw=0.8, ls=ls)
        if loss == "mse":
            naive_val = float(np.mean((w.scaled[w.t_val - 1] - w.scaled[w.t_val]) ** 2))
            ax.axhline(naive_val, color="k", lw=0.8, ls=":", label="naive, validation")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{cell.upper()} loss ({loss.upper()}, scaled units)")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    plt.close(fig)
    written.append("loss_curves.png")

    # predictions on the test span, one panel per cell (the fused run if there is one)
    dates = series.dates[w.t_test].astype("datetime64[D]").astype(object)
    actual = w.series[w.t_test]
    fig, axes = plt.subplots(len(cells), 1, figsize=(10, 2.8 * len(cells)), squeeze=False)
    for ax, cell in zip(axes[:, 0], cells):
        impl = "fused" if (cell, "fused") in preds else impls[0]
        r = next(r for r in results if r["cell"] == cell and r["impl"] == impl)
        ax.plot(dates, actual, color="k", lw=1.2, label="actual close")
        ax.plot(dates, naive_pred, color="0.6", lw=0.9, ls=":", label="naive (yesterday)")
        ax.plot(dates, preds[(cell, impl)], color="C3", lw=1.0, label=f"{cell.upper()} ({impl})")
        ax.set_title(f"{series.symbol} test span: {cell.upper()} RMSE ${r['rmse']:.2f}")
        ax.set_ylabel("$")
        ax.legend(fontsize=7, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out / "predictions.png", dpi=110)
    plt.close(fig)
    written.append("predictions.png")

    # metrics: RMSE/MAE per model against the naive baseline; training time per impl
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [f"{r['model']}\n{r['impl']}" for r in results] + ["naive"]
    naive = _metrics(naive_pred, actual)
    x = np.arange(len(labels))
    a1.bar(x - 0.2, [r["rmse"] for r in results] + [naive["rmse"]], 0.4, label="RMSE")
    a1.bar(x + 0.2, [r["mae"] for r in results] + [naive["mae"]], 0.4, label="MAE")
    a1.axhline(naive["rmse"], color="0.4", lw=0.8, ls=":")
    a1.set_xticks(x, labels, fontsize=8)
    a1.set_ylabel("$ (test span)")
    a1.set_title("test error (lower is better)")
    a1.legend(fontsize=8)
    xs = np.arange(len(cells))
    for i, impl in enumerate(impls):
        vals = [
            next((r["epoch_ms"] for r in results if r["cell"] == c and r["impl"] == impl), 0)
            for c in cells
        ]
        a2.bar(xs + (i - (len(impls) - 1) / 2) * 0.4, vals, 0.4, label=impl)
    a2.set_xticks(xs, [c.upper() for c in cells])
    a2.set_ylabel("ms per epoch (median)")
    a2.set_title("training time per epoch")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=110)
    plt.close(fig)
    written.append("metrics.png")
    return written


def _load(args, log):
    from fusedrnn.data import load_prices, prepare_windows

    series = load_prices(
        args.symbol, args.period, args.source, timeout=args.timeout, min_rows=2, log=log
    )
    w = prepare_windows(series.close, args.window)
    return series, w


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)


def _check_args(args) -> None:
    if getattr(args, "batch_size", None) is None:
        args.batch_size = 4 if args.bptt == "truncated" else 32
    for name in ("window", "hidden", "layers", "epochs", "batch_size", "k1", "k2"):
        if getattr(args, name) < 1:
            raise SystemExit(f"fusedrnn stock: --{name.replace('_', '-')} must be >= 1")
    if not 0 <= args.dropout < 1:
        raise SystemExit("fusedrnn stock: --dropout must be in [0, 1)")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("fusedrnn stock: --device cuda, but torch sees no CUDA device")
    if args.bptt == "truncated" and args.k1 > args.k2:
        raise SystemExit("fusedrnn stock: truncated BPTT needs --k1 <= --k2")


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def run(args) -> int:
    _check_args(args)
    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # leave the process as it was (tests run in-process)


def _run(args) -> int:
    import torch

    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    t_start = time.perf_counter()
    try:
        series, w = _load(args, log)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"fusedrnn stock: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    b0, b1 = w.bounds
    d = series.dates
    log(
        f"[data] windows of {args.window} days -> next close: train {len(w.t_train)} "
        f"({d[0]} .. {d[b0 - 1]}), validation {len(w.t_val)} ({d[b0]} .. {d[b1 - 1]}), "
        f"test {len(w.t_test)} ({d[b1]} .. {d[-1]}); scaler fitted on train only"
    )
    if args.sweep:
        return _sweep(args, series, w, out, log, t_start)

    impls = ["fused", "torch"] if args.impl == "both" else [args.impl]
    results, histories, preds = [], {}, {}
    log(
        f"[train] {', '.join(c.upper() for c in args.cell)} x {', '.join(impls)}: "
        f"{args.layers} layers x {args.hidden} hidden, dropout {args.dropout}, {args.optimizer} "
        f"lr {args.lr}, batch {args.batch_size}, up to {args.epochs} epochs "
        f"(patience {args.patience}), {args.bptt} BPTT, {torch.get_num_threads()} threads"
    )
    for cell in args.cell:
        init = None
        for impl in impls:
            r, model, hist, pred, init0 = _train_one(
                args, w, cell, impl, init, args.hidden, args.layers, args.lr, log
            )
            init = init if init is not None else init0
            results.append(r)
            histories[(cell, impl)] = hist
            preds[(cell, impl)] = pred

    actual = w.series[w.t_test]
    naive_pred = w.series[w.t_test - 1]
    naive = _metrics(naive_pred, actual)
    for r in results:
        r["rmse_vs_naive"] = r["rmse"] / naive["rmse"] if naive["rmse"] > 0 else math.inf
        r["beats_naive"] = bool(r["rmse"] < naive["rmse"])
        other = next((o for o in results if o["cell"] == r["cell"] and o["impl"] == "torch"), None)
        if r["impl"] == "fused" and other is not None and r["epoch_ms"] > 0:
            r["speedup_vs_torch"] = other["epoch_ms"] / r["epoch_ms"]

    header = [
        "model",
        "impl",
        "test MSE $^2",
        "MAE $",
        "RMSE $",
        "RMSE/naive",
        "epochs",
        "train s",
        "ms/epoch",
        "speed-up",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                r["model"],
                r["impl"],
                f"{r['mse']:.3f}",
                f"{r['mae']:.3f}",
                f"{r['rmse']:.3f}",
                f"{r['rmse_vs_naive']:.3f}" + ("" if r["beats_naive"] else " (worse)"),
                f"{r['epochs']}",
                f"{r['train_time_s']:.1f}",
                f"{r['epoch_ms']:.0f}",
                f"{r['speedup_vs_torch']:.2f}x" if "speedup_vs_torch" in r else "",
            ]
        )
    rows.append(
        [
            "naive",
            "last value",
            f"{naive['mse']:.3f}",
            f"{naive['mae']:.3f}",
            f"{naive['rmse']:.3f}",
            "1.000",
            "",
            "",
            "",
            "",
        ]
    )
    title = (
        f"{series.symbol} next-day close, test span {d[b1]} .. {d[-1]} "
        f"({len(w.t_test)} days, prices ${actual.min():.2f}..${actual.max():.2f}); "
        f"data: {series.source}"
    )
    table = _fmt_table(rows, header)
    print()
    print(title)
    print(table)
    winners = [f"{r['model']}/{r['impl']}" for r in results if r["beats_naive"]]
    if winners:
        print(f"Beat the naive 'tomorrow = today' forecast: {', '.join(winners)}.")
    else:
        print(
            "No model beats the naive 'tomorrow = today' forecast on this span: daily closes are "
            "close to a random walk, and the last value is a strong predictor."
        )
    print(
        "speed-up = torch.nn ms/epoch / fused ms/epoch (median epoch, same model, same initial "
        "weights, this machine)."
    )

    meta = {
        "symbol": series.symbol,
        "period": args.period,
        "source": series.source,
        "source_detail": series.detail,
        "source_notes": series.notes,
        "first_date": str(d[0]),
        "last_date": str(d[-1]),
        "rows": len(series),
        "window": args.window,
        "bounds": {"train_end": str(d[b0 - 1]), "val_end": str(d[b1 - 1])},
        "n_windows": {"train": len(w.t_train), "val": len(w.t_val), "test": len(w.t_test)},
        "scaler": w.scaler.state_dict(),
    }
    cfg = asdict(_train_config(args, ""))
    cfg.update(
        hidden=args.hidden,
        layers=args.layers,
        dropout=args.dropout,
        residual=args.residual,
        device=args.device,
        impl=args.impl,
    )
    payload = {
        "data": meta,
        "config": cfg,
        "results": results,
        "naive": naive,
        "threads": torch.get_num_threads(),
        "wall_time_s": time.perf_counter() - t_start,
        "table": table,
    }
    written = ["metrics.json", "metrics.csv"]
    if not args.no_plots:
        written += _plots(out, w, series, results, histories, preds, naive_pred, args.loss)
    payload["wall_time_s"] = time.perf_counter() - t_start
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=str))
    _write_csv(
        out / "metrics.csv",
        [{k: v for k, v in r.items() if k != "checkpoint"} for r in results]
        + [{"model": "naive", "impl": "last value", **naive}],
    )
    (out / "table.txt").write_text(title + "\n" + table + "\n")
    written.append("table.txt")
    print(f"wrote {', '.join(written)} to {out}{os.sep} ({payload['wall_time_s']:.0f} s)")
    return 0


def _sweep(args, series, w, out: Path, log, t_start: float) -> int:
    impl = "torch" if args.impl == "torch" else "fused"
    grid = [
        (cell, h, n, lr)
        for cell in args.cell
        for h in args.sweep_hidden
        for n in args.sweep_layers
        for lr in args.sweep_lr
    ]
    log(f"[sweep] {len(grid)} runs ({impl}), up to {args.epochs} epochs each")
    actual = w.series[w.t_test]
    naive = _metrics(w.series[w.t_test - 1], actual)
    results = []
    for cell, h, n, lr in grid:
        r, *_ = _train_one(args, w, cell, impl, None, h, n, lr, log)
        r["rmse_vs_naive"] = r["rmse"] / naive["rmse"]
        results.append(r)
    results.sort(key=lambda r: (r["cell"], r["val_loss"]))
    header = ["model", "hidden", "layers", "lr", "val loss", "test RMSE $", "RMSE/naive", "s"]
    rows = [
        [
            r["model"],
            r["hidden"],
            r["layers"],
            f"{r['lr']:g}",
            f"{r['val_loss']:.2e}",
            f"{r['rmse']:.3f}",
            f"{r['rmse_vs_naive']:.3f}",
            f"{r['train_time_s']:.1f}",
        ]
        for r in results
    ]
    table = _fmt_table(rows, header)
    print()
    print(
        f"{series.symbol} sweep (sorted by validation loss per cell; naive RMSE "
        f"${naive['rmse']:.3f})"
    )
    print(table)
    for cell in args.cell:
        best = min((r for r in results if r["cell"] == cell), key=lambda r: r["val_loss"])
        print(
            f"best {cell.upper()} on validation: hidden {best['hidden']}, layers "
            f"{best['layers']}, lr {best['lr']:g} -> test RMSE ${best['rmse']:.3f}"
        )
    _write_csv(out / "sweep.csv", results)
    (out / "sweep.json").write_text(
        json.dumps({"results": results, "naive": naive, "table": table}, indent=2, default=str)
    )
    written = ["sweep.csv", "sweep.json"]
    if not args.no_plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(
            1, len(args.cell), figsize=(5 * len(args.cell), 3.8), squeeze=False
        )
        for ax, cell in zip(axes[0], args.cell):
            rs = [r for r in results if r["cell"] == cell]
            rs.sort(key=lambda r: (r["layers"], r["hidden"], r["lr"]))
            labels = [f"h{r['hidden']} L{r['layers']}\nlr {r['lr']:g}" for r in rs]
            gain = [100 * (r["rmse_vs_naive"] - 1) for r in rs]
            colors = [f"C{r['layers'] - 1}" for r in rs]
            bars = ax.bar(range(len(rs)), gain, color=colors)
            best = min(range(len(rs)), key=lambda i: rs[i]["val_loss"])
            bars[best].set_hatch("//")
            bars[best].set_label("chosen on validation")
            ax.legend(fontsize=7)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xticks(range(len(rs)), labels, fontsize=6, rotation=90)
            ax.set_ylabel("test RMSE vs naive, % (below 0 = better)")
            ax.set_title(f"{cell.upper()} sweep (naive RMSE ${naive['rmse']:.2f})")
        fig.tight_layout()
        fig.savefig(out / "sweep.png", dpi=110)
        plt.close(fig)
        written.append("sweep.png")
    print(f"wrote {', '.join(written)} to {out}{os.sep} ({time.perf_counter() - t_start:.0f} s)")
    return 0
