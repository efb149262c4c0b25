"""The ``videomask`` command line: one subcommand per module in :mod:`videomask.commands`.

Each command module defines ``HELP`` (one line, the command's help and description),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import their heavy dependencies
inside ``run``, so ``videomask --help`` (which reads every ``HELP``) stays fast.
A :class:`~videomask.errors.VideomaskError` (a user mistake) is printed as one line, exit status 2.
videomask's warnings (a skipped video) go to stderr on their own line, never onto a progress bar's.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from videomask.errors import VideomaskError, one_line

# command name -> module under videomask.commands (the order of `videomask --help`)
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "info": "info",
    "fit": "fit",
    "shard": "shard",
    "score-cache": "score_cache",
    "teacher-cache": "teacher_cache",
    "detect": "detect",
    "show-masks": "show_masks",
    "show-recon": "show_recon",
    "pretrain": "pretrain",
    "convert": "convert",
    "probe": "probe",
    "bench": "bench",
}


class BarSafeHandler(logging.Handler):
    """Log lines on stderr that never land on a progress bar's line.

    In the process that installed it, through ``tqdm.write`` (it clears the bars, writes the line and redraws
    them). In a forked DataLoader worker, which cannot reach the main process's bars (its copies are stale),
    the terminal line is cleared first; the bar is redrawn at its next update.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if os.getpid() == self.pid:
                # tqdm loads only when a warning is printed, so `videomask --help` stays fast
                from tqdm import tqdm

                tqdm.write(message, file=sys.stderr)
            else:
                stream = sys.stderr
                stream.write(("\r\x1b[K" if stream.isatty() else "") + message + "\n")
                stream.flush()
        except Exception:  # a broken stream must not stop the run (logging's own rule)
            self.handleError(record)


def install_log_handler() -> None:
    """Send the ``videomask`` loggers' warnings through :class:`BarSafeHandler` (once per process)."""
    logger = logging.getLogger("videomask")
    if not any(isinstance(h, BarSafeHandler) for h in logger.handlers):
        logger.addHandler(BarSafeHandler())
    logger.propagate = False  # printed once, even when a library configured the root logger


def version() -> str:
    """The installed package's version (the source's own ``__version__`` when it is not installed)."""
    try:
        return importlib.metadata.version("videomask")
    except importlib.metadata.PackageNotFoundError:
        import videomask  # a clone used through PYTHONPATH: no installed metadata

        return videomask.__version__


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"videomask.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videomask", description="Masked video pretraining that chooses what to mask."
    )
    parser.add_argument("--version", action="version", version=f"videomask {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=_load(name).HELP, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--version":
        print(f"videomask {version()}")
        return 0
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
        install_log_handler()
        return int(module.run(args) or 0)
    except VideomaskError as err:  # one line, also for an error a DataLoader worker raised
        print(f"videomask {name}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"videomask {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
