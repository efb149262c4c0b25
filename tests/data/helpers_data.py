"""Helpers of the tests/data tests: seeded generators, clip pixels back to uint8, bright-box frames, list files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from videomask.constants import IMAGENET_MEAN, IMAGENET_STD
from videomask.video import BACKENDS, available_backends

BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in available_backends(), reason=f"{name} not installed"))
    for name in BACKENDS
]
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Normalised ``[C, T, H, W]`` -> uint8 ``[T, H, W, C]``."""
    return ((video * STD + MEAN) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()


def bright_box_frames(height: int, width: int, box: tuple[int, int, int, int], frames: int = 2) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.full((frames, height, width, 3), 20, dtype=np.uint8)
    out[:, y0:y1, x0:x1] = 240
    return out


def bright_extent(video: torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of pixels brighter than mid-gray in frame 0 of ``[C, T, H, W]``."""
    gray = to_uint8(video)[0].astype(np.float32).mean(-1)
    ys, xs = np.nonzero(gray > 130)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def write_list(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
