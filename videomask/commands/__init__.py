"""One module per ``videomask`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``."""

from __future__ import annotations

import argparse


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
