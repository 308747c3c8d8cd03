"""The main job as a library: forecast the next close(s) of a price series, save, load, backtest.

    from fusedrnn.forecast import Forecaster
    f = Forecaster("lstm", horizon=5).fit(fusedrnn.data.load_prices("AAPL", source="bundled"))
    f.save("aapl.pt"); Forecaster.load("aapl.pt").predict(prices)   # next 5 closes, dated

Pipeline (:class:`Pipeline`, fitted on the training rows only)
    inputs: the chosen feature columns (``close`` first; ``open``/``high``/``low``/``volume``
    where the source has them), each min-max scaled (target ``"price"``) or turned into daily
    log changes and standardised (target ``"log-return"``; volume as ``log1p``).
    targets: for an origin day t, the next ``horizon`` closes (direct multi-output): scaled
    prices, or the log-returns ``log(close[t+h] / close[t])`` standardised per h.
    A price model's head is residual (it predicts the change from the last close, so the
    untrained model is the naive forecast); a log-return model predicts around zero change.

Artefact (:meth:`Forecaster.save`): one ``torch.save`` file of plain containers and tensors
(loads with ``torch.load(weights_only=True)``): weights, model and training config, the scaler
parameters, window, features, horizon, target and where the data came from. A training
checkpoint of ``fusedrnn stock --save-models`` loads too.

Backtests (:meth:`Forecaster.backtest`): walk-forward folds with an expanding or sliding origin;
each fold refits the scalers and the model on its past, then forecasts its test block; the
baselines (naive, seasonal naive, moving average, linear autoregression) forecast the same
targets; per-fold and pooled MSE/MAE/RMSE/MAPE/directional accuracy and a Diebold-Mariano test
against the naive forecast (:class:`Backtest`).
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .data import _DATE_NAMES
from .forecast_eval import baselines, diebold_mariano, score, verdict

__all__ = [
    "FORMAT",
    "TARGETS",
    "Backtest",
    "Fold",
    "FoldData",
    "Forecaster",
    "Pipeline",
    "fold_windows",
    "linear_ar",
    "walk_forward",
]

FORMAT = "fusedrnn.forecast/1"
TARGETS = ("price", "log-return")
ORIGINS = ("expanding", "sliding")
VAL_FRACTION = 0.15 / 0.85  # of a fold's training rows: 70/15/15 overall with one fold


# --------------------------------------------------------------------------------------------
# Pipeline: features -> inputs, closes -> targets, predictions -> prices
# --------------------------------------------------------------------------------------------


class Pipeline:
    """Turns a price frame into model inputs and targets, and predictions back into prices."""

    def __init__(self, window=30, horizon=1, features=("close",), target="price"):
        if isinstance(features, str):
            features = [f.strip() for f in features.split(",") if f.strip()]
        features = [str(f).lower() for f in features]
        if len(set(features)) != len(features):
            raise ValueError(f"features: {features} has a repeated name")
        for name, v in (("window", window), ("horizon", horizon)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")  # (2.5 ran as 2)
        if target not in TARGETS:
            raise ValueError(f"target: {target!r} is not one of {', '.join(TARGETS)}")
        self.window, self.horizon, self.target = int(window), int(horizon), target
        self.features = ["close"] + [f for f in features if f != "close"]  # close first
        self.in_scale = self.in_offset = self.t_scale = self.t_offset = None

    @property
    def lag(self) -> int:
        """Rows lost at the start (a log change needs the day before)."""
        return 1 if self.target == "log-return" else 0

    def spec(self) -> dict:
        return {
            "window": self.window,
            "horizon": self.horizon,
            "features": list(self.features),
            "target": self.target,
        }

    def _raw(self, frame) -> np.ndarray:
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ValueError(
                f"features: the data has no column {', '.join(map(repr, missing))} "
                f"(it has {', '.join(frame.columns)})"
            )
        return frame[self.features].to_numpy(dtype=np.float64)

    def _changes(self, raw: np.ndarray) -> np.ndarray:
        if self.target == "price":
            return raw
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.stack(
                [np.log1p(c) if f == "volume" else np.log(c) for f, c in zip(self.features, raw.T)],
                axis=1,
            )
        out = np.full_like(logs, np.nan)
        out[1:] = np.diff(logs, axis=0)
        bad = ~np.isfinite(out[1:]).all(axis=0)
        if bad.any():
            raise ValueError(
                f"features: log changes of {[f for f, b in zip(self.features, bad) if b]} are not "
                "finite (zero or negative values); use --target price or other features"
            )
        return out

    def _targets_raw(self, close: np.ndarray) -> np.ndarray:
        n, h = len(close), self.horizon
        out = np.full((n, h), np.nan)
        for k in range(1, h + 1):
            ahead = close[k:]
            out[: n - k, k - 1] = (
                ahead if self.target == "price" else np.log(ahead / close[: n - k])
            )
        return out

    def fit(self, frame, lo: int, end: int) -> Pipeline:
        """Fit the scalers (scikit-learn) on rows [lo, end) only."""
        from sklearn.preprocessing import MinMaxScaler, StandardScaler

        u = self._changes(self._raw(frame))[lo + self.lag : end]
        if len(u) < 2:
            raise ValueError(f"pipeline: {len(u)} training rows, need at least 2")
        if self.target == "price":
            sc = MinMaxScaler().fit(u)
            self.in_scale, self.in_offset = sc.scale_.copy(), sc.min_.copy()
            self.t_scale = np.repeat(self.in_scale[:1], self.horizon)
            self.t_offset = np.repeat(self.in_offset[:1], self.horizon)
        else:
            sc = StandardScaler().fit(u)
            self.in_scale, self.in_offset = 1 / sc.scale_, -sc.mean_ / sc.scale_
            close = frame["close"].to_numpy(np.float64)[lo:end]
            r = self._targets_raw(close)[: len(close) - self.horizon]
            ts = StandardScaler().fit(r)
            self.t_scale, self.t_offset = 1 / ts.scale_, -ts.mean_ / ts.scale_
        return self

    def _need_fit(self):
        if self.in_scale is None:
            raise RuntimeError("Pipeline: call fit() first (or load a fitted one)")

    def inputs(self, frame) -> np.ndarray:
        """Scaled inputs ``[N, F]`` (NaN in the first `lag` rows)."""
        self._need_fit()
        return self._changes(self._raw(frame)) * self.in_scale + self.in_offset

    def targets(self, frame) -> np.ndarray:
        """Scaled targets ``[N, H]`` of every origin (NaN where the future is unknown)."""
        self._need_fit()
        return self._targets_raw(frame["close"].to_numpy(np.float64)) * self.t_scale + self.t_offset

    def windows(self, z: np.ndarray, origins) -> np.ndarray:
        """Input windows ``[M, window, F]`` (float32) ending at each origin."""
        o = np.asarray(origins, dtype=np.int64)
        if len(o) and (o.min() < self.window - 1 + self.lag or o.max() >= len(z)):
            raise ValueError(f"windows: an origin lacks {self.window} days of history")
        views = np.lib.stride_tricks.sliding_window_view(z, self.window, axis=0)
        return views[o - self.window + 1].transpose(0, 2, 1).astype(np.float32)

    def to_prices(self, y, last_close) -> np.ndarray:
        """Scaled predictions ``[M, H]`` -> closes ``[M, H]`` (`last_close` ``[M]``: at origin)."""
        self._need_fit()
        raw = (np.asarray(y, np.float64) - self.t_offset) / self.t_scale
        if self.target == "price":
            return raw
        return np.asarray(last_close, np.float64).reshape(-1, 1) * np.exp(raw)

    def state(self) -> dict:
        self._need_fit()
        arrays = ("in_scale", "in_offset", "t_scale", "t_offset")
        return {**self.spec(), **{k: getattr(self, k).tolist() for k in arrays}}

    @classmethod
    def from_state(cls, d: dict) -> Pipeline:
        p = cls(d["window"], d["horizon"], d["features"], d["target"])
        for k in ("in_scale", "in_offset", "t_scale", "t_offset"):
            setattr(p, k, np.asarray(d[k], dtype=np.float64))
        return p


# --------------------------------------------------------------------------------------------
# Folds
# --------------------------------------------------------------------------------------------


@dataclass
class Fold:
    """Row ranges of one fold: train [lo, val), validation [val, test), test [test, end)."""

    lo: int
    val: int
    test: int
    end: int


def walk_forward(
    n: int,
    folds: int = 1,
    test_fraction: float = 0.15,
    origin: str = "expanding",
    train_size: int | None = None,
    val_fraction: float = VAL_FRACTION,
) -> list[Fold]:
    """The last `test_fraction` of `n` rows cut into `folds` consecutive test blocks; each fold
    trains on all rows before its block (expanding) or the `train_size` rows before it
    (sliding; default: the first fold's), the last `val_fraction` of those for validation."""
    if origin not in ORIGINS:
        raise ValueError(f"origin: {origin!r} is not one of {', '.join(ORIGINS)}")
    if int(folds) < 1 or not 0 < test_fraction < 1:
        raise ValueError(
            f"folds ({folds}) must be >= 1 and test_fraction ({test_fraction}) in (0, 1)"
        )
    start = round(n * (1 - test_fraction))
    block = (n - start) // folds
    if block < 1:
        raise ValueError(f"{n} rows leave no test block for {folds} folds")
    size = train_size or start
    out = []
    for k in range(folds):
        s = start + k * block
        e = n if k == folds - 1 else s + block
        lo = 0 if origin == "expanding" else max(0, s - size)
        out.append(Fold(lo, s - max(1, round((s - lo) * val_fraction)), s, e))
    return out


@dataclass
class FoldData:
    """A fold's scaled inputs/targets and the origins of its train/validation/test windows."""

    pipeline: Pipeline
    fold: Fold
    z: np.ndarray  # [N, F] scaled inputs
    y: np.ndarray  # [N, H] scaled targets (NaN where unknown)
    close: np.ndarray  # [N] closes
    origins: dict = field(default_factory=dict)  # "train"/"val"/"test" -> [M] origin rows

    def x(self, split: str) -> np.ndarray:
        return self.pipeline.windows(self.z, self.origins[split])

    def targets(self, split: str) -> np.ndarray:
        return self.y[self.origins[split]].astype(np.float32)

    def actual(self, split: str) -> np.ndarray:
        """Closes ``[M, H]`` the split's forecasts are for."""
        o = self.origins[split]
        return self.close[o[:, None] + np.arange(1, self.pipeline.horizon + 1)[None, :]]

    def to_prices(self, y, split: str) -> np.ndarray:
        return self.pipeline.to_prices(y, self.close[self.origins[split]])


def fold_windows(pipeline: Pipeline, frame, fold: Fold, need_test: bool = True) -> FoldData:
    """Fit `pipeline` on the fold's training rows; the origins whose targets lie in each span."""
    pipeline.fit(frame, fold.lo, fold.val)
    h, first = pipeline.horizon, fold.lo + pipeline.window - 1 + pipeline.lag
    spans = {
        "train": (first, fold.val - 1 - h),  # first/last origin: every target in its span
        "val": (max(first, fold.val - 1), fold.test - 1 - h),
        "test": (max(first, fold.test - 1), fold.end - 1 - h),
    }
    origins = {k: np.arange(a, max(a, b + 1)) for k, (a, b) in spans.items()}
    for k in ("train", "val", "test") if need_test else ("train", "val"):
        if len(origins[k]) < 1:
            raise ValueError(
                f"too few rows: the {k} span of rows {spans[k]} has no window of {pipeline.window}"
                f" days with {h} day(s) ahead; use a longer period or a shorter window/horizon"
            )
    close = frame["close"].to_numpy(np.float64)
    return FoldData(pipeline, fold, pipeline.inputs(frame), pipeline.targets(frame), close, origins)


def linear_ar(fd: FoldData) -> np.ndarray:
    """The linear autoregression baseline (scikit-learn): the same input windows, flattened,
    regressed on the targets over train + validation; test forecasts in prices ``[M, H]``."""
    from sklearn.linear_model import LinearRegression

    fit_x = np.concatenate([fd.x("train"), fd.x("val")])
    fit_y = np.concatenate([fd.targets("train"), fd.targets("val")])
    reg = LinearRegression().fit(fit_x.reshape(len(fit_x), -1), fit_y)
    xt = fd.x("test")
    return fd.to_prices(reg.predict(xt.reshape(len(xt), -1)), "test")


# --------------------------------------------------------------------------------------------
# Backtest results
# --------------------------------------------------------------------------------------------


@dataclass
class Backtest:
    """Forecasts of several models on the same test targets, fold by fold."""

    horizon: int
    folds: list[dict] = field(default_factory=list)  # per fold: spans and per-model metrics
    preds: dict = field(default_factory=dict)  # name -> [M, H] pooled over folds
    actual: np.ndarray | None = None  # [M, H]
    last: np.ndarray | None = None  # [M]
    dates: np.ndarray | None = None  # [M] datetime64[D] of the first target of each origin

    def add(self, fold: dict, preds: dict, actual, last, dates) -> None:
        fold = dict(fold)
        fold["metrics"] = {k: score(p, actual, last) for k, p in preds.items()}
        self.folds.append(fold)
        cat = lambda a, b: b if a is None else np.concatenate([a, b])  # noqa: E731
        for k, p in preds.items():
            self.preds[k] = cat(self.preds.get(k), np.asarray(p, np.float64))
        self.actual = cat(self.actual, np.asarray(actual, np.float64))
        self.last = cat(self.last, np.asarray(last, np.float64))
        self.dates = cat(self.dates, np.asarray(dates).astype("datetime64[D]"))

    def pooled(self) -> dict:
        return {k: score(p, self.actual, self.last) for k, p in self.preds.items()}

    def dm(self, name: str, ref: str = "naive") -> tuple[float, float]:
        """Diebold-Mariano (squared error) of `name` against `ref` on the pooled targets."""
        e = lambda k: self.preds[k] - self.actual  # noqa: E731
        return diebold_mariano(e(name), e(ref), self.horizon)

    def verdicts(self, names) -> list[str]:
        pooled = self.pooled()
        return [verdict(n, pooled[n], pooled["naive"], self.dm(n)) for n in names]

    def table(self) -> str:
        pooled = self.pooled()
        naive = pooled["naive"]["rmse"]
        head = f"{'model':<20} {'MSE':>10} {'MAE':>8} {'RMSE':>8} {'MAPE %':>7} {'dir %':>6} "
        head += f"{'RMSE/naive':>10} {'DM p':>7}"
        lines = [head, "-" * len(head)]
        for k, m in pooled.items():
            p = "" if k == "naive" else f"{self.dm(k)[1]:.3g}"
            d = "-" if m["direction"] is None else f"{m['direction']:.1f}"
            lines.append(
                f"{k:<20} {m['mse']:10.3f} {m['mae']:8.3f} {m['rmse']:8.3f} {m['mape']:7.2f} "
                f"{d:>6} {m['rmse'] / naive if naive else math.inf:10.4f} {p:>7}"
            )
        return "\n".join(lines)

    def summary(self) -> dict:
        """Plain-data form (JSON): per-fold and pooled metrics, DM against naive."""
        pooled = self.pooled()
        dms = {k: dict(zip(("stat", "p"), self.dm(k))) for k in pooled if k != "naive"}
        return {"horizon": self.horizon, "folds": self.folds, "pooled": pooled, "dm_vs_naive": dms}


# --------------------------------------------------------------------------------------------
# Forecaster
# --------------------------------------------------------------------------------------------


def as_frame(data):
    """(price frame, provenance) from a PriceSeries, a DataFrame/Series with a date index and a
    ``close`` column, or a 1-D array of closes (then rows are numbered, not dated)."""
    import pandas as pd

    from .data import PriceSeries

    if isinstance(data, PriceSeries):
        prov = {"symbol": data.symbol, "source": data.source, "detail": data.detail}
        return data.frame, prov
    if isinstance(data, pd.Series):
        data = data.to_frame("close")
    if isinstance(data, pd.DataFrame):
        frame = data.rename(columns=lambda c: str(c).lower())
        if "close" not in frame.columns:
            raise ValueError(f"data: needs a 'close' column, has {list(data.columns)}")
        frame = _dated(frame)
        text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if text:
            raise ValueError(
                f"data: column(s) {text} are not numbers (dates go in the index or in a column "
                f"named one of {list(_DATE_NAMES)})"
            )
        return frame.astype(np.float64), {"symbol": "?", "source": "frame", "detail": ""}
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"data: expected a PriceSeries, a DataFrame or [N] closes, got {arr.shape}"
        )
    return pd.DataFrame({"close": arr}), {"symbol": "?", "source": "array", "detail": ""}


