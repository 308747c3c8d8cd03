"""The main job: forecast the next close(s) with RNN vs LSTM vs GRU on real daily prices.

Data: daily adjusted closes (default: AAPL, the last 5 years of the data bundled with the
package, 2008-03 to 2013-03; ``--source auto`` tries yfinance, then the disk cache; a CSV path
is read with pandas, blank cells filled forward and reported). Inputs are ``--features``
(close, and open/high/low/volume where the source has them), windows of ``--window`` days;
targets the next ``--horizon`` closes (direct multi-output) as prices or log-returns
(``--target``). Split chronologically: with ``--folds 1`` (the default) 70/15/15 into
train/validation/test; with more, a walk-forward backtest over the last ``--test-fraction``
of the days (``--origin expanding`` or ``sliding``), each fold refitting scalers and models on
its past. Scalers are fitted on training rows only.

Models: ``--layers`` stacked recurrent layers of ``--hidden`` units, dropout between them, a
linear head on the last step (residual for price targets: it predicts the change from the last
close). Each cell is trained with the fused kernels and, with ``--impl both`` (the default),
again with ``torch.nn``'s layers from the same initial weights, so the table shows what the
fused kernels buy (speed-up per training epoch) and that the results agree. The LayerNorm cells
``lnlstm`` and ``lngru`` (``fusedrnn.LayerNormLSTM/GRU``; not in ``all``) have no torch.nn twin:
their ``torch`` run is the eager twin (the same equations as a Python loop of torch ops,
``fusedrnn.layernorm_eager``), and with their plain cell beside them the run ends with a line
per pair saying whether LayerNorm helped on the test days (Diebold-Mariano, LN vs plain).

Reported on the test targets, in dollars: MSE, MAE, RMSE, MAPE and directional accuracy beside
the baselines (naive "tomorrow = today", seasonal naive, moving average, linear
autoregression), and a Diebold-Mariano test against the naive forecast: the verdict says
whether a difference is significant, not merely whether a ratio is below 1.

Every argument is checked, and ``--out`` tested for writing, before any work. Each run writes
into its own folder ``OUT/<date>-<time>-<symbol>`` (``OUT/latest`` points at the last one):
metrics.json, metrics.csv, table.txt, loss_curves.png, predictions.png, metrics.png (and
sweep.* with ``--sweep``), and with ``--save-models`` one checkpoint per model in models/,
which ``fusedrnn forecast --model`` loads. Files are written atomically; Ctrl-C stops with one
line and leaves no partial files.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ._common import RunDir, check_writable, device, number, number_list, seed_arg, threads_arg

CELLS = ("rnn", "lstm", "gru", "lnlstm", "lngru")
ALL = ("rnn", "lstm", "gru")  # --cell all: the LayerNorm cells are asked for by name
PROG = "fusedrnn stock"


def _cells(text: str) -> list[str]:
    cells = list(ALL) if text == "all" else [c.strip().lower() for c in text.split(",")]
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise argparse.ArgumentTypeError(f"{text!r}; use all or a list of {','.join(CELLS)}")
    return list(dict.fromkeys(cells))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.epilog = (
        "Example: fusedrnn stock --symbol MSFT --period max --cell lstm,gru --epochs 30. "
        "Without a network, --source auto falls back to the cache, then the bundled data "
        "(AAPL, MSFT, IBM, GOOG daily, 2000-2013, public-domain Quandl WIKI prices)."
    )
    pos = lambda kind, **kw: number(kind, 0, lo_open=True, **kw)  # noqa: E731
    d = parser.add_argument_group("data")
    d.add_argument(
        "--symbol",
        default=None,
        help="ticker symbol (default AAPL; a CSV --source is titled by its file name)",
    )
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
    d.add_argument("--window", type=number(int, 1), default=30, help="days per input window")
    d.add_argument(
        "--horizon", type=number(int, 1), default=1, help="closes to forecast (direct, 1 = next)"
    )
    d.add_argument(
        "--features",
        default="close",
        help="input columns, e.g. close,volume or close,open,high,low,volume (where the source "
        "has them: yfinance and CSV files; the bundled data has closes only)",
    )
    d.add_argument(
        "--target",
        choices=("price", "log-return"),
        default="price",
        help="what the model predicts: the scaled closes, or the log-returns from the last close",
    )
    d.add_argument("--timeout", type=pos(float), default=10.0, help="yfinance timeout, s")

    m = parser.add_argument_group("model")
    m.add_argument(
        "--cell",
        type=_cells,
        default="all",
        help="all (= rnn,lstm,gru), or a list of rnn,lstm,gru,lnlstm,lngru (lnlstm, lngru: "
        "LayerNorm LSTM / GRU), e.g. lstm,gru,lnlstm,lngru to see whether LayerNorm helps",
    )
    m.add_argument("--hidden", type=number(int, 1), default=64, help="hidden units per layer")
    m.add_argument("--layers", type=number(int, 1), default=2, help="stacked recurrent layers")
    m.add_argument(
        "--dropout", type=number(float, 0, 1, hi_open=True), default=0.2, help="between layers"
    )
    m.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="predict the change from the last close (head starts at zero = the naive "
        "forecast) rather than the level; default: on for --target price",
    )
    m.add_argument(
        "--impl",
        choices=("both", "fused", "torch"),
        default="both",
        help="fused kernels, torch.nn layers, or both (compares speed and results); for "
        "lnlstm/lngru, which torch.nn lacks, torch is their eager twin (a Python loop of torch "
        "ops, same equations and weights)",
    )

    t = parser.add_argument_group("training")
    t.add_argument("--epochs", type=number(int, 1), default=60, help="most epochs per model")
    t.add_argument(
        "--patience",
        type=number(int, 0, note=" (0 = off)"),
        default=8,
        help="early stopping patience (0 = off)",
    )
    t.add_argument(
        "--batch-size",
        type=number(int, 1),
        default=argparse.SUPPRESS,
        help="windows per step (default: 32); with --bptt truncated, the number of parallel "
        "streams the training span is cut into (default: 4)",
    )
    t.add_argument("--lr", type=pos(float), default=1e-3, help="learning rate")
    t.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="optimizer")
    t.add_argument(
        "--momentum", type=number(float, 0, 1, hi_open=True), default=0.9, help="SGD momentum"
    )
    t.add_argument("--loss", choices=("mse", "huber"), default="mse", help="training loss")
    t.add_argument(
        "--clip",
        type=number(float, 0, note=" (0 = off)"),
        default=1.0,
        help="gradient-norm clip (0 = off)",
    )
    t.add_argument(
        "--bptt",
        choices=("full", "truncated"),
        default="full",
        help="full: BPTT through each window; truncated: one stateful pass over the training "
        "span in --batch-size parallel streams, TBPTT(k1, k2)",
    )
    t.add_argument("--k1", type=number(int, 1), default=30, help="truncated BPTT: steps/update")
    t.add_argument("--k2", type=number(int, 1), default=30, help="truncated BPTT: steps back")
    t.add_argument("--device", type=device, default="cpu", help="cpu or cuda[:N]")
    t.add_argument("--seed", type=seed_arg, default=0, help="seed for weights, shuffling")
    t.add_argument(
        "--threads",
        type=threads_arg,
        default=0,
        help="torch CPU threads (0 = torch's default, one per core). Measured at this job's "
        "size (2-layer LSTM, B=32, T=30, H=64; bench/results, 2-core Xeon): a fused training "
        "step takes 3.5 ms on 2 threads and 4.2 ms on 1 (batch rows split over threads, no "
        "per-step synchronisation), so all cores are the default. torch.nn's oneDNN LSTM is "
        "faster on 1 thread (4.5 vs 5.5 ms): compare with --threads 1 as well",
    )

    e = parser.add_argument_group("evaluation")
    e.add_argument(
        "--folds", type=number(int, 1), default=1, help="walk-forward folds (1: one 70/15/15 split)"
    )
    e.add_argument(
        "--origin",
        choices=("expanding", "sliding"),
        default="expanding",
        help="each fold trains on all earlier days, or on a window of the first fold's length",
    )
    e.add_argument(
        "--test-fraction",
        type=number(float, 0, 1, lo_open=True, hi_open=True),
        default=0.15,
        help="share of the days (at the end) forecast by the folds",
    )
    e.add_argument("--season", type=number(int, 1), default=5, help="seasonal naive: days back")
    e.add_argument("--ma", type=number(int, 1), default=5, help="moving-average baseline: days")

    o = parser.add_argument_group("output")
    o.add_argument("--out", default="out/stock", help="parent folder of the run folders")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    o.add_argument(
        "--save-models",
        action="store_true",
        help="write a checkpoint per model to RUN/models after every epoch (atomically); "
        "fusedrnn forecast --model loads it",
    )
    o.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN",
        help="continue each model from its checkpoint in RUN/models (default: OUT/latest); "
        "refused if it was trained on other data or with another configuration",
    )
    o.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")

    s = parser.add_argument_group("sweep")
    s.add_argument(
        "--sweep",
        action="store_true",
        help="instead of the comparison: hidden x layers x lr study for each --cell "
        "(fused kernels), model chosen on validation loss",
    )
    s.add_argument("--sweep-hidden", type=number_list(int, 1), default="32,64,128", help="sizes")
    s.add_argument("--sweep-layers", type=number_list(int, 1), default="1,2", help="layer counts")
    s.add_argument(
        "--sweep-lr", type=number_list(float, 0, lo_open=True), default="0.001,0.003", help="rates"
    )


# --------------------------------------------------------------------------------------------
# checks (before any work)
# --------------------------------------------------------------------------------------------


def _fail(msg: str):
    raise SystemExit(f"{PROG}: {msg}")


def _check_args(args) -> None:
    if getattr(args, "batch_size", None) is None:
        args.batch_size = 4 if args.bptt == "truncated" else 32
    if args.bptt == "truncated" and args.k1 > args.k2:
        _fail("truncated BPTT needs --k1 <= --k2")
    if args.residual is None:
        args.residual = args.target == "price"
    elif args.residual and args.target != "price":
        _fail("--residual predicts the change of the close: it needs --target price")
    try:
        from fusedrnn.data import _period_days

        _period_days(args.period)
        from fusedrnn.forecast import Pipeline

        args.features = Pipeline(args.window, args.horizon, args.features, args.target).features
    except ValueError as e:
        _fail(f"--{str(e).split(':')[0]}: {str(e).split(':', 1)[-1].strip()}")
    source_is_file = args.source not in ("auto", "yfinance", "cache", "bundled")
    if source_is_file and not Path(args.source).is_file():
        _fail(f"--source {args.source!r}: not bundled/auto/yfinance/cache, nor an existing file")


def _resume_dir(args, out: Path) -> Path | None:
    if args.resume is None:
        return None
    path = out / "latest" if args.resume == "latest" else Path(args.resume)
    if not (path / "models").is_dir():
        _fail(f"--resume {args.resume}: no run with saved models at {path} (use --save-models)")
    return path.resolve()


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


def _datasets(fd, bptt: str):
    """Train/val/test holders for the trainer, and how to pick the test forecasts out of the
    trainer's predictions."""
    from fusedrnn.train import Stream, Windows

    if bptt == "full":
        train, val, test = (Windows(fd.x(k), fd.targets(k)) for k in ("train", "val", "test"))
        return train, val, test, lambda pred: pred.cpu().numpy()
    o = fd.origins
    r0 = fd.fold.lo + fd.pipeline.lag  # first row with an input
    z, y = fd.z.astype(np.float32), fd.y.astype(np.float32)
    upto = lambda a: slice(r0, a + 1)  # noqa: E731
    train = Stream(z[upto(o["train"][-1])], y[upto(o["train"][-1])])
    val = Stream(z[upto(o["val"][-1])], y[upto(o["val"][-1])], start=o["val"][0] - r0)
    test = Stream(z[upto(o["test"][-1])], y[upto(o["test"][-1])], start=o["test"][0] - r0)
    return train, val, test, lambda pred: pred[0, o["test"] - r0].cpu().numpy()


