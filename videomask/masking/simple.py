"""VideoMAE's model-free maskers: ``random`` (per-token) and ``tube`` (one spatial mask over time).

Both draw a uniformly random subset of exactly ``k`` units per row (the distribution of VideoMAE's
``RandomMaskingGenerator`` / ``TubeMaskingGenerator``, which shuffle ``k`` ones among ``N`` zeros):

* ``random``: token mode only, ``k = int(ratio * L)`` of the ``L = t'*h*w`` tokens;
* ``tube``: tube mode only, ``k = int(ratio * h*w)`` spatial positions, masked at every temporal slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from videomask.masking.base import Masker, MaskResult, _first_per_row, _uniform, register_masker
from videomask.patches import Grid


def uniform_mask(batch_size: int, n: int, k: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Bool ``[B, n]`` with exactly ``k`` True per row, each ``k``-subset equally likely."""
    order = _uniform((batch_size, n), generator, device).argsort(dim=1)  # [B, n] random permutation
    return _first_per_row(order, torch.full((batch_size,), k, device=device))


class _UniformMasker(Masker):
    """Uniform masking over the mode's units (tokens or tubes)."""

    def _generate(
        self, video: Tensor, batch: Tensor | Mapping[str, Any], grid: Grid, generator: torch.Generator | None
    ) -> MaskResult:
        unit_mask = uniform_mask(
            video.shape[0], self.num_units(grid), self.num_masked_units(grid), generator, video.device
        )  # [B, N]
        return MaskResult(mask=self.to_tokens(unit_mask, grid))  # [B, L]


@register_masker("random")
class RandomMasker(_UniformMasker):
    """VideoMAE random token masking: ``int(ratio * L)`` tokens per clip, uniformly at random."""

    modes = ("token",)  # options: tubelet, ratio (see Masker); the name fixes the mode, so it takes none


@register_masker("tube")
class TubeMasker(_UniformMasker):
    """VideoMAE tube masking: ``int(ratio * h*w)`` spatial positions, the same at every time step."""

    modes = ("tube",)  # options: tubelet, ratio (see Masker); the name fixes the mode, so it takes none
