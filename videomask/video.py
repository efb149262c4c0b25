"""Frame-exact video decoding with three backends: PyAV (default), decord (optional) and OpenCV.

    with open_video("clip.mp4") as video:          # backend="pyav" | "decord" | "opencv" | "auto"
        print(video.meta)                          # VideoMeta(num_frames=..., fps=..., ...)
        frames = video.read([0, 4, 8, 12])         # uint8 [4, H, W, 3] RGB, upright

**Frame-exact** means ``read(indices)`` returns exactly the frames that the same backend's full sequential
decode (frame 0, 1, 2, ... from the start) gives at those positions. Reading seeks to the keyframe before
each target and decodes forward, so a sparse read of a long video costs about one GOP per frame instead of
the whole video. Every reader first builds a frame index from a demux pass (packets only, nothing decoded):
the presentation timestamp (pts) of every frame in presentation order, and which frames are keyframes.
Frame ``k`` is the frame whose pts is the ``k``-th smallest; this is exact for variable frame rate too.
Each frame decoded after a seek is identified by its pts; when pts are missing or repeated, or a seek lands
on the wrong frame, or decoded frames skip or go backwards, the reader stops trusting seeks and switches
to a sequential path (decode from the start, count frames), which is slower but always right.
Forward decoding is preferred to a seek unless the seek skips at least ``VideoReader.seek_min_gap``
frames. The decord backend trusts ``get_batch`` only when decord's own frame timestamps match the index;
the OpenCV backend checks ``CAP_PROP_POS_MSEC`` after each seek and while grabbing from the start.
Limit: inside a *damaged* stretch of a corrupt file, decoder error concealment depends on what was
decoded before, so a seek-based read there may differ from the sequential decode.

``VideoMeta.rotation`` is the clockwise rotation (0, 90, 180, 270) from the file's display matrix or
``rotate`` tag; frames come out upright, and ``height``/``width`` are the displayed size.
Corrupt, empty, unreadable or zero-frame files raise :class:`~videomask.errors.VideoDecodeError`.
``read(..., timeout=s)`` stops a decode that takes longer than ``s`` seconds with a ``VideoDecodeError``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import av
import numpy as np

from videomask.errors import VideoDecodeError

__all__ = [
    "VideoMeta", "VideoReader", "PyAVReader", "DecordReader", "OpenCVReader",
    "open_video", "BACKENDS", "available_backends", "probe", "call_with_timeout",
]

T = TypeVar("T")

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
class _FrameIndex:
    """Demuxed packet facts in presentation order; ``pts`` is None when timestamps are unusable."""

    num_frames: int
    pts: list[int] | None  # sorted pts of every frame, or None
    keyframes: list[int]  # presentation indices of keyframes (sorted), [] when unknown
    time_base: Fraction
    open_gop: bool = False  # a keyframe is followed (in decode order) by frames shown before it


def _err(path: str | os.PathLike, what: str, err: BaseException | None = None) -> VideoDecodeError:
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


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate ``[H, W, 3]`` clockwise by ``rotation`` degrees."""
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))  # [H, W, 3] -> [W, H, 3] for 90/270


