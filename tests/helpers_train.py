"""Shared by the training tests (``test_train``, ``test_resume``, ``test_distributed``): tiny H.264 clips
and a tiny model config.

Import with ``tests/`` on the path (pytest puts it there)::

    from helpers_train import TINY_MODEL, write_clip, write_videos
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# ``model:`` section of a run config: the tiny size shrunk to one block of width 32 (fast on a CPU)
TINY_MODEL = {
    "name": "tiny",
    "overrides": {
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 2,
        "decoder_embed_dim": 16,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
    },
}


def write_clip(path: Path, num_frames: int = 12, height: int = 40, width: int = 56, seed: int = 0) -> Path:
    """A small H.264 clip (PyAV) with a moving gradient and a seeded colour, so videos differ."""
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 120, size=3)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(num_frames):
            base = (xx * 3 + yy * 2 + 5 * k) % 128  # [H, W]
            frame = np.clip(base[..., None] + tint, 0, 255).astype(np.uint8)  # [H, W, 3]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_videos(root: Path, count: int = 4) -> Path:
    """``root/v0.mp4 ... v{count-1}.mp4``, clip ``i`` seeded with ``i``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_clip(root / f"v{i}.mp4", seed=i)
    return root
