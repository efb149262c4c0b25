"""``videomask bench``: tube vs random vs difference masking, head to head (see :mod:`videomask.bench`).

Needs the ``bench`` extra (``pip install 'videomask[bench]'``); without it the command stops at once with one line.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path
from typing import Any

from videomask.commands import config_path
from videomask.errors import VideomaskError

HELP = "compare tube, random and difference masking head to head"

BENCH_EXTRA = ("scipy", "matplotlib")  # the packages of the bench extra (pyproject.toml)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="bench YAML (default: configs/bench_full.yaml, or configs/bench_quick.yaml with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test settings: one seed, minimal steps")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1) for every variant")
    parser.add_argument("--steps", type=int, default=None, help="continued-pretraining steps per run")
    parser.add_argument("--base-steps", type=int, default=None, help="steps of the base model's source pretraining")
    parser.add_argument(
        "--base-checkpoint", default=None, help="start from this checkpoint instead of pretraining a base model"
    )
    parser.add_argument("--variants", default=None, help="comma-separated subset of the config's variants")
    parser.add_argument("--source", default=None, help="source videos folder (overrides the config)")
    parser.add_argument("--target", default=None, help="target videos folder (overrides the config)")
    parser.add_argument("--out", default=None, help="folder for <name>.md/.json/.png (overrides the config)")
    parser.add_argument("--name", default=None, help="result file name stem (overrides the config)")
    parser.add_argument(
        "--work-dir", default=None, help="folder for runs, caches and statistics (overrides the config)"
    )


def _config_path(args: argparse.Namespace) -> Path:
    """``--config``, else ``configs/bench_quick.yaml`` (``--quick``) or ``configs/bench_full.yaml``: a file here,
    else the copy shipped with videomask (see :func:`videomask.commands.config_path`)."""
    return config_path(args.config, "bench_quick.yaml" if args.quick else "bench_full.yaml")


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from the parsed arguments (the flags that were given)."""
    parts = ["videomask", "bench"]
    for key, value in vars(args).items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, shlex.quote(str(value))]
    return " ".join(parts)


def _apply_flags(cfg: Any, args: argparse.Namespace, paths: tuple[str, ...]) -> None:
    """The command-line flags over a bench config (either protocol): seeds, lengths, folders, variants."""
    if args.seeds is not None:
        if args.seeds < 1:
            raise VideomaskError("--seeds must be >= 1")
        cfg.seeds = list(range(args.seeds))
    for key in ("steps", "base_steps", "base_checkpoint", "name"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    for key in paths:
        if getattr(args, key) is not None:
            setattr(cfg, key, str(Path(getattr(args, key)).resolve()))
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in cfg.variants]
        if unknown:
            raise VideomaskError(f"unknown variant(s) {', '.join(unknown)} (config has: {', '.join(cfg.variants)})")
        cfg.variants = {v: cfg.variants[v] for v in wanted}


def require_bench_extra() -> None:
    """Stop with one line, before any work, when a package of the ``bench`` extra is not installed."""
    missing = [name for name in BENCH_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise VideomaskError(
            f"this command needs the bench extra ({', '.join(missing)} not installed): pip install 'videomask[bench]'"
        )


def run(args: argparse.Namespace) -> int:
    require_bench_extra()
    # the harness (and torch) load only when the command runs, so `videomask --help` stays fast
    from videomask.bench import is_motion_config, load_bench_config, run_bench, validate_bench_config, write_report

    path = _config_path(args)
    if is_motion_config(path):
        return _run_motion(args, path)
    cfg = load_bench_config(path)
    _apply_flags(cfg, args, paths=("source", "target", "out", "work_dir"))
    validate_bench_config(cfg)
    command = _command_line(args)
    result = run_bench(
        cfg, command=command, base_dir=path.resolve().parent, log=lambda m: print(m, file=sys.stderr, flush=True)
    )
    paths = write_report(result, cfg.out, cfg.name)
    print(
        Path(paths["md"]).read_text().split("## Results (mean ± std over seeds)")[1].split("## Differences")[0].strip()
    )
    print(f"wrote {paths['md']}, {paths['json']}, {paths['png']} ({result['total_s']:.0f} s)")
    return 0


def _run_motion(args: argparse.Namespace, path: Path) -> int:
    """The known-answer protocol (a config with ``protocol: motion``, see :mod:`videomask.bench.motion`)."""
    # the harness (and torch) load only when the command runs
    from videomask.bench import load_motion_config, run_motion_bench, validate_motion_config, write_motion_report

    cfg = load_motion_config(path)
    if args.source is not None or args.target is not None:
        raise VideomaskError(
            "--source/--target do not apply to a motion bench config (it builds its own footage; set assets)"
        )
    _apply_flags(cfg, args, paths=("out", "work_dir"))
    validate_motion_config(cfg)
    result = run_motion_bench(
        cfg,
        command=_command_line(args),
        base_dir=path.resolve().parent,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    paths = write_motion_report(result, cfg.out, cfg.name)
    print(
        "## Sanity ladder"
        + Path(paths["md"]).read_text().split("## Accuracy per task")[0].split("## Sanity ladder")[1].rstrip()
    )
    print(f"wrote {paths['md']}, {paths['json']}, {paths['png']} ({result['total_s']:.0f} s)")
    return 0
