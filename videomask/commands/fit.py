"""``videomask fit``: fit difference statistics from two video sets (source prototypes and their
distance calibration, a visual vocabulary with word counts, enrichment and TF-ICF).

    videomask fit --source SRC --target TGT -o stats.safetensors [--embedder pixel|cnn|checkpoint:PATH]
                  [--layer patch|block:N] [--num-prototypes 256 --num-words 64 --num-anchors 8 ...]

SRC / TGT: a folder of videos or a list file (CSV / text, see ``videomask.data``). Prints, per scorer,
the target share, source share and enrichment of what it found, and a one-line warning when nothing in
the target stands out, followed by the next thing to try (another embedder, then the data).
"""

from __future__ import annotations

import argparse

from videomask.commands import add_clip_arguments

HELP = "fit difference statistics (source prototypes, visual words) from source and target videos"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="source-domain videos: a folder or a list file")
    parser.add_argument("--target", required=True, help="target-domain videos: a folder or a list file")
    parser.add_argument("-o", "--output", required=True, help="statistics file to write (.safetensors)")
    parser.add_argument(
        "--embedder",
        default="pixel",
        help="'pixel' (model-free), 'cnn' (shipped ImageNet MobileNetV2) or 'checkpoint:PATH' (default: pixel)",
    )
    parser.add_argument(
        "--layer",
        default="patch",
        help="checkpoint embedder: 'patch' (tubelet embedding) or 'block:N' (default: patch)",
    )
    parser.add_argument(
        "--num-prototypes", type=int, default=256, help="source prototypes M for the distance scorer (default: 256)"
    )
    parser.add_argument("--num-words", type=int, default=64, help="visual vocabulary size V (default: 64)")
    parser.add_argument(
        "--num-anchors", type=int, default=8, help="at most K anchor words (enrichment, TF-ICF) (default: 8)"
    )
    parser.add_argument(
        "--z-min", type=float, default=1.96, help="enrichment z-score a word needs to be an anchor (default: 1.96)"
    )
    parser.add_argument("--clips-per-video", type=int, default=1, help="clips sampled from each video (default: 1)")
    add_clip_arguments(parser, num_frames=16, sampling_rate=4, size=224)
    parser.add_argument("--dim", type=int, default=64, help="pixel embedder dimension (default: 64)")
    parser.add_argument(
        "--pool", type=int, default=2, help="pixel embedder spatial pooling before projection (default: 2)"
    )
    parser.add_argument(
        "--tokens-per-clip", type=int, default=256, help="tokens per clip fed to k-means (default: 256)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="k-means passes over the data (default: 1)")
    parser.add_argument("--max-clips", type=int, default=None, help="at most this many clips from each set")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch (default: 8)")
    parser.add_argument("--workers", type=int, default=0, help="data loader workers (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device for embedding and k-means (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for clip sampling, k-means and the pixel embedder")


def run(args: argparse.Namespace) -> int:
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.difference import fit_paths

    options = {
        name: getattr(args, name)
        for name in (
            "embedder",
            "layer",
            "num_frames",
            "sampling_rate",
            "size",
            "tubelet",
            "dim",
            "pool",
            "clips_per_video",
            "backend",
            "seed",
            "workers",
            "num_words",
            "num_anchors",
            "num_prototypes",
            "z_min",
            "tokens_per_clip",
            "max_clips",
            "epochs",
            "batch_size",
            "device",
        )
    }
    stats, source, target = fit_paths(args.source, args.target, **options)
    out = stats.save(args.output)
    print(stats.summary())
    for line in stats.warnings():
        print(line)
    for which, data in (("source", source), ("target", target)):
        if data.skipped:
            print(f"{which}: skipped {data.skipped} unreadable video(s); see {data.skip_log}")
    print(f"wrote {out}")
    return 0
