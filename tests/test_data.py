"""fusedrnn.data: bundled prices, loading and its fallbacks, windows, scaling, synthetic series."""

import gzip
import importlib.resources
import io

import numpy as np
import pytest

from fusedrnn import data as D


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FUSEDRNN_CACHE_DIR", str(d))
    monkeypatch.delenv("FUSEDRNN_OFFLINE", raising=False)
    return d


# ---- bundled data ------------------------------------------------------------------------------


def test_bundled_file_ships_inside_the_package():
    ref = importlib.resources.files("fusedrnn") / "datasets" / "prices.csv.gz"
    assert ref.is_file()
    with gzip.open(io.BytesIO(ref.read_bytes()), "rt") as f:
        assert f.readline().strip() == "symbol,date,close,adj_close"
    assert (importlib.resources.files("fusedrnn") / "datasets" / "README.md").is_file()


@pytest.mark.parametrize("symbol", D.BUNDLED_SYMBOLS)
def test_bundled_prices(symbol):
    s = D.load_prices(symbol, "max", "bundled")
    assert s.source == "bundled" and s.symbol == symbol
    assert len(s) >= 2000
    assert np.all(np.diff(s.dates) > np.timedelta64(0, "D"))
    assert np.isfinite(s.close).all() and (s.close > 0).all()
    assert str(s.dates[-1]) == "2013-03-01"


def test_bundled_period_counts_back_from_last_day():
    s = D.load_prices("AAPL", "1y", "bundled")
    assert str(s.dates[0]) >= "2012-03-01" and 240 <= len(s) <= 260
    # adjusted closes: no jump at AAPL's 2:1 split of 2005-02-28 (the raw close halves)
    full = D.load_prices("AAPL", "max", "bundled")
    i = int(np.searchsorted(full.dates, np.datetime64("2005-02-28")))
    assert abs(np.log(full.close[i] / full.close[i - 1])) < 0.1


# ---- sources and fallbacks -------------------------------------------------------------------


def test_auto_falls_back_offline_and_says_so(cache):
    """Real: yfinance is tried (no network here), then the (empty) cache, then the bundle."""
    msgs = []
    s = D.load_prices("AAPL", "5y", "auto", timeout=3, log=msgs.append)
    if s.source == "yfinance":  # pragma: no cover - a machine with a network
        pytest.skip("the network is reachable: the offline path is not exercised")
    assert s.source == "bundled"
    assert [n.split(":")[0] for n in s.notes] == ["yfinance", "cache"]
    text = "\n".join(msgs)
    assert "yfinance failed" in text and "cache failed" in text and "source: bundled" in text
    assert not any(cache.glob("*.part")) if cache.exists() else True


def test_yfinance_alone_raises_offline(cache):
    with pytest.raises((RuntimeError, OSError)):
        s = D.load_prices("AAPL", "5y", "yfinance", timeout=3)
        if s.source == "yfinance":  # pragma: no cover - a machine with a network
            pytest.skip("the network is reachable")


def test_offline_env_fails_fast_and_cache_is_used(cache, monkeypatch):
    monkeypatch.setenv("FUSEDRNN_OFFLINE", "1")
    cache.mkdir(parents=True)
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-03-01"))
    rows = "\n".join(f"{d},{100 + i * 0.5:.2f}" for i, d in enumerate(dates))
    (cache / "XYZ_5y.csv").write_text("date,close\n" + rows + "\n")
    msgs = []
    s = D.load_prices("XYZ", "5y", "auto", log=msgs.append)
    assert s.source == "cache" and len(s) == len(dates)
    assert "FUSEDRNN_OFFLINE" in s.notes[0]
    assert s.close[0] == pytest.approx(100.0)
    # a cached longer period serves a shorter one
    assert len(D.load_prices("XYZ", "1mo", "cache")) <= 31


