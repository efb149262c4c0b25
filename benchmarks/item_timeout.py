"""How long one training item takes at worst, to size ``data.timeout_s`` (the per-item time-out).

Writes H.264 videos with a single keyframe (the worst case for a seek: every clip decodes from frame 0) at
Kinetics-like 340 x 256 and at 1920 x 1080, 10 s at 25 fps, and times ``VideoDataset`` items (open, a
16-frame clip at stride 4 drawn at random, crop, resize to 224, normalise) with no time-out:
wall and CPU seconds, median and maximum over the draws.

    python benchmarks/item_timeout.py --draws 20 --out benchmarks/results/item_timeout.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from videomask.data import VideoDataset, VideoItem

SIZES = {"340x256": (256, 340), "1920x1080": (1080, 1920)}


def write_video(path: Path, height: int, width: int, frames: int = 250) -> Path:
    """A 25 fps H.264 video with one keyframe (gop = its length) and moving noise (little to compress)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast", "keyint": str(frames)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            frame = np.roll(base, 7 * k, axis=1)  # [H, W, 3]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def time_items(path: Path, draws: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``draws`` items of the video at ``path`` (random clips, train transform)."""
    # no time-out: this measures the item itself (a paused process would otherwise time out on the wall clock)
    ds = VideoDataset([VideoItem(str(path), path.name)], num_frames=16, sampling_rate=4, size=224, seed=0, timeout=None)
    walls, cpus = [], []
    for epoch in range(draws):
        w, c = time.perf_counter(), time.process_time()
        ds[(epoch, 0)]
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return walls, cpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    lines = [
        "| video (10 s, one keyframe) | wall median (s) | wall max (s) | CPU median (s) | CPU max (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (h, w) in SIZES.items():
            path = write_video(Path(tmp) / f"{name}.mp4", h, w)
            walls, cpus = time_items(path, args.draws)
            lines.append(
                f"| {name} | {statistics.median(walls):.3f} | {max(walls):.3f} | {statistics.median(cpus):.3f} "
                f"| {max(cpus):.3f} |"
            )
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
