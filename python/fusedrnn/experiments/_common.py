"""Command-line plumbing shared by the experiment commands (sine, sentiment, gradients)."""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable
from dataclasses import asdict

import torch


def field_help(cls) -> dict[str, str]:
    """The ``# comment`` after each field of a config dataclass, for ``--help``."""
    src = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+): [^#\n]*#\s*(.+)$", src, flags=re.M))


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--flag`` per field of the config dataclass ``cls``, its comment as help."""
    helps = field_help(cls)
    for f, v in asdict(cls()).items():
        flag = f"--{f.replace('_', '-')}"
        if isinstance(v, bool):
            parser.add_argument(flag, action="store_true", default=v, help=helps.get(f))
        else:
            parser.add_argument(flag, type=type(v), default=v, help=helps.get(f))


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--quick``, common to every experiment command."""
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch's default); small models run best on one",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings (seconds), for tests and smoke runs"
    )


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
