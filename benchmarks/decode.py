"""Decoding speed: videomask's loader against a decord ``get_batch`` reference, and cost against video length.

    python benchmarks/decode.py                      # shipped assets, 5 repeats
    python benchmarks/decode.py --footage DIR --repeats 7 --lengths 100 200 400 800 1600

Part 1 (clips/s). For every clip the same work is timed both ways, side by side in one run:
  videomask: ``open_video(path, backend)`` -> ``sample_indices`` (16 frames at stride 4, centre clip,
             loop when short) -> ``reader.read(indices)`` -> ``data.resize_short_side(..., 112)``
  decord:    ``decord.VideoReader(path)`` -> ``get_batch(indices)`` (same indices) -> the same resize.
A repeat is one pass over all clips, the loaders taking turns on each clip; clips/s is the median over
repeats, and the ratio (> 1: videomask faster) is the median over repeats of the same-repeat ratio. Both
CPU time of the process (steady on a shared machine) and wall time are reported. Decoder threads are
fixed (``--threads``, default 1) on both sides so the two use the same CPU.

Part 2 (length). Index clips of growing length are generated (H.264, keyframe every 32 frames, B-frames);
for each, the time to read one 16 x stride-4 clip from the middle is measured with videomask's seek path,
with videomask forced onto its sequential path, and with a plain PyAV decode from the start; medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/clips.py: the index-clip generator

import av  # noqa: E402
import torch  # noqa: E402

from clips import decode_index, make_index_clip  # noqa: E402
from videomask.data import frames_to_tensor, resize_short_side, sample_indices  # noqa: E402
from videomask.patches import ClipGeometry  # noqa: E402
from videomask.video import available_backends, open_video  # noqa: E402

NUM_FRAMES, STRIDE, SIZE = 16, 4, 112


def resize(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, h, w] with the shorter side SIZE (videomask's transform)."""
    video = frames_to_tensor(frames)  # [T, 3, H, W]
    geometry = ClipGeometry.identity(video.shape[-2], video.shape[-1])
    out, _ = resize_short_side(video, geometry, SIZE)  # [T, 3, h, w]
    return out


def indices_for(num_video_frames: int) -> list[int]:
    return sample_indices(num_video_frames, NUM_FRAMES, STRIDE, mode="center", short="loop")


def load_videomask(path: Path, backend: str, threads: int) -> torch.Tensor:
    with open_video(path, backend, threads=threads) as reader:
        frames = reader.read(indices_for(reader.meta.num_frames))  # [16, H, W, 3]
    return resize(frames)


def load_decord(path: Path, threads: int) -> torch.Tensor:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
    frames = reader.get_batch(indices_for(len(reader))).asnumpy()  # [16, H, W, 3]
    del reader
    return resize(frames)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def part1(clips: list[Path], repeats: int, threads: int) -> list[str]:
    backends = [b for b in ("pyav", "opencv", "decord") if b in available_backends()]
    have_decord = "decord" in available_backends()
    loaders = {f"videomask[{b}]": (lambda p, b=b: load_videomask(p, b, threads)) for b in backends}
    ref_name = "decord get_batch (reference)"
    if have_decord:
        loaders[ref_name] = lambda p: load_decord(p, threads)
        # same frames? (videomask's decord backend must agree with the reference exactly)
        for path in clips:
            a, b = load_videomask(path, "decord", threads), load_decord(path, threads)
            assert torch.equal(a, b), f"{path}: videomask[decord] and decord differ"
    for loader in loaders.values():  # warm-up (imports, file cache)
        loader(clips[0])
    # per repeat and loader: total wall / CPU seconds over all clips. Loaders take turns on each clip, so a
    # change in machine load hits all of them alike; CPU time is the steadier figure on a shared machine.
    wall = {name: [0.0] * repeats for name in loaders}
    cpu = {name: [0.0] * repeats for name in loaders}
    for r in range(repeats):
        for path in clips:
            for name, loader in loaders.items():
                w, c = _timed(lambda: loader(path))
                wall[name][r] += w
                cpu[name][r] += c
    n = len(clips)
    lines = [f"Part 1: {n} clips, {NUM_FRAMES} frames at stride {STRIDE}, resize shorter side to {SIZE}, "
             f"threads={threads}, {repeats} repeats; clips/s = median over repeats (min-max); ratio = median "
             f"over repeats of (loader clips/s / decord clips/s) in the same repeat", ""]
    lines.append("| loader | clips/s (CPU time) | range | ratio vs decord (CPU) | clips/s (wall) | ratio vs decord (wall) |")
    lines.append("|---|---|---|---|---|---|")
    for name in loaders:
        cps = [n / t for t in cpu[name]]
        wps = [n / t for t in wall[name]]
        if have_decord:
            r_cpu = statistics.median(cpu[ref_name][r] / cpu[name][r] for r in range(repeats))
            r_wall = statistics.median(wall[ref_name][r] / wall[name][r] for r in range(repeats))
            ratios = f"{r_cpu:.2f}", f"{r_wall:.2f}"
        else:
            ratios = "n/a", "n/a"
        lines.append(f"| {name} | {statistics.median(cps):.1f} | {min(cps):.1f}-{max(cps):.1f} | {ratios[0]} | "
                     f"{statistics.median(wps):.1f} | {ratios[1]} |")
    return lines


