"""``videomask info``: decode videos and report metadata, a sampled clip and its token grid.

    videomask info PATH [--backend pyav] [--num-frames 16 --sampling-rate 4 --size 112 --tubelet 2 16]
                        [--sampling center] [--short loop] [--limit N]

PATH: a folder of videos (recursive), a list file (``path label`` lines, CSV or TSV) or one video.
For each video it prints the metadata (frames, fps, duration, size, rotation, codec, pixel format)
and the frame indices and shape of the clip the evaluation transform makes; then the token grid and
how many videos were skipped as unreadable, and why. Exit status 2 when nothing could be decoded.
"""

from __future__ import annotations

import argparse

from videomask.commands import add_clip_arguments
from videomask.errors import VideomaskError

HELP = "decode videos and print metadata, sampling and patch-grid report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a folder of videos, a list file (path label / CSV / TSV) or one video file")
    add_clip_arguments(parser, num_frames=16, sampling_rate=4, size=112)
    parser.add_argument(
        "--sampling",
        default="center",
        choices=("center", "uniform", "random"),
        help="clip sampling mode (default: center)",
    )
    parser.add_argument(
        "--short",
        default="loop",
        choices=("loop", "pad", "skip"),
        help="policy for videos shorter than a clip (default: loop)",
    )
    parser.add_argument("--limit", type=int, default=None, help="inspect only the first N videos")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per video (default: 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed for random sampling (default: 0)")


def _format_indices(indices: list[int]) -> str:
    if len(indices) > 1:
        steps = {b - a for a, b in zip(indices, indices[1:])}
        if len(steps) == 1 and steps.pop() > 0:
            return f"{indices[0]}..{indices[-1]} step {indices[1] - indices[0]}"
    return "[" + ", ".join(str(i) for i in indices) + "]"


def run(args: argparse.Namespace) -> int:
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.data import VideoDataset
    from videomask.patches import as_tubelet, grid_for

    if args.limit is not None and args.limit < 1:
        raise VideomaskError("--limit must be >= 1")
    tubelet = as_tubelet(tuple(args.tubelet))
    dataset = VideoDataset.from_path(
        args.path,
        num_frames=args.num_frames,
        sampling_rate=args.sampling_rate,
        sampling=args.sampling,
        short=args.short,
        size=args.size,
        train=False,
        tubelet=tubelet,
        backend=args.backend,
        timeout=args.timeout,
        seed=args.seed,
    )
    grid = grid_for((args.num_frames, args.size, args.size), tubelet)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    print(
        f"{args.path}: {len(dataset)} video(s), backend {args.backend}"
        + (f", showing {count}" if count < len(dataset) else "")
    )
    print(
        f"clip: {args.num_frames} frames at stride {args.sampling_rate} ({args.sampling} sampling, short videos: "
        f"{args.short}), "
        f"{args.size}x{args.size}; tubelet {tubelet[0]}x{tubelet[1]}x{tubelet[2]} -> token grid "
        f"{grid.t}x{grid.h}x{grid.w} = {grid.num_tokens} tokens ({grid.num_tubes} tubes)"
    )
    decoded = 0
    for index in range(count):
        video_id = dataset.items[index].video_id
        try:
            meta, clips = dataset.load_clips(index)
        except VideomaskError as err:
            dataset.mark_skipped(index, str(err))
            reason = dict(dataset.skipped_videos()).get(video_id, str(err))
            print(f"  {video_id}: SKIPPED ({reason})")
            continue
        decoded += 1
        clip = clips[0]
        shape = "x".join(str(s) for s in clip["video"].shape)
        print(
            f"  {video_id}: {meta.num_frames} frames, {meta.fps:.3f} fps, {meta.duration:.2f} s, "
            f"{meta.width}x{meta.height} (WxH), rotation {meta.rotation}, {meta.codec} {meta.pix_fmt}; "
            f"clip frames {_format_indices(clip['frame_indices'].tolist())} -> [C,T,H,W] {shape}"
        )
    skipped = dataset.skipped_videos()
    print(f"decoded {decoded} of {count} video(s); skipped {len(skipped)}")
    if decoded == 0:
        raise VideomaskError(f"none of the {count} video(s) under {args.path} could be decoded")
    return 0
