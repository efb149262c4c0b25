"""Batching dataset items: :func:`collate_clips`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from videomask.errors import VideomaskError


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