def _demux_index(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _FrameIndex:
    """One demux pass over the video packets (no decoding): frame count, pts and keyframes."""
    pts: list[int | None] = []
    key: list[bool] = []
    for packet in container.demux(stream):
        if packet.size == 0 or packet.is_discard:
            continue
        pts.append(packet.pts)
        key.append(bool(packet.is_keyframe))
    n = len(pts)
    time_base = stream.time_base or Fraction(1, 1)
    if n == 0 or any(p is None for p in pts) or len(set(pts)) != n:
        return _FrameIndex(n, None, [], time_base)
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
    return _FrameIndex(n, sorted_pts, keyframes, time_base, open_gop)


def _open_container(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        raise _err(path, "cannot open video", err) from None


@dataclass
class _Probe:
    """What opening a video with PyAV found; ``container`` is left open, decoding from frame 0, with
    ``first`` (frame 0) already taken from ``frames`` (the rest of the decode)."""

    meta: VideoMeta
    index: _FrameIndex
    container: av.container.InputContainer
    stream: av.video.stream.VideoStream
    first: av.VideoFrame
    frames: Iterator[av.VideoFrame]


def _start_decoding(container: av.container.InputContainer, threads: int) -> tuple:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads; output order is unchanged
    stream.codec_context.thread_count = threads
    return stream, container.decode(stream)


def _probe(path: str, threads: int = 0) -> _Probe:
    """Open ``path`` with PyAV: demux pass (frame index), then decode frame 0 for size/format/rotation."""
    if not os.path.isfile(path):
        raise VideoDecodeError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")
    container = _open_container(path)
    try:
        if not container.streams.video:
            raise _err(path, "no video stream")
        stream = container.streams.video[0]
        try:
            index = _demux_index(container, stream)
        except av.FFmpegError as err:
            raise _err(path, "cannot demux video", err) from None
        if index.num_frames == 0:
            raise _err(path, "video has no frames")
        first = None
        if index.pts is not None:
            # rewind by seeking (cheaper than reopening); trusted only if frame 0 comes out first
            try:
                container.seek(index.pts[0], stream=stream, backward=True, any_frame=False)
                stream, frames = _start_decoding(container, threads)
                first = next(frames, None)
            except av.FFmpegError:
                first = None
            if first is None or first.pts != index.pts[0]:
                first = None
        if first is None:  # raw streams cannot always seek back to 0: reopen
            container.close()
            container = _open_container(path)
            stream, frames = _start_decoding(container, threads)
            try:
                first = next(frames, None)
            except av.FFmpegError as err:
                raise _err(path, "cannot decode first frame", err) from None
        if first is None:
            raise _err(path, "no decodable frame")
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
        return _Probe(meta, index, container, stream, first, frames)
    except BaseException:
        container.close()
        raise


def probe(path: str | os.PathLike) -> VideoMeta:
    """Metadata of a video (PyAV), without keeping it open."""
    found = _probe(os.fspath(path))
    found.container.close()
    return found.meta


class _TimedOut(VideoDecodeError):
    """The worker thread is still running (abandoned)."""


class _Task:
    """One call handed to a worker thread; ``done`` is set once ``result`` or ``error`` is filled in."""

    __slots__ = ("fn", "result", "error", "done")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn: Callable[[], object] | None = fn
        self.result: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.result = self.fn()  # type: ignore[misc]
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            self.error = err
        finally:
            self.fn = None
            self.done.set()


class _Worker:
    """A reusable daemon thread running one :class:`_Task` at a time (see :func:`call_with_timeout`)."""

    def __init__(self) -> None:
        self.tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="videomask-decode")
        self.thread.start()

    def _loop(self) -> None:
        while True:
            task = self.tasks.get()
            if task is None:  # abandoned after a time-out: the thread ends once its call returned
                return
            task.run()
            del task  # hold nothing of the finished call while idle


# Idle workers of this process. Reusing threads (instead of one new thread per call) keeps decode
# allocations in the same few glibc malloc arenas: with a new thread per call, each video's buffers
# landed in whichever arena the new thread was given, and the peak RSS crept up with the number of videos.
_idle_workers: list[_Worker] = []
_idle_lock = threading.Lock()


def _reset_workers_after_fork() -> None:
    """A forked child (e.g. a DataLoader worker) has none of the parent's threads: start afresh."""
    global _idle_workers, _idle_lock
    _idle_workers = []
    _idle_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_workers_after_fork)


