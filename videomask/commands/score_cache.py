"""``videomask score-cache``: score every video once with a difference masker, for continued pretraining.

    videomask score-cache VIDEOS --stats stats.safetensors -o scores.safetensors [--size 224]
                          [--num-frames 16 --sampling-rate 4] [--scorer distance] [--device cpu]

VIDEOS: a folder of videos or a list file. The masker's embedder is frozen, so its scores can be
computed once per video; ``mask.options.cache=scores.safetensors`` then makes the ``difference``
masker look them up (mapped through each clip's crop, resize and flip) instead of running the
embedder in the training step. Unreadable videos are skipped and counted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from videomask.commands import add_clip_arguments
from videomask.errors import VideomaskError

HELP = "score every video once with a difference masker (a cache for continued pretraining)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", help="a folder of videos or a list file (the training data)")
    parser.add_argument("--stats", required=True, help="difference statistics from `videomask fit`")
    parser.add_argument("-o", "--output", required=True, help="score cache to write (.safetensors)")
    parser.add_argument(
        "--scorer", default=None, help="distance, enrichment or tficf (default: the statistics' first, distance)"
    )
    # the clip geometry the videos are scored at: --size is the statistics' (a run at any size looks it up)
    add_clip_arguments(parser, num_frames=16, sampling_rate=4, size=224, with_tubelet=False)
    parser.add_argument("--device", default="cpu", help="torch device for the embedder (default: cpu)")


def run(args: argparse.Namespace) -> int:

    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.data import list_videos, read_video_list
    from videomask.difference import build_score_cache
    from videomask.masking import DifferenceMasker

    if args.size < 1 or args.num_frames < 1 or args.sampling_rate < 1:
        raise VideomaskError("--size, --num-frames and --sampling-rate must be >= 1")
    root = Path(args.videos)
    if not root.exists():
        raise VideomaskError(f"{args.videos} does not exist (give a folder of videos or a list file)")
    items = list_videos(root) if root.is_dir() else read_video_list(root)[0]
    masker = DifferenceMasker.load(args.stats, scorer=args.scorer, anchor_rule="share")
    cache, skipped = build_score_cache(
        masker,
        [(it.video_id, it.path) for it in items],
        size=args.size,
        num_frames=args.num_frames,
        sampling_rate=args.sampling_rate,
        backend=args.backend,
        device=args.device,
    )
    if not len(cache):
        raise VideomaskError(f"no video under {args.videos} could be scored ({len(skipped)} unreadable)")
    out = cache.save(args.output)
    for vid, reason in skipped:
        print(f"skipped {vid}: {reason}")
    print(f"wrote {out}: {len(cache)} videos scored with {masker.scorer!r}, {len(skipped)} skipped")
    return 0
