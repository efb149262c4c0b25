"""``videomask show-masks``: draw a masker's masks on a clip (animated GIF and a PNG grid).

    videomask show-masks VIDEO --masker NAME [--stats stats.safetensors] [--boxes boxes.jsonl | --detector people]
                         [--labels person ...] [--ratio 0.9] [--mode tube] [--alpha 1] [--direction mask]
                         [--num-frames 16 --sampling-rate 4 --size 224] [--seed 0] -o masks.gif [--png masks.png]

Masked patches are shaded grey, anchor patches outlined yellow, detections boxed green. ``--boxes``
reads a boxes cache (the video is found by ``--video-id`` or by its path), ``--detector`` runs a
detector on the clip's frames; either feeds the ``objects`` masker and the drawn boxes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from videomask.commands import add_clip_arguments
from videomask.config import check_mask_ratio
from videomask.errors import VideomaskError

HELP = "draw a masker's masks on a clip (GIF and PNG grid)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="a video file")
    parser.add_argument("--masker", required=True, help="a registered masker: random, tube, difference, objects")
    parser.add_argument("-o", "--output", required=True, help="GIF to write")
    parser.add_argument("--png", default=None, help="PNG grid to write (default: the GIF's name with .png)")
    add_masker_arguments(parser)
    add_clip_arguments(parser, num_frames=16, sampling_rate=4, size=224, with_tubelet=False, with_backend=False)
    parser.add_argument("--scale", type=int, default=2, help="picture upscaling factor (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mask (default: 0)")
    parser.add_argument(
        "--heatmap", action="store_true", help="add the masker's token scores as a heat map (scored maskers)"
    )


def add_masker_arguments(parser: argparse.ArgumentParser) -> None:
    """The masker's options and its anchor sources (shared with ``videomask show-recon``)."""
    parser.add_argument("--stats", default=None, help="difference statistics file (masker difference)")
    parser.add_argument("--boxes", default=None, help="boxes cache from `videomask detect` (masker objects, drawing)")
    parser.add_argument(
        "--detector", default=None, help="run this detector on the clip's frames (masker objects, drawing)"
    )
    parser.add_argument(
        "--video-id", default=None, help="the video's id in the boxes cache (default: found from the path)"
    )
    parser.add_argument("--labels", nargs="+", default=None, help="anchor labels (default: every detected label)")
    parser.add_argument(
        "--ratio", type=float, default=None, help="share of tokens masked, in (0, 1) (default: the masker's, 0.9)"
    )
    parser.add_argument(
        "--mode", default=None, choices=("tube", "token"), help="tube or token masking (masker default)"
    )
    parser.add_argument("--alpha", type=float, default=None, help="anchor share of the budget (anchor maskers)")
    parser.add_argument(
        "--direction", default=None, choices=("mask", "keep"), help="mask the anchors or keep them visible"
    )
    parser.add_argument(
        "--selection", default=None, choices=("share", "topk", "sample"), help="selection rule (scored maskers)"
    )
    parser.add_argument(
        "--scorer",
        default=None,
        choices=("distance", "enrichment", "tficf"),
        help="difference scorer (default: distance)",
    )
    parser.add_argument(
        "--anchor-rule",
        default=None,
        choices=("auto", "calibrated", "threshold", "share", "word"),
        help="difference anchor rule (default: auto)",
    )
    parser.add_argument(
        "--tubelet",
        type=int,
        nargs=2,
        default=None,
        metavar=("T", "P"),
        help="tubelet frames and patch size (default: 2 16)",
    )


def _accepted(name: str) -> set[str]:
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.masking import MASKERS, masker_options

    return set(masker_options(MASKERS[name]))


def masker_options_from_flags(args: argparse.Namespace) -> tuple[dict[str, Any], set[str]]:
    """Check the flags against the masker -> ``(options given on the command line, options it accepts)``."""

    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.masking import available_maskers
    from videomask.patches import as_tubelet

    if args.masker not in available_maskers():
        raise VideomaskError(f"unknown masker {args.masker!r} (choose from {', '.join(available_maskers())})")
    if not Path(args.video).is_file():
        raise VideomaskError(f"no such video file: {args.video}")
    if args.boxes and args.detector:
        raise VideomaskError("give --boxes or --detector, not both")
    if args.ratio is not None:
        check_mask_ratio(args.ratio, "--ratio")  # the range `videomask pretrain` accepts for mask.ratio
    if args.scale < 1:
        raise VideomaskError("--scale must be >= 1")
    accepted = _accepted(args.masker)
    options: dict[str, Any] = {}
    flags = {
        "ratio": args.ratio,
        "mode": args.mode,
        "alpha": args.alpha,
        "direction": args.direction,
        "selection": args.selection,
        "tubelet": as_tubelet(tuple(args.tubelet)) if args.tubelet else None,
        "stats": args.stats,
        "scorer": getattr(args, "scorer", None),
        "anchor_rule": getattr(args, "anchor_rule", None),
    }
    for key, value in flags.items():
        if value is None:
            continue
        if key not in accepted:
            raise VideomaskError(f"masker {args.masker!r} does not take --{key.replace('_', '-')}")
        options[key] = value
    if "stats" in accepted and "stats" not in options:
        raise VideomaskError(f"masker {args.masker!r} needs --stats (a file from `videomask fit`)")
    if "boxes" in accepted and not args.boxes and args.detector is None:
        raise VideomaskError(f"masker {args.masker!r} needs --boxes (a cache from `videomask detect`) or --detector")
    return options, accepted


