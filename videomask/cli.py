"""The ``videomask`` command line: one subcommand per module in :mod:`videomask.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``videomask --help`` stays fast.
A :class:`~videomask.errors.VideomaskError` (a user mistake) is printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from videomask.errors import VideomaskError

# command name -> (module under videomask.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the shipped end-to-end demo on assets/ with configs/demo.yaml"),
    "info": ("info", "decode videos and print metadata, sampling and patch-grid report"),
    "fit": ("fit", "fit difference statistics (source prototypes, visual words) from source and target videos"),
    "score-cache": ("score_cache", "score every video once with a difference masker (a cache for continued pretraining)"),
    "detect": ("detect", "detect anchor objects in videos and build a resumable boxes cache (JSON lines)"),
    "show-masks": ("show_masks", "draw a masker's masks on a clip (GIF and PNG grid)"),
    "show-recon": ("show_recon", "draw what a model reconstructs of a masked clip (GIF and PNG grid)"),
    "pretrain": ("pretrain", "continue pretraining a VideoMAE model with a chosen masker"),
    "probe": ("probe", "linear probe and kNN accuracy on frozen encoder features"),
    "bench": ("bench", "compare tube, random and difference masking head to head"),
}


def _load(name: str):
    module_name, _ = COMMANDS[name]
    return importlib.import_module(f"videomask.commands.{module_name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videomask", description="Masked video pretraining that chooses what to mask.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
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
        parser = argparse.ArgumentParser(prog=f"videomask {name}", description=COMMANDS[name][1])
        module.add_arguments(parser)
        args = parser.parse_args(rest)
        return int(module.run(args) or 0)
    except VideomaskError as err:
        print(f"videomask {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"videomask {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
