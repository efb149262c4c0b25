"""One module per ``videomask`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``."""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from videomask.errors import VideomaskError
from videomask.resources import data_dir


def absolute(value: str, base: Path) -> str:
    """``value`` as an absolute path, a relative one read against ``base``."""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def shipped_resolver(assets: Path, cwd: Path) -> Callable[[str], str]:
    """Relative paths of a shipped config: ``../assets/...`` -> the shipped clips, the rest as if the
    config sat in ``<cwd>/configs/`` (so the run folder ``../runs/demo`` lands in ``<cwd>/runs/demo``)."""

    def resolve(value: str) -> str:
        p = Path(value).expanduser()
        if p.is_absolute():
            return str(p)
        if p.parts[:2] == ("..", "assets"):
            return str(assets.joinpath(*p.parts[2:]))
        return absolute(value, cwd / "configs")

    return resolve


def _rewrite_paths(node: Any, resolve: Callable[[str], str]) -> Any:
    """Every ``../``-relative string in a YAML tree through ``resolve`` (the shipped configs' only relative form)."""
    if isinstance(node, dict):
        return {k: _rewrite_paths(v, resolve) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_paths(v, resolve) for v in node]
    if isinstance(node, str) and node.startswith("../"):
        return resolve(node)
    return node


def config_path(given: str | None, default: str | None = None) -> Path:
    """The YAML config a command reads: ``given`` (or ``./configs/<default>``) when that file exists, else the
    copy shipped with videomask of the same name, so ``--config configs/NAME.yaml`` as the docs write it works
    from any folder and any install (wheel, editable, clone).

    A shipped config is read from a copy whose relative paths are laid out for the current folder
    (:func:`shipped_resolver`): the shipped clips, and run folders under ``./runs/``.
    """
    path = Path(given) if given else Path("configs") / str(default)
    if path.is_file():
        return path
    if given and path.parent not in (Path("."), Path("configs")):
        raise VideomaskError(f"config file not found: {given}")
    shipped = data_dir("configs") / path.name
    if path.suffix not in (".yaml", ".yml") or not shipped.is_file():
        known = ", ".join(sorted(p.name for p in data_dir("configs").glob("*.yaml")))
        raise VideomaskError(f"config file not found: {path} (shipped configs: {known})")
    raw = yaml.safe_load(shipped.read_text()) or {}
    folder = Path(tempfile.mkdtemp(prefix="videomask-config-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    copy = folder / shipped.name
    copy.write_text(
        yaml.safe_dump(_rewrite_paths(raw, shipped_resolver(data_dir("assets"), Path.cwd())), sort_keys=False)
    )
    print(f"videomask: using the shipped {path.name} (no {path} here); run folders go under ./runs/", file=sys.stderr)
    return copy


def add_clip_arguments(
    parser: argparse.ArgumentParser,
    *,
    num_frames: int | None = 16,
    sampling_rate: int = 4,
    size: int | None = 224,
    with_tubelet: bool = True,
    with_backend: bool = True,
) -> None:
    """The clip flags most commands share: ``--num-frames``, ``--sampling-rate``, ``--size``, and optionally
    ``--tubelet`` and ``--backend``.

    A default of None reads "the model's" (commands that load a model fill it in from the checkpoint).
    """

    def default(value: object) -> str:
        return "the model's" if value is None else str(value)

    parser.add_argument(
        "--num-frames", type=int, default=num_frames, help=f"frames per clip (default: {default(num_frames)})"
    )
    parser.add_argument(
        "--sampling-rate",
        type=int,
        default=sampling_rate,
        help=f"stride between sampled frames (default: {sampling_rate})",
    )
    parser.add_argument(
        "--size", type=int, default=size, help=f"clip side after resize + centre crop (default: {default(size)})"
    )
    if with_tubelet:
        parser.add_argument(
            "--tubelet",
            type=int,
            nargs=2,
            default=(2, 16),
            metavar=("T", "P"),
            help="tubelet frames and patch size (default: 2 16)",
        )
    if with_backend:
        parser.add_argument(
            "--backend", default="pyav", help="decoding backend: pyav, decord, opencv or auto (default: pyav)"
        )


def cache_videos(given: str) -> tuple[list[Any], Callable[[str], Any] | None]:
    """The videos a cache command scores: ``(items, opener)`` of a folder, a list file or a shard folder
    (``opener`` reads a video in the shards by its item path; None for files)."""
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.data import ShardSource, is_shard_folder, list_videos, read_video_list

    root = Path(given)
    if not root.exists():
        raise VideomaskError(f"{given} does not exist (give a folder of videos, a list file or a shard folder)")
    if root.is_dir() and is_shard_folder(root):  # shards written by `videomask shard`
        shards = ShardSource(root)
        return shards.items, shards.opener()
    return (list_videos(root) if root.is_dir() else read_video_list(root)[0]), None
