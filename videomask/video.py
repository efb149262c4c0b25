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
A seek decodes from the keyframe's own packet, with the pts the index gives it (MPEG program and transport
streams seek to a byte position near the time, and a program stream's demuxer can stamp the packets after a
seek other than in a pass from the start); the first frame out is named by its pts and the next ones are
counted on from it (:class:`_FrameCounter`: old DivX/Xvid AVIs with packed B-frames swap the pts in pairs,
so a pts may name its count's neighbour). When pts are missing or repeated, a seek lands on the wrong
frame, or decoded frames skip, repeat or go further astray, the reader stops trusting seeks and switches
to a sequential path (decode from the start, count frames), which is slower but always right.
Forward decoding is preferred to a seek unless the seek skips at least ``VideoReader.seek_min_gap``
frames. The decord backend trusts ``get_batch`` only when decord's own frame timestamps match the index;
the OpenCV backend checks ``CAP_PROP_POS_MSEC`` after each seek and while grabbing from the start.
Limit: inside a *damaged* stretch of a corrupt file, decoder error concealment depends on what was
decoded before, so a seek-based read there may differ from the sequential decode.

**Per-file verification.** decord and OpenCV are checked against PyAV on every new file: frame 0 at open
(PyAV's probe has decoded it already) and, on the first read, one frame other than 0, decoded by PyAV
before the backend's read: of the requested frames and the first frame the backend decodes on its way to
the first of them (the frame after its keyframe; for OpenCV after a seek the frame 18 after it, as OpenCV's
own seek starts 16 frames before its target), the one cheapest for PyAV to reach, so that a read deep
inside a long GOP does not make PyAV decode the GOP. A frame outside the
colour-conversion tolerance (:func:`frames_differ`), a size or frame-count disagreement, or a backend that
cannot open or decode the file hands the file over to PyAV: one log line (logger ``videomask.video``),
``reader.backend == "pyav"``, ``reader.fallback`` says why. Verdicts are remembered per file (device,
inode, size, mtime) in the process; ``open_video(..., verify=False)`` skips the checks. On the conformance
corpus (tests/corpus.py) decord hands over MPEG transport streams (it drops the first GOP there), rotated
files of some sizes and Theora/Ogg (it cannot open them), OpenCV a Theora picture at an offset (its frames
are 4.7/255 off the encoded picture, PyAV's 1.7); they agree elsewhere. PyAV crops exactly to the picture
(FFmpeg's unaligned flag).
decord's own FFmpeg copy prints its decoder complaints to stderr; they are counted instead and reported in
one log line per file. OpenCV's copy is silenced (its failures still raise). PyAV keeps FFmpeg quiet.

``VideoMeta.rotation`` is the clockwise rotation (0, 90, 180, 270) from the file's display matrix or
``rotate`` tag; frames come out upright, and ``height``/``width`` are the displayed size.
Corrupt, empty, unreadable or zero-frame files raise :class:`~videomask.errors.VideoDecodeError`.
A decode that may hang is run under :func:`call_with_timeout` (as ``VideoDataset`` does with ``timeout=``).
"""

from __future__ import annotations

import atexit
import bisect
import ctypes
import ctypes.util
import glob
import itertools
import logging
import math
import os
import queue
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

from videomask.errors import VideoDecodeError

__all__ = [
    "VideoMeta",
    "VideoReader",
    "PyAVReader",
    "DecordReader",
    "OpenCVReader",
    "open_video",
    "BACKENDS",
    "available_backends",
    "AUTO_ORDER",
    "probe",
    "call_with_timeout",
]

T = TypeVar("T")

log = logging.getLogger("videomask.video")


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
    sizes: list[int] | None = None  # packet bytes of every frame (presentation order, with ``pts``), or None


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


_reformatters = threading.local()


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """``frame.to_ndarray(format="rgb24")`` (same pixels) through one reusable converter per thread.

    ``VideoFrame.to_ndarray`` makes a new swscale context for every frame, with automatic slice threads
    (two threads started per frame here): 0.3-1.6 ms per frame against ~0.05 ms reused. One thread
    (``threads=1``): no swscale threads at all, so a forked DataLoader worker never inherits any (with
    threads, the child hung freeing the parent's converter).
    """
    reformatter = getattr(_reformatters, "rgb", None)
    if reformatter is None:
        reformatter = _reformatters.rgb = av.video.reformatter.VideoReformatter()
    return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()  # [h, w, 3]


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate ``[H, W, 3]`` clockwise by ``rotation`` degrees."""
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))  # [H, W, 3] -> [W, H, 3] for 90/270


def _demux_index(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _FrameIndex:
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
    return _FrameIndex(n, sorted_pts, keyframes, time_base, open_gop, [size[i] for i in order])


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
    if stream.codec_context is None:  # e.g. a damaged header: PyAV found no decoder to open
        raise _err(container.name, "no decoder for the video stream")
    stream.thread_type = "AUTO"  # frame + slice threads; output order is unchanged
    stream.codec_context.thread_count = threads
    # Crop exactly to the picture: without this flag FFmpeg keeps some of the columns a left crop should
    # remove so that the planes stay aligned (a 60x44 Theora picture stored at offset 2 in a 64x48 frame
    # came out 62 wide, two columns of padding on the left); no effect on files without a left crop
    stream.codec_context.flags |= av.codec.context.Flags.unaligned
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


# -- agreement with PyAV ------------------------------------------------------------------------------

# Colour-conversion tolerance between backends: the same decoded picture converted to RGB by another
# libswscale build (or another dithering of 10-bit input) differs by a mean of at most ~1.2 levels (of 255)
# on the conformance corpus, while a neighbouring (wrong) frame differs by ~10 or more. Frames agree when
# the mean absolute difference is at most ``MEAN_TOLERANCE`` and at most ``OUTLIER_FRACTION`` of the values
# differ by more than ``OUTLIER_LEVEL``.
MEAN_TOLERANCE = 2.0
OUTLIER_LEVEL = 32
OUTLIER_FRACTION = 0.005


def frames_differ(got: np.ndarray, reference: np.ndarray) -> str | None:
    """Why two uint8 RGB frames (``[H, W, 3]`` or ``[N, H, W, 3]``) are not the same picture within the
    colour-conversion tolerance, or None when they agree."""
    if got.shape != reference.shape:
        return f"shape {tuple(got.shape)} instead of {tuple(reference.shape)}"
    if got.size == 0 or np.array_equal(got, reference):  # the common case, one cheap pass
        return None
    rows_a, rows_b = got.reshape(-1, got.shape[-1]), reference.reshape(-1, reference.shape[-1])
    total, far, step = 0, 0, 1 << 16  # in blocks: a few small temporaries even for 4K frames
    for start in range(0, len(rows_a), step):
        a, b = rows_a[start : start + step], rows_b[start : start + step]
        diff = np.maximum(a, b)
        np.subtract(diff, np.minimum(a, b), out=diff)  # |a - b| without leaving uint8
        total += int(diff.sum(dtype=np.int64))
        far += int(np.count_nonzero(diff > OUTLIER_LEVEL))
    mean, outliers = total / got.size, far / got.size
    if mean > MEAN_TOLERANCE or outliers > OUTLIER_FRACTION:
        return f"mean |difference| {mean:.1f}/255, {100 * outliers:.1f}% of values off by more than {OUTLIER_LEVEL}"
    return None


class _Refused(VideoDecodeError):
    """A non-default backend cannot (or does not) decode this file like PyAV: hand it over to PyAV."""


# Verdicts per file and backend: None = the backend's frames matched PyAV's, else the reason it handed over.
_VERDICTS: OrderedDict[tuple, str | None] = OrderedDict()
_VERDICTS_MAX = 65536
_verdict_lock = threading.Lock()


def _file_key(path: str, backend: str) -> tuple | None:
    """The file's identity (device and inode: any path or link to it), size and mtime, and the backend: one
    ``stat`` (``os.path.realpath`` costs an ``lstat`` per path component)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, backend)


def _remember_verdict(path: str, backend: str, reason: str | None, key: tuple | None = None) -> None:
    """Remember ``reason`` (None: verified) for this file and backend; ``key``: its :func:`_file_key` when
    the caller has it already (one ``stat`` less)."""
    key = key if key is not None else _file_key(path, backend)
    if key is None:
        return
    with _verdict_lock:
        _VERDICTS[key] = reason
        _VERDICTS.move_to_end(key)
        while len(_VERDICTS) > _VERDICTS_MAX:
            _VERDICTS.popitem(last=False)


def _known_verdict(path: str, backend: str, key: tuple | None = None) -> tuple[bool, str | None]:
    """``(known, reason)``: whether this file (same size and mtime) was verified for ``backend`` before."""
    key = key if key is not None else _file_key(path, backend)
    with _verdict_lock:
        if key is None or key not in _VERDICTS:
            return False, None
        return True, _VERDICTS[key]


def forget_verdicts() -> None:
    """Forget every remembered per-file verdict (the next open of each file verifies again)."""
    with _verdict_lock:
        _VERDICTS.clear()


# -- FFmpeg log messages of the backends' own FFmpeg copies -------------------------------------------------
#
# PyAV keeps FFmpeg's log off (its errors still carry FFmpeg's message). decord ships its own FFmpeg, which
# prints every decoder complaint to stderr (hundreds of lines on a damaged file). Its libavutil's log
# callback is replaced with one that only counts messages (and keeps the first); the count and the first
# message go to Python logging (logger ``videomask.video``) in one line per file.

_AV_LOG_ERROR = 16
_LIBAV_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class _LibavMessages:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.first = ""
        self.hooked: set[str] = set()
        self.callback = _LIBAV_CALLBACK(self._on_message)
        self.reported: OrderedDict[str, None] = OrderedDict()
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        self.vsnprintf = libc.vsnprintf
        self.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]

    def _on_message(self, avcl: int, level: int, fmt: bytes, args: int) -> None:
        if level > _AV_LOG_ERROR or fmt is None:
            return
        with self.lock:
            self.count += 1
            if self.count > 1:
                return
        try:
            buf = ctypes.create_string_buffer(256)
            self.vsnprintf(buf, 256, fmt, args)
            text = buf.value.decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001 - never raise into C
            text = fmt.decode("utf-8", "replace").strip()
        with self.lock:
            self.first = text

    def hook(self, libavutil: str) -> None:
        """Route the log of the libavutil at this path (already loaded by its library) to this collector."""
        if libavutil in self.hooked:
            return
        self.hooked.add(libavutil)
        try:
            lib = ctypes.CDLL(libavutil)
            lib.av_log_set_callback.argtypes = [_LIBAV_CALLBACK]
            lib.av_log_set_callback(self.callback)
        except (OSError, AttributeError):
            return

        def quiet() -> None:  # no calls into a finalizing interpreter from decoder threads
            try:
                lib.av_log_set_level(-8)  # AV_LOG_QUIET
                lib.av_log_set_callback.argtypes = [ctypes.c_void_p]
                lib.av_log_set_callback(ctypes.cast(lib.av_log_default_callback, ctypes.c_void_p))
            except (OSError, AttributeError):
                pass

        atexit.register(quiet)

    def take(self) -> tuple[int, str]:
        with self.lock:
            count, first, self.count, self.first = self.count, self.first, 0, ""
        return count, first


_libav_messages: _LibavMessages | None = None


def _hook_bundled_libav(package_dir: str) -> None:
    """Count (instead of print) the FFmpeg log messages of the libavutil bundled next to a package."""
    global _libav_messages
    if not hasattr(ctypes, "CFUNCTYPE") or os.name != "posix":
        return
    # only the package's own copy (``<site-packages>/decord.libs``): a Python callback installed on PyAV's
    # libavutil would deadlock, since PyAV holds the GIL in calls whose frame threads log
    own = os.path.normpath(package_dir) + ".libs"
    libs = sorted(glob.glob(os.path.join(own, "libavutil*.so*")))
    if not libs:
        return
    if _libav_messages is None:
        _libav_messages = _LibavMessages()
    for lib in libs:
        _libav_messages.hook(lib)


_quieted: set[str] = set()
_quieted_packages: set[str] = set()


def _quiet_bundled_libav(package_dir: str) -> None:
    """Silence the FFmpeg log of the libavutil bundled with a package (``<package>.libs``).

    Used for OpenCV, whose Python objects free their decoder while holding the GIL (so a Python log
    callback could deadlock with a decoder thread); its decode failures still surface as
    ``VideoDecodeError``. Call after the package's first use of FFmpeg (OpenCV sets the level then).
    """
    if package_dir in _quieted_packages:  # one glob per package, not one per open
        return
    _quieted_packages.add(package_dir)
    for lib_path in sorted(glob.glob(os.path.join(os.path.normpath(package_dir) + ".libs", "libavutil*.so*"))):
        if lib_path in _quieted:
            continue
        _quieted.add(lib_path)
        try:
            ctypes.CDLL(lib_path).av_log_set_level(-8)  # AV_LOG_QUIET
        except (OSError, AttributeError):
            pass


def _report_libav_messages(path: str, backend: str) -> None:
    """One log line for the FFmpeg messages counted since the last call (at most one line per file)."""
    if _libav_messages is None:
        return
    count, first = _libav_messages.take()
    if count == 0:
        return
    reported = _libav_messages.reported
    if path in reported:
        return
    reported[path] = None
    while len(reported) > 4096:
        reported.popitem(last=False)
    log.warning(
        "videomask: %s: %s's FFmpeg reported %d problem(s) while decoding; first: %s",
        path,
        backend,
        count,
        first or "?",
    )


# PyAV decoder threads for the non-default backends' probe and checks: they decode one to a few frames, for
# which FFmpeg's frame threads cost more than they give (thread start-up, and a frame-threaded decoder takes
# thread_count - 1 extra packets before it gives a frame out): at the default threads=0 one thread made an
# OpenCV clip read 9% cheaper unverified and 13% cheaper verified over 31 files (benchmarks/results/decode.md)
CHECK_THREADS = 1


class VideoReader:
    """An open video; use :func:`open_video`. Subclasses implement ``_frame(index)``.

    ``read`` decodes the requested frames in increasing order (each distinct index once) and returns them
    in the order asked, duplicates included; only the requested frames are held in memory.
    """

    backend: str = ""
    # Decoding forward from the current position is cheaper than a seek (decoder flush + refill) unless the
    # seek skips at least this many frames: seek only when the keyframe before the target lies further ahead.
    seek_min_gap: int = 16

    def __init__(
        self, path: str | os.PathLike, *, threads: int = 0, keep_open: bool = False, found: _Probe | None = None
    ) -> None:
        self.path = os.fspath(path)
        found = found if found is not None else _probe(self.path, threads)
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
        self.requested_backend = self.backend  # what open_video was asked for (differs after a hand-over)
        self.fallback: str | None = None  # why this file is decoded by PyAV instead of the requested backend
        self.verified: bool | None = None  # non-default backends: frames checked against PyAV (None: not yet)
        self._delegate: PyAVReader | None = None  # the PyAV reader this one handed over to
        self._pyav: PyAVReader | None = None  # the PyAV reader for a hand-over
        self._check: _Probe | None = None  # non-default backends: the probe's PyAV decoder, kept for the checks
        self._verdict_key: tuple | None = None  # the file's verdict key, taken when the checks start

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
        delegate, self._delegate = self._delegate, None
        self._release_pyav()
        if delegate is not None:
            delegate.close()

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` as uint8 ``[N, H, W, 3]`` RGB (displayed orientation).

        To bound the time a read may take, run it under :func:`call_with_timeout` (and drop the reader
        when it times out: the abandoned decode still uses it).
        """
        if self._closed:
            raise VideoDecodeError(f"{self.path}: reader is closed")
        wanted = [int(i) for i in indices]
        n = self._meta.num_frames
        bad = [i for i in wanted if not 0 <= i < n]
        if bad:
            raise VideoDecodeError(f"{self.path}: frame index {bad[0]} out of range (video has {n} frames)")
        return self._read_verified(wanted)

    def read_all(self) -> np.ndarray:
        """Every frame, uint8 ``[num_frames, H, W, 3]`` (mind the memory for long videos)."""
        return self.read(range(self._meta.num_frames))

    # -- verification against PyAV and hand-over (non-default backends) ----------------------------------

    def _read_verified(self, wanted: list[int]) -> np.ndarray:
        """``_read``, or the PyAV reader's after a hand-over; the first read of an unverified file checks one
        frame against PyAV, and a backend error (other than the deadline) hands the file over to PyAV."""
        if self._delegate is not None:
            return self._delegate._read(wanted)
        if self.backend == "pyav":
            return self._read(wanted)
        backend = self.backend
        # PyAV's check frame is decoded before the backend's read: decord decodes ahead in a thread of its own
        # after a read, so a check decoded after it made decord decode (and discard) frames meanwhile
        check = self._reference(wanted) if self.verified is None and self._check is not None else None
        # the check's frame, when it is not requested, is read first (the frame after the keyframe the read
        # starts from, which the backend decodes anyway) and left out of the result: a view without the first
        # frame (one frame more is held until the result is freed)
        extra = check is not None and check[0] not in wanted
        try:
            frames = self._read([check[0], *wanted] if extra else wanted)  # type: ignore[index]
        except VideoDecodeError as err:
            _report_libav_messages(self.path, backend)
            self._hand_over(f"{backend} failed: {str(err).removeprefix(self.path + ': ')}")
            return self._delegate._read(wanted)  # type: ignore[union-attr]
        _report_libav_messages(self.path, backend)
        if check is not None:
            target, reference = check
            got = frames[0] if extra else frames[wanted.index(target)]
            why = None if reference is None else frames_differ(got, reference)
            if why is not None:
                self._hand_over(f"{backend}'s frame {target} differs from PyAV's ({why})")
                return self._delegate._read(wanted)  # type: ignore[union-attr]
            self.verified = True
            _remember_verdict(self.path, backend, None, self._verdict_key)
            self._release_pyav()
        return frames[1:] if extra else frames

    def _reference(self, wanted: list[int]) -> tuple[int, np.ndarray | None] | None:
        """PyAV's frame for the first read's check: the cheapest for PyAV to reach of the requested frames other
        than 0 (frame 0 was checked at open) and the frame after the keyframe before the first of them, which
        the backend decodes on its way there (with a long GOP, every requested frame may lie deep inside it);
        ``(target, upright RGB [H, W, 3])``, the frame None when PyAV cannot decode it either (then the
        backend's frames stand). None when only frame 0 is requested (a later read is checked)."""
        candidates = sorted({i for i in wanted if i != 0})
        if not candidates:
            return None
        after_key = self._on_the_way(candidates[0])
        if after_key is not None:
            candidates.append(after_key)
        target = min(candidates, key=self._check_cost)
        check, self._check = self._check, None
        assert check is not None
        try:
            try:
                frame = _decode_one(check, self._index, target, self._keyframe_before(target))
            finally:
                check.container.close()  # the decoder has moved: no hand-over from it
            if frame is not None:
                return target, _rotate(_to_rgb(frame), self._meta.rotation)  # [H, W, 3]
            # no shortcut (no usable pts, or the seek did not land as the index says): PyAV's reader
            with PyAVReader(self.path, threads=getattr(self, "_threads", 0)) as pyav:
                return target, pyav._read([target])[0]  # [H, W, 3]
        except VideoDecodeError:
            return target, None

    def _on_the_way(self, first: int) -> int | None:
        """The frame after the keyframe before frame ``first`` (the first requested frame other than 0), which
        the backend decodes on its way to ``first`` and gives out for one colour conversion more; None when
        that frame is ``first`` or later."""
        after = self._keyframe_before(first) + 1
        return after if after < first else None

    def _check_cost(self, index: int) -> tuple[int, int]:
        """How much PyAV must decode to give frame ``index`` for a check (smaller is cheaper), in bytes of
        packet data: from the keyframe before it (after a seek), or from frame 1 in the first GOP (the
        probe's decoder goes on from frame 0); by frame count when the sizes are unknown. Each decoded
        frame adds 400 bytes plus one per 100 pixels, a seek 500 (measured with PyAV here: about 0.1 ms per
        kB of packets, 0.04 ms + 1 us per 1000 pixels per frame, 0.05 ms per seek)."""
        key = self._keyframe_before(index)
        sizes = self._index.sizes
        if sizes is None:
            return (index - key, index)
        start = max(key, 1)
        per_frame = 400 + self._meta.height * self._meta.width // 100
        return (sum(sizes[start : index + 1]) + (index + 1 - start) * per_frame + (500 if key else 0), index)

    def _verify_frame0(self, got: np.ndarray, reference: np.ndarray | None = None) -> None:
        """At open: the backend's frame 0 (upright RGB) against PyAV's (``reference``, converted here when not
        given); raises ``_Refused`` when they differ."""
        if reference is None:
            assert self._first_frame is not None
            reference = _rotate(_to_rgb(self._first_frame), self._meta.rotation)  # [H, W, 3]
        if got.shape != reference.shape:
            raise _Refused(
                f"{self.backend}'s frames are {got.shape[1]}x{got.shape[0]}, PyAV's "
                f"{reference.shape[1]}x{reference.shape[0]}"
            )
        why = frames_differ(got, reference)
        if why is not None:
            raise _Refused(f"{self.backend}'s frame 0 differs from PyAV's ({why})")

    def _start_checks(self, verify: bool) -> None:
        """Called by the backend constructors once the probe is done: keep PyAV's decoder (the probe's) for
        the checks and a possible hand-over, unless this file's verdict is already known (or ``verify`` is
        False)."""
        assert self._probe is not None
        found, self._probe = self._probe, None
        self._verdict_key = _file_key(self.path, self.backend)  # the file as opened (one stat for both uses)
        known, _ = _known_verdict(self.path, self.backend, self._verdict_key)
        if known or not verify:
            self.verified = True if known else None
            found.container.close()
        else:
            self._check = found

    def _release_pyav(self) -> None:
        pyav, self._pyav = self._pyav, None
        if pyav is not None and pyav is not self._delegate:
            pyav.close()
        check, self._check = self._check, None
        if check is not None:
            check.container.close()

    def _release_backend(self) -> None:
        """Free the backend's own decoder (after a hand-over to PyAV)."""

    def _hand_over(self, reason: str) -> None:
        """Decode this file with PyAV from now on: one log line, the verdict remembered for the file."""
        if self._pyav is None:
            check, self._check = self._check, None  # at open: go on with the probe's decoder (at frame 0)
            threads = getattr(self, "_threads", 0)
            if check is not None and threads != CHECK_THREADS:  # its thread count is fixed: open anew
                check.container.close()
                check = None
            self._pyav = PyAVReader(self.path, threads=threads, found=check)
        self._delegate = self._pyav
        self._delegate.requested_backend = self.requested_backend
        self._delegate.fallback = self.fallback = reason
        self.backend = "pyav"
        self.verified = False
        self._release_backend()
        _remember_verdict(self.path, self.requested_backend, reason, self._verdict_key)
        log.warning("videomask: %s: using PyAV instead of %s: %s", self.path, self.requested_backend, reason)

    def _read(self, wanted: list[int]) -> np.ndarray:
        meta = self._meta
        out = np.empty((len(wanted), meta.height, meta.width, 3), dtype=np.uint8)  # [N, H, W, 3]
        slots: dict[int, list[int]] = {}
        for slot, i in enumerate(wanted):
            slots.setdefault(i, []).append(slot)
        for i in sorted(slots):
            image = self._frame(i)
            if image.shape != out.shape[1:]:
                raise _err(self.path, f"frame {i} has size {image.shape[:2]}, expected {out.shape[1:3]}")
            for slot in slots[i]:
                out[slot] = image
        return out

    def _frame(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
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


def _packets_from_keyframe(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, index: _FrameIndex, key: int
) -> Iterator[av.Packet] | None:
    """The stream's packets from keyframe ``key``'s own packet on (after a seek), or None when no seek finds
    it. MPEG program / transport streams seek to a byte position near the time, so the packets before the
    keyframe's are skipped (demuxed, not decoded), and a seek that lands past it, or where the keyframe's
    packet comes with other pts than in the index (a program stream's demuxer after a seek), is retried from
    an earlier keyframe (at most three). When none finds it (a keyframe table that names frames the
    container does not seek to): the packets from the first keyframe after a seek to ``key``, if it is a
    keyframe of the index no later than ``key``, with the pts the index gives it."""
    assert index.pts is not None
    target = index.pts[key]
    earlier = [k for k in index.keyframes if k <= key][::-1][:3] or [key]
    for start in earlier:
        container.seek(index.pts[start], stream=stream, backward=True, any_frame=False)  # flushes the decoder
        demux = container.demux(stream)
        skipped = 0
        for packet in demux:
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.pts == target and packet.is_keyframe:
                return itertools.chain([packet], (p for p in demux if p.size and not p.is_discard))
            if skipped >= index.num_frames or (packet.is_keyframe and (packet.pts or 0) > target):
                break  # past the keyframe: seek from an earlier one
            skipped += 1
    keys = {index.pts[k] for k in index.keyframes if k <= key}
    container.seek(target, stream=stream, backward=True, any_frame=False)
    demux = container.demux(stream)
    for packet in demux:
        if packet.size and not packet.is_discard and packet.is_keyframe:
            if packet.pts not in keys:
                return None
            return itertools.chain([packet], (p for p in demux if p.size and not p.is_discard))
    return None


class _FrameCounter:
    """Names the frames a decoder gives out after a seek (or from the start) as PyAV's sequential decode names
    them (its n-th frame out is frame n): the first by its pts, each next one by counting on from it.

    AVI files with packed B-frames (old DivX/Xvid) give their frames in display order with the pts swapped in
    pairs, so a frame's pts may name the count's neighbour, but never a frame seen before. A dropped frame
    would leave the frames seen one short of the count for good: a count is trusted once it is in step (the
    frames seen are exactly those from the first up to it), at its frame or at the next one.
    """

    def __init__(self) -> None:
        self.first = self.count = self.newest = -1  # the first frame's position, the count, the newest seen
        self._seen: set[int] = set()

    def take(self, pos: int) -> bool:
        """Count the next frame out, whose pts is at position ``pos`` of the index; False when the rule breaks
        (a position seen before, or more than a neighbour away from the count: so never before the first)."""
        if self.first < 0:
            self.first = self.count = pos
        else:
            self.count += 1
        if pos in self._seen or abs(pos - self.count) > 1:
            return False
        self.newest = max(self.newest, pos)
        self._seen = {p for p in self._seen if p >= self.count} | {pos}  # a next frame's pts names count or later
        return True

    @property
    def in_step(self) -> bool:
        # distinct positions from the first to at most count + 1, as many as counted: all up to the count
        return self.newest == self.count


def _decoded(codec: av.codec.context.CodecContext, packets: Iterator[av.Packet]) -> Iterator[av.VideoFrame]:
    """The frames of ``packets`` (after a seek), the decoder drained at the end (a plain function: see
    ``_guarded``)."""
    for packet in packets:
        yield from codec.decode(packet)
    yield from codec.decode(None)


def _named(
    frames: Iterator[av.VideoFrame], position: Callable[[int], int | None], *, from_start: bool
) -> Iterator[tuple[av.VideoFrame, int]]:
    """``frames`` with the index each gets from a ``_FrameCounter`` (``position``: the index a pts names, None
    when none); from the start, the first must be frame 0. A frame counted out of step is given once the next
    frame brings the count in step. Raises ``_Unreliable`` when the rule breaks (a plain function: see
    ``_guarded``)."""
    counter = _FrameCounter()
    held: tuple[av.VideoFrame, int] | None = None  # counted out of step: the next frame must bring it in step
    for frame in frames:
        k = position(frame.pts) if frame.pts is not None else None
        if k is None:
            raise _Unreliable(f"decoded pts {frame.pts} not in the index")
        if from_start and counter.first < 0 and k != 0:
            raise _Unreliable(f"the first frame has frame {k}'s pts")
        if not counter.take(k):
            raise _Unreliable(f"frame order broken: frame {counter.count} has frame {k}'s pts")
        if held is not None:
            if not counter.in_step:
                raise _Unreliable(f"frame order broken after frame {held[1]}")
            yield held
            held = None
        if counter.in_step:
            yield frame, counter.count
        else:
            held = (frame, counter.count)
    if held is not None:
        raise _Unreliable(f"the video ended before frame {held[1]}'s count was confirmed")


def _decode_one(found: _Probe, index: _FrameIndex, target: int, key: int) -> av.VideoFrame | None:
    """PyAV's frame ``target`` decoded with as little work as possible, for a check; the same frame as PyAV's
    sequential decode gives, or None when there is no such shortcut here (use the reader).

    When ``key``, the keyframe before the target, is 0: the probe's decoder goes on from frame 0 and its n-th
    frame out is frame n. Else after a seek to ``key`` (packets from the keyframe's own on), the frames are
    named as PyAV's reader names them (``_named``): None when pts are missing, the seek lands after the
    target or the count breaks or is not in step at the target or the frame after it. The decoder is not
    drained early: FFmpeg's unpacking of packed B-frames holds a B-frame back, and a drain dropped it.
    """
    if index.pts is None:
        return None
    container, stream = found.container, found.stream
    codec = stream.codec_context
    try:
        if key == 0:
            for n, frame in enumerate(found.frames, start=1):  # sequential from frame 1
                if n == target:
                    return frame
            return None
        packets = _packets_from_keyframe(container, stream, index, key)
        if packets is None:
            return None
        pts = index.pts

        def position(p: int) -> int | None:
            k = bisect.bisect_left(pts, p)
            return k if k < len(pts) and pts[k] == p else None

        for frame, k in _named(_decoded(codec, packets), position, from_start=False):
            if k >= target:  # the seek may land after the target
                return frame if k == target else None
        return None
    except _Unreliable:
        return None
    except av.FFmpegError as err:
        raise _DecodeFailed(str(_err(container.name, "decode failed", err))) from None


class PyAVReader(VideoReader):
    """PyAV (FFmpeg) backend: seek to the keyframe before a target, decode forward, match frames by pts."""

    backend = "pyav"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0, found: _Probe | None = None) -> None:
        super().__init__(path, threads=threads, keep_open=True, found=found)
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
        self._named = iter(())
        if gen is not None:
            try:
                gen.close()
            except Exception:  # noqa: BLE001 - a decoder error while closing is no reason to fail close()
                pass
        self._stream = None
        self._last = None

    # -- decoder state: a frame generator from the last seek (or the start) and the last frame it gave --
    def _use(self, frames: Iterator[av.VideoFrame], *, after_seek: bool) -> None:
        self._pos = -1  # index of the last frame given out (-1: none yet)
        self._last: av.VideoFrame | None = None
        self._after_seek = after_seek
        self._gen: Iterator[av.VideoFrame] | None = _guarded(self.path, frames)  # holds no reference to self
        # (frame, index): named by pts and counted while seeks are trusted, else counted from the start
        self._named: Iterator[tuple[av.VideoFrame, int]] = (
            _named(self._gen, self._pts_to_index.get, from_start=not after_seek)
            if self.seek_ok
            else zip(self._gen, itertools.count())
        )

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
        """Decode from keyframe ``keyframe``'s own packet, found as the check's shortcut finds it: an MPEG
        program stream's demuxer gave the packets after a seek other pts than in a pass from the start (the
        keyframe's one frame earlier), so frames named by those pts were the next frame's."""
        assert self._container is not None and self._stream is not None
        self.num_seeks += 1
        try:
            packets = _packets_from_keyframe(self._container, self._stream, self._index, keyframe)
        except av.FFmpegError as err:
            raise _Unreliable(f"seek failed: {err}") from None
        if packets is None:
            if keyframe == 0:  # an MPEG transport stream cannot always seek back to its start: open it anew
                self._restart()
                return
            raise _Unreliable(f"no seek lands on keyframe {keyframe}'s packet")
        self._use(_decoded(self._stream.codec_context, packets), after_seek=True)

    def _next(self) -> av.VideoFrame | None:
        """Take one frame, update ``_pos`` (``_named`` raises ``_Unreliable`` when a pts does not fit)."""
        item = next(self._named, None)
        if item is None:
            return None
        self._last, self._pos = item
        return self._last

    def _frame(self, index: int) -> np.ndarray:
        if self.seek_ok:
            try:
                return self._convert(self._seek_read(index))
            except (_Unreliable, _DecodeFailed):
                self.seek_ok = False
                self._restart()
        return self._convert(self._sequential_read(index))

    def _seek_read(self, index: int) -> av.VideoFrame:
        if self._last is not None and self._pos == index:
            return self._last
        key = self._keyframe_before(index)
        if not (self._pos < index and key <= self._pos + self.seek_min_gap):
            # the decoder is past the target, or a keyframe lies between it and the target: seek
            for _attempt in range(3):
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
            frame = self._next()
            if frame is None:
                raise _Unreliable(f"video ended before frame {index}")
            if self._pos == index:
                return frame
            if self._pos > index:
                raise _Unreliable(f"frame {index} skipped")

    def _sequential_read(self, index: int) -> av.VideoFrame:
        if self._last is not None and self._pos == index:
            return self._last
        if self._pos > index or self._after_seek:
            self._restart()
        while self._pos < index:
            if self._next() is None:
                raise _err(self.path, f"video ended at frame {self._pos + 1}, frame {index} is not decodable")
        assert self._last is not None
        return self._last

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        image = _to_rgb(frame)  # [h, w, 3] as coded
        return _rotate(image, self._meta.rotation)  # [H, W, 3] as displayed


class DecordReader(VideoReader):
    """decord backend: ``get_batch`` (decord seeks itself), trusted only when decord's frame timestamps agree
    with the demuxed pts index and the video has no open GOPs (decord returns wrong frames near open-GOP
    keyframes); otherwise decord's own sequential path (``seek(0)`` + ``next``).
    Rotation: recent decord builds apply it themselves (detected on frame 0); otherwise videomask does.
    """

    backend = "decord"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0, verify: bool = True) -> None:
        try:
            import decord
        except ImportError as err:
            raise VideoDecodeError("the decord backend needs `pip install decord`") from err
        _hook_bundled_libav(os.path.dirname(decord.__file__))
        self._threads = threads
        self._vr = None
        super().__init__(path, threads=CHECK_THREADS, keep_open=True)
        self._start_checks(verify)
        self._pos = -1  # sequential path: index of the last frame decoded
        try:
            try:
                self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=threads)
            except (decord.DECORDError, RuntimeError) as err:
                raise _Refused(str(_err(self.path, "decord cannot open video", err))) from None
            self._decord_error = decord.DECORDError
            if len(self._vr) != self._meta.num_frames:
                raise _Refused(f"decord counts {len(self._vr)} frames, PyAV {self._meta.num_frames}")
            rotates, frame0, pyav0 = self._rotates_itself()
            self._rotate = 0 if rotates else self._meta.rotation
            if self._check is not None:
                self._verify_frame0(frame0, pyav0)
        except VideoDecodeError as err:
            self._hand_over(str(err).removeprefix(self.path + ": "))
        finally:
            self._first_frame = None
            _report_libav_messages(self.path, "decord")
        if self._delegate is None:
            # decord's get_batch returns frames of the previous GOP around open-GOP keyframes: sequential there
            self.seek_ok = self.seek_ok and not self._index.open_gop and self._timestamps_agree()

    def _release_backend(self) -> None:
        self._vr = None

    def _rotates_itself(self) -> tuple[bool, np.ndarray]:
        """Decode frame 0 (decord fails on some sizes, e.g. widths under 32) and tell whether this decord
        build applies the display rotation itself (builds on recent FFmpeg do, older ones do not); returns
        ``(rotates, decord's frame 0 upright [H, W, 3], PyAV's frame 0 upright [H, W, 3])``."""
        try:
            got = self._vr[0].asnumpy()  # [h, w, 3]
            self._vr.seek(0)
        except (self._decord_error, RuntimeError) as err:
            raise _Refused(str(_err(self.path, "decord cannot decode frame 0", err))) from None
        assert self._first_frame is not None
        coded = _to_rgb(self._first_frame)  # [h, w, 3] PyAV's frame 0
        upright = _rotate(coded, self._meta.rotation)
        if got.shape not in (upright.shape, coded.shape):
            # seen with some widths (e.g. 16, 48): decord returns [h, w, 6] and get_batch fails
            raise _Refused(f"decord cannot decode frames correctly (frame 0 has shape {got.shape})")
        if self._meta.rotation == 0:
            return True, got, upright
        if got.shape != upright.shape:
            return False, _rotate(got, self._meta.rotation), upright
        if got.shape != coded.shape:
            return True, got, upright
        g, u, c = (x.astype(np.int16) for x in (got, upright, coded))
        if np.abs(g - u).mean() <= np.abs(g - c).mean():
            return True, got, upright
        return False, _rotate(got, self._meta.rotation), upright

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

    def _read(self, wanted: list[int]) -> np.ndarray:
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
        return super()._read(wanted)

    def _frame(self, index: int) -> np.ndarray:
        try:
            if self._pos < -1 or self._pos >= index:
                self._vr.seek(0)
                self._pos = -1
            # next() only: decord's skip_frames() lands on wrong frames in B-frame AVI files
            while self._pos < index - 1:
                self._vr.next()
                self._pos += 1
            self._pos = index
            return _rotate(self._vr.next().asnumpy(), self._rotate)
        except (self._decord_error, RuntimeError, StopIteration) as err:
            raise _err(self.path, f"decord cannot decode frame {index}", err) from None


# OpenCV's seek (cap_ffmpeg) starts this many frames before its target and decodes forward from the keyframe
# before that
OPENCV_SEEK_BACK = 16


class OpenCVReader(VideoReader):
    """OpenCV (``cv2.VideoCapture``, FFmpeg) backend: ``CAP_PROP_POS_FRAMES`` seeks are checked against the
    pts index through ``CAP_PROP_POS_MSEC``; a mismatch switches to ``grab()``-ing from the start.
    Rotation is applied by videomask (OpenCV's auto-rotation is turned off).
    """

    backend = "opencv"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0, verify: bool = True) -> None:
        import cv2

        self._cv2 = cv2
        self._threads = threads
        self._cap = None
        super().__init__(path, threads=CHECK_THREADS, keep_open=True)
        self._start_checks(verify)
        try:
            self._setup()
            if self._check is not None:
                self._verify_frame0(self._retrieve(0))
        except VideoDecodeError as err:
            self._hand_over(str(err).removeprefix(self.path + ": "))
        finally:
            self._first_frame = None

    def _release_backend(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _on_the_way(self, first: int) -> int | None:
        key = self._keyframe_before(first)
        if key <= self.seek_min_gap:  # the reader grabs from frame 0 (where the open left it) without a seek
            return super()._on_the_way(first)
        # OpenCV's own seek to frame t starts from the keyframe before t - 16 (cap_ffmpeg's seek), so a seek to
        # the frame after a keyframe decodes the GOP before it too (measured: 1.5-2.1x the clip read); the
        # first frame it can give out from this keyframe is key + 16 (two more: its seek goes by time), and
        # the reader grabs on from there to ``first``
        after = key + OPENCV_SEEK_BACK + 2
        return after if after < first else None

    def _setup(self) -> None:
        cv2 = self._cv2
        self._msec: np.ndarray | None = None
        if self._index.pts is not None:
            self._msec = (
                (np.asarray(self._index.pts, dtype=np.float64) - self._index.pts[0])
                * float(self._index.time_base)
                * 1000.0
            )  # [n] ms from the first frame
            gaps = np.diff(self._msec)
            self._tol = 0.4 * float(gaps.min()) if len(gaps) else 1.0
        self._open()
        _quiet_bundled_libav(os.path.join(os.path.dirname(os.path.dirname(cv2.__file__)), "opencv_python_headless"))
        _quiet_bundled_libav(os.path.join(os.path.dirname(os.path.dirname(cv2.__file__)), "opencv_python"))
        # learn the time origin OpenCV reports for frame 0 (POS_MSEC is relative to the stream start)
        if not self._grab():
            raise _Refused(str(_err(self.path, "OpenCV cannot decode frame 0")))
        self._msec0 = self._cap.get(cv2.CAP_PROP_POS_MSEC)

    def _open(self) -> None:
        cv2 = self._cv2
        if self._cap is not None:
            self._cap.release()
        params = [cv2.CAP_PROP_N_THREADS, self._threads] if self._threads > 0 else []
        self._cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, params)
        if not self._cap.isOpened():
            raise _Refused(str(_err(self.path, "OpenCV cannot open video")))
        self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        self._pos = -1
        self._kept: np.ndarray | None = None  # frame ``_pos`` as converted by ``_retrieve``, or None

    def close(self) -> None:
        super().close()
        self._kept = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _grab(self) -> bool:
        """Decode the next frame (no conversion); while seeks are trusted, check its time against the index."""
        ok = self._cap.grab()
        self._kept = None
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
        self._kept = _rotate(rgb, self._meta.rotation)  # [H, W, 3]; callers copy it
        return self._kept

    def _frame(self, index: int) -> np.ndarray:
        if index == self._pos:  # the frame grabbed last (frame 0 after open): no seek
            return self._kept if self._kept is not None else self._retrieve(index)
        key = self._keyframe_before(index)
        if self.seek_ok and self._msec is not None and not (self._pos < index and key <= self._pos + self.seek_min_gap):
            self.num_seeks += 1
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, index)
            self._kept = None
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


# ``auto``'s order: fastest first, as measured by benchmarks/decode.py (benchmarks/results/decode.md, Part 1,
# CPU time of a 16-frame clip read over the shipped clips and the conformance corpus): PyAV 1.88x decord's
# get_batch, OpenCV 1.61x, videomask's decord backend 0.67x. PyAV needs no per-file check (it is the reference).
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
    """
    if backend == "auto":
        backend = next(name for name in AUTO_ORDER if name in available_backends())
    if backend not in BACKENDS:
        raise VideoDecodeError(f"unknown video backend {backend!r} (choose from {', '.join(BACKENDS)}, auto)")
    path = Path(path)
    if backend == "pyav":
        return PyAVReader(path, **options)
    known, reason = _known_verdict(os.fspath(path), backend)
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
