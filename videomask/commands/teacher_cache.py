"""``videomask teacher-cache``: a frame teacher's features of every video, computed once, for the feature objectives.

    videomask teacher-cache VIDEOS -o teacher.safetensors [--teacher cnn] [--size 128] [--device cpu]

VIDEOS: a folder of videos or a list file (the training data: the cache is keyed by its video ids).
``objective.teacher_cache=teacher.safetensors`` (with the same ``objective.teacher`` and
``objective.teacher_size``) then looks each clip's targets up through its frames, crop, resize and flip
instead of running the teacher in the training step. Unreadable videos are skipped and counted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from videomask.errors import VideomaskError

HELP = "compute a frame teacher's features of every video once (a cache for the teacher objectives)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", help="a folder of videos or a list file (the training data)")
    parser.add_argument("-o", "--output", required=True, help="teacher cache to write (.safetensors)")
    parser.add_argument(
        "--teacher", default="cnn", help="cnn (the shipped ImageNet MobileNetV2), cnn:PATH or cnn-random"
    )
    parser.add_argument("--size", type=int, default=0, help="shorter side the teacher sees (0 = native frames)")
    parser.add_argument("--tubelet", type=int, default=2, help="frames per tubelet of the model (default 2)")
    parser.add_argument("--patch", type=int, default=16, help="patch side of the model (default 16)")
    parser.add_argument("--backend", default="pyav", help="video decoder (default pyav)")
    parser.add_argument("--device", default="cpu", help="torch device for the teacher (default: cpu)")


def run(args: argparse.Namespace) -> int:

    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.data import list_videos, read_video_list
    from videomask.objectives import FrameTeacher, build_teacher, build_teacher_cache

    if args.size < 0 or args.tubelet < 1 or args.patch < 1:
        raise VideomaskError("--size must be >= 0, --tubelet and --patch >= 1")
    root = Path(args.videos)
    if not root.exists():
        raise VideomaskError(f"{args.videos} does not exist (give a folder of videos or a list file)")
    items = list_videos(root) if root.is_dir() else read_video_list(root)[0]
    teacher = build_teacher(args.teacher, tubelet=(args.tubelet, args.patch, args.patch), size=args.size)
    if not isinstance(teacher, FrameTeacher):
        raise VideomaskError("only frame teachers (cnn, cnn:PATH, cnn-random) can be cached")
    out, skipped = build_teacher_cache(
        teacher, [(it.video_id, it.path) for it in items], args.output, backend=args.backend, device=args.device
    )
    for vid, reason in skipped:
        print(f"skipped {vid}: {reason}")
    if len(skipped) == len(items):
        raise VideomaskError(f"no video under {args.videos} could be read ({len(skipped)} unreadable)")
    print(f"wrote {out}: {len(items) - len(skipped)} videos, {len(skipped)} skipped")
    return 0