def _data_id(args, series) -> dict:
    d = series.dates
    return {
        "symbol": series.symbol,
        "source": series.source,
        "period": args.period,
        "first_date": str(d[0]),
        "last_date": str(d[-1]),
        "rows": len(series),
    }


def _identity(args, series, fd, model_config, cfg) -> dict:
    """What a checkpoint must match to be resumed: the data, the fold, the pipeline, the model
    and the training settings (more epochs or another patience are allowed)."""
    from fusedrnn.train import RESUME_FREE

    return {
        "data": _data_id(args, series),
        "fold": asdict(fd.fold),
        "pipeline": fd.pipeline.spec(),
        "model": dict(model_config),
        "train": {k: v for k, v in asdict(cfg).items() if k not in RESUME_FREE},
    }


def _differences(old: dict, new: dict, prefix="") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


def _ckpt_name(args, ctx, fold_k: int, cand) -> str:
    cell, impl, hidden, layers, lr = cand
    name = f"{cell}_{impl}" if not args.sweep else f"{cell}_{impl}_h{hidden}_l{layers}_lr{lr:g}"
    return name + (f"_fold{fold_k + 1}" if len(ctx["fds"]) > 1 else "")


def _new_model(args, fd, cand):
    from fusedrnn.train import SequenceRegressor

    cell, impl, hidden, layers, _ = cand
    return SequenceRegressor(cell, len(fd.pipeline.features), hidden, layers,
                             fd.pipeline.horizon, dropout=args.dropout if layers > 1 else 0.0,
                             impl=impl, residual=args.residual)  # fmt: skip


