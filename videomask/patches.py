"""Tubelet patches: patchify / unpatchify, the token grid, and boxes -> patch-grid rasterising.

Conventions (the same as Hugging Face VideoMAE):

* video ``[B, C, T, H, W]``; tubelet ``t x p x p``; grid ``t' = T/t, h = H/p, w = W/p``;
* tokens ``L = t' * h * w`` in the order ``index = i_t * (h*w) + i_h * w + i_w``;
* a patchified token holds its pixels in the order ``(t, p, p, C)`` (HF's pixel target order).

:class:`ClipGeometry` records where a transformed clip came from in the original frames, so boxes
in original pixel coordinates can be laid onto the transformed clip's patch grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from videomask.errors import VideomaskError

Tubelet = tuple[int, int, int]  # (t, p, p): frames per tubelet, patch height, patch width


@dataclass(frozen=True)
class Grid:
    """The token grid of a clip: ``t`` temporal slots, ``h`` x ``w`` patches per slot."""

    t: int
    h: int
    w: int

    @property
    def num_tokens(self) -> int:
        return self.t * self.h * self.w

    @property
    def num_tubes(self) -> int:
        return self.h * self.w


def as_tubelet(tubelet: int | Sequence[int], patch: int | None = None) -> Tubelet:
    """Normalise ``(t, p)``, ``(t, ph, pw)`` or ``t`` plus ``patch`` into a ``(t, ph, pw)`` tuple."""
    if isinstance(tubelet, int):
        if patch is None:
            raise VideomaskError("a tubelet given as one int needs a patch size")
        return (tubelet, patch, patch)
    values = tuple(int(v) for v in tubelet)
    if len(values) == 2:
        return (values[0], values[1], values[1])
    if len(values) == 3:
        return values  # type: ignore[return-value]
    raise VideomaskError(f"tubelet must be (t, p) or (t, ph, pw), got {tubelet!r}")


def grid_for(size: Sequence[int], tubelet: Tubelet) -> Grid:
    """Grid of a clip of ``size = (T, H, W)``; a clear error when a side is not divisible."""
    T, H, W = (int(s) for s in size)
    t, ph, pw = tubelet
    for name, side, step in (("T (frames)", T, t), ("H (height)", H, ph), ("W (width)", W, pw)):
        if side <= 0 or side % step:
            raise VideomaskError(
                f"clip {name}={side} is not a positive multiple of the tubelet side {step} "
                f"(clip T,H,W={T},{H},{W}; tubelet t,p,p={t},{ph},{pw})"
            )
    return Grid(T // t, H // ph, W // pw)


def patchify(video: Tensor, tubelet: Tubelet) -> Tensor:
    """``[B, C, T, H, W]`` -> ``[B, L, t*p*p*C]`` in HF VideoMAE token and pixel order."""
    if video.dim() != 5:
        raise VideomaskError(f"patchify expects [B, C, T, H, W], got shape {tuple(video.shape)}")
    grid_for(video.shape[2:], tubelet)
    t, ph, pw = tubelet
    return rearrange(video, "b c (gt t) (gh ph) (gw pw) -> b (gt gh gw) (t ph pw c)", t=t, ph=ph, pw=pw)


def unpatchify(tokens: Tensor, grid: Grid, tubelet: Tubelet, channels: int = 3) -> Tensor:
    """Exact inverse of :func:`patchify`: ``[B, L, t*p*p*C]`` -> ``[B, C, T, H, W]``."""
    t, ph, pw = tubelet
    expected = (grid.num_tokens, t * ph * pw * channels)
    if tokens.dim() != 3 or tuple(tokens.shape[1:]) != expected:
        raise VideomaskError(f"unpatchify expects [B, {expected[0]}, {expected[1]}], got {tuple(tokens.shape)}")
    return rearrange(
        tokens,
        "b (gt gh gw) (t ph pw c) -> b c (gt t) (gh ph) (gw pw)",
        gt=grid.t,
        gh=grid.h,
        gw=grid.w,
        t=t,
        ph=ph,
        pw=pw,
        c=channels,
    )


def tubes_to_tokens(tube_mask: Tensor, grid: Grid) -> Tensor:
    """Repeat a per-tube value ``[B, h*w]`` over every temporal slot -> ``[B, L]``."""
    return tube_mask.repeat(1, grid.t)  # [B, t'*h*w], slot-major like the token order


def tokens_to_tubes(token_values: Tensor, grid: Grid, reduce: str = "any") -> Tensor:
    """Aggregate ``[B, L]`` over time -> ``[B, h*w]`` with ``any`` / ``all`` (bool) or ``mean`` / ``max``."""
    v = token_values.reshape(token_values.shape[0], grid.t, grid.num_tubes)  # [B, t', h*w]
    if reduce == "any":
        return v.any(dim=1)
    if reduce == "all":
        return v.all(dim=1)
    if reduce == "mean":
        return v.float().mean(dim=1)
    if reduce == "max":
        return v.amax(dim=1)
    raise VideomaskError(f"unknown time reduction {reduce!r} (any, all, mean, max)")


def mask_to_ids(mask: Tensor, num_masked: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """MAE-style indices from a bool mask ``[B, L]`` (True = masked, equal count per row).

    Returns ``ids_keep [B, L_vis]`` (visible tokens, increasing index), ``ids_masked [B, L_mask]``
    (masked tokens, increasing index) and ``ids_restore [B, L]`` with
    ``cat([x_vis, x_masked], 1).gather(1, ids_restore)`` back in token order. ``num_masked`` (the
    per-row count, when the caller knows it) skips the count check, which reads the mask back to the
    host; it must then be right.
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise VideomaskError(f"mask must be bool [B, L], got {mask.dtype} {tuple(mask.shape)}")
    B, L = mask.shape
    if num_masked is None:
        counts = mask.sum(dim=1)
        if B and bool((counts != counts[0]).any()):
            raise VideomaskError(f"mask rows must mask the same number of tokens, got counts {counts.tolist()}")
        num_masked = int(counts[0]) if B else 0
    ids_shuffle = mask.to(torch.uint8).argsort(dim=1, stable=True)  # [B, L]: visible first, then masked
    ids_restore = ids_shuffle.argsort(dim=1)  # [B, L]
    return ids_shuffle[:, : L - num_masked], ids_shuffle[:, L - num_masked :], ids_restore


