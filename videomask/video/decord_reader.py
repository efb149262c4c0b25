"""The decord backend (optional: ``pip install decord``), checked against PyAV per file."""

from __future__ import annotations

import os

import numpy as np

from videomask.errors import VideoDecodeError
from videomask.video.convert import rotate, to_rgb
from videomask.video.ffmpeg_log import hook_bundled_libav, report_libav_messages
from videomask.video.meta import decode_error
from videomask.video.verify import CheckedReader, Refused


class DecordReader(CheckedReader):
    """decord backend: ``get_batch`` (decord seeks itself), trusted only when decord's frame timestamps agree
    with the demuxed pts index and the video has no open GOPs (decord returns wrong frames near open-GOP
    keyframes); otherwise decord's own sequential path (``seek(0)`` + ``next``).
    Rotation: recent decord builds apply it themselves (detected on frame 0); otherwise videomask does.
    """

    backend = "decord"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0, verify: bool = True) -> None:
        try:
            # decord is optional (the decord extra): loaded when this backend opens a file
            import decord
        except ImportError as err:
            raise VideoDecodeError("the decord backend needs `pip install decord`") from err
        hook_bundled_libav(os.path.dirname(decord.__file__))
        self._threads = threads
        self._vr = None
        super().__init__(path, verify=verify)
        self._pos = -1  # sequential path: index of the last frame decoded
        try:
            try:
                self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=threads)
            except (decord.DECORDError, RuntimeError) as err:
                raise Refused(str(decode_error(self.path, "decord cannot open video", err))) from None
            self._decord_error = decord.DECORDError
            if len(self._vr) != self._meta.num_frames:
                raise Refused(f"decord counts {len(self._vr)} frames, PyAV {self._meta.num_frames}")
            rotates, frame0, pyav0 = self._rotates_itself()
            self._rotate = 0 if rotates else self._meta.rotation
            if self._check is not None:
                self._verify_frame0(frame0, pyav0)
        except VideoDecodeError as err:
            self._hand_over(str(err).removeprefix(self.path + ": "))
        finally:
            self._first_frame = None
            report_libav_messages(self.path, "decord")
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
            raise Refused(str(decode_error(self.path, "decord cannot decode frame 0", err))) from None
        assert self._first_frame is not None
        coded = to_rgb(self._first_frame)  # [h, w, 3] PyAV's frame 0
        upright = rotate(coded, self._meta.rotation)
        if got.shape not in (upright.shape, coded.shape):
            # seen with some widths (e.g. 16, 48): decord returns [h, w, 6] and get_batch fails
            raise Refused(f"decord cannot decode frames correctly (frame 0 has shape {got.shape})")
        if self._meta.rotation == 0:
            return True, got, upright
        if got.shape != upright.shape:
            return False, rotate(got, self._meta.rotation), upright
        if got.shape != coded.shape:
            return True, got, upright
        g, u, c = (x.astype(np.int16) for x in (got, upright, coded))
        if np.abs(g - u).mean() <= np.abs(g - c).mean():
            return True, got, upright
        return False, rotate(got, self._meta.rotation), upright

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
                raise decode_error(self.path, "decord decode failed", err) from None
            self._pos = -2  # decord's position is unknown after get_batch
            if self._rotate:
                frames = np.ascontiguousarray(np.rot90(frames, k=-(self._rotate // 90), axes=(1, 2)))  # [N, H, W, 3]
            if frames.shape[1:] != (self._meta.height, self._meta.width, 3):
                raise decode_error(self.path, f"decord frames have size {frames.shape[1:3]}")
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
            return rotate(self._vr.next().asnumpy(), self._rotate)
        except (self._decord_error, RuntimeError, StopIteration) as err:
            raise decode_error(self.path, f"decord cannot decode frame {index}", err) from None
