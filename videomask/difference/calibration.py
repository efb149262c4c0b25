"""Distance calibration: histograms of token distances over ``[0, 2]`` and their quantiles."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["HIST_BINS", "QUANTILE_LEVELS", "histogram", "quantiles"]

HIST_BINS = 4096  # distance histogram bins over [0, 2] (calibration)


def histogram(d: Tensor) -> Tensor:
    return torch.histc(d.float().flatten().cpu(), bins=HIST_BINS, min=0.0, max=2.0).long()


def quantiles(hist: Tensor, qs: Tensor) -> Tensor:
    """Quantiles ``qs`` of a distance histogram over ``[0, 2]`` (linear inside a bin)."""
    cdf = hist.double().cumsum(0)
    total = float(cdf[-1]) if cdf.numel() else 0.0
    if total <= 0:
        return torch.full_like(qs, float("nan"), dtype=torch.float32)
    edges = torch.linspace(0.0, 2.0, HIST_BINS + 1, dtype=torch.float64)
    target = qs.double() * total
    idx = torch.searchsorted(cdf, target).clamp(max=HIST_BINS - 1)
    below = torch.where(idx > 0, cdf[(idx - 1).clamp_min(0)], torch.zeros_like(target))
    inside = hist.double()[idx].clamp_min(1)
    frac = ((target - below) / inside).clamp(0, 1)
    return (edges[idx] + frac * (edges[idx + 1] - edges[idx])).float()


QUANTILE_LEVELS = torch.linspace(0.0, 1.0, 1001)  # 0.000, 0.001, ..., 1.000
