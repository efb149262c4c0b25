"""A conformance corpus: small index clips (frame ``k`` encodes ``k``, see :mod:`clips`) in many codecs and
containers, made with PyAV's encoders. Used by ``tests/test_conformance.py`` and ``benchmarks/decode.py``.

    files = make_corpus(folder)            # {name: path}; entries whose encoder is missing are left out
    missing = missing_encoders()           # {name: encoder} of the entries that could not be made here
"""

from __future__ import annotations

import os
from pathlib import Path

import av
from clips import make_index_clip

FRAMES = 36  # frames per corpus clip (three GOPs of 12)
HEIGHT, WIDTH = 48, 64

# name -> make_index_clip options (size and frame count default to the above)
CORPUS: dict[str, dict] = {
    "mpeg1_ps.mpg": dict(codec="mpeg1video", gop=12, bframes=2),
    "mpeg2_ps.mpg": dict(codec="mpeg2video", gop=12, bframes=2),
    "mpeg1_ts.ts": dict(codec="mpeg1video", gop=12, bframes=2),
    "mpeg2_ts.ts": dict(codec="mpeg2video", gop=12, bframes=2),
    "h264_ts.ts": dict(codec="libx264", gop=12, bframes=2),
    "theora.ogv": dict(codec="libtheora", gop=12),
    "vp8.webm": dict(codec="libvpx", gop=12),
    "vp9.webm": dict(codec="libvpx-vp9", gop=12),
    "mjpeg.mov": dict(codec="mjpeg", pix_fmt="yuvj420p"),
    "mjpeg.avi": dict(codec="mjpeg", pix_fmt="yuvj422p"),
    "mpeg4_bframes.avi": dict(codec="mpeg4", gop=12, bframes=2),
    "h264_bframes.mp4": dict(codec="libx264", gop=12, bframes=3),
    "h264_opengop.mp4": dict(codec="libx264", gop=12, bframes=3, options={"x264-params": "open-gop=1"}),
    "hevc.mkv": dict(
        codec="libx265", gop=12, options={"x265-params": "log-level=none:keyint=12:min-keyint=12:bframes=2"}
    ),
    "vfr.mkv": dict(codec="libx264", gop=12, pts=[k * 40 + (k % 3) * 11 for k in range(FRAMES)]),
    "rot90.mp4": dict(codec="libx264", gop=12, rotation=90),
    "rot180.mp4": dict(codec="libx264", gop=12, rotation=180),
    "rot270.mov": dict(codec="libx264", gop=12, rotation=270),
    "odd_yuv444p.mkv": dict(codec="libx264", pix_fmt="yuv444p", height=33, width=47, gop=12),
    "odd_ffv1.mkv": dict(codec="ffv1", pix_fmt="yuv420p", height=35, width=51),
    "gray_ffv1.mkv": dict(codec="ffv1", pix_fmt="gray"),
    "yuv444p.mp4": dict(codec="libx264", pix_fmt="yuv444p", gop=12),
    "h264_10bit.mkv": dict(codec="libx264", pix_fmt="yuv420p10le", gop=12),
}


def _encoder(options: dict) -> str:
    return options.get("codec", "libx264")


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - PyAV raises different errors for unknown codecs across versions
        return False
    return True


def missing_encoders() -> dict[str, str]:
    """``{corpus name: encoder}`` for the entries this PyAV build cannot encode."""
    return {name: _encoder(o) for name, o in CORPUS.items() if not _has_encoder(_encoder(o))}


def make_corpus(folder: str | os.PathLike, names: list[str] | None = None) -> dict[str, Path]:
    """Write the corpus (or the entries ``names``) into ``folder``; returns ``{name: path}`` of those made."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    missing = missing_encoders()
    out: dict[str, Path] = {}
    for name in names or list(CORPUS):
        if name in missing:
            continue
        options = dict(CORPUS[name])
        height, width = options.pop("height", HEIGHT), options.pop("width", WIDTH)
        out[name] = make_index_clip(folder / name, FRAMES, height, width, **options)
    return out
