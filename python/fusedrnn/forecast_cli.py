"""``fusedrnn forecast``: the next close(s) from a saved model, with the dates they are for.

The model is a file written by ``Forecaster.save`` or by ``fusedrnn stock --save-models``
(``OUT/latest/models/lstm_fused.pt``). The prices are those it was trained on (same symbol and
source), or ``--symbol S`` (from ``--source``), or ``--csv FILE``; the forecast starts after
their last day.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fusedrnn.experiments._common import number

PROG = "fusedrnn forecast"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Example: fusedrnn stock --cell lstm --impl fused --save-models && "
        "fusedrnn forecast --model out/stock/latest/models/lstm_fused.pt"
    )
    parser.add_argument("--model", required=True, help="a saved forecaster or stock checkpoint")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--symbol", help="forecast this ticker (default: the model's)")
    which.add_argument("--csv", help="forecast from this CSV file (date and close columns)")
    parser.add_argument(
        "--source",
        default=None,
        choices=("auto", "yfinance", "cache", "bundled"),
        help="where --symbol's prices come from (default: where the model's came from)",
    )
    parser.add_argument("--timeout", type=number(float, 0, lo_open=True), default=10.0,
                        help="yfinance timeout, s")  # fmt: skip


def _prices(args, f):
    from fusedrnn.data import SOURCES, load_prices

    prov = f.provenance
    if args.csv:
        return load_prices(None, "max", args.csv)
    source = args.source or (prov.get("source") if prov.get("source") in SOURCES else "auto")
    if args.symbol:
        return load_prices(args.symbol, "max", source, timeout=args.timeout)
    if prov.get("source") == "file" and Path(prov.get("detail", "")).is_file():
        return load_prices(None, "max", prov["detail"])
    if prov.get("symbol", "?") == "?":
        raise ValueError(
            "the model does not say which prices it was trained on: give --symbol or --csv"
        )
    return load_prices(prov["symbol"], "max", source, timeout=args.timeout)


def run(args) -> int:
    from fusedrnn.forecast import Forecaster

    if args.csv and not Path(args.csv).is_file():
        raise SystemExit(f"{PROG}: --csv {args.csv}: no such file")
    try:
        f = Forecaster.load(args.model)
        series = _prices(args, f)
        fc = f.predict(series)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    last = fc.attrs["last"]
    print(f"model: {f.describe()}")
    print(f"data:  {series.describe()}; last close {fc.attrs['as_of']}: ${last:.2f}")
    trained_on = f.provenance.get("symbol")
    if trained_on not in (None, "?", series.symbol):
        print(
            f"       note: the model was trained on {trained_on}, and scales prices as {trained_on}'s"
        )
    for note in series.filled:
        print(f"       {note}")
    print("forecast (business days after the last close; exchange holidays are not known):")
    for date, row in fc.iterrows():
        change = 100 * (row["close"] / last - 1)
        print(f"  {date.date()} {date.strftime('%a')}  ${row['close']:.2f}  ({change:+.2f}%)")
    return 0
