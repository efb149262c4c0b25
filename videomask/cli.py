"""The ``videomask`` command line: one subcommand per module in :mod:`videomask.commands`.

Each command module defines ``HELP`` (one line, the command's help and description),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import their heavy dependencies
inside ``run``, so ``videomask --help`` (which reads every ``HELP``) stays fast.
A :class:`~videomask.errors.VideomaskError` (a user mistake) is printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from videomask.errors import VideomaskError

# command name -> module under videomask.commands (the order of `videomask --help`)
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "info": "info",
    "fit": "fit",
    "score-cache": "score_cache",
    "detect": "detect",
    "show-masks": "show_masks",
    "show-recon": "show_recon",
    "pretrain": "pretrain",
    "probe": "probe",
    "bench": "bench",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"videomask.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videomask", description="Masked video pretraining that chooses what to mask."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=_load(name).HELP, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"videomask: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    try:
        module = _load(name)
        parser = argparse.ArgumentParser(prog=f"videomask {name}", description=module.HELP)
        module.add_arguments(parser)
        args = parser.parse_args(rest)
        # the process set-up (allocator, fork hook, FFmpeg logs) lives with the data loading, which loads torch
        from videomask.data.process import prepare_process

        prepare_process()
        return int(module.run(args) or 0)
    except VideomaskError as err:
        print(f"videomask {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"videomask {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
