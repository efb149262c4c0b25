"""Frozen-encoder features: pooled features, encoder tokens, and the poolings the probes use."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from videomask.constants import IMAGENET_MEAN, IMAGENET_STD
from videomask.errors import VideomaskError


def normalise(clips: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """uint8 ``[B, 3, T, H, W]`` -> float ``[B, 3, T, H, W]`` normalised with ``mean`` / ``std``."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1)
    return (clips.float() / 255.0 - m) / s


@torch.no_grad()
def extract_features(
    model: torch.nn.Module, clips: Tensor, *, batch_size: int = 16, device: str | torch.device = "cpu"
) -> Tensor:
    """Frozen pooled features: uint8 ``[N, 3, T, H, W]`` (or normalised float) -> float ``[N, D]``."""
    return _frozen_pass(model.features, model, clips, batch_size, device)  # [N, D]


def _frozen_pass(
    fn: Callable[[Tensor], Tensor], model: torch.nn.Module, clips: Tensor, batch_size: int, device: str | torch.device
) -> Tensor:
    """``fn`` (a method of ``model``, in eval mode) over ``clips`` in batches, normalised on the way; CPU float."""
    was_training = model.training
    model.eval()
    out = []
    for lo in range(0, clips.shape[0], batch_size):
        batch = clips[lo : lo + batch_size]
        video = normalise(batch) if batch.dtype == torch.uint8 else batch.float()  # [b, 3, T, H, W]
        out.append(fn(video.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def extract_tokens(
    model: torch.nn.Module, clips: Tensor, *, batch_size: int = 16, device: str | torch.device = "cpu"
) -> Tensor:
    """Frozen encoder tokens of every clip: uint8 ``[N, 3, T, H, W]`` -> float ``[N, L, D]`` (token order
    ``i_t*(h*w) + i_h*w + i_w``; the encoder output before any pooling)."""
    return _frozen_pass(model.encode, model, clips, batch_size, device)  # [N, L, D]


def mean_pool(tokens: Tensor) -> Tensor:
    """``[N, L, D]`` -> ``[N, D]``: the mean over all tokens (throws away where and when)."""
    return tokens.mean(dim=1)


def temporal_pool(tokens: Tensor, time_slots: int) -> Tensor:
    """``[N, L, D]`` -> ``[N, time_slots * D]``: tokens averaged per time slot, the slots concatenated in
    time order (the features of the temporal linear probe; ``L`` must be a multiple of ``time_slots``)."""
    n, length, dim = tokens.shape
    if time_slots < 1 or length % time_slots:
        raise VideomaskError(f"{length} tokens do not split into {time_slots} time slots")
    return tokens.view(n, time_slots, length // time_slots, dim).mean(dim=2).flatten(1)  # [N, t*D]
