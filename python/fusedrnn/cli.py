"""The ``fusedrnn`` command line: ``fusedrnn <command> --help``.

Each command lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
modules are imported only when their command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusedrnn", description=__doc__.splitlines()[0])
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
        args = parser.parse_args(argv)  # prints help or an "invalid choice" error
        parser.print_help()
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    cmd = argparse.ArgumentParser(prog=f"fusedrnn {name}", description=COMMANDS[name][1])
    module.configure(cmd)
    args = cmd.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
