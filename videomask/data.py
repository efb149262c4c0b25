"""Frame sampling, clip transforms and video datasets.

Pipeline of one dataset item::

    open_video(path).meta.num_frames
      -> sample_indices(...) once per repeated sample (num_sample clips)
      -> reader.read(union of all indices)          one decode for all clips of the video
      -> ClipTransform(frames uint8 [T,H,W,3])      -> float [C,T,H,W] + ClipGeometry
      -> dict(video, video_id, frame_indices, geometry, label, index)
    collate_clips(list of items) -> the batch dict of docs/architecture.md (num_sample flattened)

**Determinism.** Every random choice of an item (clip start, crop, flip) is drawn from a
``torch.Generator`` seeded from ``(dataset seed, epoch, index, sample number)`` (see
:func:`item_generator`); nothing reads the global or the DataLoader worker RNG. An item therefore
depends only on those four numbers: results do not change with the number of workers, and a run
resumed at epoch ``e`` (``dataset.set_epoch(e)``) sees exactly the clips it would have seen.
The epoch lives in shared memory, so ``set_epoch`` also reaches ``persistent_workers``.

**Bad videos.** A video that cannot be opened or decoded, decodes fewer frames than asked, times out,
has fewer than ``min_frames`` frames, or is shorter than a clip under ``short="skip"`` is skipped:
one warning line (logger ``videomask.data``), one line appended to a small *skip log* file
(``video_id<TAB>reason``; appends of one short line are atomic, so every DataLoader worker process
and DDP rank can write it), and the item is replaced by the next valid video (index + 1, + 2, ...,
wrapping; the random draws stay those of the requested index, so this is deterministic too).
A video that opens but whose *drawn frames* cannot be decoded (a damaged stretch: other clips of it
decode) raises :class:`ClipDecodeError`; it is logged the same way (skip-log line marked ``clips``) but
not skipped for good: later items still try it. So which clip an item gets depends only on
``(seed, epoch, index)`` and the files, never on which items were read before (or before a resumed
run's kill, or in another worker). The exception is a time-out, which depends on the machine's speed
(a timed-out video is skipped for good).
``dataset.skipped`` / ``dataset.skipped_videos()`` read the log, so the count is correct across
workers. Pass ``skip_log=`` to keep the log in a run folder; otherwise a temporary file is used and
removed when the dataset is garbage collected in the process that made it (the file only appears
once a video is skipped).

**Hanging decodes.** Opening and decoding run in a daemon worker thread (reused from video to video,
see :func:`videomask.video.call_with_timeout`) that the caller waits for ``timeout`` seconds; past it
the video is skipped as timed out and that worker is abandoned. This needs no signals, so it works
in the main process, in DataLoader worker processes and in any thread. Python cannot kill a thread,
so a decode that truly never returns is abandoned (it keeps its file open until it ends).
"""

from __future__ import annotations

import csv
import gc
import logging
import math
import multiprocessing
import os
import tempfile
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.context import get_spawning_popen
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from videomask.errors import VideoDecodeError, VideomaskError
from videomask.patches import ClipGeometry, Tubelet, as_tubelet, grid_for
from videomask.seeding import item_generator
from videomask.video import BACKENDS, available_backends, call_with_timeout, open_video

log = logging.getLogger("videomask.data")

# PyAV objects that end up in reference cycles (container <-> stream while the container is open) are
# freed only by the cyclic GC. Readers closed (or dropped) normally leave none (PyAVReader.close() frees
# its decoder at once), but one left in a cycle by the caller would be freed by the GC; if that happens in
# a forked DataLoader worker, FFmpeg's codec context tries to join frame threads that exist only in the
# parent and the worker hangs (or crashes). Collecting before every fork frees them in the parent, where
# their threads live.
os.register_at_fork(before=gc.collect)

# glibc raises its mmap threshold (from 128 KiB up to 32 MiB) each time a large mmapped block is freed, so
# after the first few decoded videos, frames and clip tensors of a few MiB are carved from the heap instead
# of mmapped, and the heap keeps the freed space (fragmented by the mix of frame sizes): the peak RSS of a
# long decode loop (``videomask fit``, training) kept rising over its first ~50 batches. A fixed threshold
# stops that raise; buffers above it (batch tensors, large frames) go back to the system when freed.
# 4 MiB, not glibc's 128 KiB start: at 128 KiB (or 2 MiB) every clip-sized buffer is mmapped and zeroed
# afresh, which made a 512-clip fit's system time 5x (7 -> 39 s); at 4 MiB it is 9 s. The price: the peak
# still rises a little while the heap settles (+8% from 8 to 512 clips per set, was +10-12%; 128 KiB: +3%).
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 4 * 1024 * 1024
_malloc_tuned = False