def _candidate_config(args, cand):
    cfg = _train_config(args, f"{cand[0]}/{cand[1]}")
    cfg.lr = cand[4]
    return cfg


def _saved_checkpoint(path: Path, identity: dict) -> dict:
    """A checkpoint of --resume, loaded and matched against this run's settings."""
    from fusedrnn.train import load_checkpoint

    try:
        saved = load_checkpoint(path)
    except Exception as e:
        _fail(f"cannot resume from {path}: {e}")
    if not isinstance(saved, dict) or saved.get("format") != "fusedrnn.train/1":
        _fail(f"cannot resume from {path}: not a fusedrnn.train checkpoint")
    diff = _differences(saved.get("meta", {}).get("identity", {}), identity)
    if diff:
        _fail(f"--resume: {path} was trained on other data or settings: {'; '.join(diff)}")
    return saved


def _check_resume(args, ctx, candidates, log) -> None:
    """Every checkpoint --resume will read, loaded and matched before any training (a bad one
    would otherwise stop the run after the models before it had trained); a model without one
    trains from scratch, and the log says so."""
    if not ctx["resume"]:
        return
    import torch

    rng = torch.get_rng_state()
    try:
        for k, fd in enumerate(ctx["fds"]):
            for cand in candidates:
                name = _ckpt_name(args, ctx, k, cand)
                path = ctx["resume"] / "models" / f"{name}.pt"
                if not path.exists():
                    log(f"  [resume] no checkpoint {path.name} in {path.parent}: {name} trains "
                        "from scratch")  # fmt: skip
                    continue
                model = _new_model(args, fd, cand)
                identity = _identity(args, ctx["series"], fd, model.config,
                                     _candidate_config(args, cand))  # fmt: skip
                _saved_checkpoint(path, identity)
    finally:
        torch.set_rng_state(rng)  # building the models drew initial weights