def clip_boxes(args: argparse.Namespace, clip: Any, cache: Any) -> tuple[Any, Any]:
    """The clip's boxes from ``--boxes`` (``cache``) or ``--detector`` -> ``(detections or None, cache)``."""
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.detect import BoxCache, build_detector, detect_frames

    if cache is not None:
        vid = args.video_id or cache.resolve_video_id(args.video)
        if vid is None or vid not in cache:
            raise VideomaskError(f"video {args.video!r} is not in boxes cache {args.boxes} (give --video-id)")
        clip.video_id = vid
        return cache.detections(vid, clip.frame_indices, args.labels), cache
    if not args.detector:
        return None, None
    detector = build_detector(args.detector)
    detections = detect_frames(
        detector, clip.original, video_id=args.video_id or clip.video_id, frame_indices=clip.frame_indices
    )
    if args.labels:
        detections = [[d for d in found if d.label in args.labels] for found in detections]
    return detections, BoxCache.from_detections(clip.video_id, clip.frame_indices, detections)


def prepare(
    args: argparse.Namespace,
    *,
    tubelet: tuple[int, int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> tuple[Any, Any, Any]:
    """Check the flags, cut the clip and build the masker: ``(clip, masker, detections or None)``.

    ``tubelet``, ``mean``, ``std``: fixed by a model (show-recon); otherwise from the flags / the masker.
    """
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.detect import BoxCache
    from videomask.masking import build_masker
    from videomask.viz import load_clip

    options, accepted = masker_options_from_flags(args)
    cache = BoxCache.load(args.boxes) if args.boxes else None
    needs_boxes = "boxes" in accepted
    # the tubelet is fixed (the model's; difference: from its statistics) before the clip is cut
    if tubelet is not None:  # the model's
        if "tubelet" in options and tuple(options["tubelet"]) != tuple(tubelet):
            raise VideomaskError(f"--tubelet {options['tubelet']} differs from the model's tubelet {tuple(tubelet)}")
        if "tubelet" in accepted:  # else (statistics fix it) show-recon compares the masker's with the model's
            options["tubelet"] = tuple(tubelet)
    tubelet = options.get("tubelet", tubelet)
    if tubelet is None and not needs_boxes:
        tubelet = build_masker(args.masker, **options).tubelet  # a provisional masker
    tubelet = tubelet or (2, 16, 16)
    clip = load_clip(
        args.video,
        num_frames=args.num_frames,
        sampling_rate=args.sampling_rate,
        size=args.size,
        patch=(tubelet[1], tubelet[2]),
        mean=mean,
        std=std,
    )
    detections, cache = clip_boxes(args, clip, cache)
    if needs_boxes:
        options["boxes"] = cache
        if args.labels:
            options["labels"] = args.labels
    masker = build_masker(args.masker, **options)
    stats = getattr(masker, "stats", None)  # difference: statistics hold at the clip size they were fitted at
    if stats is not None:
        stats.check_clip((args.num_frames, args.size, args.size), size_key="--size", frames_key="--num-frames")
    return clip, masker, detections


def run(args: argparse.Namespace) -> int:
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.viz import show_masks

    clip, masker, detections = prepare(args)
    picture = show_masks(
        clip,
        masker,
        args.output,
        detections=detections,
        png=args.png,
        seed=args.seed,
        scale=args.scale,
        heatmap=args.heatmap,
    )
    anchors = f", anchors {picture.anchor_share:.1%} of tokens" if picture.anchor_share is not None else ""
    print(
        f"{picture.gif} and {picture.png}: {masker.name} masked {picture.masked_share:.1%} of tokens{anchors}, "
        f"{picture.detections} detections drawn"
    )
    return 0