@dataclass(frozen=True)
class ClipGeometry:
    """Where a transformed clip came from, in original (displayed, rotation-applied) pixels.

    The region ``[y0, y0+crop_h) x [x0, x0+crop_w)`` of the original ``src_h x src_w`` frame was
    resized to ``out_h x out_w`` and then, if ``flip``, mirrored left-right. Any chain of
    resize / crop / flip composes into this one record (see ``videomask.data`` transforms).
    """

    src_h: float
    src_w: float
    y0: float
    x0: float
    crop_h: float
    crop_w: float
    out_h: float
    out_w: float
    flip: bool = False

    @classmethod
    def identity(cls, height: int, width: int) -> "ClipGeometry":
        return cls(height, width, 0.0, 0.0, height, width, height, width, False)

    def to_tensor(self) -> Tensor:
        """The record as a float tensor ``[9]``, so it collates with the default collate."""
        return torch.tensor([float(v) for v in astuple(self)], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, values: Tensor) -> "ClipGeometry":
        v = [float(x) for x in values.tolist()]
        return cls(*v[:8], flip=bool(v[8] > 0.5))

    def map_boxes(self, boxes: Tensor) -> Tensor:
        """Boxes ``[N, 4]`` (x0, y0, x1, y1) in original pixels -> the same boxes in output pixels."""
        boxes = boxes.to(torch.float64).reshape(-1, 4)
        sx = self.out_w / self.crop_w
        sy = self.out_h / self.crop_h
        x0 = (boxes[:, 0] - self.x0) * sx
        x1 = (boxes[:, 2] - self.x0) * sx
        y0 = (boxes[:, 1] - self.y0) * sy
        y1 = (boxes[:, 3] - self.y0) * sy
        if self.flip:
            x0, x1 = self.out_w - x1, self.out_w - x0
        out = torch.stack([x0, y0, x1, y1], dim=1)
        out[:, 0::2] = out[:, 0::2].clamp(0, self.out_w)
        out[:, 1::2] = out[:, 1::2].clamp(0, self.out_h)
        return out


