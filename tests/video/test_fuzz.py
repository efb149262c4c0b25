"""Mutation fuzzing: truncated and byte-flipped copies of valid files (seeded). Opening and reading them
with every backend never crashes the process (the cases run in a child process), never hangs past the
time-out, never returns a frame of the wrong shape, and raises only ``VideoDecodeError``; a dataset over
them skips and counts. 20 cases in the default run, 300 under ``-m slow``.

The child is this file run as a script: ``python tests/video/test_fuzz.py FOLDER RESULT.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parents[1]  # tests/
BASES = [
    "h264_bframes.mp4",
    "vfr.mkv",
    "vp9.webm",
    "mpeg4_bframes.avi",
    "mpeg2_ts.ts",
    "mpeg1_ps.mpg",
    "mjpeg.mov",
    "hevc.mkv",
    "mpeg4_packed.avi",  # packed B-frames: PyAV counts frames after a seek there
]
OPEN_TIMEOUT, READ_TIMEOUT = 10.0, 5.0  # seconds per file and backend (the slack below covers the rest)


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One seeded mutation of a file's bytes: truncation, flipped bytes, a noise or zero chunk."""
    buf = bytearray(data)
    n = len(buf)
    kind = int(rng.integers(0, 5))
    if kind == 0:
        cut = int(rng.uniform(0.02, 0.98) * n)
        return bytes(buf[:cut]), f"truncate to {cut}/{n}"
    if kind == 1:
        count = int(rng.integers(1, 65))
        for pos in rng.integers(0, n, count):
            buf[int(pos)] ^= int(rng.integers(1, 256))
        return bytes(buf), f"flip {count} bytes"
    if kind == 2:
        count = int(rng.integers(1, 9))
        for pos in rng.integers(0, min(n, 1024), count):  # the header: container and codec parameters
            buf[int(pos)] ^= int(rng.integers(1, 256))
        return bytes(buf), f"flip {count} header bytes"
    start = int(rng.integers(0, n))
    length = int(rng.integers(1, max(2, n // 8)))
    end = min(n, start + length)
    fill = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes() if kind == 3 else bytes(end - start)
    buf[start:end] = fill
    return bytes(buf), f"{'noise' if kind == 3 else 'zero'} chunk {start}:{end}"


def make_cases(folder: Path, count: int, seed: int) -> dict[str, str]:
    """``count`` mutated files in ``folder``; returns ``{file name: mutation}``."""
    sys.path.insert(0, str(HERE))
    from corpus import make_corpus, missing_encoders

    bases = make_corpus(folder / "_bases", [b for b in BASES if b not in missing_encoders()])
    originals = {name: path.read_bytes() for name, path in bases.items()}
    names = sorted(originals)
    rng = np.random.default_rng(seed)
    cases = {}
    for k in range(count):
        base = names[int(rng.integers(0, len(names)))]
        data, what = mutate(originals[base], rng)
        name = f"case{k:03d}_{base}"
        (folder / name).write_bytes(data)
        cases[name] = f"{base}: {what}"
    return cases


def child(folder: Path, out: Path) -> None:
    """Open and read every case with every backend; then a dataset over them. Results as JSON."""
    from videomask.data import VideoDataset, VideoItem, collate_clips
    from videomask.errors import VideoDecodeError
    from videomask.video import available_backends, call_with_timeout, open_video

    results = []
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for path in files:
        for backend in available_backends():
            start = time.monotonic()
            row = {"file": path.name, "backend": backend, "outcome": "", "detail": ""}
            try:
                reader = call_with_timeout(lambda p=path, b=backend: open_video(p, b), OPEN_TIMEOUT, "open")
                n, h, w = reader.meta.num_frames, reader.meta.height, reader.meta.width
                indices = sorted({0, n // 2, n - 1, int(np.random.default_rng(len(path.name)).integers(0, n))})
                try:
                    frames = call_with_timeout(lambda r=reader, i=indices: r.read(i), READ_TIMEOUT, "read")
                except VideoDecodeError as err:
                    if "timed out" not in str(err):  # a timed-out read still uses the reader: leave it be
                        reader.close()
                    raise
                reader.close()
                if frames.shape != (len(indices), h, w, 3) or frames.dtype != np.uint8:
                    row["outcome"], row["detail"] = "bad-shape", f"{frames.shape} {frames.dtype}, meta {h}x{w}"
                else:
                    row["outcome"] = "read"
            except VideoDecodeError as err:
                row["outcome"], row["detail"] = "error", str(err)
            except Exception as err:  # noqa: BLE001 - recorded, the test fails on it
                row["outcome"], row["detail"] = "other-exception", f"{type(err).__name__}: {err}"
            row["seconds"] = time.monotonic() - start
            results.append(row)
    # a dataset of the mutated files plus two good ones: every item is a clip of the right shape
    good = sorted((folder / "_bases").iterdir())[:2]
    items = [VideoItem(str(p), p.name) for p in files] + [VideoItem(str(p), "good/" + p.name) for p in good]
    ds = VideoDataset(
        items,
        num_frames=4,
        sampling_rate=2,
        size=32,
        train=True,
        seed=1,
        timeout=OPEN_TIMEOUT,
        skip_log=folder / "skipped.tsv",
    )
    shapes, ids = set(), []
    for start in range(0, len(ds), 4):
        batch = collate_clips([ds[i] for i in range(start, min(len(ds), start + 4))])
        shapes.add(tuple(batch["video"].shape[1:]))
        ids += batch["video_id"]
    out.write_text(
        json.dumps(
            {
                "results": results,
                "dataset": {
                    "items": len(ids),
                    "ids": ids,
                    "shapes": sorted(shapes),
                    "skipped": ds.skipped,
                    "skipped_videos": ds.skipped_videos(),
                    "num_videos": len(ds),
                },
            }
        )
    )


def run_fuzz(tmp_path: Path, count: int, seed: int) -> None:
    cases = make_cases(tmp_path, count, seed)
    out = tmp_path / "result.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    limit = 120 + count * 3 * (OPEN_TIMEOUT + READ_TIMEOUT)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(tmp_path), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=limit,
    )
    # the process survived every case (no segfault, no abort)
    assert proc.returncode == 0, f"child exit code {proc.returncode}: {proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    rows = report["results"]
    assert len(rows) >= count
    problems = [r for r in rows if r["outcome"] not in ("read", "error")]
    assert not problems, "\n".join(
        f"{r['file']} ({cases.get(r['file'])}) [{r['backend']}]: {r['outcome']} {r['detail']}" for r in problems
    )
    slow = [r for r in rows if r["seconds"] > OPEN_TIMEOUT + READ_TIMEOUT + 2.0]
    assert not slow, f"past the time-out: {slow}"
    assert all("\n" not in r["detail"] for r in rows)  # one-line errors
    outcomes = {r["outcome"] for r in rows}
    assert outcomes == {"read", "error"}, f"the mutations should give both readable and broken files: {outcomes}"
    # the dataset: an item per video, each a clip of the right shape, skipped files counted once
    ds = report["dataset"]
    assert ds["items"] == ds["num_videos"] == count + 2
    assert ds["shapes"] == [[3, 4, 32, 32]]
    skipped_ids = [video_id for video_id, _ in ds["skipped_videos"]]
    assert ds["skipped"] == len(skipped_ids) == len(set(skipped_ids))
    assert not any(video_id.startswith("good/") for video_id in skipped_ids)
    broken_everywhere = {
        r["file"]
        for r in rows
        if r["backend"] == "pyav"
        and r["outcome"] == "error"
        and ("cannot open" in r["detail"] or "no such" in r["detail"] or "empty file" in r["detail"])
    }
    assert broken_everywhere <= set(skipped_ids)  # files PyAV cannot open are skipped and counted
    assert not (broken_everywhere & set(ds["ids"]))


def test_fuzz_default(tmp_path):
    run_fuzz(tmp_path, 20, seed=0)


@pytest.mark.slow
def test_fuzz_many(tmp_path):
    run_fuzz(tmp_path, 300, seed=1)


if __name__ == "__main__":
    child(Path(sys.argv[1]), Path(sys.argv[2]))