def _train_one(args, ctx, fd, fold_k: int, cand, init_state, log):
    """Train one model on one fold; returns (result dict, history, test forecasts in $, init)."""
    import torch

    from fusedrnn.train import Trainer

    cell, impl, hidden, layers, lr = cand
    torch.manual_seed(args.seed)
    model = _new_model(args, fd, cand)
    if init_state is not None:  # the same initial weights for both implementations
        model.load_state_dict(init_state)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(args.device)
    cfg = _candidate_config(args, cand)
    name = _ckpt_name(args, ctx, fold_k, cand)
    ckpt = ctx["run"].path / "models" / f"{name}.pt"
    cfg.checkpoint = str(ckpt) if args.save_models else None
    trainer = Trainer(model, cfg)
    series = ctx["series"]
    identity = _identity(args, series, fd, model.config, cfg)
    trainer.meta = {
        "identity": identity,
        "pipeline": fd.pipeline.state(),
        "provenance": {
            "symbol": series.symbol,
            "source": series.source,
            "detail": series.detail,
            "first_date": str(series.dates[fd.fold.lo]),
            "last_date": str(series.dates[fd.fold.test - 1]),
            "rows": fd.fold.test - fd.fold.lo,
        },
    }
    old = ctx["resume"] / "models" / f"{name}.pt" if ctx["resume"] else None
    if old is not None and old.exists():
        saved = _saved_checkpoint(old, identity)
        try:
            trainer.load_state_dict(saved)
        except (RuntimeError, KeyError, ValueError) as e:
            _fail(f"cannot resume from {old}: {e}")
        log(f"  {cell.upper():4s} {impl:5s} resumed from {old} after epoch {trainer.epoch}")
    train, val, test, pick = _datasets(fd, args.bptt)
    t0 = time.perf_counter()
    hist = trainer.fit(train, val)
    wall = time.perf_counter() - t0
    pred_usd = fd.to_prices(pick(trainer.predict(test)), "test")
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
        "epoch_times": list(hist.epoch_time),
    }
    if args.save_models:
        result["checkpoint"] = str(ckpt)
    fold = f" fold {fold_k + 1}" if len(ctx["fds"]) > 1 else ""
    rmse = math.sqrt(float(np.mean((pred_usd - fd.actual("test")) ** 2)))
    log(
        f"  {cell.upper():4s} {impl:5s}{fold} {hist.epochs:3d} epochs (best "
        f"{hist.best_epoch + 1}) {hist.train_time:6.1f} s  test RMSE ${rmse:.3f}"
    )
    return result, hist, pred_usd, init


