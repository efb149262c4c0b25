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
import logging
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
from corpus import make_corpus  # noqa: E402

from videomask.data import VIDEO_EXTENSIONS, frames_to_tensor, prepare_process, resize_short_side, sample_indices  # noqa: E402
from videomask.patches import ClipGeometry  # noqa: E402
from videomask.video import (  # noqa: E402
    available_backends,
    forget_verdicts,
    frames_differ,
    open_video,
    probe,
)
from videomask.video.convert import rotate  # noqa: E402

NUM_FRAMES, STRIDE, SIZE = 16, 4, 112


def resize(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, h, w] with the shorter side SIZE (videomask's transform)."""
    video = frames_to_tensor(frames)  # [T, 3, H, W]
    geometry = ClipGeometry.identity(video.shape[-2], video.shape[-1])
    out, _ = resize_short_side(video, geometry, SIZE)  # [T, 3, h, w]
    return out


def indices_for(num_video_frames: int) -> list[int]:
    return sample_indices(num_video_frames, NUM_FRAMES, STRIDE, mode="center", short="loop")


def load_videomask(path: Path, backend: str, threads: int, verify: bool = True) -> np.ndarray:
    with open_video(path, backend, threads=threads, verify=verify) as reader:
        return reader.read(indices_for(reader.meta.num_frames))  # [16, H, W, 3]


def load_decord(path: Path, threads: int) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
    frames = reader.get_batch(indices_for(len(reader))).asnumpy()  # [16, H, W, 3]
    del reader
    return frames


def reference_frames(path: Path) -> tuple[np.ndarray, int]:
    """The sequential reference: plain PyAV, every frame from the start, RGB, upright; returns
    (the clip's frames [16, H, W, 3], the video's frame count)."""
    rotation = probe(path).rotation
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.flags |= av.codec.context.Flags.unaligned  # exact crop (see videomask.video)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    wanted = indices_for(len(frames))
    return np.stack([rotate(frames[i], rotation) for i in wanted]), len(frames)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def verdict(fn, path: Path, reference: np.ndarray) -> str:
    """``exact`` (equal to the reference), ``close`` (within the colour-conversion tolerance of
    ``videomask.video.frames_differ``), ``wrong`` (other pixels or shape) or ``refused`` (an error)."""
    try:
        got = fn(path)
    except Exception as err:  # noqa: BLE001 - a refusal is a result here
        return f"refused ({type(err).__name__})"
    if got.shape == reference.shape and np.array_equal(got, reference):
        return "exact"
    why = frames_differ(got, reference)
    if why is None:
        return "close"
    return "wrong" + (
        f" ({np.abs(got.astype(np.int16) - reference).mean():.0f}/255)" if got.shape == reference.shape else " (shape)"
    )


def agreement(clips: list[Path], loaders: dict, root: Path) -> tuple[list[str], dict[str, list[Path]]]:
    """Every loader against the sequential reference on every clip: a table, and the clips each reads."""
    names = list(loaders)
    lines = [
        "Agreement with the sequential reference (plain PyAV decode from the start), per clip: exact = "
        "equal, close = within the colour-conversion tolerance, wrong = other pixels, refused = error; "
        "'-> pyav' = videomask handed the file over to PyAV",
        "",
    ]
    lines.append("| clip | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    readable: dict[str, list[Path]] = {name: [] for name in names}
    totals = {name: {"exact": 0, "close": 0, "wrong": 0, "refused": 0} for name in names}
    for path in clips:
        reference, _ = reference_frames(path)
        cells = []
        for name in names:
            forget_verdicts()
            cell = verdict(loaders[name], path, reference)
            totals[name][cell.split()[0]] += 1
            if name.startswith("videomask[") and name != "videomask[pyav]" and not cell.startswith("refused"):
                with open_video(path, name[10:-1]) as reader:  # the verdict of the read above is remembered
                    if reader.fallback is not None:
                        cell += " -> pyav"
            if not cell.startswith(("refused", "wrong")):
                readable[name].append(path)
            cells.append(cell)
        try:
            label = path.relative_to(root)
        except ValueError:
            label = path.name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| **total** (exact/close/wrong/refused) | "
        + " | ".join("/".join(str(totals[n][k]) for k in ("exact", "close", "wrong", "refused")) for n in names)
        + " |"
    )
    forget_verdicts()
    return lines, readable


def part1(clips: list[Path], repeats: int, threads: int, root: Path) -> list[str]:
    backends = [b for b in ("pyav", "opencv", "decord") if b in available_backends()]
    have_decord = "decord" in available_backends()
    loaders = {f"videomask[{b}]": (lambda p, b=b: load_videomask(p, b, threads)) for b in backends}
    ref_name = "decord get_batch (reference)"
    if have_decord:
        loaders[ref_name] = lambda p: load_decord(p, threads)
    lines, readable = agreement(clips, loaders, root)
    lines.append("")
    # time on the clips every loader reads without an error (refusals and wrong frames are not timed)
    timed = [p for p in clips if all(p in readable[name] or name == ref_name for name in loaders)]
    if have_decord:
        timed = [p for p in timed if p in readable[ref_name]] or timed
    if not timed:
        return lines + ["no clip that every loader reads: no timing"]
    for loader in loaders.values():  # warm-up (imports, file cache)
        try:
            loader(timed[0])
        except Exception:  # noqa: BLE001
            pass
    # per repeat and loader: total wall / CPU seconds over all clips. Loaders take turns on each clip, so a
    # change in machine load hits all of them alike; CPU time is the steadier figure on a shared machine.
    wall = {name: [0.0] * repeats for name in loaders}
    cpu = {name: [0.0] * repeats for name in loaders}
    for r in range(repeats):
        for path in timed:
            for name, loader in loaders.items():
                w, c = _timed(lambda ld=loader, pa=path: resize(ld(pa)))
                wall[name][r] += w
                cpu[name][r] += c
    n = len(timed)
    lines += [
        f"Part 1: {n} clips (those every loader reads), {NUM_FRAMES} frames at stride {STRIDE}, resize "
        f"shorter side to {SIZE}, threads={threads}, {repeats} repeats; clips/s = median over repeats "
        f"(min-max); ratio = median over repeats of (loader clips/s / decord clips/s) in the same repeat; "
        f"per-file verdicts are remembered, so after the first repeat no check is repeated",
        "",
    ]
    lines.append(
        "| loader | clips/s (CPU time) | range | ratio vs decord (CPU) | clips/s (wall) | ratio vs decord (wall) |"
    )
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
        lines.append(
            f"| {name} | {statistics.median(cps):.1f} | {min(cps):.1f}-{max(cps):.1f} | {ratios[0]} | "
            f"{statistics.median(wps):.1f} | {ratios[1]} |"
        )
    return lines


AMORTISE = 4  # opens of one file in one process, e.g. 4 epochs in a persistent DataLoader worker


def verification_cost(clips: list[Path], repeats: int, threads: int) -> list[str]:
    """CPU time of one clip read (open + 16 frames) with the per-file check done (verdict forgotten before
    each read), without it (``verify=False``) and with the verdict remembered; medians, per backend."""
    lines = [
        "Part 3: cost of the per-file verification: one clip read (open, 16 frames, no resize) per clip, "
        f"CPU ms summed over the {len(clips)} clips; median of {repeats} repeats; the same repeat's ratio; "
        f"'over {AMORTISE} opens' = (first open + {AMORTISE - 1} remembered) / ({AMORTISE} unverified), e.g. one "
        f"clip read per epoch for {AMORTISE} epochs in a persistent DataLoader worker (a VideoDataset item opens "
        "its video once and reads all its clips in one read)",
        "",
    ]
    lines.append(
        "| backend | unverified (verify=False) | first open (checks run) | verdict remembered | "
        f"first open / unverified | remembered / unverified | over {AMORTISE} opens / unverified |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for backend in [b for b in ("opencv", "decord") if b in available_backends()]:
        ok = []
        for p in clips:
            try:
                with open_video(p, backend) as reader:
                    reader.read([0])
                    if reader.fallback is None:
                        ok.append(p)
            except Exception:  # noqa: BLE001
                pass
        forget_verdicts()
        if not ok:
            continue
        modes = {"plain": [], "first": [], "known": []}
        for _ in range(repeats):
            totals = dict.fromkeys(modes, 0.0)
            for p in ok:
                totals["plain"] += _timed(lambda p=p, b=backend: load_videomask(p, b, threads, verify=False))[1]
                forget_verdicts()
                totals["first"] += _timed(lambda p=p, b=backend: load_videomask(p, b, threads))[1]
                totals["known"] += _timed(lambda p=p, b=backend: load_videomask(p, b, threads))[1]
            for k in modes:
                modes[k].append(totals[k])
        forget_verdicts()
        med = {k: 1000 * statistics.median(v) for k, v in modes.items()}
        r_first = statistics.median(f / u for f, u in zip(modes["first"], modes["plain"]))
        r_known = statistics.median(k / u for k, u in zip(modes["known"], modes["plain"]))
        r_amortised = statistics.median(
            (f + (AMORTISE - 1) * k) / (AMORTISE * u) for f, k, u in zip(modes["first"], modes["known"], modes["plain"])
        )
        lines.append(
            f"| {backend} ({len(ok)} clips) | {med['plain']:.0f} | {med['first']:.0f} | {med['known']:.0f} | "
            f"{r_first:.3f} | {r_known:.3f} | {r_amortised:.3f} |"
        )
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
        stream.codec_context.flags |= av.codec.context.Flags.unaligned
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                got[k] = frame.to_ndarray(format="rgb24")
            if k >= max(indices):
                break
    return np.stack([got[i] for i in indices])


def part2(lengths: list[int], repeats: int, threads: int, size: tuple[int, int]) -> list[str]:
    height, width = size
    lines = [
        f"Part 2: one {NUM_FRAMES} x stride-{STRIDE} centre clip from index clips of growing length "
        f"({width}x{height} H.264, keyframe every 32 frames, B-frames), threads={threads}; "
        f"median of {repeats} repeats, CPU ms (wall ms)",
        "",
    ]
    lines.append("| frames | videomask seek | seeks | videomask sequential | plain PyAV from start |")
    lines.append("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in lengths:
            path = make_index_clip(Path(tmp) / f"len{n}.mp4", n, height, width, gop=32, bframes=2)
            indices = indices_for(n)
            runs = {
                "seek": lambda path=path, indices=indices: read_seek(path, indices, threads)[0],
                "sequential": lambda path=path, indices=indices: read_sequential(path, indices, threads),
                "plain": lambda path=path, indices=indices: read_plain(path, indices, threads),
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


def quiet_logging() -> None:
    """Warnings to stderr, videomask.video's hand-over lines left out (the tables report them)."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("videomask.video").setLevel(logging.ERROR)


def find_videos(folder: Path, corpus_dir: Path | None = None) -> list[Path]:
    """The videos under ``folder`` (recursive), then the conformance corpus written to ``corpus_dir`` if given."""
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    if corpus_dir is not None:
        videos += sorted(make_corpus(corpus_dir).values())
    if not videos:
        raise SystemExit(f"no videos under {folder}")
    return videos


def main(argv: list[str] | None = None) -> int:
    prepare_process()  # as the CLI does: decord's FFmpeg messages go to one log line per file
    parser = argparse.ArgumentParser(description="videomask decoding benchmark")
    parser.add_argument("--footage", type=Path, default=ROOT / "assets", help="folder of clips (recursive)")
    parser.add_argument("--corpus", action="store_true", help="add the generated conformance corpus (tests/corpus.py)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="decoder threads on both sides")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 200, 400, 800, 1600])
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--skip-length", action="store_true", help="leave out part 2")
    parser.add_argument(
        "--verify-lengths",
        type=int,
        nargs="*",
        default=[],
        help="part 3 also on index clips of these lengths (--size, H.264, keyframe every 32 frames, B-frames)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    quiet_logging()
    with tempfile.TemporaryDirectory() as tmp:
        clips = find_videos(args.footage, Path(tmp) / "corpus" if args.corpus else None)
        print(f"av {av.__version__}, torch {torch.__version__}, backends {available_backends()}")
        for line in part1(clips, args.repeats, args.threads, args.footage):
            print(line, flush=True)
        print()
        for line in verification_cost(clips, args.repeats, args.threads):
            print(line, flush=True)
        if args.verify_lengths:
            height, width = args.size
            made = [
                make_index_clip(Path(tmp) / f"verify{n}.mp4", n, height, width, gop=32, bframes=2)
                for n in args.verify_lengths
            ]
            print(f"\nPart 3 on {width}x{height} index clips of {', '.join(map(str, args.verify_lengths))} frames:\n")
            for line in verification_cost(made, args.repeats, args.threads):
                print(line, flush=True)
    if not args.skip_length:
        print()
        for line in part2(args.lengths, args.repeats, args.threads, tuple(args.size)):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
