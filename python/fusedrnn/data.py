"""Data preparation: daily prices (yfinance, disk cache, bundled), synthetic series, windows.

Prices
    ``load_prices(symbol, period, source)`` returns a :class:`PriceSeries` (dates, adjusted
    closes, and where they came from). ``source="auto"`` tries the network (yfinance), then the
    disk cache of an earlier download, then the data bundled with the package, and says which it
    used. The download runs in a child process with a hard time limit, so a silent host cannot
    hang the caller; an empty frame, a missing yfinance, a DNS failure and a time-out all count as
    failure.

Windows
    ``prepare_windows(series, window)`` splits a series chronologically (70/15/15), fits a
    :class:`MinMaxScaler` on the training span only, and cuts every split into (window -> next
    value) pairs. Inputs of a validation/test window may reach back into earlier spans (that is
    the past, not leakage); every target lies in its own span.

Layouts: windows ``X`` are ``[M, window, F]`` (batch-first, F features), targets ``y`` are
``[M, 1]``; float32.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BUNDLED_SYMBOLS",
    "MinMaxScaler",
    "PriceSeries",
    "WindowedData",
    "cache_dir",
    "load_prices",
    "make_windows",
    "noisy_sine",
    "prepare_windows",
    "read_price_csv",
    "trend_seasonal",
]

BUNDLED_FILE = Path(__file__).resolve().parent / "datasets" / "prices.csv.gz"
BUNDLED_SYMBOLS = ("AAPL", "MSFT", "IBM", "GOOG")
SOURCES = ("auto", "yfinance", "cache", "bundled")
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9.\-^=]{1,15}$")
_PERIOD_RE = re.compile(r"^(\d+)(d|wk|mo|y)$")
_PERIOD_DAYS = {"d": 1, "wk": 7, "mo": 30, "y": 365}
_YF_PERIODS = ("1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max")
_HARD_LIMIT_EXTRA = 15.0  # seconds past yfinance's own timeout before the download is killed


# --------------------------------------------------------------------------------------------
# Prices
# --------------------------------------------------------------------------------------------


@dataclass
class PriceSeries:
    """Daily closing prices of one symbol, oldest first."""

    symbol: str
    dates: np.ndarray  # datetime64[D], strictly increasing
    close: np.ndarray  # float64, adjusted closes, > 0
    source: str  # "yfinance", "cache", "bundled" or "file"
    detail: str = ""  # where exactly (path or note), for the user
    notes: list[str] = field(default_factory=list)  # what was tried before, for the user

    def __len__(self) -> int:
        return len(self.close)

    def describe(self) -> str:
        span = f"{self.dates[0]} .. {self.dates[-1]}" if len(self) else "empty"
        return f"{self.symbol}: {len(self)} daily closes, {span} (source: {self.source})"


def cache_dir() -> Path:
    """Where downloads are cached: $FUSEDRNN_CACHE_DIR, else $XDG_CACHE_HOME/fusedrnn/prices."""
    env = os.environ.get("FUSEDRNN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fusedrnn" / "prices"


def _check_symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
        raise ValueError(f"symbol: {symbol!r} is not a ticker symbol (e.g. 'AAPL')")
    return symbol.upper()


def _period_days(period: str) -> int | None:
    """Calendar days covered by a yfinance-style period ('5y', '6mo', '30d'; 'max', 'ytd' -> None)."""
    if period in ("max", "ytd"):
        return None
    m = _PERIOD_RE.match(str(period))
    if not m or int(m.group(1)) == 0:
        raise ValueError(
            f"period: {period!r} is not a period; use e.g. '5y', '18mo', '2wk', '90d', 'ytd' "
            "or 'max'"
        )
    return int(m.group(1)) * _PERIOD_DAYS[m.group(2)]


def _last_period(series: PriceSeries, period: str) -> PriceSeries:
    """The trailing `period` of a series, measured back from its last date."""
    days = _period_days(period)
    if len(series) == 0 or period == "max":
        return series
    if period == "ytd":
        keep = series.dates >= series.dates[-1].astype("datetime64[Y]").astype("datetime64[D]")
    else:
        keep = series.dates > series.dates[-1] - np.timedelta64(days, "D")
    series.dates, series.close = series.dates[keep], series.close[keep]
    return series


def _validate(dates: list, closes: list, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not closes:
        raise ValueError(f"{what}: no price rows")
    try:
        d = np.array(dates, dtype="datetime64[D]")
    except ValueError as e:
        raise ValueError(f"{what}: a date is not an ISO date (YYYY-MM-DD): {e}") from None
    c = np.asarray(closes, dtype=np.float64)
    bad = ~np.isfinite(c)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} missing/NaN close(s), first on {d[bad][0]}")
    if (c <= 0).any():
        raise ValueError(f"{what}: non-positive close on {d[c <= 0][0]}")
    if len(d) > 1 and not (np.diff(d) > np.timedelta64(0, "D")).all():
        order = np.argsort(d, kind="stable")
        d, c = d[order], c[order]
        if not (np.diff(d) > np.timedelta64(0, "D")).all():
            raise ValueError(f"{what}: duplicate dates")
    return d, c


def read_price_csv(path_or_text, symbol: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read dates and closes from a CSV (a path, .gz allowed, or a file object).

    Needs a date column (``date``/``Date``/``Datetime``) and a price column, preferring
    ``adj_close``/``Adj Close`` over ``close``/``Close``. A ``symbol`` column, if present, is
    filtered to `symbol`. Raises ``ValueError`` naming the file and the problem.
    """
    what = str(path_or_text)
    try:
        if isinstance(path_or_text, (str, os.PathLike)):
            p = Path(path_or_text)
            opener = gzip.open if p.suffix == ".gz" else open
            with opener(p, "rt", newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
        else:
            rows = list(csv.reader(path_or_text))
    except FileNotFoundError:
        raise FileNotFoundError(f"price file not found: {what}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{what}: not a readable CSV file ({e})") from None
    if not rows:
        raise ValueError(f"{what}: empty CSV file")
    header = [h.strip().lower().replace(" ", "_") for h in rows[0]]

    def col(*names):
        for n in names:
            if n in header:
                return header.index(n)
        return None

    i_date = col("date", "datetime", "timestamp")
    i_close = col("adj_close", "adjclose", "close", "price")
    i_sym = col("symbol", "ticker")
    if i_date is None or i_close is None:
        raise ValueError(
            f"{what}: needs a 'date' and a 'close' (or 'adj_close') column; header is {rows[0]}"
        )
    dates, closes = [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{what}:{lineno}: {len(row)} fields, header has {len(header)}")
        if i_sym is not None and symbol is not None and row[i_sym].strip().upper() != symbol:
            continue
        raw = row[i_close].strip()
        try:
            closes.append(float(raw) if raw else float("nan"))
        except ValueError:
            raise ValueError(f"{what}:{lineno}: close {raw!r} is not a number") from None
        dates.append(row[i_date].strip()[:10])  # '2024-01-02 00:00:00-05:00' -> date
    if not closes and i_sym is not None and symbol is not None:
        raise ValueError(f"{what}: no rows for symbol {symbol!r}")
    return _validate(dates, closes, what)


def _load_bundled(symbol: str) -> PriceSeries:
    if symbol not in BUNDLED_SYMBOLS:
        raise ValueError(
            f"symbol {symbol!r} is not in the bundled data (it has {', '.join(BUNDLED_SYMBOLS)}); "
            "use source='yfinance' with a network, or pass a CSV path"
        )
    d, c = read_price_csv(BUNDLED_FILE, symbol)
    return PriceSeries(symbol, d, c, "bundled", f"{BUNDLED_FILE.name} (Quandl WIKI, 2000-2013)")


def _cache_file(symbol: str, period: str) -> Path:
    return cache_dir() / f"{symbol}_{period}.csv"


# Runs in a child process: `python -c _FETCH symbol period timeout out.csv`. Exit 0 = wrote rows.
_FETCH = r"""
import sys
symbol, period, timeout, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
import yfinance as yf
span = {"start": period[6:]} if period.startswith("start=") else {"period": period}
df = yf.Ticker(symbol).history(**span, interval="1d", auto_adjust=True,
                               timeout=timeout, raise_errors=True)
if df is None or len(df) == 0 or "Close" not in df:
    sys.exit("yfinance returned no rows for %s (unknown symbol or no data)" % symbol)
df = df[["Close"]].dropna()
with open(out, "w") as f:
    f.write("date,close\n")
    for ts, close in zip(df.index, df["Close"]):
        f.write("%s,%.6f\n" % (ts.strftime("%Y-%m-%d"), float(close)))
"""


def _yfinance_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("yfinance") is not None


def _download(symbol: str, period: str, timeout: float) -> PriceSeries:
    """Download with yfinance in a child process killed after ~timeout; write the cache."""
    if os.environ.get("FUSEDRNN_OFFLINE"):
        raise RuntimeError("FUSEDRNN_OFFLINE is set")
    if not _yfinance_available():
        raise RuntimeError("yfinance is not installed (pip install yfinance)")
    target = _cache_file(symbol, period)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{symbol}_", suffix=".csv.part", dir=target.parent)
    os.close(fd)
    try:
        span = period
        if period not in _YF_PERIODS:  # e.g. '18mo': ask for a start date instead
            start = np.datetime64("today", "D") - np.timedelta64(_period_days(period), "D")
            span = f"start={start}"
        cmd = [sys.executable, "-c", _FETCH, symbol, span, str(timeout), tmp]
        try:
            proc = subprocess.run(
                cmd,
                check=False,
                capture_output=True,
                text=True,
                timeout=timeout + _HARD_LIMIT_EXTRA,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"no answer within {timeout + _HARD_LIMIT_EXTRA:.0f} s") from None
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            msg = lines[-1].split(" See http")[0] if lines else f"exit code {proc.returncode}"
            raise RuntimeError(msg[:300])
        d, c = read_price_csv(tmp)
        os.replace(tmp, target)  # only a complete, valid download becomes the cache
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return PriceSeries(symbol, d, c, "yfinance", f"downloaded, cached at {target}")


def _load_cache(symbol: str, period: str) -> PriceSeries:
    path = _cache_file(symbol, period)
    if not path.exists():
        # a longer cached period also serves: take its trailing `period`
        others = sorted(cache_dir().glob(f"{symbol}_*.csv")) if cache_dir().is_dir() else []
        if not others:
            raise FileNotFoundError(f"no cached download of {symbol} in {cache_dir()}")
        path = max(others, key=lambda p: p.stat().st_size)
    d, c = read_price_csv(path)
    age = (time.time() - path.stat().st_mtime) / 86400
    return _last_period(PriceSeries(symbol, d, c, "cache", f"{path} ({age:.1f} days old)"), period)


def load_prices(
    symbol: str = "AAPL",
    period: str = "5y",
    source: str = "auto",
    *,
    timeout: float = 10.0,
    min_rows: int = 2,
    log=None,
) -> PriceSeries:
    """Daily adjusted closes of `symbol` over the trailing `period`.

    source: "auto" (network, then cache, then bundled), "yfinance" (network only, raises on
    failure), "cache", "bundled" (the package's 2000-2013 Quandl WIKI data: AAPL, MSFT, IBM,
    GOOG; `period` is counted back from its last day, 2013-03-01), or a path to a CSV file
    with date and close columns. `timeout` is yfinance's connection timeout in seconds; the
    whole download is killed 15 s after it. `log` (e.g. print) is told what was tried and used.
    Raises ValueError for a bad symbol/period/CSV, NaNs, or fewer than `min_rows` rows.
    """
    say = log or (lambda msg: None)
    is_path = source not in SOURCES
    looks_like_path = os.path.sep in str(source) or str(source).endswith((".csv", ".gz"))
    if is_path and not looks_like_path and not Path(source).exists():
        raise ValueError(f"source: {source!r} is none of {', '.join(SOURCES)} nor a file")
    _period_days(period)  # validates
    if is_path:
        d, c = read_price_csv(source, _check_symbol(symbol) if symbol else None)
        series = _last_period(PriceSeries(symbol or "?", d, c, "file", str(source)), period)
    else:
        symbol = _check_symbol(symbol)
        notes: list[str] = []
        series = None
        order = {"auto": ("yfinance", "cache", "bundled")}.get(source, (source,))
        for i, how in enumerate(order):
            try:
                if how == "yfinance":
                    series = _download(symbol, period, timeout)
                elif how == "cache":
                    series = _load_cache(symbol, period)
                else:
                    series = _last_period(_load_bundled(symbol), period)
                break
            except (RuntimeError, OSError, ValueError) as e:
                if len(order) == 1:
                    raise
                notes.append(f"{how}: {e}")
                if i + 1 == len(order):
                    raise RuntimeError(f"could not load {symbol}: " + "; ".join(notes)) from None
                say(f"[data] {how} failed ({e}); trying {order[i + 1]}")
        series.notes = notes
    if len(series) < min_rows:
        raise ValueError(f"{series.symbol}: {len(series)} rows, need at least {min_rows}")
    say(f"[data] using {series.describe()} — {series.detail}")
    return series


# --------------------------------------------------------------------------------------------
# Synthetic series
# --------------------------------------------------------------------------------------------


def noisy_sine(
    n: int = 1000, period: float = 50.0, amplitude: float = 1.0, noise: float = 0.1, seed: int = 0
) -> np.ndarray:
    """``amplitude * sin(2 pi t / period) + N(0, noise^2)`` for t = 0..n-1 (float64)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    return amplitude * np.sin(2 * np.pi * t / period) + noise * rng.standard_normal(n)


def trend_seasonal(
    n: int = 1000,
    trend: float = 0.01,
    period: float = 50.0,
    amplitude: float = 1.0,
    noise: float = 0.2,
    level: float = 10.0,
    seed: int = 0,
) -> np.ndarray:
    """``level + trend * t + amplitude * sin(2 pi t / period) + N(0, noise^2)`` (float64)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    return (
        level
        + trend * t
        + amplitude * np.sin(2 * np.pi * t / period)
        + noise * rng.standard_normal(n)
    )


# --------------------------------------------------------------------------------------------
# Scaling and windows
# --------------------------------------------------------------------------------------------


class MinMaxScaler:
    """Per-feature affine map of [min, max] (of the data it was fitted on) onto `feature_range`.

    Values outside the fitted range map outside `feature_range` (no clipping): a test span that
    leaves the training range shows up as such instead of being hidden.
    """

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0)):
        lo, hi = feature_range
        if not hi > lo:
            raise ValueError(f"feature_range: {feature_range} is not increasing")
        self.feature_range = (float(lo), float(hi))
        self.data_min_: np.ndarray | None = None
        self.data_max_: np.ndarray | None = None

    def fit(self, x) -> MinMaxScaler:
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            raise ValueError("MinMaxScaler.fit: empty data")
        if not np.isfinite(x).all():
            raise ValueError("MinMaxScaler.fit: data has NaN or inf")
        self.data_min_ = x.min(axis=0)
        self.data_max_ = x.max(axis=0)
        return self

    def _params(self):
        if self.data_min_ is None:
            raise RuntimeError("MinMaxScaler: call fit() first")
        span = self.data_max_ - self.data_min_
        span = np.where(span > 0, span, 1.0)  # a constant feature maps to the range's low end
        lo, hi = self.feature_range
        scale = (hi - lo) / span
        return scale, lo - self.data_min_ * scale

    def transform(self, x) -> np.ndarray:
        scale, offset = self._params()
        return np.asarray(x, dtype=np.float64) * scale + offset

    def inverse_transform(self, x) -> np.ndarray:
        scale, offset = self._params()
        return (np.asarray(x, dtype=np.float64) - offset) / scale

    def fit_transform(self, x) -> np.ndarray:
        return self.fit(x).transform(x)

    def state_dict(self) -> dict:
        self._params()  # raises if not fitted
        return {
            "feature_range": list(self.feature_range),
            "data_min": np.atleast_1d(self.data_min_).tolist(),
            "data_max": np.atleast_1d(self.data_max_).tolist(),
        }


