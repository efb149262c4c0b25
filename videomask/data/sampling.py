"""Which frames a clip takes: :func:`sample_indices` (VideoMAE-style modes, short-video policies),
:func:`clip_span` and :func:`plan_reads` (one decode for several clips of a video)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from videomask.data.draws import randint
from videomask.errors import VideoDecodeError, VideomaskError

SAMPLING_MODES = ("random", "center", "uniform")
SHORT_POLICIES = ("loop", "pad", "skip")


class VideoTooShortError(VideomaskError):
    """A video has fewer frames than a clip needs and the short-video policy is ``skip``."""


def clip_span(num_frames: int, sampling_rate: int) -> int:
    """Number of original frames a clip of ``num_frames`` at stride ``sampling_rate`` spans."""
    return (num_frames - 1) * sampling_rate + 1


def sample_indices(
    num_video_frames: int,
    num_frames: int,
    sampling_rate: int,
    mode: str = "random",
    short: str = "loop",
    generator: torch.Generator | None = None,
) -> list[int]:
    """Original frame indices of one clip of ``num_frames`` frames (VideoMAE-style sampling).

    ``mode``:
      * ``"random"`` (training): frames ``start + k * sampling_rate`` from a uniform random start;
      * ``"center"`` (evaluation): the same stride, the clip centred in the video;
      * ``"uniform"`` (evaluation, TSN segments): the video split into ``num_frames`` equal segments,
        the middle frame of each; ``sampling_rate`` is not used.

    ``short`` (a video shorter than the clip span, ``(num_frames - 1) * sampling_rate + 1``, or than
    ``num_frames`` for ``uniform``):
      * ``"loop"``: wrap around to the start (random mode: from a random start frame);
      * ``"pad"``: take the strided frames from frame 0 that exist, then repeat the last frame;
      * ``"skip"``: raise :class:`VideoTooShortError`.

    Randomness comes only from ``generator`` (``random`` mode, ``loop`` start).
    """
    n, T, rate = int(num_video_frames), int(num_frames), int(sampling_rate)
    if T <= 0 or rate <= 0:
        raise VideomaskError(f"num_frames and sampling_rate must be positive, got {T} and {rate}")
    if mode not in SAMPLING_MODES:
        raise VideomaskError(f"unknown sampling mode {mode!r} (choose from {', '.join(SAMPLING_MODES)})")
    if short not in SHORT_POLICIES:
        raise VideomaskError(f"unknown short-video policy {short!r} (choose from {', '.join(SHORT_POLICIES)})")
    if n <= 0:
        raise VideoDecodeError("the video has no frames")

    if mode == "uniform":
        if n >= T:
            return [int((k + 0.5) * n / T) for k in range(T)]
        rate, span = 1, T
    else:
        span = clip_span(T, rate)
        if n >= span:
            start = randint(n - span + 1, generator) if mode == "random" else (n - span) // 2
            return [start + k * rate for k in range(T)]

    # the video is shorter than the clip
    if short == "skip":
        raise VideoTooShortError(f"video has {n} frames, the clip needs {span} (short='skip')")
    if short == "pad":
        return [min(k * rate, n - 1) for k in range(T)]
    start = randint(n, generator) if mode == "random" else 0
    return [(start + k * rate) % n for k in range(T)]


def plan_reads(clips: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """Union of several clips' frame indices, read once: ``(sorted unique indices, per-clip positions)``.

    ``frames = reader.read(unique)`` then ``frames[positions[s]]`` is clip ``s``.
    """
    unique = sorted({int(i) for clip in clips for i in clip})
    where = {frame: pos for pos, frame in enumerate(unique)}
    return unique, [[where[int(i)] for i in clip] for clip in clips]
