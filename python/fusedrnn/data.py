"""Data preparation: daily prices (yfinance, disk cache, bundled), synthetic series, windows.

Prices
    ``load_prices(symbol, period, source)`` returns a :class:`PriceSeries` (a pandas frame of
    dates, adjusted closes and, where the source has them, open/high/low/volume; and where they
    came from). Read with pandas; blank closes are filled forward and reported. ``source="auto"`` tries the network (yfinance), then the
    disk cache of an earlier download, then the data bundled with the package, and says which it
    used. The download runs in a child process with a hard time limit, so a silent host cannot
    hang the caller; an empty frame, a missing yfinance, a DNS failure and a time-out all count as
    failure.

Windows
    ``prepare_windows(series, window)`` splits a series chronologically (70/15/15), fits
    scikit-learn's ``MinMaxScaler`` on the training span only, and cuts every split into (window -> next
    value) pairs. Inputs of a validation/test window may reach back into earlier spans (that is
    the past, not leakage); every target lies in its own span.

Layouts: windows ``X`` are ``[M, window, F]`` (batch-first, F features), targets ``y`` are
``[M, 1]``; float32.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import shareable

__all__ = [
    "BUNDLED_SYMBOLS",
    "DEFAULT_SYMBOL",
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
DEFAULT_SYMBOL = "AAPL"
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
    """Daily prices of one symbol, oldest first.

    ``frame`` holds every numeric column the source has (``close`` always; ``open``, ``high``,
    ``low``, ``volume`` where the source has them; any other numeric column of a user CSV),
    indexed by date; ``dates`` and ``close`` are its index and close column as arrays.
    """

    symbol: str
    frame: object  # pandas.DataFrame, DatetimeIndex, float64 columns, no NaN
    source: str  # "yfinance", "cache", "bundled" or "file"
    detail: str = ""  # where exactly (path or note), for the user
    notes: list[str] = field(default_factory=list)  # what was tried before, for the user
    filled: list[str] = field(default_factory=list)  # missing values filled/dropped, for the user

    @property
    def dates(self) -> np.ndarray:
        return self.frame.index.values.astype("datetime64[D]")

    @property
    def close(self) -> np.ndarray:
        return self.frame["close"].to_numpy(dtype=np.float64)

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    def __len__(self) -> int:
        return len(self.frame)

    def describe(self) -> str:
        span = f"{self.dates[0]} .. {self.dates[-1]}" if len(self) else "empty"
        cols = "" if self.columns == ["close"] else f" ({', '.join(self.columns)})"
        return f"{self.symbol}: {len(self)} daily closes{cols}, {span} (source: {self.source})"


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
    dates = series.dates
    if period == "ytd":
        keep = dates >= dates[-1].astype("datetime64[Y]").astype("datetime64[D]")
    else:
        keep = dates > dates[-1] - np.timedelta64(days, "D")
    series.frame = series.frame[keep]
    return series


def _pandas():
    try:
        import pandas
    except ImportError:  # pragma: no cover - the [apps] extra installs it
        raise ImportError("fusedrnn.data needs pandas: pip install 'fusedrnn[apps]'") from None
    return pandas


_MISSING = {"", "nan", "NaN", "NA", "N/A", "null", "None", "-"}
_CLOSE_NAMES = ("adj_close", "adjclose", "close", "price")
_DATE_NAMES = ("date", "datetime", "timestamp")


def read_price_csv(path_or_text, symbol: str | None = None):
    """Read a price CSV (a path, .gz allowed, or a file object) with pandas.

    Needs a date column (``date``/``Date``/``Datetime``) and a price column, preferring
    ``adj_close``/``Adj Close`` over ``close``/``Close``; other numeric columns (``open``,
    ``high``, ``low``, ``volume``, ...) are kept as features. A ``symbol`` column, if present,
    is filtered to `symbol`. Blank or NaN cells are filled forward from the previous day (rows
    before the first close are dropped); what was filled is in ``frame.attrs["filled"]``.
    Returns a DataFrame indexed by date (sorted), float64 columns, ``close`` first. Raises
    ``ValueError`` naming the file, the line and the problem.
    """
    pd = _pandas()
    what = str(getattr(path_or_text, "name", path_or_text))
    src = path_or_text
    if isinstance(src, (str, os.PathLike)):
        src = Path(src)
        if not src.exists():
            raise FileNotFoundError(f"price file not found: {what}")
    try:
        # header=None: a row with more fields than the header is an error, not an index
        raw = pd.read_csv(src, header=None, dtype=str, keep_default_na=False,
                          skip_blank_lines=True, compression="infer")  # fmt: skip
    except pd.errors.EmptyDataError:
        raise ValueError(f"{what}: empty CSV file") from None
    except pd.errors.ParserError as e:
        raise ValueError(f"{what}: malformed CSV, wrong number of fields ({e})") from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ValueError(f"{what}: not a readable CSV file ({e})") from None
    header = [str(h).strip().lower().replace(" ", "_") for h in raw.iloc[0]]
    body = raw.iloc[1:].reset_index(drop=True)
    body.columns = header
    lineno = np.arange(2, len(body) + 2)
    blank_row = (body.apply(lambda c: c.str.strip()) == "").all(axis=1).to_numpy()
    body, lineno = body[~blank_row], lineno[~blank_row]

    def col(names):
        return next((n for n in names if n in header), None)

    c_date, c_close, c_sym = col(_DATE_NAMES), col(_CLOSE_NAMES), col(("symbol", "ticker"))
    if c_date is None or c_close is None:
        raise ValueError(
            f"{what}: needs a 'date' and a 'close' (or 'adj_close') column; header is "
            f"{list(raw.iloc[0])}"
        )
    if c_sym is not None and symbol is not None:
        keep = (body[c_sym].str.strip().str.upper() == symbol.upper()).to_numpy()
        body, lineno = body[keep], lineno[keep]
        if not len(body):
            raise ValueError(f"{what}: no rows for symbol {symbol!r}")
    if not len(body):
        raise ValueError(f"{what}: no price rows")
    try:  # '2024-01-02 00:00:00-05:00' -> the date
        index = pd.to_datetime(body[c_date].str.strip().str[:10], format="%Y-%m-%d")
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what}: a date is not an ISO date (YYYY-MM-DD): {e}") from None
    numeric = {}
    names = [c_close] + [
        c for c in header if c not in (c_date, c_sym, c_close) and c not in _CLOSE_NAMES
    ]
    for c in names:
        text = body[c].str.strip()
        values = pd.to_numeric(text.where(~text.isin(_MISSING)), errors="coerce")
        bad = values.isna() & ~text.isin(_MISSING)
        if bad.any():
            if c != c_close:
                continue  # a text column (a name, a note): not a feature
            i = int(np.argmax(bad.to_numpy()))
            raise ValueError(f"{what}:{lineno[i]}: close {text.iloc[i]!r} is not a number")
        numeric["close" if c == c_close else c] = values.to_numpy(dtype=np.float64)
    frame = pd.DataFrame(numeric, index=pd.DatetimeIndex(index.to_numpy(), name="date"))
    if not frame.index.is_monotonic_increasing:
        frame = frame.sort_index(kind="stable")
    if frame.index.has_duplicates:
        raise ValueError(
            f"{what}: duplicate dates, first {frame.index[frame.index.duplicated()][0].date()}"
        )
    frame = frame.replace([np.inf, -np.inf], np.nan)
    filled = []
    first = frame["close"].first_valid_index()
    if first is None:
        raise ValueError(f"{what}: every close is missing (blank/NaN)")
    lead = int((frame.index < first).sum())
    if lead:
        filled.append(f"dropped {lead} leading row(s) without a close (before {first.date()})")
        frame = frame[frame.index >= first]
    for c in frame.columns:
        miss = frame[c].isna().to_numpy()
        if miss.any():
            filled.append(
                f"filled {int(miss.sum())} missing {c} value(s) forward from the previous "
                f"day (first on {frame.index[miss][0].date()})"
            )
    frame = frame.ffill().dropna(axis=1)  # a column missing from the first row on is dropped
    if (frame["close"] <= 0).any():
        raise ValueError(
            f"{what}: non-positive close on {frame.index[(frame['close'] <= 0).to_numpy()][0].date()}"
        )
    frame.attrs["filled"] = filled
    return frame


def _file_title(path) -> str:
    """'data/msft_daily.csv.gz' -> 'MSFT_DAILY'."""
    name = Path(path).name
    for ext in (".gz", ".csv", ".txt", ".tsv"):
        name = name.removesuffix(ext)
    return name.upper() or "FILE"


def _load_bundled(symbol: str) -> PriceSeries:
    if symbol not in BUNDLED_SYMBOLS:
        raise ValueError(
            f"symbol {symbol!r} is not in the bundled data (it has {', '.join(BUNDLED_SYMBOLS)}); "
            "use source='yfinance' with a network, or pass a CSV path"
        )
    frame = read_price_csv(BUNDLED_FILE, symbol)
    detail = f"{BUNDLED_FILE.name} (Quandl WIKI, 2000-2013)"
    return PriceSeries(symbol, frame, "bundled", detail, filled=frame.attrs["filled"])


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
cols = [c for c in ("Open", "High", "Low", "Close", "Volume") if c in df]
df = df[cols].dropna(subset=["Close"])
df.index = df.index.strftime("%Y-%m-%d")
df.index.name = "date"
df.columns = [c.lower() for c in cols]
df.to_csv(out, float_format="%.6f")
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
        frame = read_price_csv(tmp)
        shareable(tmp)
        os.replace(tmp, target)  # only a complete, valid download becomes the cache
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    detail = f"downloaded, cached at {target}"
    return PriceSeries(symbol, frame, "yfinance", detail, filled=frame.attrs["filled"])


def _load_cache(symbol: str, period: str) -> PriceSeries:
    path = _cache_file(symbol, period)
    short = ""
    if path.exists():
        frame = read_price_csv(path)
    else:
        # another cached period also serves: the one reaching furthest back (its trailing
        # `period`); one that covers less than `period` is used, and the detail says so
        others = sorted(cache_dir().glob(f"{symbol}_*.csv")) if cache_dir().is_dir() else []
        if not others:
            raise FileNotFoundError(f"no cached download of {symbol} in {cache_dir()}")
        frames = {p: read_price_csv(p) for p in others}
        far = _pandas().Timestamp.max
        path = min(others, key=lambda p: frames[p].index[0] if len(frames[p]) else far)
        frame = frames[path]
        days = _period_days(period)
        if days is not None and len(frame):
            span = (frame.index[-1] - frame.index[0]).days + 1
            if span < days:
                short = f"; covers only {span} days of the {period} asked"
    age = (time.time() - path.stat().st_mtime) / 86400
    series = PriceSeries(symbol, frame, "cache", f"{path} ({age:.1f} days old){short}")
    series.filled = frame.attrs["filled"]
    return _last_period(series, period)


def load_prices(
    symbol: str | None = None,
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
        frame = read_price_csv(source, _check_symbol(symbol) if symbol else None)
        # titled by the symbol asked for, else by the file's name ("msft.csv" -> "MSFT")
        title = symbol.upper() if symbol else _file_title(source)
        series = PriceSeries(title, frame, "file", str(source), filled=frame.attrs["filled"])
        series = _last_period(series, period)
    else:
        symbol = _check_symbol(symbol or DEFAULT_SYMBOL)
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
    for note in series.filled:
        say(f"[data] {series.symbol}: {note}")
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
    scaler: object  # sklearn.preprocessing.MinMaxScaler, fitted on the training span
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
        y = np.asarray(y, dtype=np.float64)
        return self.scaler.inverse_transform(y.reshape(-1, 1)).reshape(y.shape)


def prepare_windows(
    series,
    window: int = 30,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
    horizon: int = 1,
    feature_range: tuple[float, float] = (0.0, 1.0),
) -> WindowedData:
    """Chronological split, MinMax (scikit-learn, no clipping: a test span that leaves the
    training range shows as such) fitted on the training span only, then windows per split."""
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
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler(feature_range).fit(s[:b0, None])
    z = scaler.transform(s[:, None])[:, 0]
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