def make_windows(
    series, window: int, horizon: int = 1, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut (window -> value `horizon` steps later) pairs from `series` ([N] or [N, F]).

    Only targets with index in [start, stop) are made; input windows may begin before `start`.
    Returns ``X [M, window, F]``, ``y [M, 1]`` (feature 0 of the target step), and the target
    indices ``[M]``. Vectorised (a strided view, then one copy).
    """
    s = np.asarray(series)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2:
        raise ValueError(f"series: expected [N] or [N, F], got shape {s.shape}")
    if window < 1 or horizon < 1:
        raise ValueError(f"window ({window}) and horizon ({horizon}) must be >= 1")
    n = len(s)
    stop = n if stop is None else min(stop, n)
    first = max(start, window + horizon - 1)  # first target index with a full window before it
    if first >= stop:
        return (
            np.zeros((0, window, s.shape[1]), s.dtype),
            np.zeros((0, 1), s.dtype),
            np.zeros(0, np.int64),
        )
    targets = np.arange(first, stop)
    begins = targets - horizon - window + 1
    views = np.lib.stride_tricks.sliding_window_view(s, window, axis=0)  # [N-w+1, F, w]
    x = views[begins].transpose(0, 2, 1).copy()
    return x, s[targets, :1].copy(), targets


@dataclass
class WindowedData:
    """A series split chronologically, scaled on its training span, cut into windows."""

    series: np.ndarray  # [N] raw values
    scaled: np.ndarray  # [N] scaled with `scaler`
    scaler: MinMaxScaler
    window: int
    bounds: tuple[int, int]  # train = [0, b0), val = [b0, b1), test = [b1, N): target indices
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    t_train: np.ndarray  # target index of each window
    t_val: np.ndarray
    t_test: np.ndarray

    def inverse(self, y) -> np.ndarray:
        """Scaled predictions/targets -> original units (shape kept)."""
        return self.scaler.inverse_transform(np.asarray(y, dtype=np.float64))


def prepare_windows(
    series,
    window: int = 30,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
    horizon: int = 1,
    feature_range: tuple[float, float] = (0.0, 1.0),
) -> WindowedData:
    """Chronological split, MinMax fitted on the training span only, then windows per split."""
    s = np.asarray(series, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"series: expected a 1-D series, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("series: has NaN or inf values")
    if len(splits) != 3 or min(splits) <= 0 or abs(sum(splits) - 1.0) > 1e-6:
        raise ValueError(f"splits: {splits} must be three positive fractions summing to 1")
    n = len(s)
    b0 = round(n * splits[0])
    b1 = round(n * (splits[0] + splits[1]))
    need = window + horizon
    if b0 < need or b1 - b0 < 1 or n - b1 < 1:
        raise ValueError(
            f"series of {n} rows is too short for window {window}: the training span "
            f"({b0} rows) needs at least {need}, and validation and test at least 1 row each"
        )
    scaler = MinMaxScaler(feature_range).fit(s[:b0])
    z = scaler.transform(s)
    xs = [make_windows(z, window, horizon, a, b) for a, b in ((0, b0), (b0, b1), (b1, n))]
    f32 = np.float32
    return WindowedData(
        series=s,
        scaled=z,
        scaler=scaler,
        window=window,
        bounds=(b0, b1),
        x_train=xs[0][0].astype(f32),
        y_train=xs[0][1].astype(f32),
        x_val=xs[1][0].astype(f32),
        y_val=xs[1][1].astype(f32),
        x_test=xs[2][0].astype(f32),
        y_test=xs[2][1].astype(f32),
        t_train=xs[0][2],
        t_val=xs[1][2],
        t_test=xs[2][2],
    )
