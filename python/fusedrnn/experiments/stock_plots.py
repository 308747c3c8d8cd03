"""Plots of ``fusedrnn stock``: loss curves, test forecasts, metrics, the sweep. Each figure is
written atomically into the run folder; every axis says its unit."""

from __future__ import annotations

import numpy as np

NAIVE_STYLE = dict(color="C2", lw=1.3, ls="--", zorder=3)  # drawn above the model's line


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(run_dir, fig, name: str) -> str:
    run_dir.write(name, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    _plt().close(fig)
    return name


def _naive_val_loss(fd) -> float:
    """MSE of the naive forecast on the validation targets, in the model's scaled units."""
    p = fd.pipeline
    if p.target == "price":
        naive = fd.close[fd.origins["val"]][:, None] * p.t_scale + p.t_offset
    else:  # no change = a zero log-return
        naive = np.broadcast_to(p.t_offset, (len(fd.origins["val"]), p.horizon))
    return float(np.mean((naive - fd.targets("val")) ** 2))


def comparison_plots(run_dir, ctx, bt, results, histories, args) -> list[str]:
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    cells = list(dict.fromkeys(r["cell"] for r in results))
    impls = list(dict.fromkeys(r["impl"] for r in results))
    cand = {
        (r["cell"], r["impl"]): (r["cell"], r["impl"], r["hidden"], r["layers"], r["lr"])
        for r in results
    }
    fd = ctx["fds"][-1]
    written = []

    fig, axes = plt.subplots(1, len(cells), figsize=(4.6 * len(cells), 3.6), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        for impl in impls:
            h = histories[cand[(cell, impl)]]
            ls = "-" if impl == "fused" else "--"
            ep = np.arange(1, h.epochs + 1)
            ax.plot(ep, h.train_loss, ls, color="C0", label=f"train ({impl})")
            ax.plot(ep, h.val_loss, ls, color="C1", label=f"validation ({impl})")
            ax.axvline(h.best_epoch + 1, color="0.6", lw=0.8, ls=ls)
        if args.loss == "mse":
            ax.axhline(_naive_val_loss(fd), label="naive, validation", **NAIVE_STYLE)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fold = f", fold {len(ctx['fds'])}" if len(ctx["fds"]) > 1 else ""
        ax.set_title(f"{cell.upper()} training{fold}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"loss ({args.loss.upper()} of scaled {args.target} targets)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(run_dir, fig, "loss_curves.png"))

    dates = bt.dates.astype(object)
    actual = bt.actual[:, 0]
    fig, axes = plt.subplots(len(cells), 1, figsize=(10, 2.9 * len(cells)), squeeze=False)
    for ax, cell in zip(axes[:, 0], cells):
        impl = "fused" if (cell, "fused") in cand else impls[0]
        r = next(r for r in results if r["cell"] == cell and r["impl"] == impl)
        ax.plot(dates, actual, color="k", lw=1.2, label="actual close")
        ax.plot(
            dates, bt.preds[r["label"]][:, 0], color="C3", lw=1.0, label=f"{cell.upper()} ({impl})"
        )
        ax.plot(dates, bt.preds["naive"][:, 0], label="naive (last close)", **NAIVE_STYLE)
        ahead = "" if args.horizon == 1 else " (1 day ahead shown)"
        ax.set_title(
            f"{ctx['series'].symbol} test forecasts{ahead}: {cell.upper()} RMSE "
            f"\\${r['rmse']:.2f}, naive \\${bt.pooled()['naive']['rmse']:.2f}"
        )
        ax.set_ylabel("close ($)")
        ax.set_xlabel("date")
        ax.legend(fontsize=7, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    written.append(_save(run_dir, fig, "predictions.png"))

    pooled = bt.pooled()
    names = [r["label"] for r in results] + ["linear AR", "moving average", "seasonal naive",
                                             "naive"]  # fmt: skip
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.0))
    x = np.arange(len(names))
    a1.bar(x - 0.2, [pooled[n]["rmse"] for n in names], 0.4, label="RMSE")
    a1.bar(x + 0.2, [pooled[n]["mae"] for n in names], 0.4, label="MAE")
    a1.axhline(pooled["naive"]["rmse"], label="naive RMSE", **NAIVE_STYLE)
    a1.set_xticks(x, [n.replace("/", "\n").replace(" ", "\n") for n in names], fontsize=7)
    a1.set_ylabel("error on the test targets ($)")
    a1.set_xlabel("model")
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
    a2.set_xlabel("cell")
    a2.set_ylabel("training time per epoch (ms, median)")
    a2.set_title("training time per epoch")
    a2.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(run_dir, fig, "metrics.png"))
    return written


def sweep_plot(run_dir, results, naive, cells) -> list[str]:
    from matplotlib.patches import Patch

    plt = _plt()
    fig, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 4.2), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        rs = sorted(
            (r for r in results if r["cell"] == cell),
            key=lambda r: (r["layers"], r["hidden"], r["lr"]),
        )
        gain = [100 * (r["rmse_vs_naive"] - 1) for r in rs]
        bars = ax.bar(range(len(rs)), gain, color=[f"C{r['layers'] - 1}" for r in rs])
        best = min(range(len(rs)), key=lambda i: rs[i]["val_loss"])
        bars[best].set_hatch("//")
        handles = [
            Patch(color=f"C{n - 1}", label=f"{n} layer(s)")
            for n in sorted({r["layers"] for r in rs})
        ]
        handles.append(
            Patch(facecolor="white", edgecolor="k", hatch="//", label="chosen on validation")
        )
        ax.legend(handles=handles, fontsize=7)
        ax.axhline(0, color="k", lw=0.8)
        labels = [f"h{r['hidden']} L{r['layers']}\nlr {r['lr']:g}" for r in rs]
        ax.set_xticks(range(len(rs)), labels, fontsize=6, rotation=90)
        ax.set_xlabel("configuration (hidden units, layers, learning rate)")
        ax.set_ylabel("test RMSE vs naive (%, below 0 = better)")
        ax.set_title(f"{cell.upper()} sweep (naive RMSE \\${naive['rmse']:.2f})")
    fig.tight_layout()
    return [_save(run_dir, fig, "sweep.png")]
