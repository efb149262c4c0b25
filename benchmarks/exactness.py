"""Random-access exactness: every backend's reads against the full sequential decode, on your own footage.

    python benchmarks/exactness.py --footage DIR            # every video under DIR, every backend
    python benchmarks/exactness.py --corpus --reads 12      # the generated conformance corpus too

``decode.py`` checks one centre clip per file; a wrong frame that only a particular access pattern shows
(a fresh reader's first seek, a seek back, a read that starts on a keyframe) needs more reads than that.
For every file and backend this runs, each read in a fresh reader unless said:
  - a clip of 4 frames at stride 2 from each of up to ``--keyframes`` keyframes (evenly spread), and from
    the frame after each (the first read of a reader seeks there);
  - ``--reads`` random clips (8 frames, stride 1, 2 or 4, from a random start), each followed in the same
    reader by a random sparse read of 6 frames (seeks forward and back from where the clip left the decoder).
The reference is a plain PyAV decode of every frame from the start (RGB, upright, cropped exactly); only the
frames some read asks for are kept. A frame of the default backend (PyAV) counts as wrong unless it is
equal; OpenCV's and decord's, unless within the colour-conversion tolerance (``frames_differ``), whether
the backend kept the file or handed it over to PyAV.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # decode.py: finding the videos, the corpus (tests/corpus.py)

import av  # noqa: E402
from decode import find_videos, quiet_logging  # noqa: E402

from videomask.data import prepare_process  # noqa: E402
from videomask.errors import VideoDecodeError  # noqa: E402
from videomask.video import available_backends, forget_verdicts, frames_differ, open_video  # noqa: E402
from videomask.video.convert import rotate  # noqa: E402
from videomask.video.meta import open_probe  # noqa: E402


def read_plan(path: Path, keyframes: int, reads: int, seed: int) -> tuple[int, list[list[list[int]]]]:
    """The file's frame count and its reads: a list of readers, each a list of reads (frame indices)."""
    found = open_probe(str(path), threads=1)
    found.container.close()
    n, keys = found.index.num_frames, [k for k in found.index.keyframes if k > 0]
    if len(keys) > keyframes:
        keys = sorted({keys[round(i * (len(keys) - 1) / max(1, keyframes - 1))] for i in range(keyframes)})
    plan = [[[min(n - 1, start + 2 * i) for i in range(4)]] for k in keys for start in (k, k + 1) if start < n]
    rng = random.Random(f"{seed}/{path.name}")
    for _ in range(reads):
        start, stride = rng.randrange(n), rng.choice([1, 2, 4])
        clip = [min(n - 1, start + stride * i) for i in range(8)]
        plan.append([clip, sorted(rng.sample(range(n), min(n, 6)))])
    return n, plan


def reference(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Plain PyAV from the start: the frames in ``wanted``, RGB, upright (the index ``open_video`` reports)."""
    with open_video(path, "pyav") as video:
        rotation = video.meta.rotation
    kept = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.flags |= av.codec.context.Flags.unaligned
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                kept[k] = rotate(frame.to_ndarray(format="rgb24"), rotation)
    return kept


def check(path: Path, backend: str, plan: list[list[list[int]]], ref: dict[int, np.ndarray]) -> tuple[int, int, int]:
    """(frames wrong, frames read, readers handed over to PyAV) for one backend on one file."""
    wrong = total = handed = 0
    forget_verdicts()
    for reads in plan:
        with open_video(path, backend) as video:
            for indices in reads:
                got = video.read(indices)
                for i, frame in zip(indices, got):
                    total += 1
                    if i not in ref or frame.shape != ref[i].shape:
                        wrong += 1
                    elif backend == "pyav":
                        wrong += not np.array_equal(frame, ref[i])
                    else:
                        wrong += frames_differ(frame, ref[i]) is not None
            handed += video.fallback is not None
    return wrong, total, handed


def main(argv: list[str] | None = None) -> int:
    prepare_process()  # as the CLI does: decord's FFmpeg messages go to one log line per file
    parser = argparse.ArgumentParser(description="random-access exactness of every backend")
    parser.add_argument("--footage", type=Path, default=ROOT / "assets", help="folder of videos (recursive)")
    parser.add_argument("--corpus", action="store_true", help="add the generated conformance corpus (tests/corpus.py)")
    parser.add_argument("--keyframes", type=int, default=6, help="keyframes to start clips from, per file")
    parser.add_argument("--reads", type=int, default=8, help="random clip + sparse read pairs, per file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quiet_logging()
    backends = [b for b in ("pyav", "opencv", "decord") if b in available_backends()]
    with tempfile.TemporaryDirectory() as tmp:
        files = find_videos(args.footage, Path(tmp) / "corpus" if args.corpus else None)
        print(
            f"av {av.__version__}, backends {backends}; per cell: frames wrong / frames read (readers handed to PyAV)"
        )
        print()
        print("| file | frames | " + " | ".join(backends) + " |")
        print("|---" * (len(backends) + 2) + "|")
        totals = {b: [0, 0] for b in backends}
        for path in files:
            try:
                n, plan = read_plan(path, args.keyframes, args.reads, args.seed)
                ref = reference(path, {i for reads in plan for read in reads for i in read})
            except VideoDecodeError as err:
                print(f"| {path.name} | PyAV cannot read it: {err} |")
                continue
            cells = []
            for backend in backends:
                try:
                    wrong, total, handed = check(path, backend, plan, ref)
                except VideoDecodeError as err:
                    cells.append(f"refused ({str(err).removeprefix(str(path) + ': ')})")
                    continue
                totals[backend][0] += wrong
                totals[backend][1] += total
                cell = f"**{wrong}**" if wrong else "0"
                cells.append(f"{cell} / {total}" + ("" if backend == "pyav" else f" ({handed} -> pyav)"))
            print(f"| {path.name} | {n} | " + " | ".join(cells) + " |", flush=True)
        print("| **total** | | " + " | ".join(f"{w} / {t}" for w, t in totals.values()) + " |")
    forget_verdicts()
    return 0


if __name__ == "__main__":
    sys.exit(main())
