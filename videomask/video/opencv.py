"""The OpenCV backend (``cv2.VideoCapture`` with FFmpeg), checked against PyAV per file."""

from __future__ import annotations

import os

import numpy as np

from videomask.errors import VideoDecodeError
from videomask.video.convert import rotate
from videomask.video.ffmpeg_log import quiet_bundled_libav
from videomask.video.meta import decode_error
from videomask.video.verify import CheckedReader, Refused

# OpenCV's seek (cap_ffmpeg) starts this many frames before its target and decodes forward from the keyframe
# before that
OPENCV_SEEK_BACK = 16


class OpenCVReader(CheckedReader):
    """OpenCV (``cv2.VideoCapture``, FFmpeg) backend: ``CAP_PROP_POS_FRAMES`` seeks are checked against the
    pts index through ``CAP_PROP_POS_MSEC``; a mismatch switches to ``grab()``-ing from the start.
    Rotation is applied by videomask (OpenCV's auto-rotation is turned off).
    """

    backend = "opencv"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0, verify: bool = True) -> None:
        # OpenCV (and its own FFmpeg copy) loads only when this backend is used
        import cv2

        self._cv2 = cv2
        self._threads = threads
        self._cap = None
        super().__init__(path, verify=verify)
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
        # the frame after a keyframe decodes the GOP before it too; the first frame it can give out from this
        # keyframe is key + 16 (two more: its seek goes by time), and the reader grabs on from there to ``first``
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
        quiet_bundled_libav(os.path.join(os.path.dirname(os.path.dirname(cv2.__file__)), "opencv_python_headless"))
        quiet_bundled_libav(os.path.join(os.path.dirname(os.path.dirname(cv2.__file__)), "opencv_python"))
        # learn the time origin OpenCV reports for frame 0 (POS_MSEC is relative to the stream start)
        if not self._grab():
            raise Refused(str(decode_error(self.path, "OpenCV cannot decode frame 0")))
        self._msec0 = self._cap.get(cv2.CAP_PROP_POS_MSEC)

    def _open(self) -> None:
        cv2 = self._cv2
        if self._cap is not None:
            self._cap.release()
        params = [cv2.CAP_PROP_N_THREADS, self._threads] if self._threads > 0 else []
        self._cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, params)
        if not self._cap.isOpened():
            raise Refused(str(decode_error(self.path, "OpenCV cannot open video")))
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
            raise decode_error(self.path, f"OpenCV cannot decode frame {index}")
        if bgr.ndim == 2:
            rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_GRAY2RGB)  # [h, w] -> [h, w, 3]
        else:
            rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)  # [h, w, 3]
        del bgr
        self._kept = rotate(rgb, self._meta.rotation)  # [H, W, 3]; callers copy it
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
                raise decode_error(self.path, f"video ended at frame {self._pos + 1}, frame {index} is not decodable")
        return self._retrieve(index)
