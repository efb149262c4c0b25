"""The learning-rate schedule: VideoMAE's batch-scaled peak, linear warm-up, then cosine or constant."""

from __future__ import annotations

import math

from videomask.config import RunConfig


def effective_batch(cfg: RunConfig, world_size: int) -> int:
    """Clips per optimizer step over all ranks."""
    return cfg.data.batch_size * cfg.data.num_sample * cfg.train.accum_steps * world_size


def peak_lr(cfg: RunConfig, world_size: int) -> float:
    """``optim.lr`` when given, else VideoMAE's rule ``blr * effective_batch / 256``."""
    if cfg.optim.lr is not None:
        return cfg.optim.lr
    return cfg.optim.blr * effective_batch(cfg, world_size) / 256.0


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float, schedule: str) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up from 0, then cosine or constant."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    span = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    low = peak * min_ratio
    return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
