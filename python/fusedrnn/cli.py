"""The ``fusedrnn`` command line: ``fusedrnn <command> --help``.

Each command lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
modules are imported only when their command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from . import _extras

COMMANDS = {
    "stock": ("fusedrnn.experiments.stock", "the main job: RNN vs LSTM vs GRU on daily prices"),
    "forecast": ("fusedrnn.forecast_cli", "the next close(s) from a saved model, with dates"),
    "sine": ("fusedrnn.experiments.sine", "sine-wave forecasting with RNN, LSTM and GRU"),
    "gradients": (
        "fusedrnn.experiments.gradients",
        "vanishing/exploding gradients measured by real BPTT",
    ),
    "sentiment": ("fusedrnn.experiments.sentiment", "sentiment of short texts (packed sequences)"),
    "bench": ("fusedrnn.bench", "profile the fused kernels against torch.nn and friends"),
    "check": ("fusedrnn.check", "check every fused op against torch.nn on this machine"),
}
# The extras each command needs beyond the core (torch, numpy), checked before it starts;
# a command not listed needs "apps". (bench runs without numba: it skips that baseline.)
COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {"check": (), "bench": ()}

# reST / Markdown markup in docstrings and help texts, shown as plain text in --help.
_MARKUP = (
    (re.compile(r":[a-z:]+:`~([\w.]*\.)?([^`]+)`"), r"\2"),  # :class:`~a.B` -> B
    (re.compile(r":[a-z:]+:`([^`]+)`"), r"\1"),  # :func:`torch.compile` -> torch.compile
    (re.compile(r"``([^`]+)``"), r"\1"),
    (re.compile(r"`([^`]+)`_?"), r"\1"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"\1"),
)


def plain(text: str) -> str:
    """``text`` without reST markup: ``x`` and :class:`x` become x."""
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text


def _plain_formatter(base: type[argparse.HelpFormatter]) -> type[argparse.HelpFormatter]:
    """``base`` (whatever formatter a command chose) printing descriptions and help plain."""

    class PlainFormatter(base):
        def _format_text(self, text):
            return super()._format_text(plain(text))

        def _expand_help(self, action):
            return plain(super()._expand_help(action))

    return PlainFormatter


def _version() -> str:
    import torch

    from . import __version__, _build_config

    kernels = f"CUDA {_build_config.TORCH_CUDA}" if _build_config.CUDA else "CPU only"
    return (
        f"fusedrnn {__version__} (built against torch {_build_config.TORCH_VERSION}, {kernels}; "
        f"running torch {torch.__version__})"
    )


class _VersionAction(argparse.Action):
    """--version: one unwrapped line, computed only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        kwargs.setdefault("help", "print the version and the torch it was built against")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def _missing_extra(name: str, module: str, extra: str) -> int:
    print(f"fusedrnn {name}: {_extras.install_hint(module, extra)}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusedrnn",
        description=__doc__.splitlines()[0],
        formatter_class=_plain_formatter(argparse.HelpFormatter),
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        p.set_defaults(_configure_pending=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help, the version or an "invalid choice" error
        parser.print_help()
        return 2
    name = argv[0]
    missing = _extras.first_missing(COMMAND_EXTRAS.get(name, ("apps",)))
    if missing is not None:  # before any work, in one line
        return _missing_extra(name, *missing)
    try:
        module = importlib.import_module(COMMANDS[name][0])
        cmd = argparse.ArgumentParser(prog=f"fusedrnn {name}", description=COMMANDS[name][1])
        module.configure(cmd)
        cmd.formatter_class = _plain_formatter(cmd.formatter_class)
        args = cmd.parse_args(argv[1:])
        from .experiments._common import given_options

        args._given = given_options(cmd, argv[1:], args)  # what --quick must not override
        return int(module.run(args) or 0)
    except ModuleNotFoundError as e:  # a package of an extra that the table above missed
        extra = _extras.extra_of(e.name)
        if extra is None:
            raise
        return _missing_extra(name, e.name.partition(".")[0], extra)
    except KeyboardInterrupt:  # (stock and sentiment say what they kept themselves)
        print(f"\nfusedrnn {name}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk, a permission, a vanished file: one line, not a traceback
        print(f"fusedrnn {name}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
