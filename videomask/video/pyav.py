"""The PyAV backend (the default and the reference): seek to the keyframe before a target, decode forward, and
name the frames by pts and count (:mod:`videomask.video.frames`)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import av
import numpy as np

from videomask.video.convert import rotate, to_rgb
from videomask.video.frames import DecodeFailed, Unreliable, decoded, guarded, named, packets_from_keyframe
from videomask.video.meta import Probe, decode_error, open_container, open_probe, start_decoding
from videomask.video.reader import VideoReader


class PyAVReader(VideoReader):
    """PyAV (FFmpeg) backend: seek to the keyframe before a target, decode forward, match frames by pts."""

    backend = "pyav"

    def __init__(
        self, path: str | os.PathLike, *, threads: int = 0, found: Probe | None = None, data: bytes | None = None
    ) -> None:
        """``data``: the encoded video itself (``path`` then only names it); ``found``: its probe, if made."""
        self._data = data
        if found is None and data is not None:
            found = open_probe(os.fspath(path), threads, data)
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
        self._gen: Iterator[av.VideoFrame] | None = guarded(self.path, frames)  # holds no reference to self
        # (frame, index): named by pts and counted while seeks are trusted, else counted from the start
        self._named: Iterator[tuple[av.VideoFrame, int]] = (
            named(self._gen, self._pts_to_index.get, from_start=not after_seek)
            if self.seek_ok
            else zip(self._gen, itertools.count())
        )

    def _restart(self) -> None:
        """Decode from the very start: frames are counted (and checked against the pts index)."""
        self._drop_decoder()
        if self._container is not None:
            self._container.close()
            self._container = None
        self._container = open_container(self.path, data=self._data)
        self._stream, frames = start_decoding(self._container, self._threads)
        self._use(frames, after_seek=False)

    def _seek(self, keyframe: int) -> None:
        """Decode from keyframe ``keyframe``'s own packet, found as the check's shortcut finds it
        (:func:`~videomask.video.frames.packets_from_keyframe`): an MPEG program stream's demuxer can give the
        packets after a seek other pts than a pass from the start does (the keyframe's one frame earlier), and
        frames named by those pts would be the next frame's."""
        assert self._container is not None and self._stream is not None
        self.num_seeks += 1
        try:
            packets = packets_from_keyframe(self._container, self._stream, self._index, keyframe)
        except av.FFmpegError as err:
            raise Unreliable(f"seek failed: {err}") from None
        if packets is None:
            if keyframe == 0:  # an MPEG transport stream cannot always seek back to its start: open it anew
                self._restart()
                return
            raise Unreliable(f"no seek lands on keyframe {keyframe}'s packet")
        self._use(decoded(self._stream.codec_context, packets), after_seek=True)

    def _next(self) -> av.VideoFrame | None:
        """Take one frame, update ``_pos`` (``named`` raises ``Unreliable`` when a pts does not fit)."""
        item = next(self._named, None)
        if item is None:
            return None
        self._last, self._pos = item
        return self._last

    def _frame(self, index: int) -> np.ndarray:
        if self.seek_ok:
            try:
                return self._convert(self._seek_read(index))
            except (Unreliable, DecodeFailed):
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
                    raise Unreliable("no frame after seek")
                if self._pos <= index:
                    break
                # landed after the target: try the keyframe before
                key = self._keyframe_before(key - 1) if key > 0 else 0
            else:
                raise Unreliable(f"seek for frame {index} keeps landing after it")
            if self._pos == index:
                return frame
        while True:
            frame = self._next()
            if frame is None:
                raise Unreliable(f"video ended before frame {index}")
            if self._pos == index:
                return frame
            if self._pos > index:
                raise Unreliable(f"frame {index} skipped")

    def _sequential_read(self, index: int) -> av.VideoFrame:
        if self._last is not None and self._pos == index:
            return self._last
        if self._pos > index or self._after_seek:
            self._restart()
        while self._pos < index:
            if self._next() is None:
                raise decode_error(self.path, f"video ended at frame {self._pos + 1}, frame {index} is not decodable")
        assert self._last is not None
        return self._last

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        image = to_rgb(frame)  # [h, w, 3] as coded
        return rotate(image, self._meta.rotation)  # [H, W, 3] as displayed
