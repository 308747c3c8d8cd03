"""Make python/fusedrnn/datasets/prices.csv.gz, the daily prices that ship with fusedrnn.

Source: the PyPI package ``bokeh_sampledata`` (module ``bokeh_sampledata.stocks``), which holds
an archived copy of the Quandl WIKI prices for AAPL, MSFT, IBM and GOOG, 2000-03-01 to
2013-03-01 (GOOG from its 2004-08-19 listing). Quandl declared the WIKI data public domain and
permitted its redistribution. bokeh_sampledata is needed only to run this script, not at run time:

    .venv/bin/pip install bokeh_sampledata
    .venv/bin/python scripts/make_bundled_prices.py

Columns written: symbol, date (ISO), close (as traded), adj_close (split- and dividend-adjusted
as supplied by the source; what fusedrnn models by default, like yfinance's adjusted Close).
Output is deterministic (gzip mtime 0), so re-running it reproduces the file byte for byte.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from pathlib import Path

SYMBOLS = ("AAPL", "MSFT", "IBM", "GOOG")
OUT = Path(__file__).resolve().parents[1] / "python" / "fusedrnn" / "datasets" / "prices.csv.gz"


def main() -> None:
    from bokeh_sampledata import stocks  # build-time only

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["symbol", "date", "close", "adj_close"])
    rows = 0
    for symbol in SYMBOLS:
        table = getattr(stocks, symbol)
        dates, close, adj = table["date"], table["close"], table["adj_close"]
        assert len(dates) == len(close) == len(adj), symbol
        assert list(dates) == sorted(dates), f"{symbol}: dates not ascending"
        for d, c, a in zip(dates, close, adj):
            c, a = float(c), float(a)
            assert math.isfinite(c) and math.isfinite(a) and c > 0 and a > 0, (symbol, d)
            writer.writerow([symbol, d, f"{c:.4f}", f"{a:.6g}"])
            rows += 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue().encode())
    print(f"wrote {OUT} ({rows} rows, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
