"""Decoded PyAV frames to RGB arrays, and the display rotation of an RGB array."""

from __future__ import annotations

import threading

import av
import numpy as np

_reformatters = threading.local()


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """``frame.to_ndarray(format="rgb24")`` (same pixels) through one reusable converter per thread.

    ``VideoFrame.to_ndarray`` makes a new swscale context for every frame, with automatic slice threads,
    which costs far more than the conversion itself (see docs/decoding.md). One thread (``threads=1``): no
    swscale threads at all, so a forked DataLoader worker never inherits any (a child freeing a converter
    whose threads live in its parent can hang).
    """
    reformatter = getattr(_reformatters, "rgb", None)
    if reformatter is None:
        reformatter = _reformatters.rgb = av.video.reformatter.VideoReformatter()
    return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()  # [h, w, 3]


def rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate ``[H, W, 3]`` clockwise by ``rotation`` degrees."""
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))  # [H, W, 3] -> [W, H, 3] for 90/270
