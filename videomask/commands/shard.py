"""``videomask shard``: convert videos into streaming shards (LitData chunks) that training reads as ``data.path``.

    videomask shard SRC OUT [--workers N] [--chunk-bytes 64MB] [--min-frames 2] [-o KEY=VALUE ...]

SRC: a folder of videos, a list file or one video (as ``data.path`` accepts; may be an ``s3://`` URL). OUT: a new
local folder or URL. Each video is read and probed once (its frame index kept in the shards); videos that do not
open are left out and listed in ``OUT/rejects.tsv``. ``-o`` sets an fsspec storage option for URLs (e.g.
``-o endpoint_url=http://127.0.0.1:8333 -o anon=true``). See docs/data.md.
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from videomask.errors import VideomaskError

HELP = "convert a folder or list of videos into streaming shards (LitData) for training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="a folder of videos, a list file or one video (a path or an s3:// URL)")
    parser.add_argument("out", help="a new folder (or s3:// URL) for the shards")
    parser.add_argument("--workers", type=int, default=1, help="processes that read and probe videos (default: 1)")
    parser.add_argument("--chunk-bytes", default="64MB", help="size of a shard chunk (default: 64MB)")
    parser.add_argument("--min-frames", type=int, default=2, help="reject videos with fewer frames (default: 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed to read one video (default: 60)")
    parser.add_argument(
        "-o",
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an fsspec storage option for URLs (repeatable; the value is read as YAML: true, 3, text)",
    )


def storage_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict, each value read as YAML (``anon=true`` gives ``True``)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise VideomaskError(f"--storage-option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = yaml.safe_load(value)
    return options


def run(args: argparse.Namespace) -> int:
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from tqdm import tqdm

    # the data side loads torch and PyAV: only when the command runs
    from videomask.data import VideoDataset, is_shard_folder, write_shards
    from videomask.video import storage

    if args.workers < 1 or args.min_frames < 1:
        raise VideomaskError("--workers and --min-frames must be >= 1")
    options = storage_options(args.storage_option)
    storage.set_storage_options([args.src, args.out], options)
    if is_shard_folder(args.src):
        raise VideomaskError(f"{args.src} already holds shards")
    source = VideoDataset.from_path(args.src, storage_options=options, size=16, train=False)
    with tqdm(total=len(source.items), unit="video", desc="shard", leave=False) as bar:
        report = write_shards(
            source.items,
            args.out,
            classes=source.classes,
            storage_options=options,
            chunk_bytes=args.chunk_bytes,
            min_frames=args.min_frames,
            timeout=args.timeout if args.timeout > 0 else None,
            workers=args.workers,
            progress=lambda n: bar.update(n - bar.n),
        )
    megabytes = report.bytes / 1e6
    print(f"wrote {report.videos} videos ({megabytes:.1f} MB) in {report.chunks} chunk(s) to {report.out}")
    rejected = len(report.rejected)
    if rejected:
        first_id, first_reason = report.rejected[0]
        print(f"rejected {rejected} video(s), listed in {report.out}/rejects.tsv (first: {first_id}: {first_reason})")
    else:
        print("rejected 0 videos")
    return 0
