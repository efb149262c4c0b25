"""Clip transforms on ``[T, C, H, W]`` tensors that carry a :class:`~videomask.patches.ClipGeometry`
along (crop, resize, flip, normalise), crop parameter draws, and :class:`ClipTransform`, which chains
them for training or evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.constants import IMAGENET_MEAN, IMAGENET_STD
from videomask.data.draws import randint, uniform
from videomask.errors import VideomaskError
from videomask.patches import ClipGeometry


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
        target_area = area * uniform(scale[0], scale[1], generator)
        aspect = math.exp(uniform(log_ratio[0], log_ratio[1], generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return randint(height - h + 1, generator), randint(width - w + 1, generator), h, w
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
    ch, cw = pairs[randint(len(pairs), generator)]
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
    oy, ox = offsets[randint(len(offsets), generator)]
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
        if self.train and self.flip_prob > 0 and uniform(0.0, 1.0, generator) < self.flip_prob:
            video, geometry = hflip(video, geometry)
        video = normalize(video, self.mean, self.std)  # [T, C, h, w] float
        return video.permute(1, 0, 2, 3).contiguous(), geometry  # [C, T, h, w]
