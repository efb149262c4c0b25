"""``videomask score-cache``: score every video once with a difference masker, for continued pretraining.

    videomask score-cache VIDEOS --stats stats.safetensors -o scores [--size 224]
                          [--num-frames 16 --sampling-rate 4] [--scorer distance] [--device cpu]
                          [--part R/N]

VIDEOS: a folder of videos or a list file. The masker's embedder is frozen, so its scores can be
computed once per video; ``mask.options.cache=scores`` then makes the ``difference`` masker look them up
(mapped through each clip's crop, resize and flip) instead of running the embedder in the training step.
The cache is a folder, one float16 file per video, read lazily. Unreadable videos are skipped and counted.
``--part R/N`` scores only share R (0-based) of N, for N processes or machines writing the same folder
(e.g. a SLURM array); the last share to finish completes the cache. A killed build, run again, keeps the
videos already scored.
"""

from __future__ import annotations

import argparse

from videomask.commands import add_clip_arguments, cache_videos
from videomask.errors import VideomaskError

HELP = "score every video once with a difference masker (a cache for continued pretraining)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", help="a folder of videos, a list file or a shard folder (the training data)")
    parser.add_argument("--stats", required=True, help="difference statistics from `videomask fit`")
    parser.add_argument("-o", "--output", required=True, help="score cache folder to write")
    parser.add_argument(
        "--scorer", default=None, help="distance, enrichment or tficf (default: the statistics' first, distance)"
    )
    # the clip geometry the videos are scored at: --size is the statistics' (a run at any size looks it up)
    add_clip_arguments(parser, num_frames=16, sampling_rate=4, size=224, with_tubelet=False)
    parser.add_argument("--device", default="cpu", help="torch device for the embedder (default: cpu)")
    parser.add_argument(
        "--part", default="0/1", help="R/N: score only share R (0-based) of N, the last share completes the cache"
    )


def parse_part(text: str) -> tuple[int, int]:
    """``"R/N"`` -> ``(R, N)`` with ``0 <= R < N``."""
    try:
        rank, world_size = (int(x) for x in text.split("/"))
    except ValueError:
        raise VideomaskError(f"--part takes R/N (e.g. 0/8), got {text!r}") from None
    if not 0 <= rank < world_size:
        raise VideomaskError(f"--part {text}: R must be in 0..N-1")
    return rank, world_size


def run(args: argparse.Namespace) -> int:

    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.difference import build_score_cache_part, finish_score_cache
    from videomask.io.per_video import parts_done
    from videomask.masking import DifferenceMasker

    if args.size < 1 or args.num_frames < 1 or args.sampling_rate < 1:
        raise VideomaskError("--size, --num-frames and --sampling-rate must be >= 1")
    rank, world_size = parse_part(args.part)
    items, opener = cache_videos(args.videos)
    masker = DifferenceMasker.load(args.stats, scorer=args.scorer, anchor_rule="share")
    count, skipped = build_score_cache_part(
        masker,
        [(it.video_id, it.path) for it in items],
        args.output,
        rank=rank,
        world_size=world_size,
        size=args.size,
        num_frames=args.num_frames,
        sampling_rate=args.sampling_rate,
        backend=args.backend,
        device=args.device,
        opener=opener,
    )
    for vid, reason in skipped:
        print(f"skipped {vid}: {reason}")
    if parts_done(args.output, world_size) < world_size:  # another share completes the cache
        print(f"wrote share {rank}/{world_size} of {args.output}: {count} videos scored, {len(skipped)} skipped")
        return 0
    cache = finish_score_cache(args.output, world_size)
    if not len(cache):
        raise VideomaskError(f"no video under {args.videos} could be scored ({len(cache.meta['skipped'])} unreadable)")
    print(
        f"wrote {args.output}: {len(cache)} videos scored with {masker.scorer!r}, {len(cache.meta['skipped'])} skipped"
    )
    return 0
