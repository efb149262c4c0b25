"""What a video is: :class:`VideoMeta`, the frame index from a demux pass (no decoding), and the PyAV probe
every reader starts from. ``probe("clip.mp4")`` gives the :class:`VideoMeta` of a file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from videomask.errors import VideoDecodeError
from videomask.video import storage


@dataclass(frozen=True)
class VideoMeta:
    """What a video is: ``height``/``width`` are the displayed size (after ``rotation``, clockwise degrees).

    ``fps`` is the container's average frame rate, else estimated from timestamps, else 0.0 (unknown).
    ``duration`` is in seconds (``num_frames / fps`` when the container does not say).
    """

    num_frames: int
    fps: float
    duration: float
    height: int
    width: int
    rotation: int
    codec: str
    pix_fmt: str


@dataclass
class FrameIndex:
    """Demuxed packet facts in presentation order; ``pts`` is None when timestamps are unusable."""

    num_frames: int
    pts: list[int] | None  # sorted pts of every frame, or None
    keyframes: list[int]  # presentation indices of keyframes (sorted), [] when unknown
    time_base: Fraction
    open_gop: bool = False  # a keyframe is followed (in decode order) by frames shown before it
    sizes: list[int] | None = None  # packet bytes of every frame (presentation order, with ``pts``), or None


def index_to_json(meta: VideoMeta, index: FrameIndex) -> str:
    """``meta`` and ``index`` as one JSON text (stored beside a video's bytes, e.g. in shards)."""
    facts = {
        "meta": dataclasses.asdict(meta),
        "num_frames": index.num_frames,
        "pts": index.pts,
        "keyframes": index.keyframes,
        "time_base": [index.time_base.numerator, index.time_base.denominator],
        "open_gop": index.open_gop,
        "sizes": index.sizes,
    }
    return json.dumps(facts, separators=(",", ":"))


def index_from_json(text: str) -> tuple[VideoMeta, FrameIndex]:
    """The ``(meta, index)`` that :func:`index_to_json` wrote."""
    facts = json.loads(text)
    index = FrameIndex(
        facts["num_frames"],
        facts["pts"],
        facts["keyframes"],
        Fraction(*facts["time_base"]),
        facts["open_gop"],
        facts["sizes"],
    )
    return VideoMeta(**facts["meta"]), index


def decode_error(path: str | os.PathLike, what: str, err: BaseException | None = None) -> VideoDecodeError:
    """A one-line ``VideoDecodeError``: ``path: what: cause``."""
    detail = ""
    if err is not None:
        text = getattr(err, "strerror", None) if isinstance(err, av.FFmpegError) else None
        text = text or str(err) or type(err).__name__
        text = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text.strip().splitlines()[0].strip())  # decord's log prefix
        detail = ": " + text
    return VideoDecodeError(f"{path}: {what}{detail}")


def _rotation_from(frame: av.VideoFrame | None, stream: av.video.stream.VideoStream) -> int:
    """Clockwise display rotation in {0, 90, 180, 270} from frame side data or the legacy ``rotate`` tag."""
    ccw = 0.0
    if frame is not None:
        try:
            ccw = float(frame.rotation or 0.0)
        except (AttributeError, TypeError, ValueError):
            ccw = 0.0
    if ccw == 0.0:
        tag = stream.metadata.get("rotate")
        if tag is not None:
            try:
                return int(round(float(tag) / 90.0)) * 90 % 360
            except ValueError:
                return 0
    return int(round(-ccw / 90.0)) * 90 % 360


