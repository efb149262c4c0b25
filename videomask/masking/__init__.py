"""Maskers: which tube patches to mask. ``build_masker(name, **options)`` builds a registered one.

Registered names: ``random``, ``tube``, ``difference`` and, once its module is present, ``objects``.
"""

from __future__ import annotations

import importlib
import importlib.util

from videomask.masking.base import (
    MASKERS,
    Masker,
    MaskResult,
    ScoredMasker,
    available_maskers,
    batch_video,
    build_masker,
    mask_to_ids,
    masker_options,
    mode_option,
    register_masker,
    select_anchor_share,
    select_rank_sampling,
    select_topk,
)
from videomask.masking.collator import MaskingCollator
from videomask.masking.difference import DifferenceMasker  # noqa: E402
from videomask.masking.simple import RandomMasker, TubeMasker

if importlib.util.find_spec("videomask.masking.objects") is not None:
    importlib.import_module("videomask.masking.objects")

__all__ = [
    "MASKERS",
    "MaskResult",
    "Masker",
    "ScoredMasker",
    "available_maskers",
    "batch_video",
    "build_masker",
    "mask_to_ids",
    "masker_options",
    "mode_option",
    "register_masker",
    "select_anchor_share",
    "select_rank_sampling",
    "select_topk",
    "RandomMasker",
    "TubeMasker",
    "DifferenceMasker",
    "MaskingCollator",
]
