"""Decoding whole videos one after another, for the caches that see every frame once (score and teacher caches)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from torch import Tensor
from tqdm.auto import tqdm

from videomask.data.process import keep_mmap_threshold
from videomask.data.transforms import frames_to_tensor
from videomask.errors import VideomaskError
from videomask.video import VideoReader, open_video


def decode_whole_videos(
    videos: Iterable[tuple[str, str]],
    skipped: list[tuple[str, str]],
    *,
    backend: str = "pyav",
    desc: str = "decode videos",
    progress: bool = True,
    opener: Callable[[str], VideoReader] | None = None,
) -> Iterator[tuple[str, Tensor]]:
    """``(video_id, frames [N, 3, H, W] uint8)`` of every ``(video_id, path)`` that decodes; a video that
    cannot be read is appended to ``skipped`` as ``(video_id, reason)`` and left out (not fatal).
    ``opener``: a reader of a path (default ``open_video(path, backend)``), e.g. a video in shards."""
    keep_mmap_threshold()  # this process decodes every video (see videomask.data.process)
    for vid, path in tqdm(list(videos), desc=desc, unit="video", disable=not progress):
        try:
            with opener(path) if opener is not None else open_video(path, backend=backend) as reader:
                frames = reader.read_all()  # [N, H, W, 3] uint8
        except VideomaskError as err:
            skipped.append((vid, str(err)))
            continue
        yield vid, frames_to_tensor(frames)  # [N, 3, H, W] uint8
