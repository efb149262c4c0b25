"""Shared by the detection and picture tests (``test_detect``, ``test_viz``, ``test_recon``): a clip with one
moving bright square, a detector that finds it, and the files the show-masks / show-recon commands read.

Import with ``tests/`` on the path (pytest puts it there)::

    from helpers_squares import SquareDetector, square_inputs, write_square_clip
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from videomask.detect import Detection


def write_square_clip(
    path: Path,
    num_frames: int = 12,
    height: int = 48,
    width: int = 64,
    size: int = 12,
    *,
    top: int = 8,
    left: int = 4,
    dark: int = 20,
    bright: int = 235,
    crf: int | None = 10,
) -> Path:
    """A ``dark`` clip with a ``bright`` ``size`` x ``size`` square moving right 2 px per frame
    (frame k: x0 = left + 2k, y0 = top); ``crf``: libx264 quality (None = the encoder's default)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if crf is not None:
            stream.options = {"crf": str(crf)}
        for k in range(num_frames):
            frame = np.full((height, width, 3), dark, dtype=np.uint8)
            frame[top : top + size, left + 2 * k : left + 2 * k + size] = bright
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


class SquareDetector:
    """Finds the bright square (label ``square``); counts the frames it has seen."""

    identity = {"name": "square"}

    def __init__(self) -> None:
        self.frames_seen = 0

    def __call__(self, frames: np.ndarray) -> list[list[Detection]]:
        out = []
        for frame in frames:
            self.frames_seen += 1
            ys, xs = np.nonzero(frame.mean(axis=2) > 128)
            out.append(
                [Detection((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), "square", 1.0)]
                if len(xs)
                else []
            )
        return out


def square_inputs(root: Path, num_frames: int, size: int) -> dict[str, Path]:
    """``root/square.mp4`` (a moving square), its boxes cache (``SquareDetector``, every 2nd frame) and a
    difference statistics file fitted on generated clips whose target has a bright top-left corner."""
    import torch

    from videomask.detect import build_cache
    from videomask.difference import PixelEmbedder, fit_statistics

    video = write_square_clip(
        root / "square.mp4", num_frames=20, height=72, width=96, size=16, top=20, left=20, dark=30, bright=230, crf=None
    )
    boxes = root / "boxes.jsonl"
    build_cache([("square.mp4", str(video))], boxes, SquareDetector(), stride=2, progress=False)
    g = torch.Generator().manual_seed(0)
    source = [torch.randn(4, 3, num_frames, size, size, generator=g) * 0.3 for _ in range(2)]
    target = [s.clone() for s in source]
    for t in target:
        t[:, :, :, :32, :32] = 2.0
    stats = fit_statistics(
        source,
        target,
        PixelEmbedder(dim=16, tubelet=(2, 16, 16)),
        num_words=4,
        num_anchors=1,
        init_tokens=64,
        progress=False,
    )
    stats.save(root / "stats.safetensors")
    return {"video": video, "boxes": boxes, "stats": root / "stats.safetensors", "root": root}