def _demux_index(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> FrameIndex:
    """One demux pass over the video packets (no decoding): frame count, pts and keyframes."""
    pts: list[int | None] = []
    key: list[bool] = []
    size: list[int] = []
    for packet in container.demux(stream):
        if packet.size == 0 or packet.is_discard:
            continue
        pts.append(packet.pts)
        key.append(bool(packet.is_keyframe))
        size.append(packet.size)
    n = len(pts)
    time_base = stream.time_base or Fraction(1, 1)
    if n == 0 or any(p is None for p in pts) or len(set(pts)) != n:
        return FrameIndex(n, None, [], time_base)
    order = sorted(range(n), key=lambda i: pts[i])
    sorted_pts = [int(pts[i]) for i in order]  # type: ignore[arg-type]
    keyframes = [rank for rank, i in enumerate(order) if key[i]]
    # open GOP: "leading" frames after a keyframe in decode order but before it in display order
    open_gop, last_key = False, None
    for p, k in zip(pts, key):
        if k:
            last_key = p
        elif last_key is not None and p < last_key:  # type: ignore[operator]
            open_gop = True
            break
    return FrameIndex(n, sorted_pts, keyframes, time_base, open_gop, [size[i] for i in order])


def open_container(path: str, info: dict | None = None, data: bytes | None = None) -> av.container.InputContainer:
    """PyAV's container of a local file, or of a URL's object read through fsspec (a file object;
    ``info``: its fsspec ``info`` when the caller has it), or of the encoded video ``data`` (``path`` then only
    names it in messages)."""
    source: str | object = path
    if data is not None:
        source = io.BytesIO(data)
    elif storage.is_remote(path):
        try:
            source = storage.open_object(path, info)
        except Exception as err:  # noqa: BLE001 - missing, refused, the network: the video is unreadable
            raise storage.open_error(path, err) from None
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        raise decode_error(path, "cannot open video", err) from None


def _check_source(path: str) -> dict | None:
    """Raise ``VideoDecodeError`` for a missing or empty file or object; a URL's fsspec ``info``."""
    if not storage.is_remote(path):
        if not os.path.isfile(path):
            raise VideoDecodeError(f"{path}: no such file")
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(f"{path}: empty file (0 bytes)")
        return None
    try:
        info = storage.object_info(path)
    except Exception as err:  # noqa: BLE001 - missing, refused, the network: the video is unreadable
        raise storage.open_error(path, err) from None
    if info.get("type") == "directory":
        raise VideoDecodeError(f"{path}: a folder, not a video")
    if not info.get("size"):
        raise VideoDecodeError(f"{path}: empty object (0 bytes)")
    return info


@dataclass
class Probe:
    """What opening a video with PyAV found; ``container`` is left open, decoding from frame 0, with
    ``first`` (frame 0) already taken from ``frames`` (the rest of the decode)."""

    meta: VideoMeta
    index: FrameIndex
    container: av.container.InputContainer
    stream: av.video.stream.VideoStream
    first: av.VideoFrame
    frames: Iterator[av.VideoFrame]


def start_decoding(container: av.container.InputContainer, threads: int) -> tuple:
    stream = container.streams.video[0]
    if stream.codec_context is None:  # e.g. a damaged header: PyAV found no decoder to open
        raise decode_error(container.name, "no decoder for the video stream")
    stream.thread_type = "AUTO"  # frame + slice threads; output order is unchanged
    stream.codec_context.thread_count = threads
    # Crop exactly to the picture: without this flag FFmpeg keeps some of the columns a left crop should
    # remove so that the planes stay aligned (padding columns on the left of a picture stored at an
    # offset); no effect on files without a left crop
    stream.codec_context.flags |= av.codec.context.Flags.unaligned
    return stream, container.decode(stream)


def _decode_first(container: Any, path: str, threads: int) -> tuple[Any, Iterator[Any], Any]:
    """Start decoding ``container`` from where it stands: ``(stream, frames, first frame)``, else a one-line error."""
    stream, frames = start_decoding(container, threads)
    try:
        first = next(frames, None)
    except av.FFmpegError as err:
        raise decode_error(path, "cannot decode first frame", err) from None
    if first is None:
        raise decode_error(path, "no decodable frame")
    return stream, frames, first


def _known_probe(path: str, data: bytes | None, known: tuple[VideoMeta, FrameIndex], threads: int) -> Probe:
    """:func:`open_probe` without the demux pass: the meta and frame index were found before (e.g. at sharding)."""
    container = open_container(path, data=data)
    try:
        if not container.streams.video:
            raise decode_error(path, "no video stream")
        stream, frames, first = _decode_first(container, path, threads)
        return Probe(known[0], known[1], container, stream, first, frames)
    except BaseException:
        container.close()
        raise


def open_probe(
    path: str, threads: int = 0, data: bytes | None = None, known: tuple[VideoMeta, FrameIndex] | None = None
) -> Probe:
    """Open ``path`` with PyAV: demux pass (frame index), then decode frame 0 for size/format/rotation; the
    container is left open (see :class:`Probe`). ``path`` may be a URL read through fsspec
    (:mod:`videomask.video.storage`). ``data``: the encoded video itself (``path`` only names it);
    ``known``: its ``(meta, frame index)`` from an earlier probe, so there is no demux pass."""
    path = storage.local_path(path)
    if data is not None and not data:
        raise VideoDecodeError(f"{path}: empty video (0 bytes)")
    if known is not None:
        return _known_probe(path, data, known, threads)
    info = _check_source(path) if data is None else None
    container = open_container(path, info, data)
    try:
        if not container.streams.video:
            raise decode_error(path, "no video stream")
        stream = container.streams.video[0]
        try:
            index = _demux_index(container, stream)
        except av.FFmpegError as err:
            raise decode_error(path, "cannot demux video", err) from None
        if index.num_frames == 0:
            raise decode_error(path, "video has no frames")
        first = None
        if index.pts is not None:
            # rewind by seeking (cheaper than reopening); trusted only if frame 0 comes out first
            try:
                container.seek(index.pts[0], stream=stream, backward=True, any_frame=False)
                stream, frames = start_decoding(container, threads)
                first = next(frames, None)
            except av.FFmpegError:
                first = None
            if first is None or first.pts != index.pts[0]:
                first = None
        if first is None:  # raw streams cannot always seek back to 0: reopen
            container.close()
            container = open_container(path, info, data)
            stream, frames, first = _decode_first(container, path, threads)
        rotation = _rotation_from(first, stream)
        fps = 0.0
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate and float(rate) > 0 and math.isfinite(float(rate)):
                fps = float(rate)
                break
        if index.pts is not None and index.num_frames > 1:
            # the timestamps' own average rate wins when the header disagrees (variable frame rate, AVI)
            span = float((index.pts[-1] - index.pts[0]) * index.time_base)
            measured = (index.num_frames - 1) / span if span > 0 else 0.0
            if measured > 0 and abs(measured - fps) > 0.01 * measured:
                fps = measured
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = index.num_frames / fps if fps else 0.0
        height, width = (first.width, first.height) if rotation in (90, 270) else (first.height, first.width)
        meta = VideoMeta(
            num_frames=index.num_frames,
            fps=fps,
            duration=duration,
            height=height,
            width=width,
            rotation=rotation,
            codec=stream.codec_context.name,
            pix_fmt=first.format.name,
        )
        return Probe(meta, index, container, stream, first, frames)
    except BaseException:
        container.close()
        raise


def probe(path: str | os.PathLike) -> VideoMeta:
    """Metadata of a video (PyAV), without keeping it open."""
    found = open_probe(os.fspath(path))
    found.container.close()
    return found.meta
