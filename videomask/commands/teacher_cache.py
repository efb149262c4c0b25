"""``videomask teacher-cache``: a frame teacher's features of every video, computed once, for the feature objectives.

    videomask teacher-cache VIDEOS -o teacher [--teacher cnn] [--size 128] [--device cpu] [--part R/N]

VIDEOS: a folder of videos or a list file (the training data: the cache is keyed by its video ids).
``objective.teacher_cache=teacher`` (with the same ``objective.teacher`` and
``objective.teacher_size``) then looks each clip's targets up through its frames, crop, resize and flip
instead of running the teacher in the training step. Unreadable videos are skipped and counted.
The cache is a folder, one float16 file per video; ``--part R/N`` computes only share R (0-based) of N (N
processes or machines writing the same folder), and the last share to finish completes the cache. A killed
build, run again, keeps the videos already done.
"""

from __future__ import annotations

import argparse

from videomask.commands import cache_videos
from videomask.errors import VideomaskError

HELP = "compute a frame teacher's features of every video once (a cache for the teacher objectives)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", help="a folder of videos, a list file or a shard folder (the training data)")
    parser.add_argument("-o", "--output", required=True, help="teacher cache folder to write")
    parser.add_argument(
        "--teacher", default="cnn", help="cnn (the shipped ImageNet MobileNetV2), cnn:PATH or cnn-random"
    )
    parser.add_argument("--size", type=int, default=0, help="shorter side the teacher sees (0 = native frames)")
    parser.add_argument("--tubelet", type=int, default=2, help="frames per tubelet of the model (default 2)")
    parser.add_argument("--patch", type=int, default=16, help="patch side of the model (default 16)")
    parser.add_argument("--backend", default="pyav", help="video decoder (default pyav)")
    parser.add_argument("--device", default="cpu", help="torch device for the teacher (default: cpu)")
    parser.add_argument(
        "--part", default="0/1", help="R/N: compute only share R (0-based) of N, the last share completes the cache"
    )


def run(args: argparse.Namespace) -> int:

    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.commands.score_cache import parse_part
    from videomask.objectives import FrameTeacher, build_teacher, build_teacher_cache

    if args.size < 0 or args.tubelet < 1 or args.patch < 1:
        raise VideomaskError("--size must be >= 0, --tubelet and --patch >= 1")
    items, opener = cache_videos(args.videos)
    teacher = build_teacher(args.teacher, tubelet=(args.tubelet, args.patch, args.patch), size=args.size)
    if not isinstance(teacher, FrameTeacher):
        raise VideomaskError("only frame teachers (cnn, cnn:PATH, cnn-random) can be cached")
    rank, world_size = parse_part(args.part)
    out, skipped = build_teacher_cache(
        teacher,
        [(it.video_id, it.path) for it in items],
        args.output,
        backend=args.backend,
        device=args.device,
        rank=rank,
        world_size=world_size,
        opener=opener,
    )
    for vid, reason in skipped:
        print(f"skipped {vid}: {reason}")
    if world_size > 1:
        print(f"wrote share {rank}/{world_size} of {out}: {len(skipped)} skipped")
        return 0
    if len(skipped) == len(items):
        raise VideomaskError(f"no video under {args.videos} could be read ({len(skipped)} unreadable)")
    print(f"wrote {out}: {len(items) - len(skipped)} videos, {len(skipped)} skipped")
    return 0