def keep_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at ``threshold`` bytes (no dynamic raise); once per process.

    Does nothing off glibc, or when ``MALLOC_MMAP_THRESHOLD_`` is set (the user's choice wins).
    Returns whether the threshold was set now. Called when a :class:`VideoDataset` is made or unpickled.
    """
    global _malloc_tuned
    if _malloc_tuned or os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None:
        return False
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt  # glibc (and musl, which ignores it)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))


VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ts",
    ".3gp",
    ".ogv",
)
from videomask.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402  (one definition, re-exported here)

SAMPLING_MODES = ("random", "center", "uniform")
SHORT_POLICIES = ("loop", "pad", "skip")


class VideoTooShortError(VideomaskError):
    """A video has fewer frames than a clip needs and the short-video policy is ``skip``."""


class ClipDecodeError(VideoDecodeError):
    """A video opened, but the frames of this clip (these random draws) could not be decoded; other clips
    of the same video may decode (a damaged stretch), so the video is not skipped for good."""


# --------------------------------------------------------------------------------------------------
# Frame sampling
# --------------------------------------------------------------------------------------------------


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (1,), generator=generator).item())


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator).item())


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
            start = _randint(n - span + 1, generator) if mode == "random" else (n - span) // 2
            return [start + k * rate for k in range(T)]

    # the video is shorter than the clip
    if short == "skip":
        raise VideoTooShortError(f"video has {n} frames, the clip needs {span} (short='skip')")
    if short == "pad":
        return [min(k * rate, n - 1) for k in range(T)]
    start = _randint(n, generator) if mode == "random" else 0
    return [(start + k * rate) % n for k in range(T)]


def plan_reads(clips: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """Union of several clips' frame indices, read once: ``(sorted unique indices, per-clip positions)``.

    ``frames = reader.read(unique)`` then ``frames[positions[s]]`` is clip ``s``.
    """
    unique = sorted({int(i) for clip in clips for i in clip})
    where = {frame: pos for pos, frame in enumerate(unique)}
    return unique, [[where[int(i)] for i in clip] for clip in clips]


# --------------------------------------------------------------------------------------------------
# Transforms: video tensors [T, C, H, W] (uint8, or float in 0..255) plus the ClipGeometry so far
# --------------------------------------------------------------------------------------------------


def frames_to_tensor(frames: np.ndarray | Tensor) -> Tensor:
    """Decoded frames uint8 ``[T, H, W, 3]`` -> uint8 ``[T, 3, H, W]`` (a view, no copy)."""
    video = torch.as_tensor(frames)
    if video.dim() != 4 or video.shape[-1] != 3:
        raise VideomaskError(f"expected frames [T, H, W, 3], got shape {tuple(video.shape)}")
    return video.permute(0, 3, 1, 2)  # [T, 3, H, W]


def crop(
    video: Tensor, geometry: ClipGeometry, top: int, left: int, height: int, width: int
) -> tuple[Tensor, ClipGeometry]:
    """Crop ``[T, C, H, W]`` to rows ``top:top+height`` and columns ``left:left+width`` of the *current* clip."""
    H, W = video.shape[-2:]
    if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > H or left + width > W:
        raise VideomaskError(f"crop (top={top}, left={left}, {height}x{width}) does not fit a {H}x{W} clip")
    g = geometry
    sy, sx = g.crop_h / g.out_h, g.crop_w / g.out_w  # original pixels per current pixel
    left_unflipped = (g.out_w - left - width) if g.flip else left  # the current clip may be mirrored
    new = replace(
        g,
        y0=g.y0 + top * sy,
        x0=g.x0 + left_unflipped * sx,
        crop_h=height * sy,
        crop_w=width * sx,
        out_h=float(height),
        out_w=float(width),
    )
    return video[..., top : top + height, left : left + width], new  # [T, C, height, width]


def resize(video: Tensor, geometry: ClipGeometry, height: int, width: int) -> tuple[Tensor, ClipGeometry]:
    """Bilinear (antialiased) resize of ``[T, C, H, W]`` to ``height x width``, keeping the dtype.

    uint8 stays uint8 (torch's fast uint8 path; no float copy of full-size frames), float stays float.
    """
    if height <= 0 or width <= 0:
        raise VideomaskError(f"resize target must be positive, got {height}x{width}")
    new = replace(geometry, out_h=float(height), out_w=float(width))
    if tuple(video.shape[-2:]) == (height, width):
        return video, new
    if video.dtype not in (torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16):
        video = video.float()
    out = F.interpolate(video, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out, new  # [T, C, height, width]


def resize_short_side(video: Tensor, geometry: ClipGeometry, size: int) -> tuple[Tensor, ClipGeometry]:
    """Resize so the shorter side is ``size``, keeping the aspect ratio (long side rounded)."""
    H, W = video.shape[-2:]
    if H <= W:
        return resize(video, geometry, size, max(1, round(W * size / H)))
    return resize(video, geometry, max(1, round(H * size / W)), size)


def center_crop(video: Tensor, geometry: ClipGeometry, height: int, width: int) -> tuple[Tensor, ClipGeometry]:
    """Crop the central ``height x width`` region (rounding the offset down, like torchvision)."""
    H, W = video.shape[-2:]
    return crop(video, geometry, (H - height) // 2, (W - width) // 2, height, width)


def hflip(video: Tensor, geometry: ClipGeometry) -> tuple[Tensor, ClipGeometry]:
    """Mirror ``[T, C, H, W]`` left-right."""
    return video.flip(-1), replace(geometry, flip=not geometry.flip)


def normalize(video: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """``[T, C, H, W]`` in 0..255 -> float ``(x / 255 - mean) / std`` per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (video.float() / 255.0 - m) / s


def random_resized_crop_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` as torchvision's ``RandomResizedCrop.get_params``, drawn from ``generator``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
    # fallback: the central crop with the ratio clamped into range
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def multiscale_crop_params(
    height: int,
    width: int,
    out_size: tuple[int, int],
    scales: Sequence[float],
    max_distort: int,
    generator: torch.Generator | None,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` as VideoMAE's ``GroupMultiScaleCrop`` (``fix_crop``, ``more_fix_crop``).

    Crop sides are ``scale * min(H, W)`` for two scales at most ``max_distort`` apart in the list
    (snapped to the output side when within 3 px); the crop sits at one of 13 fixed positions.
    """
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    crop_hs = [out_size[0] if abs(s - out_size[0]) < 3 else s for s in sizes]
    crop_ws = [out_size[1] if abs(s - out_size[1]) < 3 else s for s in sizes]
    pairs = [
        (min(h, height), min(w, width))
        for i, h in enumerate(crop_hs)
        for j, w in enumerate(crop_ws)
        if abs(i - j) <= max_distort and min(h, w) > 0
    ]
    if not pairs:
        raise VideomaskError(
            f"multiscale crop: no valid crop size for a {height}x{width} frame and scales {tuple(scales)}"
        )
    ch, cw = pairs[_randint(len(pairs), generator)]
    hs, ws = (height - ch) // 4, (width - cw) // 4
    offsets = [  # (row step, column step) in quarters: corners, centre, then the 8 "more fix crop" spots
        (0, 0),
        (0, 4),
        (4, 0),
        (4, 4),
        (2, 2),
        (2, 0),
        (2, 4),
        (4, 2),
        (0, 2),
        (1, 1),
        (1, 3),
        (3, 1),
        (3, 3),
    ]
    oy, ox = offsets[_randint(len(offsets), generator)]
    return oy * hs, ox * ws, ch, cw


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    if len(values) != 2:
        raise VideomaskError(f"{name} must be an int or (height, width), got {value!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class ClipTransform:
    """Clip transform config: decoded frames uint8 ``[T, H, W, 3]`` -> float ``[C, T, H, W]`` + geometry.

    Training (``train=True``): a crop of the original frame (``crop="multiscale"``: VideoMAE
    pretraining's multi-scale crop; ``"resized"``: torchvision's RandomResizedCrop with ``area`` and
    ``ratio``; ``"center"``: the eval path below), resized to ``size``, mirrored with probability
    ``flip_prob``. Evaluation (``train=False``): shorter side resized to ``short_side`` (default: the
    larger output side), then the centre ``size`` crop. Then ``(x / 255 - mean) / std``.

    Output sides must be multiples of ``patch`` (``None`` skips the check). Use
    :meth:`for_training` / :meth:`for_eval` for the usual settings.
    """

    size: tuple[int, int] = (224, 224)
    train: bool = False
    crop: str = "multiscale"
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_distort: int = 1
    area: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.0
    short_side: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    patch: tuple[int, int] | None = (16, 16)

    def __post_init__(self) -> None:
        size = _pair(self.size, "size")
        object.__setattr__(self, "size", size)
        if min(size) <= 0:
            raise VideomaskError(f"clip size must be positive, got {size}")
        if self.patch is not None:
            patch = _pair(self.patch, "patch")
            object.__setattr__(self, "patch", patch)
            if size[0] % patch[0] or size[1] % patch[1]:
                raise VideomaskError(
                    f"clip size {size[0]}x{size[1]} is not divisible by the patch {patch[0]}x{patch[1]}; "
                    f"choose a size that is a multiple of the patch (e.g. {max(1, size[0] // patch[0]) * patch[0]})"
                )
        if self.crop not in ("multiscale", "resized", "center"):
            raise VideomaskError(f"unknown crop {self.crop!r} (choose from multiscale, resized, center)")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise VideomaskError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.short_side is not None and self.short_side < max(size):
            raise VideomaskError(f"short_side={self.short_side} is smaller than the clip size {size}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise VideomaskError(f"mean and std need one value per channel and std > 0, got {self.mean}, {self.std}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def for_training(cls, size: int | Sequence[int] = 224, **options: Any) -> "ClipTransform":
        """VideoMAE pretraining defaults: multi-scale crop, no flip (set ``flip_prob`` to mirror)."""
        return cls(size=size, train=True, **options)  # type: ignore[arg-type]

    @classmethod
    def for_eval(cls, size: int | Sequence[int] = 224, **options: Any) -> "ClipTransform":
        """Shorter side to ``short_side`` (default: the size), then the centre crop."""
        return cls(size=size, train=False, **options)  # type: ignore[arg-type]

    def __call__(
        self, frames: np.ndarray | Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ClipGeometry]:
        """uint8 ``[T, H, W, 3]`` -> (float ``[C, T, h, w]`` normalised, geometry in original pixels)."""
        video = frames_to_tensor(frames)  # [T, 3, H, W] uint8
        H, W = int(video.shape[-2]), int(video.shape[-1])
        geometry = ClipGeometry.identity(H, W)
        out_h, out_w = self.size
        if self.train and self.crop == "multiscale":
            top, left, h, w = multiscale_crop_params(H, W, self.size, self.scales, self.max_distort, generator)
            video, geometry = crop(video, geometry, top, left, h, w)
            video, geometry = resize(video, geometry, out_h, out_w)
        elif self.train and self.crop == "resized":
            top, left, h, w = random_resized_crop_params(H, W, self.area, self.ratio, generator)
            video, geometry = crop(video, geometry, top, left, h, w)
            video, geometry = resize(video, geometry, out_h, out_w)
        else:
            # "shorter side to short_side, then the centre crop", done as the centre crop of the original
            # region that crop covers, then one resize (no full-size resize of large frames)
            scale = (self.short_side or max(out_h, out_w)) / min(H, W)
            h, w = min(H, max(1, round(out_h / scale))), min(W, max(1, round(out_w / scale)))
            video, geometry = center_crop(video, geometry, h, w)
            video, geometry = resize(video, geometry, out_h, out_w)
        if self.train and self.flip_prob > 0 and _uniform(0.0, 1.0, generator) < self.flip_prob:
            video, geometry = hflip(video, geometry)
        video = normalize(video, self.mean, self.std)  # [T, C, h, w] float
        return video.permute(1, 0, 2, 3).contiguous(), geometry  # [C, T, h, w]


# --------------------------------------------------------------------------------------------------
# Video lists
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoItem:
    """One video of a dataset: absolute ``path``, ``video_id`` (as written / relative posix), ``label`` (-1: none)."""

    path: str
    video_id: str
    label: int = -1


def _normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def list_videos(
    root: str | os.PathLike, extensions: Iterable[str] = VIDEO_EXTENSIONS, recursive: bool = True
) -> list[VideoItem]:
    """Video files under ``root`` (by extension, case-insensitive), sorted by relative path.

    Hidden files and folders (names starting with ``.``, e.g. macOS ``._clip.mp4``) are left out.
    """
    root = Path(root)
    if not root.exists():
        raise VideomaskError(f"no such folder: {root}")
    if not root.is_dir():
        raise VideomaskError(f"not a folder: {root}")
    exts = _normalise_extensions(extensions)
    found = root.rglob("*") if recursive else root.iterdir()
    items = []
    for path in found:
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in exts:
            items.append(VideoItem(os.path.abspath(path), rel.as_posix()))
    if not items:
        where = "under" if recursive else "directly in"
        raise VideomaskError(f"no videos ({', '.join(exts)}) {where} {root}")
    return sorted(items, key=lambda item: item.video_id)


_PATH_COLUMNS = ("path", "video_path", "video", "filename", "file_name", "file", "clip", "video_id", "name")
_LABEL_COLUMNS = ("label", "label_id", "class", "class_id", "category", "target", "labels")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _bad_line(list_path: Path, n: int, line: str, why: str) -> VideomaskError:
    return VideomaskError(f"{list_path}:{n}: {why}: {line.strip()!r}")


def _table_rows(list_path: Path, lines: list[tuple[int, str]], delimiter: str) -> list[tuple[int, str, str]]:
    """CSV / TSV lines -> ``(line number, path, raw label or "")``; an optional header names the columns."""
    parsed = [(n, line, [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]) for n, line in lines]
    header = [c.lower() for c in parsed[0][2]]
    width = len(header)  # every row must have as many columns as the first one
    path_col: int | None = 0
    label_col = 1 if width > 1 else None
    if any(c in _PATH_COLUMNS or c in _LABEL_COLUMNS for c in header):
        label_col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
        path_col = next((header.index(c) for c in _PATH_COLUMNS if c in header), None)
        if path_col is None:
            path_col = next((i for i in range(width) if i != label_col), None)
        if path_col is None:
            raise _bad_line(list_path, lines[0][0], lines[0][1], "the header names no path column")
        parsed = parsed[1:]
        if not parsed:
            raise VideomaskError(f"the list {list_path} has a header but no entries")
    kind = "tab" if delimiter == "\t" else "comma"
    rows = []
    for n, line, cells in parsed:
        if len(cells) != width:
            raise _bad_line(list_path, n, line, f"expected {width} {kind}-separated columns, got {len(cells)}")
        if not cells[path_col]:
            raise _bad_line(list_path, n, line, "empty video path")
        rows.append((n, cells[path_col], cells[label_col] if label_col is not None else ""))
    return rows


def _plain_rows(list_path: Path, lines: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """VideoMAE's ``path [integer label]`` lines -> ``(line number, path, raw label or "")``."""
    rows = []
    for n, line in lines:
        parts = line.split()
        if len(parts) == 1:
            rows.append((n, parts[0], ""))
        elif _is_int(parts[-1]):
            rows.append((n, line.strip().rsplit(None, 1)[0].strip(), parts[-1]))
        else:
            why = "expected 'path [label]' with an integer label (use CSV/TSV for other layouts)"
            raise _bad_line(list_path, n, line, why)
    return rows


def read_video_list(list_path: str | os.PathLike) -> tuple[list[VideoItem], list[str] | None]:
    """Parse a video list; returns ``(items, class names or None)``.

    Formats (auto-detected from the first line that is not blank or ``#``):
      * tab in it: TSV; comma in it: CSV (quoted fields allowed). A first row naming a path column
        (``path``, ``video``, ``filename``, ...) or a label column (``label``, ``class``, ...) is a
        header; without one, column 1 is the path and column 2 (optional) the label.
        Non-integer labels are class names, numbered in sorted order (returned as the class list).
      * otherwise VideoMAE's ``path label`` (space separated; integer label optional; a path with
        spaces is fine when the label is given).
    Relative paths resolve against the list file's folder; the video id is the path as written.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise VideomaskError(f"no such list file: {list_path}")
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise VideomaskError(f"{list_path} is not a UTF-8 text list of videos") from None
    lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise VideomaskError(f"the list {list_path} has no entries")

    first = lines[0][1]
    if "\t" in first or "," in first:
        rows = _table_rows(list_path, lines, "\t" if "\t" in first else ",")
    else:
        rows = _plain_rows(list_path, lines)

    raw_labels = [label for _, _, label in rows]
    classes: list[str] | None = None
    if all(label == "" or _is_int(label) for label in raw_labels):
        labels = [int(label) if label else -1 for label in raw_labels]
    else:
        classes = sorted({label for label in raw_labels if label})
        lookup = {name: i for i, name in enumerate(classes)}
        labels = [lookup[label] if label else -1 for label in raw_labels]
    base = os.path.dirname(os.path.abspath(list_path))
    items = [
        VideoItem(os.path.abspath(os.path.join(base, os.path.expanduser(path))), path, label)
        for (_, path, _), label in zip(rows, labels)
    ]
    if not any(os.path.exists(item.path) for item in items):
        raise VideomaskError(f"none of the {len(items)} videos in {list_path} exist (first: {items[0].path})")
    return items, classes


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


def _remove_file(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        try:
            os.unlink(path)
        except OSError:
            pass


class VideoDataset(Dataset):
    """Clips of videos for training or evaluation; see the module docstring for determinism and skipping.

    ``dataset[i]`` is a dict (``num_sample == 1``) or a list of ``num_sample`` dicts, each::

        video [C, T, H, W] float, video_id str, frame_indices long [T], geometry float64 [9],
        label int (-1: none), index int

    Batch them with :func:`collate_clips`. Options: ``num_frames`` at stride ``sampling_rate``;
    ``sampling`` (``random`` / ``center`` / ``uniform``) and ``short`` (``loop`` / ``pad`` / ``skip``)
    as :func:`sample_indices`; videos with fewer than ``min_frames`` frames are always skipped;
    ``num_sample`` clips per video from one decode; ``transform`` (default:
    ``ClipTransform(size=size, train=train)``, ``size`` 224; a given transform brings its own size and
    augmentation, so passing ``size``, or a ``train`` that disagrees with it, is an error; ``train``
    defaults to ``sampling == "random"`` and ``sampling`` to ``"center"`` when ``train=False``, else
    ``"random"``); ``tubelet`` checks that
    clips fit the token grid (and is the patch the default transform checks);
    ``backend`` for :func:`videomask.video.open_video`; ``seed``; ``timeout`` seconds per video;
    ``skip_log`` file (default: a temporary file).
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        *,
        num_frames: int = 16,
        sampling_rate: int = 4,
        sampling: str | None = None,
        short: str = "loop",
        min_frames: int = 2,
        num_sample: int = 1,
        transform: ClipTransform | None = None,
        size: int | Sequence[int] | None = None,
        train: bool | None = None,
        tubelet: int | Sequence[int] | None = None,
        backend: str = "pyav",
        seed: int = 0,
        timeout: float | None = 60.0,
        skip_log: str | os.PathLike | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.items = list(items)
        if not self.items:
            raise VideomaskError("the dataset has no videos")
        keep_mmap_threshold()  # flat peak RSS over many videos (see MMAP_THRESHOLD)
        if num_frames <= 0 or sampling_rate <= 0 or num_sample <= 0 or min_frames <= 0:
            raise VideomaskError(
                f"num_frames, sampling_rate, num_sample and min_frames must be positive, "
                f"got {num_frames}, {sampling_rate}, {num_sample}, {min_frames}"
            )
        if transform is not None and (size is not None or (train is not None and train != transform.train)):
            raise VideomaskError(
                "VideoDataset: a transform sets the clip size and augmentation; pass size/train to "
                "ClipTransform instead of the dataset"
            )
        if sampling is None:
            sampling = "center" if train is False else "random"
        if train is None:
            train = sampling == "random"
        sample_indices(
            clip_span(num_frames, sampling_rate), num_frames, sampling_rate, sampling, short
        )  # validates names
        self.num_frames, self.sampling_rate, self.sampling, self.short = num_frames, sampling_rate, sampling, short
        self.min_frames, self.num_sample = min_frames, num_sample
        self.tubelet: Tubelet | None = as_tubelet(tubelet) if tubelet is not None else None
        if transform is None:
            patch = self.tubelet[1:] if self.tubelet is not None else None
            transform = ClipTransform(size=224 if size is None else size, train=train, patch=patch)  # type: ignore[arg-type]
        self.transform = transform
        if self.tubelet is not None:
            grid_for((num_frames, *self.transform.size), self.tubelet)  # clear error when not divisible
        if backend != "auto" and backend not in available_backends():
            known = ", ".join(available_backends())
            why = "is not installed" if backend in BACKENDS else "is unknown"
            raise VideomaskError(f"video backend {backend!r} {why} (available: {known}, auto)")
        self.backend, self.seed = backend, int(seed)
        self.timeout = float(timeout) if timeout is not None and timeout > 0 else None
        self.classes = list(classes) if classes is not None else None
        self._epoch = multiprocessing.RawValue("q", 0)  # shared with worker processes (also persistent ones)
        if skip_log is None:  # named now (so every worker shares it), created at the first skip
            path = os.path.join(tempfile.gettempdir(), f"videomask-skipped-{os.getpid()}-{uuid.uuid4().hex[:12]}.tsv")
            weakref.finalize(self, _remove_file, path, os.getpid())
            self.skip_log = path
        else:
            self.skip_log = str(skip_log)
            Path(self.skip_log).parent.mkdir(parents=True, exist_ok=True)
        self._bad_cache: tuple[int, tuple[dict[str, str], set[str]]] = (-1, ({}, set()))

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        extensions: Iterable[str] = VIDEO_EXTENSIONS,
        recursive: bool = True,
        **options: Any,
    ) -> "VideoDataset":
        """All videos under ``root`` (see :func:`list_videos`); ids are paths relative to ``root``."""
        return cls(list_videos(root, extensions, recursive), **options)

    @classmethod
    def from_list(cls, path: str | os.PathLike, **options: Any) -> "VideoDataset":
        """Videos named in a list file (see :func:`read_video_list`)."""
        items, classes = read_video_list(path)
        return cls(items, classes=classes, **options)

    @classmethod
    def from_path(cls, path: str | os.PathLike, **options: Any) -> "VideoDataset":
        """A folder (:meth:`from_folder`), a single video file (by extension) or a list file (:meth:`from_list`)."""
        p = Path(path)
        if not p.exists():
            raise VideomaskError(f"no such file or folder: {path}")
        if p.is_dir():
            return cls.from_folder(p, **options)
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            return cls([VideoItem(os.path.abspath(p), p.name)], **options)
        return cls.from_list(p, **options)

    # -- epoch and pickling ------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws items use (seen by all DataLoader workers)."""
        self._epoch.value = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if get_spawning_popen() is None:  # a plain pickle (not a worker start): keep the value only
            state["_epoch"] = int(self._epoch.value)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        keep_mmap_threshold()  # a spawned worker process
        if isinstance(state["_epoch"], int):
            value = multiprocessing.RawValue("q", state["_epoch"])
            state["_epoch"] = value
        self.__dict__.update(state)

    # -- skipped videos ----------------------------------------------------------------------------

    def _read_log(self) -> tuple[dict[str, str], set[str]]:
        """``({video_id: reason}, ids bad for good)`` from the skip log (re-read only when it grew).

        A third column ``clips`` marks a video skipped only for some clips (:class:`ClipDecodeError`).
        """
        try:
            size = os.path.getsize(self.skip_log)
        except OSError:
            return {}, set()
        if size != self._bad_cache[0]:
            bad: dict[str, str] = {}
            for_good: set[str] = set()
            with open(self.skip_log, encoding="utf-8") as f:
                for line in f:
                    video_id, reason, *kind = line.rstrip("\n").split("\t")
                    bad.setdefault(video_id, reason)
                    if not kind:
                        for_good.add(video_id)
            self._bad_cache = (size, (bad, for_good))  # type: ignore[assignment]
        return self._bad_cache[1]  # type: ignore[return-value]

    def _bad(self) -> dict[str, str]:
        """``{video_id: reason}`` of every video skipped so far (for good or for some clips)."""
        return self._read_log()[0]

    def mark_skipped(self, index: int, reason: str, *, for_good: bool = True) -> None:
        """Record video ``index`` as bad: one warning line and one skip-log line (once per video).

        ``for_good=False``: only some clips of it failed (later items still try it, see ``__getitem__``).
        """
        video_id = self.items[index].video_id
        bad, known_for_good = self._read_log()
        if video_id in known_for_good or (video_id in bad and not for_good):
            return
        reason = " ".join(str(reason).split()) or "unknown error"
        reason = reason.removeprefix(f"{self.items[index].path}: ")  # the id already names the video
        if video_id not in bad:
            log.warning("videomask: skipping %s %s: %s", "video" if for_good else "a clip of video", video_id, reason)
        with open(self.skip_log, "a", encoding="utf-8") as f:
            f.write(f"{' '.join(video_id.split(chr(9)))}\t{reason}{'' if for_good else chr(9) + 'clips'}\n")

    def skipped_videos(self) -> list[tuple[str, str]]:
        """``(video_id, reason)`` of every video skipped so far, by any process using this skip log."""
        return list(self._bad().items())

    @property
    def skipped(self) -> int:
        """How many distinct videos were skipped so far (all worker processes)."""
        return len(self._bad())

    # -- loading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def _decode(
        self, index: int, draw_index: int, epoch: int
    ) -> tuple[Any, list[list[int]], np.ndarray, list[list[int]], list[torch.Generator]]:
        """Open, sample and read (run under the time-out): (meta, clip indices, frames, positions, generators)."""
        item = self.items[index]
        with open_video(item.path, backend=self.backend) as reader:
            meta = reader.meta
            n = int(meta.num_frames)
            if n < self.min_frames:
                raise VideoTooShortError(f"video has {n} frame(s), fewer than min_frames={self.min_frames}")
            generators = [item_generator(self.seed, epoch, draw_index, s) for s in range(self.num_sample)]
            clips = [
                sample_indices(n, self.num_frames, self.sampling_rate, self.sampling, self.short, g) for g in generators
            ]
            unique, positions = plan_reads(clips)
            try:
                frames = np.asarray(reader.read(unique))
            except VideoDecodeError as err:  # depends on which frames were drawn
                raise ClipDecodeError(str(err)) from None
        if frames.ndim != 4 or frames.shape[0] != len(unique) or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ClipDecodeError(
                f"decoded {tuple(frames.shape)} {frames.dtype} frames, expected {len(unique)} uint8 RGB frames"
            )
        return meta, clips, frames, positions, generators

    def load_clips(self, index: int, draw_index: int | None = None) -> tuple[Any, list[dict[str, Any]]]:
        """Strictly load video ``index``: ``(VideoMeta, num_sample clip dicts)``; raises on a bad video.

        Random draws use ``draw_index`` (default ``index``) and the current epoch.
        """
        item = self.items[index]
        draw_index = index if draw_index is None else draw_index
        meta, clips, frames, positions, generators = call_with_timeout(
            lambda: self._decode(index, draw_index, self.epoch), self.timeout, "decode"
        )
        out = []
        for clip, pos, generator in zip(clips, positions, generators):
            video, geometry = self.transform(frames[pos], generator)  # [C, T, H, W]
            out.append(
                {
                    "video": video,
                    "video_id": item.video_id,
                    "frame_indices": torch.tensor(clip, dtype=torch.long),  # [T]
                    "geometry": geometry.to_tensor(),  # [9] float64
                    "label": item.label,
                    "index": index,
                }
            )
        return meta, out

    def __getitem__(self, index: int) -> dict[str, Any] | list[dict[str, Any]]:
        n = len(self.items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} videos")
        index %= n
        for step in range(n):
            j = (index + step) % n
            if self.items[j].video_id in self._read_log()[1]:
                continue
            try:
                _, clips = self.load_clips(j, draw_index=index)
            except ClipDecodeError as err:
                self.mark_skipped(j, str(err), for_good=False)
                continue
            except VideomaskError as err:
                self.mark_skipped(j, str(err))
                continue
            except Exception as err:  # a backend bug on one odd file must not stop the run
                self.mark_skipped(j, f"{type(err).__name__}: {err}")
                continue
            return clips[0] if self.num_sample == 1 else clips
        first_id, first_reason = next(iter(self._bad().items()), ("?", "unknown"))
        raise VideomaskError(
            f"every video failed to decode ({n} videos; first: {first_id}: {first_reason}; "
            f"all reasons in {self.skip_log})"
        )


