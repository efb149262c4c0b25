"""The base of the readers: :class:`VideoReader` (open file, metadata, the read of requested frames)."""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence

import av
import numpy as np

from videomask.errors import VideoDecodeError
from videomask.video.meta import Probe, VideoMeta, decode_error, open_probe


class VideoReader:
    """An open video; use :func:`~videomask.video.open_video`. Subclasses implement ``_frame(index)``.

    ``read`` decodes the requested frames in increasing order (each distinct index once) and returns them
    in the order asked, duplicates included; only the requested frames are held in memory.
    """

    backend: str = ""
    # Decoding forward from the current position is cheaper than a seek (decoder flush + refill) unless the
    # seek skips at least this many frames: seek only when the keyframe before the target lies further ahead.
    seek_min_gap: int = 16

    def __init__(
        self, path: str | os.PathLike, *, threads: int = 0, keep_open: bool = False, found: Probe | None = None
    ) -> None:
        self.path = os.fspath(path)
        found = found if found is not None else open_probe(self.path, threads)
        self._meta, self._index = found.meta, found.index
        if keep_open:  # the subclass goes on with the probe's container (to decode, or for the checks)
            self._probe: Probe | None = found
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

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` as uint8 ``[N, H, W, 3]`` RGB (displayed orientation).

        To bound the time a read may take, run it under :func:`~videomask.video.call_with_timeout` (and drop
        the reader when it times out: the abandoned decode still uses it).
        """
        return self._read(self._wanted(indices))

    def read_all(self) -> np.ndarray:
        """Every frame, uint8 ``[num_frames, H, W, 3]`` (mind the memory for long videos)."""
        return self.read(range(self._meta.num_frames))

    def _wanted(self, indices: Sequence[int]) -> list[int]:
        """``indices`` as a list of ints; raises ``VideoDecodeError`` when the reader is closed or an index is
        out of range."""
        if self._closed:
            raise VideoDecodeError(f"{self.path}: reader is closed")
        wanted = [int(i) for i in indices]
        n = self._meta.num_frames
        bad = [i for i in wanted if not 0 <= i < n]
        if bad:
            raise VideoDecodeError(f"{self.path}: frame index {bad[0]} out of range (video has {n} frames)")
        return wanted

    def _read(self, wanted: list[int]) -> np.ndarray:
        meta = self._meta
        out = np.empty((len(wanted), meta.height, meta.width, 3), dtype=np.uint8)  # [N, H, W, 3]
        slots: dict[int, list[int]] = {}
        for slot, i in enumerate(wanted):
            slots.setdefault(i, []).append(slot)
        for i in sorted(slots):
            image = self._frame(i)
            if image.shape != out.shape[1:]:
                raise decode_error(self.path, f"frame {i} has size {image.shape[:2]}, expected {out.shape[1:3]}")
            for slot in slots[i]:
                out[slot] = image
        return out

    def _frame(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _keyframe_before(self, index: int) -> int:
        keys = self._index.keyframes
        pos = bisect.bisect_right(keys, index) - 1
        return keys[pos] if pos >= 0 else 0