def _label(cand, sweep: bool) -> str:
    cell, impl, h, n, lr = cand
    return f"{cell.upper()} h{h} L{n} lr{lr:g}" if sweep else f"{cell.upper()}/{impl}"


def _evaluate(args, ctx, candidates, log):
    """Every candidate on every fold, the baselines beside; returns (Backtest, results,
    histories of the last fold)."""
    from fusedrnn.forecast import Backtest, _dates, _fold_info, linear_ar
    from fusedrnn.forecast_eval import baselines

    frame = ctx["series"].frame
    bt = Backtest(args.horizon)
    results, histories = {}, {}
    _check_resume(args, ctx, candidates, log)
    for k, fd in enumerate(ctx["fds"]):
        preds, inits = {}, {}
        for cand in candidates:
            key = (cand[0], *cand[2:])
            r, hist, pred, init = _train_one(args, ctx, fd, k, cand, inits.get(key), log)
            inits.setdefault(key, init)
            preds[_label(cand, args.sweep)] = pred
            histories[cand] = hist
            agg = results.setdefault(cand, {**r, "fold_epochs": [], "val_losses": []})
            agg["fold_epochs"].append(r["epochs"])
            agg["val_losses"].append(r["val_loss"])
            if k:
                agg["epoch_times"] += r["epoch_times"]
                for f in ("train_time_s", "wall_time_s"):
                    agg[f] += r[f]
                agg["epochs"], agg["best_epoch"] = r["epochs"], r["best_epoch"]
        o = fd.origins["test"]
        preds.update(baselines(fd.close, o, args.horizon, args.season, args.ma, linear_ar(fd)))
        bt.add(_fold_info(k, frame, fd.fold), preds, fd.actual("test"), fd.close[o],
               _dates(frame, o + 1))  # fmt: skip
    pooled = bt.pooled()
    naive = pooled["naive"]["rmse"]
    out = []
    for cand, r in results.items():
        label = _label(cand, args.sweep)
        stat, p = bt.dm(label)
        r.update(pooled[label])
        r["label"] = label
        r["val_loss"] = float(np.mean(r.pop("val_losses")))
        r["epoch_ms"] = 1000 * float(np.median(r.pop("epoch_times") or [0.0]))
        r["rmse_vs_naive"] = r["rmse"] / naive if naive > 0 else math.inf
        r["dm_stat"], r["dm_p"] = stat, p
        r["beats_naive"] = bool(stat < 0 and p < 0.05)  # significantly, not by a hair
        out.append(r)
    return bt, out, histories