def call_with_timeout(fn: Callable[[], T], timeout: float | None, what: str = "decode") -> T:
    """Run ``fn()`` and return its result, or raise ``VideoDecodeError`` after ``timeout`` seconds.

    With ``timeout=None`` the call runs inline. Otherwise it runs in a daemon worker thread, reused from
    call to call (each caller thread gets a worker of its own, so concurrent callers do not wait for each
    other); on timeout that worker is abandoned (a thread cannot be killed) and ends once ``fn`` returns,
    so callers should drop the object it was using. Exceptions from ``fn`` are re-raised.
    """
    if timeout is None:
        return fn()
    with _idle_lock:
        worker = _idle_workers.pop() if _idle_workers else None
    if worker is None:
        worker = _Worker()
    task = _Task(fn)
    worker.tasks.put(task)
    finished = False
    try:
        finished = task.done.wait(timeout)
    finally:
        if finished:
            with _idle_lock:
                _idle_workers.append(worker)
        else:  # timed out (or interrupted): the worker's thread ends after this call
            worker.tasks.put(None)
    if not finished:
        raise _TimedOut(f"{what} timed out after {timeout:g} s")
    result, error = task.result, task.error
    task.result = task.error = None  # the error's traceback holds task.run's frame: no cycle through task
    if error is not None:
        try:
            raise error
        finally:
            del error
    return result  # type: ignore[return-value]


class VideoReader:
    """An open video; use :func:`open_video`. Subclasses implement ``_frame(index, deadline)``.

    ``read`` decodes the requested frames in increasing order (each distinct index once) and returns them
    in the order asked, duplicates included; only the requested frames are held in memory.
    """

    backend: str = ""
    # Decoding forward from the current position is cheaper than a seek (decoder flush + refill) unless the
    # seek skips at least this many frames: seek only when the keyframe before the target lies further ahead.
    seek_min_gap: int = 16

    def __init__(self, path: str | os.PathLike, *, threads: int = 0, keep_open: bool = False) -> None:
        self.path = os.fspath(path)
        found = _probe(self.path, threads)
        self._meta, self._index = found.meta, found.index
        if keep_open:  # the PyAV backend goes on decoding with the probe's container
            self._probe: _Probe | None = found
        else:
            self._probe = None
            found.container.close()
        self._first_frame: av.VideoFrame | None = found.first  # frame 0 as decoded by PyAV
        self._closed = False
        self.seek_ok = self._index.pts is not None  # False once seeking is found unreliable
        self.num_seeks = 0  # seeks done (for tests and benchmarks)

    @property
    def meta(self) -> VideoMeta:
        return self._meta

    def __len__(self) -> int:
        return self._meta.num_frames

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {self._meta})"

    def close(self) -> None:
        """Release the file; further reads raise ``VideoDecodeError``."""
        self._closed = True

    def read(self, indices: Sequence[int], *, timeout: float | None = None) -> np.ndarray:
        """Frames at ``indices`` as uint8 ``[N, H, W, 3]`` RGB (displayed orientation).

        ``timeout``: seconds; a decode that takes longer raises ``VideoDecodeError`` and closes the reader.
        """
        if self._closed:
            raise VideoDecodeError(f"{self.path}: reader is closed")
        wanted = [int(i) for i in indices]
        n = self._meta.num_frames
        bad = [i for i in wanted if not 0 <= i < n]
        if bad:
            raise VideoDecodeError(f"{self.path}: frame index {bad[0]} out of range (video has {n} frames)")
        if timeout is None:
            return self._read(wanted, None)
        deadline = time.monotonic() + timeout  # checked between frames by the decode loops
        try:
            return call_with_timeout(lambda: self._read(wanted, deadline), timeout + 0.5, what=f"{self.path}: decode")
        except _TimedOut:
            # the decode thread is stuck inside the library: drop the reader without closing files under it
            self._closed = True
            for name in ("_container", "_gen", "_cap", "_vr"):
                if hasattr(self, name):
                    setattr(self, name, None)
            raise
        except VideoDecodeError:
            self.close()
            raise

    def read_all(self, *, timeout: float | None = None) -> np.ndarray:
        """Every frame, uint8 ``[num_frames, H, W, 3]`` (mind the memory for long videos)."""
        return self.read(range(self._meta.num_frames), timeout=timeout)

    def _read(self, wanted: list[int], deadline: float | None) -> np.ndarray:
        meta = self._meta
        out = np.empty((len(wanted), meta.height, meta.width, 3), dtype=np.uint8)  # [N, H, W, 3]
        slots: dict[int, list[int]] = {}
        for slot, i in enumerate(wanted):
            slots.setdefault(i, []).append(slot)
        for i in sorted(slots):
            if deadline is not None and time.monotonic() > deadline:
                raise VideoDecodeError(f"{self.path}: decode timed out")
            image = self._frame(i, deadline)
            if image.shape != out.shape[1:]:
                raise _err(self.path, f"frame {i} has size {image.shape[:2]}, expected {out.shape[1:3]}")
            for slot in slots[i]:
                out[slot] = image
        return out

    def _frame(self, index: int, deadline: float | None) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _keyframe_before(self, index: int) -> int:
        keys = self._index.keyframes
        pos = bisect.bisect_right(keys, index) - 1
        return keys[pos] if pos >= 0 else 0