def test_a_cached_shorter_period_says_it_covers_less(cache, monkeypatch):
    """Asked for 5y with only shorter downloads cached: the one reaching furthest back is
    used (not the largest file), and its detail says how much it covers."""
    cache.mkdir(parents=True)

    def write(name, start, end, wide=False):
        dates = np.arange(np.datetime64(start), np.datetime64(end))
        extra = ",1,2,3,4,5" if wide else ""
        rows = "\n".join(f"{d},{100 + i * 0.5:.2f}{extra}" for i, d in enumerate(dates))
        head = "date,close" + (",a,b,c,d,e" if wide else "")
        (cache / name).write_text(head + "\n" + rows + "\n")

    write("XYZ_3mo.csv", "2024-01-01", "2024-03-31", wide=True)  # the bigger file
    write("XYZ_6mo.csv", "2023-10-01", "2024-03-31")
    s = D.load_prices("XYZ", "5y", "cache")
    assert str(s.dates[0]).startswith("2023-10-01")
    assert "covers only 182 days of the 5y asked" in s.detail
    write("XYZ_10y.csv", "2014-01-01", "2024-03-31")
    assert "covers only" not in D.load_prices("XYZ", "5y", "cache").detail


def test_unknown_symbol_is_a_clear_error(cache, monkeypatch):
    monkeypatch.setenv("FUSEDRNN_OFFLINE", "1")
    with pytest.raises(ValueError, match="not in the bundled data"):
        D.load_prices("NOPE", "5y", "bundled")
    with pytest.raises(RuntimeError, match="could not load NOPE"):
        D.load_prices("NOPE", "5y", "auto")
    with pytest.raises(ValueError, match="not a ticker symbol"):
        D.load_prices("bad symbol!", "5y", "bundled")
    with pytest.raises(ValueError, match="not a period"):
        D.load_prices("AAPL", "5 years", "bundled")
    with pytest.raises(ValueError, match="is none of"):
        D.load_prices("AAPL", "5y", "internet")


def test_csv_path_source(tmp_path):
    p = tmp_path / "prices.csv"
    p.write_text("Date,Open,Close\n2024-01-03,1,11.5\n2024-01-02,1,10.0\n2024-01-04,1,12.0\n")
    s = D.load_prices("AAPL", "max", str(p))
    assert s.source == "file"
    assert s.close.tolist() == [10.0, 11.5, 12.0]  # sorted by date
    assert str(s.dates[0]) == "2024-01-02"


