"""Shared by the training tests (``test_train``, ``test_resume``, ``test_distributed``): tiny H.264 clips
and a tiny model config.

Import with ``tests/`` on the path (pytest puts it there)::

    from helpers_train import TINY_MODEL, tiny_run, write_clip, write_videos
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
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


def fork_ranks(
    target: Callable[..., None], world: int, args: tuple = (), kill_when: Path | None = None, timeout: float = 180
) -> list[int | None]:
    """Fork ``world`` processes running ``target(rank, world, port, *args)`` (a free local port for the
    rendezvous); SIGKILL them all once ``kill_when`` exists. Returns their exit codes."""
    from videomask.data import prepare_process  # the package under test, imported where it is used

    prepare_process()  # the gc-before-fork hook, as the CLI sets it up
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=(r, world, port, *args)) for r in range(world)]
    for p in procs:
        p.start()
    if kill_when is not None:
        deadline = time.monotonic() + timeout
        while not kill_when.exists() and any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            time.sleep(0.002)
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join(timeout)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    return codes