def _fmt_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(  # noqa: E731
        str(c).ljust(widths[i]) if i < 2 else str(c).rjust(widths[i]) for i, c in enumerate(r)
    )
    sep = "  ".join("-" * x for x in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _load(args, log):
    from fusedrnn.data import load_prices

    return load_prices(
        args.symbol, args.period, args.source, timeout=args.timeout, min_rows=2, log=log
    )


def _csv_text(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=keys)
    wr.writeheader()
    wr.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def run(args) -> int:
    _check_args(args)
    out = check_writable(args.out, PROG)
    ctx = {"resume": _resume_dir(args, out), "run": None}
    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rc = _run(args, ctx, out)
        if rc == 0:
            ctx["run"].finish()
        return rc
    except KeyboardInterrupt:
        msg = "interrupted"
        if ctx["run"] is not None:
            if ctx["run"].discard(keep="models"):
                msg += f"; checkpoints kept in {ctx['run'].path / 'models'} (--resume {ctx['run'].path})"
            else:
                msg += ", nothing written"
        print(f"\n{PROG}: {msg}", file=sys.stderr)
        return 130
    except FloatingPointError as e:  # a diverging run (too high --lr): say so, keep nothing
        if ctx["run"] is not None:
            ctx["run"].discard(keep="models")
        print(f"{PROG}: training diverged ({e}); try a lower --lr or --clip", file=sys.stderr)
        return 1
    except BaseException:
        if ctx["run"] is not None:
            ctx["run"].discard(keep="models")
        raise
    finally:
        torch.set_num_threads(threads)  # leave the process as it was (tests run in-process)


def _prepare(args, log):
    """Data, folds and their fitted pipelines: every data problem shows before training."""
    from fusedrnn.forecast import Pipeline, fold_windows, walk_forward

    series = _load(args, log)
    folds = walk_forward(len(series), args.folds, args.test_fraction, args.origin)
    spec = dict(
        window=args.window, horizon=args.horizon, features=args.features, target=args.target
    )
    return series, [fold_windows(Pipeline(**spec), series.frame, f) for f in folds]


def _run(args, ctx, out: Path) -> int:
    import torch

    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    t_start = time.perf_counter()
    try:
        series, fds = _prepare(args, log)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    for k, fd in enumerate(fds):  # the baselines' look-back, known only with the data
        known = int(fd.origins["test"][0]) + 1  # closes up to the first test origin
        for flag, days in (("--season", args.season), ("--ma", args.ma)):
            if days > known:
                print(f"{PROG}: {flag} {days}: the first test forecast of fold {k + 1} has "
                      f"{known} closes of history; use {flag} <= {known}", file=sys.stderr)  # fmt: skip
                return 2
    ctx.update(series=series, fds=fds, run=RunDir(out, series.symbol))
    d = series.dates
    first = fds[0]
    b0, b1 = first.fold.val, first.fold.test
    log(
        f"[data] {', '.join(args.features)} windows of {args.window} days -> next "
        f"{args.horizon} close(s) as {args.target}: fold 1 train {len(first.origins['train'])} "
        f"({d[first.fold.lo]} .. {d[b0 - 1]}), validation {len(first.origins['val'])} "
        f"({d[b0]} .. {d[b1 - 1]}), test {len(first.origins['test'])} ({d[b1]} .. "
        f"{d[first.fold.end - 1]}); {len(fds)} fold(s), scalers fitted on training rows only"
    )
    log(f"[run] writing to {ctx['run'].path}")
    if args.sweep:
        return _sweep(args, ctx, log, t_start)

    impls = ["fused", "torch"] if args.impl == "both" else [args.impl]
    log(
        f"[train] {', '.join(c.upper() for c in args.cell)} x {', '.join(impls)}: "
        f"{args.layers} layers x {args.hidden} hidden, dropout {args.dropout}, {args.optimizer} "
        f"lr {args.lr}, batch {args.batch_size}, up to {args.epochs} epochs "
        f"(patience {args.patience}), {args.bptt} BPTT, {torch.get_num_threads()} threads"
    )
    cands = [(c, i, args.hidden, args.layers, args.lr) for c in args.cell for i in impls]
    bt, results, histories = _evaluate(args, ctx, cands, log)
    pooled = bt.pooled()
    naive = pooled["naive"]
    for r in results:
        other = next((o for o in results if o["cell"] == r["cell"] and o["impl"] == "torch"), None)
        if r["impl"] == "fused" and other is not None and r["epoch_ms"] > 0:
            r["speedup_vs_torch"] = other["epoch_ms"] / r["epoch_ms"]

    header = ["model", "impl", "test MSE $^2", "MAE $", "RMSE $", "MAPE %", "dir %",
              "RMSE/naive", "DM p", "epochs", "train s", "ms/epoch", "speed-up"]  # fmt: skip
    fmt_dir = lambda m: "-" if m["direction"] is None else f"{m['direction']:.1f}"  # noqa: E731

    def metric_cells(m):
        return [f"{m['mse']:.3f}", f"{m['mae']:.3f}", f"{m['rmse']:.3f}", f"{m['mape']:.2f}",
                fmt_dir(m)]  # fmt: skip

    rows = []
    for r in results:
        rows.append(
            [r["model"], r["impl"], *metric_cells(r), f"{r['rmse_vs_naive']:.4f}",
             f"{r['dm_p']:.3g}", f"{r['epochs']}", f"{r['train_time_s']:.1f}",
             f"{r['epoch_ms']:.0f}",
             f"{r['speedup_vs_torch']:.2f}x" if "speedup_vs_torch" in r else ""]
        )  # fmt: skip
    base_rows = []
    for name in ("seasonal naive", "moving average", "linear AR", "naive"):
        m = pooled[name]
        ratio = m["rmse"] / naive["rmse"] if naive["rmse"] > 0 else math.inf
        p = "" if name == "naive" else f"{bt.dm(name)[1]:.3g}"
        impl = "last value" if name == "naive" else "baseline"
        rows.append([name, impl, *metric_cells(m), f"{ratio:.4f}", p, "", "", "", ""])
        base_rows.append({"model": name, "impl": impl, **m, "rmse_vs_naive": ratio})
    actual = bt.actual
    what = "next-day close" if args.horizon == 1 else f"next {args.horizon} closes"
    title = (
        f"{series.symbol} {what} ({args.target} model), {len(ctx['fds'])} fold(s), test "
        f"{bt.dates[0]} .. {bt.dates[-1]} ({len(actual)} forecasts, prices "
        f"${actual.min():.2f}..${actual.max():.2f}); data: {series.source}"
    )
    table = _fmt_table(rows, header)
    verdicts = bt.verdicts([r["label"] for r in results])
    print()
    print(title)
    print(table)
    for v in verdicts:
        print(v)
    print(
        "DM p: Diebold-Mariano test of equal squared error against the naive forecast; "
        "speed-up = torch.nn ms/epoch / fused ms/epoch (median epoch, same model, same "
        "initial weights, this machine; LNLSTM/LNGRU: the eager Python loop / fused)."
    )
    ln_lines = _layernorm_verdicts(bt, results)
    for line in ln_lines:
        print(line)

    last = ctx["fds"][-1]
    meta = {
        **_data_id(args, series),
        "source_detail": series.detail,
        "source_notes": series.notes,
        "filled": series.filled,
        "columns": series.columns,
        "window": args.window,
        "horizon": args.horizon,
        "features": args.features,
        "target": args.target,
        "folds": [dict(f) for f in bt.folds],
        "n_windows": {k: len(v) for k, v in last.origins.items()},
        "scaler": last.pipeline.state(),
    }
    for f in meta["folds"]:
        f.pop("metrics")
    cfg = asdict(_train_config(args, ""))
    cfg.update(
        hidden=args.hidden,
        layers=args.layers,
        dropout=args.dropout,
        residual=args.residual,
        device=args.device,
        impl=args.impl,
        folds=args.folds,
        origin=args.origin,
        test_fraction=args.test_fraction,
    )
    payload = {
        "data": meta,
        "config": cfg,
        "results": results,
        "naive": naive,
        "baselines": {k: v for k, v in pooled.items() if k not in {r["label"] for r in results}},
        "backtest": bt.summary(),
        "verdicts": verdicts,
        "layernorm": ln_lines,
        "threads": torch.get_num_threads(),
        "run_dir": str(ctx["run"].path),
        "table": table,
    }
    run_dir = ctx["run"]
    written = []
    if not args.no_plots:
        from .stock_plots import comparison_plots

        written += comparison_plots(run_dir, ctx, bt, results, histories, args)
    payload["wall_time_s"] = time.perf_counter() - t_start
    run_dir.write("metrics.json", json.dumps(payload, indent=2, default=str))
    run_dir.write(
        "metrics.csv",
        _csv_text([{k: v for k, v in r.items() if k != "checkpoint"} for r in results] + base_rows),
    )
    run_dir.write("table.txt", title + "\n" + table + "\n" + "\n".join(verdicts + ln_lines) + "\n")
    written = ["metrics.json", "metrics.csv", "table.txt", *written]
    print(f"wrote {', '.join(written)} to {run_dir.path}{os.sep} ({payload['wall_time_s']:.0f} s)")
    return 0


def _layernorm_verdicts(bt, results) -> list[str]:
    """Per LayerNorm cell run beside its plain cell: does LayerNorm help on the test days?
    Test RMSE of both and a Diebold-Mariano test of the LN model against the plain one (same
    implementation, fused when both ran)."""
    out = []
    for r in results:
        if not r["cell"].startswith("ln"):
            continue
        plain = next(
            (o for o in results if o["cell"] == r["cell"][2:] and o["impl"] == r["impl"]), None
        )
        if plain is None or (
            r["impl"] == "torch"
            and any(o["cell"] == r["cell"] and o["impl"] == "fused" for o in results)
        ):
            continue
        stat, p = bt.dm(r["label"], plain["label"])
        if p < 0.05:
            says = "helps" if stat < 0 else "hurts"
            says = f"LayerNorm {says} (significant, DM p={p:.3g})"
        else:
            says = f"no significant difference (DM p={p:.3g})"
        out.append(
            f"LayerNorm: {r['model']} test RMSE ${r['rmse']:.3f} vs {plain['model']} "
            f"${plain['rmse']:.3f} ({100 * (r['rmse'] / plain['rmse'] - 1):+.1f}%): {says}"
        )
    return out


def _sweep(args, ctx, log, t_start: float) -> int:
    impl = "torch" if args.impl == "torch" else "fused"
    grid = [
        (cell, impl, h, n, lr)
        for cell in args.cell
        for h in args.sweep_hidden
        for n in args.sweep_layers
        for lr in args.sweep_lr
    ]
    log(f"[sweep] {len(grid)} runs ({impl}), up to {args.epochs} epochs each")
    bt, results, _ = _evaluate(args, ctx, grid, log)
    naive = bt.pooled()["naive"]
    results.sort(key=lambda r: (r["cell"], r["val_loss"]))
    header = ["model", "hidden", "layers", "lr", "val loss", "test RMSE $", "RMSE/naive", "DM p",
              "s"]  # fmt: skip
    rows = [
        [r["model"], r["hidden"], r["layers"], f"{r['lr']:g}", f"{r['val_loss']:.2e}",
         f"{r['rmse']:.3f}", f"{r['rmse_vs_naive']:.4f}", f"{r['dm_p']:.3g}",
         f"{r['train_time_s']:.1f}"]
        for r in results
    ]  # fmt: skip
    table = _fmt_table(rows, header)
    print()
    print(
        f"{ctx['series'].symbol} sweep (sorted by validation loss per cell; naive RMSE "
        f"${naive['rmse']:.3f})"
    )
    print(table)
    for cell in args.cell:
        best = min((r for r in results if r["cell"] == cell), key=lambda r: r["val_loss"])
        print(
            f"best {cell.upper()} on validation: hidden {best['hidden']}, layers "
            f"{best['layers']}, lr {best['lr']:g} -> test RMSE ${best['rmse']:.3f}"
        )
        print("  " + bt.verdicts([best["label"]])[0])
    run_dir = ctx["run"]
    run_dir.write(
        "sweep.csv", _csv_text([{k: v for k, v in r.items() if k != "checkpoint"} for r in results])
    )
    run_dir.write(
        "sweep.json",
        json.dumps({"results": results, "naive": naive, "table": table}, indent=2, default=str),
    )
    written = ["sweep.csv", "sweep.json"]
    if not args.no_plots:
        from .stock_plots import sweep_plot

        written += sweep_plot(run_dir, results, naive, args.cell)
    print(
        f"wrote {', '.join(written)} to {run_dir.path}{os.sep} "
        f"({time.perf_counter() - t_start:.0f} s)"
    )
    return 0