@pytest.mark.parametrize(
    "text, match",
    [
        ("date,close\n2024-01-02,\n2024-01-03,nan\n", "every close is missing"),
        ("date,close\n2024-01-02,10\n2024-01-03,abc\n", "not a number"),
        ("day,value\n2024-01-02,10\n", "needs a 'date' and a 'close'"),
        ("date,close\n2024-01-02,10\n2024-01-02,11\n", "duplicate dates"),
        ("date,close\n2024-01-02,10\n2024-13-45,11\n", "not an ISO date"),
        ("date,close\n2024-01-02,-3\n", "non-positive"),
        ("date,close\n2024-01-02,10,5\n", "fields"),
        ("", "empty"),
    ],
)
def test_bad_csv_rejected(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        D.load_prices("AAPL", "max", str(p))


def test_binary_garbage_and_missing_file(tmp_path):
    p = tmp_path / "x.csv.gz"
    p.write_bytes(b"\x00\x01 definitely not gzip")
    with pytest.raises(ValueError, match="not a readable CSV"):
        D.read_price_csv(p)
    with pytest.raises(FileNotFoundError):
        D.load_prices("AAPL", "max", str(tmp_path / "missing.csv"))


def test_too_few_rows():
    with pytest.raises(ValueError, match="too short for window 30"):
        D.prepare_windows(np.linspace(1, 2, 40), window=30)
    with pytest.raises(ValueError, match="need at least 500"):
        D.load_prices("AAPL", "1y", "bundled", min_rows=500)


# ---- windows and scaling -----------------------------------------------------------------------


def test_windows_and_targets_align():
    s = np.arange(100, dtype=np.float64)
    x, y, t = D.make_windows(s, window=7)
    assert x.shape == (93, 7, 1) and y.shape == (93, 1)
    for i in (0, 5, 92):
        assert x[i, :, 0].tolist() == list(range(t[i] - 7, t[i]))
        assert y[i, 0] == t[i] == s[t[i]]
    x, y, t = D.make_windows(s, window=5, horizon=3, start=50, stop=60)
    assert t.tolist() == list(range(50, 60))
    assert (x[:, -1, 0] == t - 3).all() and (y[:, 0] == t).all()
    # multivariate input, target from feature 0
    m = np.stack([s, -s], axis=1)
    x, y, _ = D.make_windows(m, window=4)
    assert x.shape == (96, 4, 2) and (x[:, :, 1] == -x[:, :, 0]).all()
    assert D.make_windows(s, window=200)[0].shape == (0, 200, 1)


def test_split_is_chronological_and_scaler_sees_train_only():
    s = np.concatenate([np.linspace(10, 20, 700), np.linspace(50, 90, 300)])
    w = D.prepare_windows(s, window=10)
    b0, b1 = w.bounds
    assert (b0, b1) == (700, 850)
    assert w.t_train.max() < b0 <= w.t_val.min() and w.t_val.max() < b1 <= w.t_test.min()
    assert w.t_test.max() == len(s) - 1
    assert w.scaler.data_min_ == pytest.approx(10) and w.scaler.data_max_ == pytest.approx(20)
    assert w.x_train.max() <= 1 + 1e-6 and w.x_test.min() > 1  # test leaves the train range
    # changing the future does not change anything fitted or seen in training
    s2 = s.copy()
    s2[b0:] *= 3
    w2 = D.prepare_windows(s2, window=10)
    assert np.array_equal(w.x_train, w2.x_train) and np.array_equal(w.y_train, w2.y_train)
    assert w2.scaler.data_max_ == w.scaler.data_max_


def test_inverse_transform_round_trips():
    rng = np.random.default_rng(1)
    s = rng.uniform(5, 500, 300)
    w = D.prepare_windows(s, window=5)
    assert np.allclose(w.inverse(w.scaled), s)
    assert np.allclose(w.inverse(w.y_test[:, 0]), s[w.t_test], rtol=1e-5)
    from sklearn.preprocessing import MinMaxScaler

    assert isinstance(w.scaler, MinMaxScaler)  # scikit-learn's, not a hand-written one
    assert not hasattr(D, "MinMaxScaler")
    w2 = D.prepare_windows(s, window=5, feature_range=(-1, 1))
    assert w2.scaled[: w2.bounds[0]].min() == pytest.approx(-1)
    const = D.prepare_windows(np.full(60, 3.0), window=5)  # a constant span: no division by 0
    assert np.allclose(const.inverse(const.scaled), 3.0)


def test_prepare_rejects_bad_series():
    with pytest.raises(ValueError, match="NaN"):
        D.prepare_windows(np.array([1.0, np.nan] * 100), window=3)
    with pytest.raises(ValueError, match="splits"):
        D.prepare_windows(np.ones(100), window=3, splits=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="1-D"):
        D.prepare_windows(np.ones((100, 2)), window=3)


def test_synthetic_series():
    a, b = D.noisy_sine(500, period=50, noise=0.0), D.noisy_sine(500, seed=3)
    assert a.shape == (500,) and np.allclose(a[:50], a[50:100])
    assert np.array_equal(b, D.noisy_sine(500, seed=3))
    t = D.trend_seasonal(1000, trend=0.01, noise=0.0, amplitude=0.0, level=2.0)
    assert t[0] == pytest.approx(2.0) and t[-1] == pytest.approx(2.0 + 9.99)
    w = D.prepare_windows(D.trend_seasonal(400), window=20)
    assert w.x_train.shape[1:] == (20, 1) and w.x_train.dtype == np.float32


def test_a_silent_host_cannot_hang_the_download(cache, monkeypatch):
    """The download runs in a child process that is killed at the hard limit."""
    monkeypatch.setattr(D, "_FETCH", "import time; time.sleep(60)")
    monkeypatch.setattr(D, "_HARD_LIMIT_EXTRA", 0.5)
    monkeypatch.setattr(D, "_yfinance_available", lambda: True)
    with pytest.raises(RuntimeError, match="no answer within"):
        D.load_prices("AAPL", "5y", "yfinance", timeout=0.5)
    s = D.load_prices("AAPL", "5y", "auto", timeout=0.5)
    assert s.source == "bundled" and "no answer" in s.notes[0]


def test_an_empty_download_is_a_failure(cache, monkeypatch):
    monkeypatch.setattr(D, "_FETCH", "import sys; sys.exit('yfinance returned no rows for X')")
    monkeypatch.setattr(D, "_yfinance_available", lambda: True)
    s = D.load_prices("MSFT", "1y", "auto")
    assert s.source == "bundled" and "no rows" in s.notes[0]
    assert not list(cache.glob("*.csv"))  # nothing half-made was cached


def test_missing_yfinance_fails_fast(cache, monkeypatch):
    monkeypatch.setattr(D, "_yfinance_available", lambda: False)
    with pytest.raises(RuntimeError, match="yfinance is not installed"):
        D.load_prices("AAPL", "5y", "yfinance")


def test_a_good_download_is_cached(cache, monkeypatch):
    fake = (
        "import sys\n"
        "open(sys.argv[4], 'w').write('date,close\\n2024-01-02,10\\n2024-01-03,11\\n')\n"
    )
    monkeypatch.setattr(D, "_FETCH", fake)
    monkeypatch.setattr(D, "_yfinance_available", lambda: True)
    s = D.load_prices("ABC", "5y", "yfinance")
    assert s.source == "yfinance" and s.close.tolist() == [10.0, 11.0]
    assert (cache / "ABC_5y.csv").is_file()
    monkeypatch.setenv("FUSEDRNN_OFFLINE", "1")
    again = D.load_prices("ABC", "5y", "auto")
    assert again.source == "cache" and again.close.tolist() == [10.0, 11.0]


def test_periods_yfinance_lacks_become_a_start_date(cache, monkeypatch):
    fake = (
        "import sys\n"
        "if not sys.argv[2].startswith('start=20'): sys.exit('bad span ' + sys.argv[2])\n"
        "open(sys.argv[4], 'w').write('date,close\\n2024-01-02,10\\n2024-01-03,11\\n')\n"
    )
    monkeypatch.setattr(D, "_FETCH", fake)
    monkeypatch.setattr(D, "_yfinance_available", lambda: True)
    assert D.load_prices("ABC", "18mo", "yfinance").source == "yfinance"
    s = D.load_prices("AAPL", "ytd", "bundled")
    assert str(s.dates[0]) == "2013-01-02" and 35 <= len(s) <= 45


# ---- pandas reading: blanks, features, titles ---------------------------------------------


def test_blank_closes_are_filled_forward_and_reported(tmp_path):
    p = tmp_path / "gaps.csv"
    p.write_text(
        "date,close\n2024-01-01,\n2024-01-02,10\n2024-01-03,\n2024-01-04,nan\n2024-01-05,12\n"
    )
    msgs = []
    s = D.load_prices(None, "max", str(p), log=msgs.append)
    assert s.close.tolist() == [10.0, 10.0, 10.0, 12.0]  # leading blank dropped, gaps filled
    assert str(s.dates[0]) == "2024-01-02"
    assert any("dropped 1 leading row" in f for f in s.filled)
    assert any(
        "filled 2 missing close value(s) forward" in f and "2024-01-03" in f for f in s.filled
    )
    assert any("filled 2 missing close" in m for m in msgs)  # told to the user


def test_csv_keeps_ohlcv_features_and_is_titled_by_its_file_name(tmp_path):
    p = tmp_path / "msft_daily.csv"
    p.write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume,Note\n"
        "2024-01-02,1,2,0.5,1.5,1.4,1000,x\n2024-01-03,1.5,2.5,1,2,1.9,,y\n"
    )
    s = D.load_prices(None, "max", str(p))
    assert s.symbol == "MSFT_DAILY" and s.source == "file"
    assert s.columns == ["close", "open", "high", "low", "volume"]  # text column 'Note' left out
    assert s.close.tolist() == [1.4, 1.9]  # the adjusted close
    assert s.frame["volume"].tolist() == [1000.0, 1000.0] and "volume" in s.filled[0]
    assert D.load_prices("ibm", "max", str(p)).symbol == "IBM"  # a symbol asked for wins


def test_bundled_frame_has_closes_only():
    s = D.load_prices("AAPL", "1y", "bundled")
    assert s.columns == ["close"] and s.filled == []
    assert len(s.frame) == len(s.dates) == len(s.close)


def test_data_is_an_attribute_of_the_package():
    """`import fusedrnn; fusedrnn.data.load_prices` (a fresh interpreter: nothing preloaded)."""
    import subprocess
    import sys

    code = "import fusedrnn; print(fusedrnn.data.load_prices.__name__, fusedrnn.forecast.Forecaster.__name__)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["load_prices", "Forecaster"]