def read_seek(path: Path, indices: list[int], threads: int) -> tuple[np.ndarray, int]:
    with open_video(path, "pyav", threads=threads) as reader:
        return reader.read(indices), reader.num_seeks


def read_sequential(path: Path, indices: list[int], threads: int) -> np.ndarray:
    with open_video(path, "pyav", threads=threads) as reader:
        reader.seek_ok = False  # force the sequential fallback path
        return reader.read(indices)


def read_plain(path: Path, indices: list[int], threads: int) -> np.ndarray:
    """A plain PyAV decode from the start up to the last wanted frame."""
    wanted, got = set(indices), {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                got[k] = frame.to_ndarray(format="rgb24")
            if k >= max(indices):
                break
    return np.stack([got[i] for i in indices])


def part2(lengths: list[int], repeats: int, threads: int, size: tuple[int, int]) -> list[str]:
    height, width = size
    lines = [f"Part 2: one {NUM_FRAMES} x stride-{STRIDE} centre clip from index clips of growing length "
             f"({width}x{height} H.264, keyframe every 32 frames, B-frames), threads={threads}; "
             f"median of {repeats} repeats, CPU ms (wall ms)", ""]
    lines.append("| frames | videomask seek | seeks | videomask sequential | plain PyAV from start |")
    lines.append("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in lengths:
            path = make_index_clip(Path(tmp) / f"len{n}.mp4", n, height, width, gop=32, bframes=2)
            indices = indices_for(n)
            runs = {
                "seek": lambda: read_seek(path, indices, threads)[0],
                "sequential": lambda: read_sequential(path, indices, threads),
                "plain": lambda: read_plain(path, indices, threads),
            }
            for name, run in runs.items():  # every path returns the right frames
                assert [decode_index(f) for f in run()] == indices, name
            seeks = read_seek(path, indices, threads)[1]
            wall = {name: [] for name in runs}
            cpu = {name: [] for name in runs}
            for _ in range(repeats):
                for name, run in runs.items():
                    w, c = _timed(run)
                    wall[name].append(1000 * w)
                    cpu[name].append(1000 * c)
            cell = {name: f"{statistics.median(cpu[name]):.0f} ({statistics.median(wall[name]):.0f})" for name in runs}
            lines.append(f"| {n} | {cell['seek']} | {seeks} | {cell['sequential']} | {cell['plain']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="videomask decoding benchmark")
    parser.add_argument("--footage", type=Path, default=ROOT / "assets", help="folder of clips (recursive *.mp4)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="decoder threads on both sides")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 200, 400, 800, 1600])
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    clips = sorted(args.footage.rglob("*.mp4"))
    if not clips:
        raise SystemExit(f"no .mp4 clips under {args.footage}")
    print(f"av {av.__version__}, torch {torch.__version__}, backends {available_backends()}")
    for line in part1(clips, args.repeats, args.threads):
        print(line, flush=True)
    print()
    for line in part2(args.lengths, args.repeats, args.threads, tuple(args.size)):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
