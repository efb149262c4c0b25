"""``videomask detect``: detect anchor objects once per video into a resumable boxes cache.

    videomask detect DATA -o boxes.jsonl [--detector people] [--stride 4] [--workers N]

DATA: a folder of videos (recursive), a list file (``path label`` lines, CSV or TSV) or one video;
video ids are the ones the datasets use (path relative to the folder, or as written in the list), so
the ``objects`` masker finds each training clip's boxes. Every ``stride``-th frame is scanned. A rerun
on the same output keeps finished videos and redoes the rest; unreadable videos are skipped, counted
and retried next time. ``--detector`` is a built-in name or a boxes ``.jsonl`` file to import.
"""

from __future__ import annotations

import argparse
import sys

from videomask.errors import VideomaskError

HELP = "detect anchor objects in videos and build a resumable boxes cache (JSON lines)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.detect import available_detectors

    parser.add_argument("data", help="a folder of videos, a list file (path label / CSV / TSV) or one video file")
    parser.add_argument("-o", "--output", required=True, help="boxes cache to write or resume (JSON lines)")
    parser.add_argument(
        "--detector",
        default="people",
        help=f"detector: {', '.join(available_detectors())}, or a boxes .jsonl file (default: people)",
    )
    parser.add_argument("--stride", type=int, default=4, help="scan every N-th frame (default: 4)")
    parser.add_argument("--workers", type=int, default=1, help="videos detected in parallel processes (default: 1)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N videos")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:

    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.data import VideoDataset
    from videomask.detect import BoxCache, build_cache, build_detector

    if args.limit is not None and args.limit < 1:
        raise VideomaskError("--limit must be >= 1")
    detector = build_detector(args.detector)  # a bad name fails before listing videos
    items = VideoDataset.from_path(args.data).items
    if args.limit is not None:
        items = items[: args.limit]
    report = build_cache(
        [(item.video_id, item.path) for item in items],
        args.output,
        detector,
        stride=args.stride,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(
        f"{args.output}: {report.detected} videos detected now, {report.already_done} already done, "
        f"{len(report.skipped)} skipped as unreadable, {report.boxes} new boxes"
    )
    for vid, why in report.skipped.items():
        print(f"  skipped {vid}: {why}", file=sys.stderr)
    if report.detected + report.already_done == 0:
        raise VideomaskError(f"no video of {args.data} could be decoded")
    print(BoxCache.load(args.output).summary())
    return 0
