"""Command-line plumbing shared by the commands (stock, forecast, sine, sentiment, gradients):
argument checks, run folders, atomic writes."""

from __future__ import annotations

import argparse
import inspect
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from .._atomic import write_atomic  # noqa: F401 (the commands import it from here)


def field_help(cls) -> dict[str, str]:
    """The ``# comment`` after each field of a config dataclass, for ``--help``."""
    src = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+): [^#\n]*#\s*(.+)$", src, flags=re.M))


def add_config_args(parser: argparse.ArgumentParser, cls, types: dict | None = None) -> None:
    """One ``--flag`` per field of the config dataclass ``cls``, its comment as help;
    ``types`` maps a field to its checking argparse type (e.g. :func:`number`)."""
    helps = field_help(cls)
    for f, v in asdict(cls()).items():
        flag = f"--{f.replace('_', '-')}"
        if isinstance(v, bool):
            parser.add_argument(flag, action="store_true", default=v, help=helps.get(f))
        else:
            kind = (types or {}).get(f, type(v))
            parser.add_argument(flag, type=kind, default=v, help=helps.get(f))


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--quick``, common to every experiment command."""
    parser.add_argument(
        "--threads",
        type=threads_arg,
        default=1,
        help="torch intra-op threads (0: torch's default); small models run best on one",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings (seconds), for tests and smoke runs; options given on the command "
        "line keep their values",
    )


_UNSET = object()


def given_options(parser: argparse.ArgumentParser, argv: list[str], args) -> frozenset[str]:
    """The destinations the command line itself set in ``args`` (``parser.parse_args(argv)``),
    not their defaults: argparse leaves attributes a namespace already has alone unless an
    option sets them, so a second parse into a namespace of placeholders tells them apart."""
    probe = argparse.Namespace(**{k: _UNSET for k in vars(args)})
    parser.parse_args(argv, namespace=probe)
    return frozenset(k for k, v in vars(probe).items() if v is not _UNSET)


def quick_settings(args: argparse.Namespace, **values) -> dict:
    """``--quick``'s tiny ``values``, less those the command line gave (``args._given``, set
    by ``fusedrnn.cli.main``): ``--quick --epochs 10`` trains 10 epochs."""
    if not args.quick:
        return {}
    given = getattr(args, "_given", frozenset())
    return {k: v for k, v in values.items() if k not in given}


def run_with_threads(args: argparse.Namespace, body: Callable[[argparse.Namespace], int]) -> int:
    """Runs ``body(args)`` with ``--threads`` set, then restores the process's thread count
    (tests run the commands in-process)."""
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return body(args)
    finally:
        torch.set_num_threads(threads)


def parse_choices(spec: str, known, flag: str) -> list[str]:
    """A comma list of names from ``known``; a clear error names the flag otherwise."""
    names = [c.strip() for c in spec.split(",") if c.strip()]
    for c in names:
        if c not in known:
            raise SystemExit(f"{flag}: unknown name {c!r} (choose from {', '.join(known)})")
    return names


# ---- argument checks (argparse types: a bad value is a one-line error naming the flag) -------


def number(kind=float, lo=None, hi=None, lo_open=False, hi_open=False, note=""):
    """An argparse type: a finite int/float in the given range (NaN and inf refused)."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
        if kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise argparse.ArgumentTypeError(
                f"must be {'>' if lo_open else '>='} {lo}{note}, got {text}"
            )
        if hi is not None and (v >= hi if hi_open else v > hi):
            raise argparse.ArgumentTypeError(
                f"must be {'<' if hi_open else '<='} {hi}{note}, got {text}"
            )
        return v

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def number_list(kind=float, lo=None, lo_open=False):
    """An argparse type: a comma-separated list of numbers, each checked as by :func:`number`."""
    one = number(kind, lo, lo_open=lo_open)

    def parse(text: str):
        values = [one(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list")
        return values

    return parse


def choice_list(known):
    """An argparse type: a non-empty comma list of names from ``known`` (repeats dropped)."""

    def parse(text: str) -> list[str]:
        names = [c.strip() for c in text.split(",") if c.strip()]
        if not names or any(c not in known for c in names):
            raise argparse.ArgumentTypeError(f"{text!r}: use a comma list of {', '.join(known)}")
        return list(dict.fromkeys(names))

    parse.__name__ = "list"
    return parse


# More threads than cores only adds contention, and OpenBLAS fails to create thousands of
# threads (--threads 100000 ended in a segfault): 4x the CPUs leaves room for experiments.
MAX_THREADS = 4 * (os.cpu_count() or 1)
threads_arg = number(
    int, 0, MAX_THREADS, note=" (0 = torch's default; at most 4 x this machine's CPUs)"
)
# Seeds go to torch.manual_seed (< 2**64) and numpy (numpy.random.seed: < 2**32), some with
# offsets added (gradients: seed + 20000): the numpy range is safe for all of them.
seed_arg = number(int, 0, 2**32 - 1)


def usage_error(prog: str, msg: str):
    """A bad combination of arguments, found right after parsing: argparse's format and exit
    code (2), without a traceback."""
    print(f"{prog}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def device(text: str) -> str:
    """An argparse type: a torch device that exists on this machine ("cpu", "cuda", "cuda:1")."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device (use cpu or cuda[:N])"
        ) from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: torch sees no CUDA device here")
        if dev.index is not None and dev.index >= n:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has cuda:0..cuda:{n - 1}")
        return str(dev)
    raise argparse.ArgumentTypeError(
        f"{text!r}: the fused kernels run on cpu or cuda, not {dev.type}"
    )


def check_writable(out, prog: str) -> Path:
    """Make `out` (and parents) and write a probe file there, before any long work."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SystemExit(f"{prog}: --out {out}: cannot write there ({e.strerror or e})") from None
    return out


# ---- run folders and atomic files ----------------------------------------------------------


class RunDir:
    """A fresh folder per run under `out` (``YYYYmmdd-HHMMSS-<tag>[-N]``, made with an atomic
    mkdir, so concurrent runs never share one), its files written atomically, and
    ``out/latest`` pointing at the last run that finished."""

    def __init__(self, out, tag: str):
        out = Path(out)
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', tag)}"
        for i in range(1, 1000):
            path = out / (stem if i == 1 else f"{stem}-{i}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        self.out, self.path = out, path

    def write(self, name: str, data) -> Path:
        return write_atomic(self.path / name, data)

    def finish(self) -> None:
        """Point ``out/latest`` at this run (a symlink replaced atomically)."""
        link = self.out / "latest"
        tmp = self.out / f".latest-{os.getpid()}"
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.path.name, tmp)
            os.replace(tmp, link)
        except OSError:  # no symlinks here (some file systems): the run folder is still named
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def discard(self, keep: str | None = None) -> bool:
        """Remove the run folder after a failure, except the subfolder `keep` if it holds
        files (saved checkpoints). True if something was kept."""
        kept = keep is not None and any((self.path / keep).glob("*.pt"))
        for p in sorted(self.path.rglob("*"), reverse=True):
            if kept and (p == self.path / keep or self.path / keep in p.parents):
                continue
            p.rmdir() if p.is_dir() else p.unlink()
        if not kept:
            self.path.rmdir()
        return kept
