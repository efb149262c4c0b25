"""Uniform random draws from a ``torch.Generator`` (the only randomness clips and crops use)."""

from __future__ import annotations

import torch


def randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (1,), generator=generator).item())


def uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator).item())
