"""Opening a video: :func:`open_video` with a backend by name (:data:`BACKENDS`, :data:`AUTO_ORDER`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from videomask.errors import VideoDecodeError
from videomask.video import storage
from videomask.video.decord_reader import DecordReader
from videomask.video.meta import FrameIndex, VideoMeta, open_probe
from videomask.video.opencv import OpenCVReader
from videomask.video.pyav import PyAVReader
from videomask.video.reader import VideoReader
from videomask.video.verify import known_verdict


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS: dict[str, Callable[..., VideoReader]] = {
    "pyav": PyAVReader,
    "decord": DecordReader,
    "opencv": OpenCVReader,
}


# ``auto``'s order: fastest first, as measured by benchmarks/decode.py (benchmarks/results/decode.md, Part 1:
# CPU time of a 16-frame clip read). PyAV needs no per-file check (it is the reference).
AUTO_ORDER = ("pyav", "opencv", "decord")


def available_backends() -> list[str]:
    """Backends that can be used here (decord only when installed)."""
    return [name for name in BACKENDS if name != "decord" or _decord_available()]


def open_video(path: str | os.PathLike, backend: str = "pyav", *, verify: bool = True, **options) -> VideoReader:
    """Open ``path`` for frame-exact reading. ``backend``: ``pyav`` (default), ``decord``, ``opencv`` or
    ``auto`` (the first available of :data:`AUTO_ORDER`, fastest first as measured in
    benchmarks/results/decode.md: PyAV, which is always installed).
    ``options`` go to the backend: ``threads=`` (decoder threads, 0 = the library's choice) for all three.

    The non-default backends are checked against PyAV per file (``verify=True``): frame 0 at open (PyAV
    has decoded it already) and, on the first read, the requested frame cheapest for PyAV to reach; a
    frame that differs beyond the colour-conversion tolerance (see :func:`frames_differ`), a size or
    frame-count disagreement, or a backend that cannot open or decode the file hands the file over to
    PyAV (one log line, ``reader.fallback`` says why). The verdict is remembered per file (device, inode,
    size, mtime) in this process, so later opens skip the checks. Files PyAV cannot read raise
    :class:`~videomask.errors.VideoDecodeError` with every backend.

    ``path`` may be a URL (``s3://bucket/clip.mp4``, any fsspec protocol; see :mod:`videomask.video.storage`):
    PyAV decodes it from a file object (``auto`` picks PyAV); the other backends read local files only.
    """
    remote = storage.is_remote(os.fspath(path))
    if backend == "auto":
        backend = "pyav" if remote else next(name for name in AUTO_ORDER if name in available_backends())
    if backend not in BACKENDS:
        raise VideoDecodeError(f"unknown video backend {backend!r} (choose from {', '.join(BACKENDS)}, auto)")
    if remote:
        if backend != "pyav":
            raise VideoDecodeError(f"{path}: the {backend} backend reads local files only; use pyav for URLs")
        return PyAVReader(os.fspath(path), **options)
    path = Path(storage.local_path(path))
    if backend == "pyav":
        return PyAVReader(path, **options)
    known, reason = known_verdict(os.fspath(path), backend)
    if known and reason is not None:  # this file was handed over before: PyAV straight away
        reader: VideoReader = PyAVReader(path, **options)
        reader.requested_backend, reader.fallback = backend, reason
        return reader
    reader = BACKENDS[backend](path, verify=verify, **options)
    if reader._delegate is not None and reader.verified is False and reader._pyav is reader._delegate:
        handed, reader._delegate, reader._pyav = reader._delegate, None, None  # handed over at open
        reader.close()
        return handed
    return reader


def open_bytes(
    name: str, data: bytes, known: tuple[VideoMeta, FrameIndex] | None = None, *, threads: int = 0
) -> VideoReader:
    """Open the encoded video ``data`` for frame-exact reading with PyAV (``name`` names it in messages).

    ``known``: its ``(meta, frame index)`` from an earlier :func:`~videomask.video.meta.open_probe` (as stored
    in shards), so opening demuxes nothing; the frames are those a read of the same bytes as a file gives.
    """
    return PyAVReader(name, threads=threads, data=data, found=open_probe(name, threads, data, known))