def collate_clips(items: Sequence[dict[str, Any] | Sequence[dict[str, Any]] | None]) -> dict[str, Any]:
    """Dataset items (dicts, lists of ``num_sample`` dicts, or ``None`` for dropped items) -> one batch.

    ``video [B, C, T, H, W]``, ``video_id list[str]``, ``frame_indices long [B, T]``,
    ``geometry float64 [B, 9]``, ``label long [B]``, ``index long [B]`` with ``B`` = all clips.
    """
    clips: list[dict[str, Any]] = []
    for item in items:
        if item is None:
            continue
        clips.extend([item] if isinstance(item, dict) else [c for c in item if c is not None])
    if not clips:
        raise VideomaskError("empty batch: every item in it was dropped")
    return {
        "video": torch.stack([c["video"] for c in clips]),  # [B, C, T, H, W]
        "video_id": [c["video_id"] for c in clips],
        "frame_indices": torch.stack([torch.as_tensor(c["frame_indices"], dtype=torch.long) for c in clips]),  # [B, T]
        "geometry": torch.stack([torch.as_tensor(c["geometry"], dtype=torch.float64) for c in clips]),  # [B, 9]
        "label": torch.tensor([int(c["label"]) for c in clips], dtype=torch.long),  # [B]
        "index": torch.tensor([int(c["index"]) for c in clips], dtype=torch.long),  # [B]
    }