def _dated(frame):
    """A frame straight from ``pd.read_csv`` (a ``Date`` column, numbered rows): the dates as
    its index, as :func:`fusedrnn.data.read_price_csv` reads such a file. A frame already
    indexed by dates, or without a date column, is returned as it is."""
    import pandas as pd

    names = [c for c in frame.columns if c in _DATE_NAMES]
    if not names or isinstance(frame.index, pd.DatetimeIndex):
        return frame
    try:
        dates = pd.to_datetime(frame[names[0]])
    except (ValueError, TypeError) as e:
        raise ValueError(f"data: column {names[0]!r} does not hold dates: {e}") from None
    return frame.drop(columns=names[0]).set_axis(pd.DatetimeIndex(dates, name="date"))


def _check_finite(frame, features) -> None:
    bad = [f for f in features if f in frame and not np.isfinite(frame[f].to_numpy()).all()]
    if bad:
        raise ValueError(f"data: column(s) {bad} have NaN or inf values")


class Forecaster:
    """A recurrent forecaster of the next `horizon` closes, with its data pipeline.

    ``cell``: "rnn", "lstm", "gru", "lnlstm" or "lngru" (the fused kernels with ``impl="fused"``).
    ``features``: input columns (``close`` always first). ``target``: "price" or "log-return".
    ``residual``: the change-from-last-close head (default: on for price targets).
    ``config``: a :class:`fusedrnn.train.TrainConfig` (default: the stock job's, no progress bar).
    """

    def __init__(self, cell: str = "lstm", *, window: int = 30, horizon: int = 1,
                 features=("close",), target: str = "price", hidden: int = 64, layers: int = 2,
                 dropout: float = 0.2, residual: bool | None = None, impl: str = "fused",
                 device: str = "cpu", config=None):  # fmt: skip
        from .train import TrainConfig, recurrent_class

        self.pipeline = Pipeline(window, horizon, features, target)
        # the model's settings, checked here rather than at fit
        recurrent_class(cell, impl)
        for name, v in (("hidden", hidden), ("layers", layers)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.model_config = dict(
            cell=cell,
            input_size=len(self.pipeline.features),
            hidden_size=int(hidden),
            num_layers=int(layers),
            output_size=self.pipeline.horizon,
            dropout=float(dropout) if layers > 1 else 0.0,
            impl=impl,
            residual=(target == "price") if residual is None else bool(residual),
        )
        if self.model_config["residual"] and target != "price":
            raise ValueError("residual: the change-from-last-close head needs target='price'")
        self.config = config or TrainConfig(progress=False)
        self.device = device
        self.model = None
        self.provenance: dict = {}
        self.history = None

    # ---- training ----------------------------------------------------------------------

    def _new_model(self):
        from .train import SequenceRegressor

        torch.manual_seed(self.config.seed)
        return SequenceRegressor(**self.model_config).to(self.device)

    def _train(self, fd: FoldData):
        from .train import Trainer, Windows

        model = self._new_model()
        trainer = Trainer(model, self.config)
        hist = trainer.fit(
            Windows(fd.x("train"), fd.targets("train")), Windows(fd.x("val"), fd.targets("val"))
        )
        return model, hist

    def fit(self, data, val_fraction: float = 0.15) -> Forecaster:
        """Fit the scalers on the first ``1 - val_fraction`` of the rows and train the model,
        early-stopping on the rest. Returns self."""
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction: {val_fraction} must be in (0, 1)")
        frame, prov = as_frame(data)
        _check_finite(frame, self.pipeline.features)
        n = len(frame)
        fold = Fold(0, n - max(1, round(n * val_fraction)), n, n)
        fd = fold_windows(self.pipeline, frame, fold, need_test=False)
        self.model, self.history = self._train(fd)
        self.model.eval()
        self.provenance = {
            **prov,
            **_span(frame),
            "trained_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "fusedrnn": _version(),
            "best_epoch": self.history.best_epoch + 1,
            "val_loss": self.history.best_val,
        }
        return self

    # ---- forecasting -------------------------------------------------------------------

    def predict(self, data):
        """The next `horizon` closes after the last row of `data` (same columns as in fit):
        a DataFrame indexed by the business days they are for (public holidays are not
        known), columns ``close`` and ``horizon``; ``attrs`` hold the origin's date and close."""
        import pandas as pd

        if self.model is None:
            raise RuntimeError("Forecaster: fit() or load() first")
        frame, _ = as_frame(data)
        p = self.pipeline
        need = p.window + p.lag
        if len(frame) < need:
            raise ValueError(f"data: {len(frame)} rows, the model needs the last {need}")
        frame = frame.iloc[-need:]
        _check_finite(frame, p.features)
        x = torch.from_numpy(p.windows(p.inputs(frame), [need - 1])).to(self.device)
        self.model.eval()
        with torch.no_grad():
            y = self.model(x)[0].cpu().numpy()
        last = float(frame["close"].iloc[-1])
        prices = p.to_prices(y, [last])[0]
        end = frame.index[-1]
        if isinstance(frame.index, pd.DatetimeIndex):
            index = pd.bdate_range(end + pd.offsets.BDay(1), periods=p.horizon, name="date")
        else:
            index = pd.RangeIndex(len(data), len(data) + p.horizon, name="row")
        out = pd.DataFrame({"close": prices, "horizon": np.arange(1, p.horizon + 1)}, index=index)
        out.attrs.update(as_of=str(end.date()) if hasattr(end, "date") else str(end), last=last)
        return out

    # ---- artefact ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        if self.model is None:
            raise RuntimeError("Forecaster: nothing to save, fit() first")
        return {
            "format": FORMAT,
            "model_config": dict(self.model_config),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "pipeline": self.pipeline.state(),
            "train_config": asdict(self.config),
            "provenance": dict(self.provenance),
        }

    def save(self, path) -> None:
        """One file, written atomically; ``torch.load(path, weights_only=True)`` reads it."""
        from .train import save_checkpoint

        save_checkpoint(path, self.state_dict())

    @classmethod
    def load(cls, path, device: str = "cpu") -> Forecaster:
        """A saved Forecaster, or a ``fusedrnn stock --save-models`` checkpoint."""
        from .train import SequenceRegressor, TrainConfig, load_checkpoint

        try:
            d = load_checkpoint(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"model file not found: {path}") from None
        except Exception as e:  # a pickle that is not ours, a truncated file
            raise ValueError(f"{path}: not a fusedrnn model file ({e})") from None
        try:
            if isinstance(d, dict) and d.get("format") == "fusedrnn.train/1" and "meta" in d:
                meta = d["meta"]
                d = {
                    "format": FORMAT,
                    "model_config": d["model_config"],
                    "state_dict": d["best_state"] or d["model"],
                    "pipeline": meta["pipeline"],
                    "train_config": d["config"],
                    "provenance": meta.get("provenance", {}),
                }
            if not isinstance(d, dict) or d.get("format") != FORMAT:
                raise ValueError(f"{path}: not a fusedrnn forecaster (format {FORMAT})")
            f = cls.__new__(cls)
            f.pipeline = Pipeline.from_state(d["pipeline"])
            f.model_config = dict(d["model_config"])
            f.config = TrainConfig.from_dict({**d["train_config"], "checkpoint": None})
            f.device, f.history, f.provenance = device, None, dict(d["provenance"])
        except (KeyError, TypeError) as e:  # the format's tag, but not its contents
            raise ValueError(f"{path}: not a complete fusedrnn forecaster (missing {e})") from None
        f.model = SequenceRegressor(**f.model_config)
        f.model.load_state_dict(d["state_dict"])
        f.model.to(device).eval()
        return f

    def describe(self) -> str:
        c, p, v = self.model_config, self.pipeline, self.provenance
        feats = ", ".join(p.features)
        span = f"{v.get('first_date', '?')} .. {v.get('last_date', '?')}"
        return (
            f"{c['cell'].upper()} ({c['num_layers']} x {c['hidden_size']}), window {p.window}, "
            f"horizon {p.horizon}, target {p.target}, features {feats}; trained on "
            f"{v.get('symbol', '?')} {span} ({v.get('source', '?')})"
        )

    # ---- backtest ----------------------------------------------------------------------

    def backtest(self, data, folds: int = 5, test_fraction: float = 0.15,
                 origin: str = "expanding", train_size: int | None = None, season: int = 5,
                 ma: int = 5) -> Backtest:  # fmt: skip
        """Walk-forward: per fold, refit the pipeline and a fresh model on the fold's past and
        forecast its test block, beside the baselines. Leaves this Forecaster unchanged."""
        frame, _ = as_frame(data)
        _check_finite(frame, self.pipeline.features)
        name = self.model_config["cell"].upper()
        bt = Backtest(self.pipeline.horizon)
        for k, fold in enumerate(
            walk_forward(len(frame), folds, test_fraction, origin, train_size)
        ):
            pipe = Pipeline(**self.pipeline.spec())
            fd = fold_windows(pipe, frame, fold)
            model, _ = self._train(fd)
            model.eval()
            with torch.no_grad():
                y = model(torch.from_numpy(fd.x("test")).to(self.device))[0].cpu().numpy()
            o = fd.origins["test"]
            preds = {name: fd.to_prices(y, "test")}
            preds.update(baselines(fd.close, o, pipe.horizon, season, ma, linear_ar(fd)))
            bt.add(_fold_info(k, frame, fold), preds, fd.actual("test"), fd.close[o],
                   _dates(frame, o + 1))  # fmt: skip
        return bt


def _dates(frame, rows) -> np.ndarray:
    idx = frame.index
    if hasattr(idx, "values") and np.issubdtype(idx.values.dtype, np.datetime64):
        return idx.values[rows].astype("datetime64[D]")
    return np.asarray(rows)


def _span(frame) -> dict:
    d = _dates(frame, [0, len(frame) - 1])
    return {"first_date": str(d[0]), "last_date": str(d[1]), "rows": len(frame)}


def _fold_info(k: int, frame, fold: Fold) -> dict:
    d = _dates(frame, [fold.lo, fold.val - 1, fold.test, fold.end - 1])
    return {"fold": k + 1, "train": [str(d[0]), str(d[1])], "test": [str(d[2]), str(d[3])]}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fusedrnn")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0.0.0"
