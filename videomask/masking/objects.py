"""The ``objects`` masker: Difference-Masking from detected anchor objects (the boxes cache).

For a batch dict (``video``, ``video_id``, ``frame_indices [B, T]``, ``geometry [B, 9]``) it looks up
each clip's boxes in a :class:`~videomask.detect.BoxCache` (nearest scanned frame), lays them on the
clip's patch grid through the clip's :class:`~videomask.patches.ClipGeometry` (crop, resize, flip),
and marks the covered tokens as anchors. In tube mode a tube is an anchor when any of its tokens is
(covered at any time). Selection is the shared step, rule (b) by default: a share ``alpha`` of the
budget from the anchors, the rest uniform; with ``direction="keep"`` (the default) the same rule picks the
visible set, so anchors stay visible; ``direction="mask"`` masks them (the paper's direction).

A clip without any anchor falls back to plain ``random`` (uniform over tokens) or ``tube`` (uniform
over tubes, the same spatial mask at every time step) masking, both at the masker's exact count.
Library users may skip the cache and put precomputed anchors in the batch (``batch["anchors"]``,
bool ``[B, L]``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from videomask.detect import BoxCache, choose_anchor_labels
from videomask.errors import VideomaskError
from videomask.masking.base import MaskResult, ScoredMasker, register_masker, select_anchor_share
from videomask.patches import Grid, rasterise_batch, tubes_to_tokens

FALLBACKS = ("random", "tube")
ON_MISSING = ("error", "fallback")


@register_masker("objects")
class ObjectsMasker(ScoredMasker):
    """Difference-Masking from detected anchor objects.

    ``boxes``: a :class:`~videomask.detect.BoxCache` or a cache path (``videomask detect``); may be
    None when every batch carries ``batch["anchors"]``. ``labels``: anchor classes (a name or a list;
    None = every detected label; ``"tficf"`` = the ``top_k`` labels chosen by
    :func:`~videomask.detect.choose_anchor_labels` against ``source_boxes``). ``fallback``: masking of
    clips with no anchor (``"random"`` or ``"tube"``; default: the masker's own mode, ``"tube"`` in
    tube mode). ``min_overlap``: share of a patch a box must cover. ``on_missing``: a clip whose video
    is not in the cache is an ``"error"`` (default) or gets the ``"fallback"``.
    Scores (for ``selection="topk"`` / ``"sample"``) are the anchor flags as 0/1. The shared options
    (``tubelet``, ``ratio``, ``mode``, ``selection``, ``alpha``, ``direction``, ``reduce`` (default
    ``"max"`` here), ``temperature``, ``uniform_mix``): see :class:`~videomask.masking.base.ScoredMasker`.
    Videos missing from the cache (``on_missing="fallback"``) are counted in ``missing`` (clips) and
    ``missing_videos``, warned about once per video and shown in the masker's repr.
    """

    default_reduce = "max"

    def __init__(
        self,
        *,
        boxes: BoxCache | str | Path | None = None,
        labels: Sequence[str] | str | None = None,
        source_boxes: BoxCache | str | Path | None = None,
        top_k: int = 1,
        fallback: str | None = None,
        min_overlap: float = 0.0,
        on_missing: str = "error",
        **options: Any,
    ) -> None:
        super().__init__(**options)  # tubelet, ratio, mode, selection, alpha, direction, reduce, ...
        self.cache = boxes if isinstance(boxes, BoxCache) or boxes is None else BoxCache.load(boxes)
        if labels == "tficf":
            if self.cache is None or source_boxes is None:
                raise VideomaskError("labels='tficf' needs both boxes (the target cache) and source_boxes")
            labels = choose_anchor_labels(self.cache, source_boxes, top_k)
        if isinstance(labels, str):
            labels = [labels]
        self.labels: list[str] | None = list(labels) if labels is not None else None
        if self.cache is not None and self.labels is not None:
            unknown = [name for name in self.labels if name not in self.cache.label_ids]
            if unknown and len(unknown) == len(self.labels):
                raise VideomaskError(
                    f"none of the anchor labels {self.labels} occurs in boxes cache {self.cache.path or ''} "
                    f"(its labels: {', '.join(self.cache.labels) or 'none'})"
                )
        fallback = fallback or ("tube" if self.mode == "tube" else "random")
        if fallback not in FALLBACKS:
            raise VideomaskError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if on_missing not in ON_MISSING:
            raise VideomaskError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")
        self.fallback = fallback
        self.min_overlap = float(min_overlap)
        self.on_missing = on_missing
        self._keep = self.cache.label_mask(self.labels) if self.cache is not None else None
        self.missing = 0  # clips whose video was not in the cache (on_missing="fallback")
        self.missing_videos: set[str] = set()  # their video ids

    # -- anchors -------------------------------------------------------------------------------
    def anchors_from_cache(self, batch: Mapping[str, Any], grid: Grid, size: Sequence[int]) -> Tensor:
        """Anchor tokens ``[B, L]`` (CPU) of a batch dict from the boxes cache."""
        if self.cache is None:
            raise VideomaskError("the objects masker has no boxes cache and the batch has no 'anchors'")
        for key in ("video_id", "frame_indices", "geometry"):
            if key not in batch:
                raise VideomaskError(
                    f"the objects masker needs batch[{key!r}] (a loader batch dict) or batch['anchors']"
                )
        video_ids = list(batch["video_id"])
        frames = torch.as_tensor(batch["frame_indices"]).cpu().numpy()  # [B, T]
        geometry = torch.as_tensor(batch["geometry"]).cpu()  # [B, 9]
        B, T = frames.shape
        if len(video_ids) != B or geometry.shape != (B, 9) or T != size[0]:
            raise VideomaskError(
                f"batch mismatch: {len(video_ids)} video ids, frame_indices {tuple(frames.shape)}, geometry "
                f"{tuple(geometry.shape)} for a video with B={B}, T={size[0]}"
            )
        present: list[str | None] = []
        for vid in video_ids:
            if vid in self.cache:
                present.append(vid)
            elif self.on_missing == "error":
                raise VideomaskError(
                    f"video {vid!r} is not in boxes cache {self.cache.path or '(in memory)'} "
                    "(run `videomask detect` on this data, or set on_missing='fallback')"
                )
            else:
                self.missing += 1
                if vid not in self.missing_videos:
                    self.missing_videos.add(vid)
                    warnings.warn(
                        f"video {vid!r} is not in boxes cache {self.cache.path or '(in memory)'}: its clips get "
                        f"{self.fallback!r} masking (on_missing='fallback')",
                        stacklevel=2,
                    )
                present.append(None)
        boxes, clip, pos = self.cache.gather_batch(present, frames, self._keep)  # [N, 4], [N], [N]
        return rasterise_batch(boxes, clip, pos, geometry.numpy(), size, self.tubelet, self.min_overlap)  # [B, L]

    def token_scores(
        self, video: Tensor, batch: Tensor | Mapping[str, Any], grid: Grid
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(scores [B, L] = anchors as 0/1, anchors [B, L] bool)`` on the video's device."""
        B = video.shape[0]
        if isinstance(batch, Mapping) and batch.get("anchors") is not None:
            anchors = torch.as_tensor(batch["anchors"]).bool()
            if anchors.shape != (B, grid.num_tokens):
                raise VideomaskError(
                    f"batch['anchors'] must be bool [B, L] = [{B}, {grid.num_tokens}], got {tuple(anchors.shape)}"
                )
        elif isinstance(batch, Mapping):
            anchors = self.anchors_from_cache(batch, grid, video.shape[2:])
        else:
            raise VideomaskError(
                "the objects masker needs a batch dict (video, video_id, frame_indices, geometry) or batch['anchors']"
            )
        anchors = anchors.to(video.device)
        return anchors.float(), anchors

    # -- selection with the fallback -----------------------------------------------------------
    def _fallback_mask(self, n: int, grid: Grid, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """Bool ``[n, L]`` masks for clips without anchors, with the masker's exact token count."""
        count = self.num_masked(grid)
        if self.fallback == "random":
            none = torch.zeros(n, grid.num_tokens, dtype=torch.bool, device=device)
            return select_anchor_share(none, count, 0.0, generator)  # uniform over tokens
        tubes = count // grid.t  # whole tubes; in token mode the remainder is filled with single tokens
        none = torch.zeros(n, grid.num_tubes, dtype=torch.bool, device=device)
        mask = tubes_to_tokens(select_anchor_share(none, tubes, 0.0, generator), grid)  # [n, L]
        rest = count - tubes * grid.t
        if rest:  # `rest` more single tokens, uniformly from the ones not yet masked
            mask = mask | select_anchor_share(~mask, rest, 1.0, generator)
        return mask

    def _generate(
        self, video: Tensor, batch: Tensor | Mapping[str, Any], grid: Grid, generator: torch.Generator | None
    ) -> MaskResult:
        result = super()._generate(video, batch, grid, generator)
        assert result.anchors is not None
        empty = ~result.anchors.any(dim=1)  # [B] clips without any anchor
        if bool(empty.any()):
            natural = "tube" if self.mode == "tube" else "random"
            if self.fallback != natural:  # rows without anchors already got uniform masking over the selection units
                result.mask[empty] = self._fallback_mask(int(empty.sum()), grid, generator, video.device)
        return result

    def __repr__(self) -> str:
        missing = f", missing={self.missing} clips of {len(self.missing_videos)} videos"
        return (
            f"ObjectsMasker(labels={self.labels}, videos={len(self.cache) if self.cache is not None else 0}, "
            f"fallback={self.fallback!r}, tubelet={self.tubelet}, ratio={self.ratio}, mode={self.mode!r}, "
            f"selection={self.selection!r}, alpha={self.alpha}, direction={self.direction!r}"
            + (missing if self.on_missing == "fallback" else "")
            + ")"
        )
