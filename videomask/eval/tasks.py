"""Labels that come from the footage itself: arrow of time and playback speed, windows split by time.

Arrow of time: a clip played forward = 0 or reversed = 1. Playback speed: frame stride 1 / 2 / 4 -> class
0 / 1 / 2. :func:`time_split_windows` splits each video by time, so no train and test window share a frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from videomask.errors import VideomaskError

SPEED_STRIDES: tuple[int, ...] = (1, 2, 4)  # class k = playback at stride SPEED_STRIDES[k]


TASKS: dict[str, int] = {"arrow": 2, "speed": len(SPEED_STRIDES)}  # task -> number of classes


def task_span(task: str, num_frames: int, stride: int = 2) -> int:
    """Frames of video one window of ``task`` covers (the widest clip of the task)."""
    if task == "arrow":
        return (num_frames - 1) * stride + 1
    if task == "speed":
        return (num_frames - 1) * max(SPEED_STRIDES) + 1
    raise VideomaskError(f"unknown probe task {task!r} (choose from {', '.join(TASKS)})")


def arrow_indices(start: int, num_frames: int, stride: int, reverse: bool) -> list[int]:
    """Frame indices of an arrow-of-time sample: forward (label 0) or the same frames reversed (label 1)."""
    forward = [start + k * stride for k in range(num_frames)]
    return forward[::-1] if reverse else forward


def speed_indices(start: int, num_frames: int, speed_class: int) -> list[int]:
    """Frame indices of a playback-speed sample of class ``speed_class`` (stride ``SPEED_STRIDES[c]``).

    Every class is centred in the same window of ``task_span('speed')`` frames starting at ``start``,
    so the classes see the same moment of the video and differ only in speed.
    """
    stride = SPEED_STRIDES[speed_class]
    span = (num_frames - 1) * max(SPEED_STRIDES) + 1
    own = (num_frames - 1) * stride + 1
    first = start + (span - own) // 2
    return [first + k * stride for k in range(num_frames)]


def task_samples(task: str, start: int, num_frames: int, stride: int = 2) -> list[tuple[list[int], int]]:
    """All labelled samples one window gives: ``[(frame indices, label), ...]`` (one per class)."""
    if task == "arrow":
        return [(arrow_indices(start, num_frames, stride, reverse=bool(c)), c) for c in range(2)]
    if task == "speed":
        return [(speed_indices(start, num_frames, c), c) for c in range(len(SPEED_STRIDES))]
    raise VideomaskError(f"unknown probe task {task!r} (choose from {', '.join(TASKS)})")


def time_split_windows(
    num_video_frames: int,
    span: int,
    *,
    train_share: float = 0.7,
    gap: int = 8,
    max_windows: int | None = None,
    step: int | None = None,
) -> tuple[list[int], list[int]]:
    """Start frames of windows of ``span`` frames, split by time within one video.

    Rule: ``cut = floor(train_share * N)``. Train windows lie inside ``[0, cut)``, test windows inside
    ``[cut + gap, N)``, so no train window shares a frame with a test window and the nearest train and
    test frames are at least ``gap + 1`` apart. Inside each region a window starts every ``step``
    frames (default ``span``: back to back, no two windows share a frame; a smaller step gives more,
    overlapping windows *within* a split). ``max_windows`` keeps at most that many per split, evenly
    spread. A region too short for one window gives none.
    """
    if span < 1 or num_video_frames < 0:
        raise VideomaskError(f"bad window span {span} or frame count {num_video_frames}")
    if not 0.0 < train_share < 1.0:
        raise VideomaskError(f"train_share must be in (0, 1), got {train_share}")
    step = span if step is None else int(step)
    if step < 1:
        raise VideomaskError(f"window step must be >= 1, got {step}")
    cut = int(math.floor(train_share * num_video_frames))

    def pack(lo: int, hi: int) -> list[int]:
        starts = list(range(lo, hi - span + 1, step))
        if max_windows is not None and len(starts) > max_windows:
            pick = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
            starts = [starts[i] for i in pick]
        return starts

    return pack(0, cut), pack(cut + max(0, gap), num_video_frames)


@dataclass(frozen=True)
class ProbeSample:
    """One labelled clip: which video, which frames (in playback order), its label and split."""

    video: str  # path to open
    video_id: str
    indices: tuple[int, ...]
    label: int
    split: str  # "train" | "test"
    window: int  # id of the window it came from (samples of one window share frames)


def build_task_samples(
    videos: Sequence[tuple[str, str, int]],
    task: str,
    *,
    num_frames: int,
    stride: int = 2,
    train_share: float = 0.7,
    gap: int = 8,
    max_windows: int | None = None,
    step: int | None = None,
) -> list[ProbeSample]:
    """Labelled samples of ``task`` for ``videos = [(path, video_id, num_frames_in_video), ...]``
    (windows from :func:`time_split_windows`; every window gives one sample per class)."""
    span = task_span(task, num_frames, stride)
    samples: list[ProbeSample] = []
    window = 0
    for path, video_id, n in videos:
        train, test = time_split_windows(n, span, train_share=train_share, gap=gap, max_windows=max_windows, step=step)
        for split, starts in (("train", train), ("test", test)):
            for start in starts:
                for indices, label in task_samples(task, start, num_frames, stride):
                    samples.append(ProbeSample(path, video_id, tuple(indices), label, split, window))
                window += 1
    return samples
