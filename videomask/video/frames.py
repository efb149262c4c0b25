"""Naming the frames a PyAV decoder gives out after a seek (or from the start) as the sequential decode names
them: the packets from a keyframe's own packet, the frame counter, and the one-frame decode of the checks.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator

import av

from videomask.errors import VideoDecodeError
from videomask.video.meta import FrameIndex, Probe, decode_error


class DecodeFailed(VideoDecodeError):
    """FFmpeg reported an error while decoding (after a seek, the sequential path gets a second try)."""


class Unreliable(Exception):
    """Seeking gave a frame we cannot trust; the caller switches to the sequential path."""


def guarded(path: str, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    """``frames``, with FFmpeg decode errors turned into ``DecodeFailed``.

    A plain function, not a method: a generator holding the reader while the reader holds it would be a
    reference cycle, leaving the whole decoder (FFmpeg memory and threads) to the cyclic GC.
    """
    try:
        yield from frames
    except av.FFmpegError as err:
        raise DecodeFailed(str(decode_error(path, "decode failed", err))) from None


def packets_from_keyframe(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, index: FrameIndex, key: int
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


class FrameCounter:
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


def decoded(codec: av.codec.context.CodecContext, packets: Iterator[av.Packet]) -> Iterator[av.VideoFrame]:
    """The frames of ``packets`` (after a seek), the decoder drained at the end (a plain function: see
    ``guarded``)."""
    for packet in packets:
        yield from codec.decode(packet)
    yield from codec.decode(None)


def named(
    frames: Iterator[av.VideoFrame], position: Callable[[int], int | None], *, from_start: bool
) -> Iterator[tuple[av.VideoFrame, int]]:
    """``frames`` with the index each gets from a ``FrameCounter`` (``position``: the index a pts names, None
    when none); from the start, the first must be frame 0. A frame counted out of step is given once the next
    frame brings the count in step. Raises ``Unreliable`` when the rule breaks (a plain function: see
    ``guarded``)."""
    counter = FrameCounter()
    held: tuple[av.VideoFrame, int] | None = None  # counted out of step: the next frame must bring it in step
    for frame in frames:
        k = position(frame.pts) if frame.pts is not None else None
        if k is None:
            raise Unreliable(f"decoded pts {frame.pts} not in the index")
        if from_start and counter.first < 0 and k != 0:
            raise Unreliable(f"the first frame has frame {k}'s pts")
        if not counter.take(k):
            raise Unreliable(f"frame order broken: frame {counter.count} has frame {k}'s pts")
        if held is not None:
            if not counter.in_step:
                raise Unreliable(f"frame order broken after frame {held[1]}")
            yield held
            held = None
        if counter.in_step:
            yield frame, counter.count
        else:
            held = (frame, counter.count)
    if held is not None:
        raise Unreliable(f"the video ended before frame {held[1]}'s count was confirmed")


def decode_one(found: Probe, index: FrameIndex, target: int, key: int) -> av.VideoFrame | None:
    """PyAV's frame ``target`` decoded with as little work as possible, for a check; the same frame as PyAV's
    sequential decode gives, or None when there is no such shortcut here (use the reader).

    When ``key``, the keyframe before the target, is 0: the probe's decoder goes on from frame 0 and its n-th
    frame out is frame n. Else after a seek to ``key`` (packets from the keyframe's own on), the frames are
    named as PyAV's reader names them (``named``): None when pts are missing, the seek lands after the
    target or the count breaks or is not in step at the target or the frame after it. The decoder is not
    drained early: FFmpeg's unpacking of packed B-frames holds a B-frame back, which a drain would drop.
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
        packets = packets_from_keyframe(container, stream, index, key)
        if packets is None:
            return None
        pts = index.pts

        def position(p: int) -> int | None:
            k = bisect.bisect_left(pts, p)
            return k if k < len(pts) and pts[k] == p else None

        for frame, k in named(decoded(codec, packets), position, from_start=False):
            if k >= target:  # the seek may land after the target
                return frame if k == target else None
        return None
    except Unreliable:
        return None
    except av.FFmpegError as err:
        raise DecodeFailed(str(decode_error(container.name, "decode failed", err))) from None
