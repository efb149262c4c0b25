"""Checking a non-default backend against PyAV, per file: the colour-conversion tolerance
(:func:`frames_differ`), the verdicts remembered per file, and :class:`CheckedReader`, the base of the
decord and OpenCV readers, which hands a file over to PyAV when the backend disagrees or fails.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from videomask.errors import VideoDecodeError
from videomask.video import storage
from videomask.video.convert import rotate, to_rgb
from videomask.video.ffmpeg_log import report_libav_messages
from videomask.video.frames import decode_one
from videomask.video.meta import Probe
from videomask.video.pyav import PyAVReader
from videomask.video.reader import VideoReader

log = logging.getLogger("videomask.video")

# Colour-conversion tolerance between backends: the same decoded picture converted to RGB by another
# libswscale build (or another dithering of 10-bit input) differs by far less than a neighbouring (wrong)
# frame does (figures in docs/decoding.md). Frames agree when the mean absolute difference is at most
# ``MEAN_TOLERANCE`` and at most ``OUTLIER_FRACTION`` of the values differ by more than ``OUTLIER_LEVEL``.
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


class Refused(VideoDecodeError):
    """A non-default backend cannot (or does not) decode this file like PyAV: hand it over to PyAV."""


# Verdicts per file and backend: None = the backend's frames matched PyAV's, else the reason it handed over.
_VERDICTS: OrderedDict[tuple, str | None] = OrderedDict()
_VERDICTS_MAX = 65536
_verdict_lock = threading.Lock()


def file_key(path: str, backend: str) -> tuple | None:
    """The file's identity (device and inode: any path or link to it), size and mtime, and the backend: one
    ``stat`` (``os.path.realpath`` costs an ``lstat`` per path component). A URL's object is known by its
    URL, size and ETag (else modification time) from the store (:func:`~videomask.video.storage.object_key`)."""
    if storage.is_remote(path):
        key = storage.object_key(path)
        return None if key is None else (*key, backend)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, backend)


def remember_verdict(path: str, backend: str, reason: str | None, key: tuple | None = None) -> None:
    """Remember ``reason`` (None: verified) for this file and backend; ``key``: its :func:`file_key` when
    the caller has it already (one ``stat`` less)."""
    key = key if key is not None else file_key(path, backend)
    if key is None:
        return
    with _verdict_lock:
        _VERDICTS[key] = reason
        _VERDICTS.move_to_end(key)
        while len(_VERDICTS) > _VERDICTS_MAX:
            _VERDICTS.popitem(last=False)


def known_verdict(path: str, backend: str, key: tuple | None = None) -> tuple[bool, str | None]:
    """``(known, reason)``: whether this file (same size and mtime) was verified for ``backend`` before."""
    key = key if key is not None else file_key(path, backend)
    with _verdict_lock:
        if key is None or key not in _VERDICTS:
            return False, None
        return True, _VERDICTS[key]


def forget_verdicts() -> None:
    """Forget every remembered per-file verdict (the next open of each file verifies again)."""
    with _verdict_lock:
        _VERDICTS.clear()


# PyAV decoder threads for the non-default backends' probe and checks: they decode one to a few frames, for
# which FFmpeg's frame threads cost more than they give (thread start-up, and a frame-threaded decoder takes
# thread_count - 1 extra packets before it gives a frame out; see docs/decoding.md)
CHECK_THREADS = 1


class CheckedReader(VideoReader):
    """A non-default backend's reader, checked against PyAV per file.

    Opens the file with a PyAV probe (on ``CHECK_THREADS`` threads) and keeps its decoder for the checks:
    the subclass checks its frame 0 at open (``_verify_frame0``), the first read checks one frame more, and
    a failure or a frame that differs hands the file over to PyAV (``_hand_over``): from then on
    ``backend == "pyav"``, ``fallback`` says why, and reads go to the PyAV reader. Subclasses implement
    ``_frame`` (or ``_read``) and ``_release_backend``, and call ``_hand_over`` when their own set-up fails.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True) -> None:
        super().__init__(path, threads=CHECK_THREADS, keep_open=True)
        self._delegate: PyAVReader | None = None  # the PyAV reader this one handed over to
        self._pyav: PyAVReader | None = None  # the PyAV reader for a hand-over
        self._check: Probe | None = None  # the probe's PyAV decoder, kept for the checks
        self._verdict_key: tuple | None = None  # the file's verdict key, taken when the checks start
        self._start_checks(verify)

    def close(self) -> None:
        super().close()
        delegate, self._delegate = self._delegate, None
        self._release_pyav()
        if delegate is not None:
            delegate.close()

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` as uint8 ``[N, H, W, 3]`` RGB (see :meth:`VideoReader.read`); the first read
        of an unverified file checks one frame against PyAV."""
        return self._read_verified(self._wanted(indices))

    def _read_verified(self, wanted: list[int]) -> np.ndarray:
        """``_read``, or the PyAV reader's after a hand-over; the first read of an unverified file checks one
        frame against PyAV, and a backend error (other than the deadline) hands the file over to PyAV."""
        if self._delegate is not None:
            return self._delegate._read(wanted)
        backend = self.backend
        # PyAV's check frame is decoded before the backend's read: decord decodes ahead in a thread of its own
        # after a read, so a check decoded after it would make decord decode (and discard) frames meanwhile
        check = self._reference(wanted) if self.verified is None and self._check is not None else None
        # the check's frame, when it is not requested, is read first (the frame after the keyframe the read
        # starts from, which the backend decodes anyway) and left out of the result: a view without the first
        # frame (one frame more is held until the result is freed)
        extra = check is not None and check[0] not in wanted
        try:
            frames = self._read([check[0], *wanted] if extra else wanted)  # type: ignore[index]
        except VideoDecodeError as err:
            report_libav_messages(self.path, backend)
            self._hand_over(f"{backend} failed: {str(err).removeprefix(self.path + ': ')}")
            return self._delegate._read(wanted)  # type: ignore[union-attr]
        report_libav_messages(self.path, backend)
        if check is not None:
            target, reference = check
            got = frames[0] if extra else frames[wanted.index(target)]
            why = None if reference is None else frames_differ(got, reference)
            if why is not None:
                self._hand_over(f"{backend}'s frame {target} differs from PyAV's ({why})")
                return self._delegate._read(wanted)  # type: ignore[union-attr]
            self.verified = True
            remember_verdict(self.path, backend, None, self._verdict_key)
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
                frame = decode_one(check, self._index, target, self._keyframe_before(target))
            finally:
                check.container.close()  # the decoder has moved: no hand-over from it
            if frame is not None:
                return target, rotate(to_rgb(frame), self._meta.rotation)  # [H, W, 3]
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
        frame adds 400 bytes plus one per 100 pixels, a seek 500 (weights from PyAV's decode times: see
        docs/decoding.md)."""
        key = self._keyframe_before(index)
        sizes = self._index.sizes
        if sizes is None:
            return (index - key, index)
        start = max(key, 1)
        per_frame = 400 + self._meta.height * self._meta.width // 100
        return (sum(sizes[start : index + 1]) + (index + 1 - start) * per_frame + (500 if key else 0), index)

    def _verify_frame0(self, got: np.ndarray, reference: np.ndarray | None = None) -> None:
        """At open: the backend's frame 0 (upright RGB) against PyAV's (``reference``, converted here when not
        given); raises ``Refused`` when they differ."""
        if reference is None:
            assert self._first_frame is not None
            reference = rotate(to_rgb(self._first_frame), self._meta.rotation)  # [H, W, 3]
        if got.shape != reference.shape:
            raise Refused(
                f"{self.backend}'s frames are {got.shape[1]}x{got.shape[0]}, PyAV's "
                f"{reference.shape[1]}x{reference.shape[0]}"
            )
        why = frames_differ(got, reference)
        if why is not None:
            raise Refused(f"{self.backend}'s frame 0 differs from PyAV's ({why})")

    def _start_checks(self, verify: bool) -> None:
        """Called once the probe is done: keep PyAV's decoder (the probe's) for
        the checks and a possible hand-over, unless this file's verdict is already known (or ``verify`` is
        False)."""
        assert self._probe is not None
        found, self._probe = self._probe, None
        self._verdict_key = file_key(self.path, self.backend)  # the file as opened (one stat for both uses)
        known, _ = known_verdict(self.path, self.backend, self._verdict_key)
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
        remember_verdict(self.path, self.requested_backend, reason, self._verdict_key)
        log.warning("videomask: %s: using PyAV instead of %s: %s", self.path, self.requested_backend, reason)