def rasterise_batch(
    boxes: Tensor | np.ndarray,
    clip: Tensor | np.ndarray,
    frame_pos: Tensor | np.ndarray,
    geometry: Tensor | np.ndarray,
    size: Sequence[int],
    tubelet: Tubelet,
    min_overlap: float = 0.0,
) -> Tensor:
    """Boxes of a whole batch -> bool ``[B, L]`` (CPU): the tokens the boxes cover after each clip's transforms.

    The one box rasteriser (:func:`rasterise_boxes` and :func:`boxes_to_patch_grid` call it).
    ``boxes [N, 4]`` (x0, y0, x1, y1, original pixels) belong to clip ``clip[N]`` and to its
    ``frame_pos[N]``-th sampled frame; ``geometry [B, 9]`` holds ``ClipGeometry.to_tensor()`` rows;
    ``size = (T, H, W)`` of the clips. A patch is covered when a box covers more than ``min_overlap``
    of it (any positive area with 0); a token (a ``t x p x p`` tubelet) when any of its ``t`` frames
    covers its patch. Float64 arithmetic in NumPy (single-threaded: tiny arrays, and no thread-pool
    wake-ups on a busy data-loading CPU).
    """
    T, H, W = (int(s) for s in size)
    t, ph, pw = tubelet
    gt, gh, gw = T // t, H // ph, W // pw
    geometry = np.asarray(geometry, dtype=np.float64)
    B = geometry.shape[0]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # [N, 4]
    if boxes.shape[0] == 0:
        return torch.zeros(B, gt * gh * gw, dtype=torch.bool)
    clip = np.asarray(clip, dtype=np.int64)
    g = geometry[clip]  # [N, 9]: src_h src_w y0 x0 crop_h crop_w out_h out_w flip
    # ClipGeometry.map_boxes, vectorised over boxes of different clips (deliberate: the per-box form is
    # for drawing; tests/test_patches.py checks both against hand-computed crops and flips)
    out_h, out_w = g[:, 6], g[:, 7]
    sx, sy = out_w / g[:, 5], out_h / g[:, 4]  # [N]
    x0, x1 = (boxes[:, 0] - g[:, 3]) * sx, (boxes[:, 2] - g[:, 3]) * sx
    y0, y1 = (boxes[:, 1] - g[:, 2]) * sy, (boxes[:, 3] - g[:, 2]) * sy
    flip = g[:, 8] > 0.5
    x0, x1 = np.where(flip, out_w - x1, x0), np.where(flip, out_w - x0, x1)
    x0, x1 = np.minimum(np.maximum(x0, 0), out_w), np.minimum(np.maximum(x1, 0), out_w)
    y0, y1 = np.minimum(np.maximum(y0, 0), out_h), np.minimum(np.maximum(y1, 0), out_h)
    ys = np.arange(gh, dtype=np.float64) * ph  # [h] top edge of each patch row
    xs = np.arange(gw, dtype=np.float64) * pw  # [w]
    ov_y = np.maximum(np.minimum(y1[:, None], ys + ph) - np.maximum(y0[:, None], ys), 0)  # [N, h]
    ov_x = np.maximum(np.minimum(x1[:, None], xs + pw) - np.maximum(x0[:, None], xs), 0)  # [N, w]
    hit = (ov_y[:, :, None] * ov_x[:, None, :] / (ph * pw)) > min_overlap  # [N, h, w]
    slot = clip * gt + np.asarray(frame_pos, dtype=np.int64) // t  # [N] temporal slot in the batch
    n_idx, cell = np.nonzero(hit.reshape(-1, gh * gw))  # covered (box, patch) pairs
    covered = np.zeros(B * gt * gh * gw, dtype=bool)
    covered[slot[n_idx] * (gh * gw) + cell] = True  # [B*t'*h*w]
    return torch.from_numpy(covered.reshape(B, gt * gh * gw))  # [B, L] token order i_t*(h*w) + i_h*w + i_w


def boxes_to_patch_grid(
    boxes: Tensor, height: int, width: int, patch: tuple[int, int], min_overlap: float = 0.0
) -> Tensor:
    """Boxes ``[N, 4]`` in output pixels -> bool ``[h, w]``: patches whose covered share is > ``min_overlap``.

    With ``min_overlap = 0`` a patch is covered as soon as a box overlaps it with positive area.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    geometry = ClipGeometry.identity(height, width).to_tensor()[None]  # [1, 9]: the boxes are already in output pixels
    ph, pw = patch
    covered = rasterise_batch(
        boxes,
        np.zeros(len(boxes), dtype=np.int64),
        np.zeros(len(boxes), dtype=np.int64),
        geometry,
        (1, height, width),
        (1, ph, pw),
        min_overlap,
    )  # [1, h*w]
    return covered.view(height // ph, width // pw)  # [h, w]


def rasterise_boxes(
    frame_boxes: Sequence[Tensor],
    geometry: ClipGeometry,
    tubelet: Tubelet,
    min_overlap: float = 0.0,
) -> Tensor:
    """Per-frame boxes of one clip -> bool ``[L]``: the tokens the boxes cover after the clip's transforms.

    ``frame_boxes[k]`` holds the boxes ``[N_k, 4]`` (x0, y0, x1, y1, original pixels) of the clip's
    k-th sampled frame; ``len(frame_boxes)`` is the clip length ``T``. A token (a ``t x p x p``
    tubelet) is covered when any of its ``t`` frames covers its patch. One clip of :func:`rasterise_batch`.
    """
    T = len(frame_boxes)
    H, W = int(round(geometry.out_h)), int(round(geometry.out_w))
    grid_for((T, H, W), tubelet)  # a clear error when a side is not a multiple of the tubelet
    per_frame = [torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4) for b in frame_boxes if b is not None]
    pos = [k for k, b in enumerate(frame_boxes) if b is not None for _ in range(len(b))]
    boxes = torch.cat(per_frame) if per_frame else torch.zeros(0, 4, dtype=torch.float64)  # [N, 4]
    covered = rasterise_batch(
        boxes,
        np.zeros(len(pos), dtype=np.int64),
        np.asarray(pos, dtype=np.int64),
        geometry.to_tensor()[None],
        (T, H, W),
        tubelet,
        min_overlap,
    )  # [1, L]
    return covered[0]  # [L] in token order i_t*(h*w) + i_h*w + i_w
