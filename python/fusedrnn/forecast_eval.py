"""Scoring forecasts: metrics, baselines and the Diebold-Mariano test (``fusedrnn.forecast``).

Layouts: for M forecast origins and horizon H, predictions and actual closes are ``[M, H]``
(column h-1 is the close h trading days after the origin), ``last`` is ``[M]`` (the close at the
origin, the naive forecast for every h).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ALPHA",
    "baselines",
    "diebold_mariano",
    "score",
    "verdict",
]

ALPHA = 0.05  # significance level of the verdict


def score(pred, actual, last) -> dict:
    """MSE, MAE, RMSE (units of the price, squared for MSE), MAPE (%) and directional accuracy
    (%: how often the predicted move from the origin's close has the sign of the actual move,
    over the moves that are not zero; None when the forecast never moves, as the naive one)."""
    from sklearn.metrics import (
        mean_absolute_error,
        mean_absolute_percentage_error,
        mean_squared_error,
    )

    pred, actual = np.asarray(pred, np.float64), np.asarray(actual, np.float64)
    last = np.asarray(last, np.float64).reshape(-1, 1)
    p, a = pred.ravel(), actual.ravel()
    mse = float(mean_squared_error(a, p))
    move_p, move_a = np.sign(pred - last), np.sign(actual - last)
    counted = move_a != 0
    if counted.any() and (move_p != 0).any():
        direction = float(100 * np.mean(move_p[counted] == move_a[counted]))
    else:
        direction = None
    return {
        "mse": mse,
        "mae": float(mean_absolute_error(a, p)),
        "rmse": math.sqrt(mse),
        "mape": float(100 * mean_absolute_percentage_error(a, p)),
        "direction": direction,
    }


def diebold_mariano(e_model, e_ref, horizon: int = 1, power: int = 2) -> tuple[float, float]:
    """Diebold-Mariano test of equal accuracy with the Harvey-Leybourne-Newbold correction.

    ``e_model``, ``e_ref``: forecast errors ``[T]`` or ``[T, H]`` on the same targets (a row's
    loss is the mean over its H columns of ``|e|**power``). The loss differential's long-run
    variance uses autocovariances up to lag ``horizon - 1`` (an h-step forecast's errors
    overlap); if that estimate is not positive, the lag-0 variance is used. Returns
    ``(statistic, two-sided p-value)`` from Student's t with T-1 degrees of freedom; a negative
    statistic means the model's loss is lower than the reference's.
    """
    from scipy import stats

    a, b = np.asarray(e_model, np.float64), np.asarray(e_ref, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"diebold_mariano: error shapes differ, {a.shape} vs {b.shape}")
    d = np.abs(a) ** power - np.abs(b) ** power
    d = d.reshape(len(d), -1).mean(axis=1)
    t = len(d)
    if t < 3:
        raise ValueError(f"diebold_mariano: needs at least 3 forecasts, got {t}")
    h = max(1, min(int(horizon), t - 1))
    dbar = d.mean()
    c = d - dbar
    gamma = [float(c[k:] @ c[: t - k]) / t for k in range(h)]
    var = (gamma[0] + 2 * sum(gamma[1:])) / t
    if var <= 0:
        var = gamma[0] / t
    if var <= 0:  # identical losses everywhere
        return (0.0, 1.0) if dbar == 0 else (math.copysign(math.inf, dbar), 0.0)
    hln = math.sqrt((t + 1 - 2 * h + h * (h - 1) / t) / t)
    stat = hln * dbar / math.sqrt(var)
    return float(stat), float(2 * stats.t.sf(abs(stat), df=t - 1))


def verdict(name: str, model: dict, naive: dict, dm: tuple[float, float]) -> str:
    """One line: RMSE against the naive forecast and whether the difference is significant."""
    ratio = model["rmse"] / naive["rmse"] if naive["rmse"] > 0 else math.inf
    stat, p = dm
    head = f"{name}: RMSE {ratio:.4f}x naive, Diebold-Mariano p = {p:.3g}"
    if p >= ALPHA:
        return f"{head}: not significantly different from the naive forecast (at {ALPHA:.0%})"
    side = "better" if stat < 0 else "worse"
    return f"{head}: significantly {side} than the naive forecast (at {ALPHA:.0%})"


def baselines(close, origins, horizon: int, season: int = 5, ma: int = 5, linear=None) -> dict:
    """Price forecasts ``[M, H]`` of the classic baselines at `origins` (indices into `close`).

    naive: the origin's close. seasonal naive: the close one `season` (trading days) before the
    target, within the known past. moving average: the mean of the last `ma` closes. The linear
    autoregression is fitted by the caller (``linear``: its predictions, passed through).
    """
    close = np.asarray(close, np.float64)
    o = np.asarray(origins)
    hs = np.arange(1, horizon + 1)
    seasonal = o[:, None] + hs[None, :] - season * np.ceil(hs / season).astype(int)[None, :]
    mean = np.stack([close[max(0, t - ma + 1) : t + 1].mean() for t in o]) if len(o) else o
    out = {
        "naive": np.repeat(close[o][:, None], horizon, axis=1),
        "seasonal naive": close[np.clip(seasonal, 0, None)],
        "moving average": np.repeat(np.asarray(mean, np.float64)[:, None], horizon, axis=1),
    }
    if linear is not None:
        out["linear AR"] = np.asarray(linear, np.float64)
    return out
