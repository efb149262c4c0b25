"""``MaskingCollator``: a ``data_collator`` for ``transformers.Trainer`` that masks clips with any masker.

collator = MaskingCollator("tube", ratio=0.9, seed=0)
batch = collator(items)  # {"pixel_values": [B, T, C, H, W], "bool_masked_pos": [B, L]}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from videomask.data import collate_clips
from videomask.errors import VideomaskError
from videomask.masking.base import build_masker
from videomask.seeding import step_seed


class MaskingCollator:
    """A ``data_collator`` for ``transformers.Trainer`` + ``VideoMAEForPreTraining``: clips -> masked batch.

    ``collator(items)`` returns ``{"pixel_values": float [B, T, C, H, W], "bool_masked_pos": bool [B, L]}``
    (plus ``"anchors": bool [B, L]`` with ``return_anchors=True``; all False for maskers without anchors).
    Items may be :class:`~videomask.data.VideoDataset` items (dicts with ``video [C, T, H, W]``, or lists
    of them when ``num_sample > 1``; the metadata the ``objects`` masker needs comes along), dicts with a
    Hugging Face ``pixel_values [T, C, H, W]``, or bare ``[C, T, H, W]`` tensors. Every registered masker
    works (``masker``: a :class:`~videomask.masking.Masker` or a registered name).

    With ``Trainer`` pass ``TrainingArguments(remove_unused_columns=False)`` (else Trainer strips the
    ``video`` key before the collator sees it). ``anchors`` is not an argument of
    ``VideoMAEForPreTraining.forward``: ask for it only in a ``compute_loss`` that pops it.
    Masks are drawn from a generator seeded from ``(seed, DataLoader worker id, call number)`` when
    ``seed`` is given (reproducible, different in every worker), else from torch's global RNG.
    """

    def __init__(
        self, masker: Any, *, return_anchors: bool = False, seed: int | None = None, **masker_options: Any
    ) -> None:
        if isinstance(masker, str):
            masker = build_masker(masker, **masker_options)
        elif masker_options:
            raise VideomaskError(
                "masker options are only taken with a masker name, e.g. MaskingCollator('tube', ratio=0.9)"
            )
        self.masker, self.return_anchors, self.seed = masker, bool(return_anchors), seed
        self.calls = 0

    def _generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        worker = get_worker_info()
        seed = step_seed(int(self.seed), self.calls, worker.id if worker is not None else 0, 0)
        return torch.Generator().manual_seed(seed)

    @staticmethod
    def batch_of(items: Any) -> dict[str, Any]:
        """The items as a videomask batch dict (``video [B, C, T, H, W]`` and whatever metadata they carry)."""

        items = list(items)
        if not items:
            raise VideomaskError("MaskingCollator got an empty batch")
        first = items[0][0] if isinstance(items[0], (list, tuple)) and items[0] else items[0]
        if isinstance(first, Tensor):
            return {"video": torch.stack(items).float()}  # [B, C, T, H, W]
        if not isinstance(first, dict):
            raise VideomaskError(f"MaskingCollator takes dicts or [C, T, H, W] tensors, got {type(first).__name__}")
        if "video" in first:
            if all(k in first for k in ("video_id", "frame_indices", "geometry", "label", "index")):
                return collate_clips(items)
            return {"video": torch.stack([i["video"] for i in items]).float()}  # [B, C, T, H, W]
        if "pixel_values" in first:
            return {
                "video": torch.stack([i["pixel_values"] for i in items]).float().transpose(1, 2)
            }  # [B, T, C, H, W] -> [B, C, T, H, W]
        raise VideomaskError(
            f"MaskingCollator items need a 'video' or 'pixel_values' key, got keys {sorted(first)}"
            " (with transformers.Trainer set remove_unused_columns=False)"
        )

    def __call__(self, items: Any) -> dict[str, Tensor]:
        batch = self.batch_of(items)
        video = batch["video"]  # [B, C, T, H, W]
        if video.dim() != 5:
            raise VideomaskError(
                f"MaskingCollator: clips must be [C, T, H, W], got a batch of shape {tuple(video.shape)}"
            )
        with torch.no_grad():
            result = self.masker.generate(batch, generator=self._generator())
        self.calls += 1
        out = {
            "pixel_values": video.transpose(1, 2).contiguous(),  # [B, T, C, H, W] (Hugging Face)
            "bool_masked_pos": result.mask.bool(),
        }  # [B, L]
        if self.return_anchors:
            out["anchors"] = (
                result.anchors.bool() if result.anchors is not None else torch.zeros_like(out["bool_masked_pos"])
            )
        return out
