"""Shared by the training tests (``test_train``, ``test_resume``, ``test_distributed``): tiny H.264 clips
and a tiny model config.

Import with ``tests/`` on the path (pytest puts it there)::

    from helpers_train import TINY_MODEL, tiny_run, write_clip, write_videos
"""

from __future__ import annotations

import os
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


def tiny_run(videos: Path, out_dir: Path, **sections: dict) -> dict:
    """A ``videomask pretrain`` config (a raw dict) of the tiny model on ``videos``: 4 frames at stride 2,
    32 px, batch 2, tube masking 0.75, 6 steps logged every 2 and saved every 3; ``sections`` update a
    section key by key (``train={"steps": 9}``)."""
    raw = {
        "run": {"out_dir": str(out_dir), "seed": 0, "device": "cpu"},
        "data": {
            "path": str(videos),
            "num_frames": 4,
            "sampling_rate": 2,
            "size": 32,
            "batch_size": 2,
            "num_workers": 0,
        },
        "model": TINY_MODEL,
        "mask": {"name": "tube", "ratio": 0.75},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"steps": 6, "log_every": 2, "save_every": 3, "keep_last": 2, "progress": False, "tensorboard": False},
    }
    for name, values in sections.items():
        raw[name] = {**raw[name], **values}
    return raw


def torchrun_env(rank: int, world: int, port: int) -> None:
    """Set the environment variables torchrun gives rank ``rank`` of ``world`` (one node, 127.0.0.1:``port``)."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
