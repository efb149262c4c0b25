"""The model-free motion-energy reference: mean absolute frame difference per patch and time step."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

MOTION_BASELINE = "motion energy (no model)"


def motion_energy_features(clips: Tensor, patch: int = 16) -> Tensor:
    """A model-free reference: mean absolute frame difference per patch and time step.

    uint8 ``[N, 3, T, H, W]`` -> float ``[N, (T-1) * (H/patch) * (W/patch)]``. It sees how much moves,
    not which way, so it can tell playback speeds apart but not the arrow of time.
    """
    v = clips.float() / 255.0  # [N, 3, T, H, W]
    diff = (v[:, :, 1:] - v[:, :, :-1]).abs().mean(dim=1)  # [N, T-1, H, W]
    pooled = F.avg_pool2d(diff, kernel_size=patch)  # [N, T-1, H/p, W/p]
    return pooled.flatten(1)