class _DecodeFailed(VideoDecodeError):
    """FFmpeg reported an error while decoding (after a seek, the sequential path gets a second try)."""


class _Unreliable(Exception):
    """Seeking gave a frame we cannot trust; the caller switches to the sequential path."""


def _guarded(path: str, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    """``frames``, with FFmpeg decode errors turned into ``_DecodeFailed``.

    A plain function, not a method: a generator holding the reader while the reader holds it would be a
    reference cycle, leaving the whole decoder (FFmpeg memory and threads) to the cyclic GC.
    """
    try:
        yield from frames
    except av.FFmpegError as err:
        raise _DecodeFailed(str(_err(path, "decode failed", err))) from None


class PyAVReader(VideoReader):
    """PyAV (FFmpeg) backend: seek to the keyframe before a target, decode forward, match frames by pts."""

    backend = "pyav"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0) -> None:
        super().__init__(path, threads=threads, keep_open=True)
        self._threads = threads  # decoder threads (0: FFmpeg's choice)
        self._first_frame = None
        self._pts_to_index = {p: k for k, p in enumerate(self._index.pts)} if self._index.pts else {}
        found, self._probe = self._probe, None
        assert found is not None
        # go on with the probe's decoder: it is at the start and has given frame 0 already
        self._container: av.container.InputContainer | None = found.container
        self._stream = found.stream
        self._use(itertools.chain([found.first], found.frames), after_seek=False)

    def close(self) -> None:
        """Release the decoder now, without waiting for the cyclic GC.

        The decoder (codec context, its frame threads and buffers) belongs to the stream object, which
        the frame generators, ``_stream`` and the last frame keep alive; ``container.close()`` alone
        frees only the demuxer. Close the generators (this ends PyAV's demux generator too) and drop every
        PyAV reference, so FFmpeg's memory and threads go as soon as the reader is closed.
        """
        super().close()
        self._drop_decoder()
        if self._container is not None:
            self._container.close()
            self._container = None

    def __del__(self) -> None:
        # a reader dropped without close(): PyAV's container and stream refer to each other until the
        # container is closed, so close it here rather than leave the decoder to the cyclic GC
        try:
            if not self._closed or self._container is not None:
                self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer (e.g. at interpreter exit)
            pass

    def _drop_decoder(self) -> None:
        """Close the frame generator and drop the stream and the last frame (not the container)."""
        gen, self._gen = self._gen, None
        if gen is not None:
            try:
                gen.close()
            except Exception:  # noqa: BLE001 - a decoder error while closing is no reason to fail close()
                pass
        self._stream = None
        self._last = None

    # -- decoder state: a frame generator from the last seek (or the start) and the last frame it gave --
    def _use(self, frames: Iterator[av.VideoFrame], *, after_seek: bool) -> None:
        self._gen: Iterator[av.VideoFrame] | None = _guarded(self.path, frames)  # holds no reference to self
        self._pos = -1  # index of the last frame taken from the generator (-1: none yet)
        self._last: av.VideoFrame | None = None
        self._after_seek = after_seek

    def _restart(self) -> None:
        """Decode from the very start: frames are counted (and checked against the pts index)."""
        self._drop_decoder()
        if self._container is not None:
            self._container.close()
            self._container = None
        self._container = _open_container(self.path)
        self._stream, frames = _start_decoding(self._container, self._threads)
        self._use(frames, after_seek=False)

    def _seek(self, keyframe: int) -> None:
        assert self._container is not None and self._index.pts is not None
        self.num_seeks += 1
        try:
            self._container.seek(self._index.pts[keyframe], stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError as err:
            raise _Unreliable(f"seek failed: {err}") from None
        self._use(self._container.decode(self._stream), after_seek=True)

    def _next(self) -> av.VideoFrame | None:
        """Take one frame from the generator, update ``_pos``; raise ``_Unreliable`` if its pts is wrong."""
        frame = next(self._gen, None)
        if frame is None:
            return None
        if self.seek_ok:
            k = self._pts_to_index.get(frame.pts) if frame.pts is not None else None
            if k is None:
                raise _Unreliable(f"decoded pts {frame.pts} not in the index")
            first_after_seek = self._after_seek and self._last is None
            if not first_after_seek and k != self._pos + 1:
                raise _Unreliable(f"frame order broken: {self._pos} then {k}")
            self._pos = k
        else:
            self._pos += 1
        self._last = frame
        return frame

    def _frame(self, index: int, deadline: float | None) -> np.ndarray:
        if self.seek_ok:
            try:
                return self._convert(self._seek_read(index, deadline))
            except (_Unreliable, _DecodeFailed):
                self.seek_ok = False
                self._restart()
        return self._convert(self._sequential_read(index, deadline))

    def _seek_read(self, index: int, deadline: float | None) -> av.VideoFrame:
        if self._last is not None and self._pos == index:
            return self._last
        key = self._keyframe_before(index)
        if not (self._pos < index and key <= self._pos + self.seek_min_gap):
            # the decoder is past the target, or a keyframe lies between it and the target: seek
            for attempt in range(3):
                self._seek(key)
                frame = self._next()
                if frame is None:
                    raise _Unreliable("no frame after seek")
                if self._pos <= index:
                    break
                # landed after the target: try the keyframe before
                key = self._keyframe_before(key - 1) if key > 0 else 0
            else:
                raise _Unreliable(f"seek for frame {index} keeps landing after it")
            if self._pos == index:
                return frame
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise VideoDecodeError(f"{self.path}: decode timed out")
            frame = self._next()
            if frame is None:
                raise _Unreliable(f"video ended before frame {index}")
            if self._pos == index:
                return frame
            if self._pos > index:
                raise _Unreliable(f"frame {index} skipped")

    def _sequential_read(self, index: int, deadline: float | None) -> av.VideoFrame:
        if self._last is not None and self._pos == index:
            return self._last
        if self._pos > index or self._after_seek:
            self._restart()
        while self._pos < index:
            if deadline is not None and time.monotonic() > deadline:
                raise VideoDecodeError(f"{self.path}: decode timed out")
            if self._next() is None:
                raise _err(self.path, f"video ended at frame {self._pos + 1}, frame {index} is not decodable")
        assert self._last is not None
        return self._last

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        image = frame.to_ndarray(format="rgb24")  # [h, w, 3] as coded
        return _rotate(image, self._meta.rotation)  # [H, W, 3] as displayed


class DecordReader(VideoReader):
    """decord backend: ``get_batch`` (decord seeks itself), trusted only when decord's frame timestamps agree
    with the demuxed pts index and the video has no open GOPs (decord returns wrong frames near open-GOP
    keyframes); otherwise decord's own sequential path (``seek(0)`` + ``next``).
    Rotation: recent decord builds apply it themselves (detected on frame 0); otherwise videomask does.
    """

    backend = "decord"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0) -> None:
        try:
            import decord
        except ImportError as err:
            raise VideoDecodeError("the decord backend needs `pip install decord`") from err
        super().__init__(path)
        try:
            self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=threads)
        except (decord.DECORDError, RuntimeError) as err:
            raise _err(self.path, "decord cannot open video", err) from None
        self._decord_error = decord.DECORDError
        self._rotate = 0 if self._rotates_itself() else self._meta.rotation
        self._first_frame = None
        # decord's get_batch returns frames of the previous GOP around open-GOP keyframes: sequential there
        self.seek_ok = self.seek_ok and not self._index.open_gop and self._timestamps_agree()
        self._pos = -1  # sequential path: index of the last frame decoded

    def _rotates_itself(self) -> bool:
        """Decode frame 0 (decord fails on some sizes, e.g. widths under 32) and tell whether this decord
        build applies the display rotation itself (builds on recent FFmpeg do, older ones do not)."""
        try:
            got = self._vr[0].asnumpy().astype(np.int16)  # [h, w, 3]
            self._vr.seek(0)
        except (self._decord_error, RuntimeError) as err:
            raise _err(self.path, "decord cannot decode frame 0", err) from None
        assert self._first_frame is not None
        coded = self._first_frame.to_ndarray(format="rgb24").astype(np.int16)  # [h, w, 3] PyAV's frame 0
        upright = _rotate(coded, self._meta.rotation)
        if got.shape not in (upright.shape, coded.shape):
            # seen with some widths (e.g. 16, 48): decord returns [h, w, 6] and get_batch fails
            raise _err(self.path, f"decord cannot decode frames correctly (frame 0 has shape {got.shape})")
        if self._meta.rotation == 0:
            return True
        if got.shape != upright.shape:
            return False
        if got.shape != coded.shape:
            return True
        return bool(np.abs(got - upright).mean() <= np.abs(got - coded).mean())

    def _timestamps_agree(self) -> bool:
        """decord's frame count and per-frame start times equal the pts index (so its seeks find them)."""
        n = self._meta.num_frames
        if len(self._vr) != n or self._index.pts is None:
            return False
        try:
            stamps = np.asarray(self._vr.get_frame_timestamp(list(range(n))))[:, 0]  # [n] seconds
        except (self._decord_error, RuntimeError, IndexError):
            return False
        ours = np.asarray(self._index.pts, dtype=np.float64) * float(self._index.time_base)
        tol = 0.5 * float(self._index.time_base) + 1e-6
        return bool(np.all(np.diff(stamps) > 0) and np.allclose(stamps, ours, rtol=0, atol=max(tol, 1e-3)))

    def close(self) -> None:
        super().close()
        self._vr = None

    def _read(self, wanted: list[int], deadline: float | None) -> np.ndarray:
        if self.seek_ok:
            try:
                frames = self._vr.get_batch(wanted).asnumpy()  # [N, h, w, 3]
            except (self._decord_error, RuntimeError) as err:
                raise _err(self.path, "decord decode failed", err) from None
            self._pos = -2  # decord's position is unknown after get_batch
            if self._rotate:
                frames = np.ascontiguousarray(np.rot90(frames, k=-(self._rotate // 90), axes=(1, 2)))  # [N, H, W, 3]
            if frames.shape[1:] != (self._meta.height, self._meta.width, 3):
                raise _err(self.path, f"decord frames have size {frames.shape[1:3]}")
            return frames
        return super()._read(wanted, deadline)

    def _frame(self, index: int, deadline: float | None) -> np.ndarray:
        try:
            if self._pos < -1 or self._pos >= index:
                self._vr.seek(0)
                self._pos = -1
            # next() only: decord's skip_frames() lands on wrong frames in B-frame AVI files
            while self._pos < index - 1:
                if deadline is not None and time.monotonic() > deadline:
                    raise VideoDecodeError(f"{self.path}: decode timed out")
                self._vr.next()
                self._pos += 1
            self._pos = index
            return _rotate(self._vr.next().asnumpy(), self._rotate)
        except (self._decord_error, RuntimeError, StopIteration) as err:
            raise _err(self.path, f"decord cannot decode frame {index}", err) from None


class OpenCVReader(VideoReader):
    """OpenCV (``cv2.VideoCapture``, FFmpeg) backend: ``CAP_PROP_POS_FRAMES`` seeks are checked against the
    pts index through ``CAP_PROP_POS_MSEC``; a mismatch switches to ``grab()``-ing from the start.
    Rotation is applied by videomask (OpenCV's auto-rotation is turned off).
    """

    backend = "opencv"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0) -> None:
        import cv2

        self._cv2 = cv2
        super().__init__(path, threads=threads)
        self._first_frame = None
        self._threads = threads
        self._cap = None
        self._msec: np.ndarray | None = None
        if self._index.pts is not None:
            self._msec = (np.asarray(self._index.pts, dtype=np.float64) - self._index.pts[0]) * float(
                self._index.time_base
            ) * 1000.0  # [n] ms from the first frame
            gaps = np.diff(self._msec)
            self._tol = 0.4 * float(gaps.min()) if len(gaps) else 1.0
        self._open()
        # learn the time origin OpenCV reports for frame 0 (POS_MSEC is relative to the stream start)
        if not self._grab():
            raise _err(self.path, "OpenCV cannot decode frame 0")
        self._msec0 = self._cap.get(cv2.CAP_PROP_POS_MSEC)

    def _open(self) -> None:
        cv2 = self._cv2
        if self._cap is not None:
            self._cap.release()
        params = [cv2.CAP_PROP_N_THREADS, self._threads] if self._threads > 0 else []
        self._cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, params)
        if not self._cap.isOpened():
            raise _err(self.path, "OpenCV cannot open video")
        self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        self._pos = -1

    def close(self) -> None:
        super().close()
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _grab(self) -> bool:
        """Decode the next frame (no conversion); while seeks are trusted, check its time against the index."""
        ok = self._cap.grab()
        if ok:
            self._pos += 1
            if self.seek_ok and self._msec is not None and self._pos > 0 and self._pos < len(self._msec):
                got = self._cap.get(self._cv2.CAP_PROP_POS_MSEC) - self._msec0
                if abs(got - self._msec[self._pos]) > self._tol:
                    self.seek_ok = False  # OpenCV's frame k is not the index's frame k: never seek
        return ok

    def _retrieve(self, index: int) -> np.ndarray:
        ok, bgr = self._cap.retrieve()
        if not ok or bgr is None:
            raise _err(self.path, f"OpenCV cannot decode frame {index}")
        if bgr.ndim == 2:
            rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_GRAY2RGB)  # [h, w] -> [h, w, 3]
        else:
            rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)  # [h, w, 3]
        del bgr
        return _rotate(rgb, self._meta.rotation)

    def _frame(self, index: int, deadline: float | None) -> np.ndarray:
        key = self._keyframe_before(index)
        if self.seek_ok and self._msec is not None and not (self._pos < index and key <= self._pos + self.seek_min_gap):
            self.num_seeks += 1
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, index)
            if self._cap.grab():
                got = self._cap.get(self._cv2.CAP_PROP_POS_MSEC) - self._msec0
                if abs(got - self._msec[index]) <= self._tol:
                    self._pos = index
                    return self._retrieve(index)
            self.seek_ok = False  # wrong frame after seek: count from the start from now on
            self._open()
        elif self._pos >= index:
            self._open()
        while self._pos < index:
            if deadline is not None and time.monotonic() > deadline:
                raise VideoDecodeError(f"{self.path}: decode timed out")
            if not self._grab():
                raise _err(self.path, f"video ended at frame {self._pos + 1}, frame {index} is not decodable")
        return self._retrieve(index)


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


def available_backends() -> list[str]:
    """Backends that can be used here (decord only when installed)."""
    return [name for name in BACKENDS if name != "decord" or _decord_available()]


def open_video(path: str | os.PathLike, backend: str = "pyav", **options) -> VideoReader:
    """Open ``path`` for frame-exact reading. ``backend``: ``pyav`` (default), ``decord``, ``opencv`` or
    ``auto`` (decord when installed and it can open the file, else PyAV).
    ``options`` go to the backend: ``threads=`` (decoder threads, 0 = the library's choice) for all three.
    """
    if backend == "auto":
        if _decord_available():
            try:
                return DecordReader(path, **options)
            except VideoDecodeError:
                pass  # decord cannot read some files (raw streams, broken metadata): PyAV decides
        backend = "pyav"
    if backend not in BACKENDS:
        raise VideoDecodeError(f"unknown video backend {backend!r} (choose from {', '.join(BACKENDS)}, auto)")
    path = Path(path)
    return BACKENDS[backend](path, **options)
