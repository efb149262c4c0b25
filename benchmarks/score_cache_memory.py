"""Peak memory of a process that opens a score cache and looks clips up, as the number of cached videos grows.

Generates caches of N videos directly (random float16 maps of ``--slots`` x 14 x 14, no decoding) in three
layouts and, for each, runs a fresh process that opens the cache and looks up ``--batches`` loader batches
of 8 random clips (random videos, crops and flips), reporting its peak RSS (``VmHWM`` of
/proc/self/status: ``ru_maxrss`` would carry the parent's peak over the exec), its RSS after the imports,
the open time and the look-up time per batch:

* ``v1 eager``: the one-file cache read as videomask read it before (every map loaded as float32);
* ``v1 lazy``: the same file opened by today's ``ScoreCache.load`` (index in memory, maps read per look-up);
* ``folder``: today's layout (one file per video, nothing per video held in memory).

    python benchmarks/score_cache_memory.py --videos 1000 100000 --work /tmp/scm
    (the table and how to read it: benchmarks/results/score_cache_memory.md)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from videomask.difference import ScoreCache
from videomask.difference.cache import CACHE_FORMAT, _write_meta, write_video_scores
from videomask.io.per_video import META_FILE
from videomask.patches import Grid

META = {"scorer": "distance", "stats": "generated", "size": 224, "tubelet": [2, 16, 16]}
SRC = (240, 320)


def _entry(i: int, slots: int) -> tuple[np.ndarray, torch.Tensor, tuple[int, int]]:
    g = torch.Generator().manual_seed(i)
    return np.arange(0, 8 * slots, 8, dtype=np.int64), torch.rand(slots, 14, 14, generator=g), SRC


def generate(work: Path, n: int, slots: int) -> tuple[Path, Path]:
    """The v1 file and the folder of ``n`` generated videos under ``work`` (kept between runs)."""
    v1, folder = work / f"v1_{n}.safetensors", work / f"folder_{n}"
    if not v1.is_file():
        tensors, index = {}, []
        for i in range(n):
            frames, maps, src = _entry(i, slots)
            tensors[f"{i}.frames"], tensors[f"{i}.maps"] = torch.as_tensor(frames), maps.half()
            index.append({"video": f"video{i:06d}.mp4", "src": list(src)})
        full = {**META, "format": CACHE_FORMAT, "version": 1, "index": index}
        save_file(tensors, str(v1), metadata={"videomask": json.dumps(full)})
        del tensors
    if not (folder / META_FILE).is_file():
        for i in range(n):
            write_video_scores(folder, f"video{i:06d}.mp4", _entry(i, slots))
        _write_meta(folder, META, n, [])
    return v1, folder


def load_v1_eager(path: Path) -> ScoreCache:
    """The one-file cache read as ``ScoreCache.load`` read it before: every map into memory as float32."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["videomask"])
        videos = {}
        for i, entry in enumerate(meta.pop("index")):
            videos[entry["video"]] = (f.get_tensor(f"{i}.frames").numpy(), f.get_tensor(f"{i}.maps").float(), SRC)
    return ScoreCache(videos, meta, str(path))


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (kB) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def measure(layout: str, path: str, n: int, batches: int) -> dict:
    """In this (fresh) process: open the cache, look ``batches`` batches up; peak RSS and times."""
    rss_before = _status_mb("VmRSS")
    start = time.perf_counter()
    cache = load_v1_eager(Path(path)) if layout == "v1 eager" else ScoreCache.load(path)
    opened = time.perf_counter() - start
    rng = np.random.default_rng(0)
    grid, tubelet = Grid(8, 14, 14), (2, 16, 16)
    start = time.perf_counter()
    for _ in range(batches):
        ids = [f"video{i:06d}.mp4" for i in rng.integers(0, n, 8)]
        first = rng.integers(0, 40, 8)
        frames = torch.as_tensor(first[:, None] + 4 * np.arange(16)[None])  # [8, 16]
        geometry = torch.tensor([[240, 320, 0, 40, 240, 240, 224, 224, float(rng.random() < 0.5)]] * 8)
        cache.lookup({"video_id": ids, "frame_indices": frames, "geometry": geometry.double()}, grid, tubelet)
    looked = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    return {"rss_import_mb": rss_before, "peak_rss_mb": peak, "open_s": opened, "lookup_ms": 1000 * looked / batches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--slots", type=int, default=8, help="cached time slots per video (maps of 14 x 14)")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--work", default="/tmp/score_cache_memory", help="where the generated caches go")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    parser.add_argument("--child", nargs=3, metavar=("LAYOUT", "PATH", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        layout, path, n = args.child
        print(json.dumps(measure(layout, path, int(n), args.batches)))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.videos:
        start = time.perf_counter()
        v1, folder = generate(work, n, args.slots)
        print(f"{n} videos generated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        for layout, path in (("v1 eager", v1), ("v1 lazy", v1), ("folder", folder)):
            cmd = [sys.executable, __file__, "--batches", str(args.batches), "--child", layout, str(path), str(n)]
            result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            rows.append((n, layout, result))
            print(n, layout, result, file=sys.stderr)
    lines = [
        "| videos | layout | peak RSS (MB) | RSS after imports (MB) | open (s) | look-up per batch of 8 (ms) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n, layout, r in rows:
        lines.append(
            f"| {n} | {layout} | {r['peak_rss_mb']:.0f} | {r['rss_import_mb']:.0f} | {r['open_s']:.2f} "
            f"| {r['lookup_ms']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
