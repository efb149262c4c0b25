"""One optimizer step: ``train.accum_steps`` micro-batches (batch -> mask -> model -> loss -> backward), then
the update, skipped on a non-finite loss or gradient on any rank."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from videomask.config import RunConfig
from videomask.seeding import step_seed
from videomask.train.distributed import DistInfo
from videomask.train.fsdp import is_fsdp, local_norm, set_gradient_sync
from videomask.train.parts import Parts


@dataclass
class StepStats:
    """What one optimizer step leaves for the log, summed on the training device (no host sync)."""

    loss: torch.Tensor  # float64 scalar: mean over the micro-batches of their finite losses
    bad: torch.Tensor  # float64 scalar: micro-batches with a non-finite loss (summed over ranks)
    split: torch.Tensor  # [4] float64: anchor loss sum, anchor tokens, other loss sum, other tokens
    clips: int = 0
    has_anchors: bool = False  # the masker reported anchor patches
    bad_loss: bool = False  # the step was skipped for a non-finite loss ...
    bad_grad: bool = False  # ... or a non-finite gradient norm
    grad_norm: float | None = None  # None on a skipped step, and with fp16 loss scaling but no clipping

    @classmethod
    def zeros(cls, device: torch.device) -> StepStats:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return cls(loss=zero.clone(), bad=zero.clone(), split=torch.zeros(4, dtype=torch.float64, device=device))

    @property
    def skipped(self) -> bool:
        return self.bad_loss or self.bad_grad


def train_step(
    parts: Parts, model: torch.nn.Module, step: int, cfg: RunConfig, info: DistInfo, check: bool
) -> StepStats:
    """One optimizer step: ``train.accum_steps`` x (batch -> mask -> model -> loss -> backward), then the update.

    ``model`` is ``parts.objective`` (the model and its objective, :mod:`videomask.objectives`) or its DDP
    wrapper. ``check``: let the model read the mask counts back
    (a host sync); otherwise the masker's exact count is passed on. The masker and the model's decoder
    mask draw from one CPU generator seeded from ``(run.seed, step, micro, rank)``, so a resumed run (on
    any device) draws the same masks.
    """
    accum, device, masker = cfg.train.accum_steps, parts.device, parts.masker
    stats = StepStats.zeros(device)
    for micro in range(accum):
        batch = parts.stream.next()
        video = batch["video"].to(device, non_blocking=True)  # [B, C, T, H, W]
        gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, step, micro, info.rank))
        counts = {} if check else {"num_masked": masker.num_masked(masker.grid(video))}
        with torch.no_grad():
            mres = masker.generate({**batch, "video": video}, generator=gen)  # mask [B, L]
        last = micro == accum - 1
        if is_fsdp(model):  # FSDP: reduce-scatter the gradients on the last micro-batch only
            set_gradient_sync(model, last)
        sync = contextlib.nullcontext() if not info.enabled or last or is_fsdp(model) else model.no_sync()
        autocast = torch.autocast(
            device_type=device.type, dtype=parts.amp_dtype or torch.float32, enabled=parts.amp_dtype is not None
        )
        if parts.teacher_cache is not None:
            counts["targets"] = parts.teacher_cache.lookup(batch, masker.grid(video))  # [B, L, D] teacher features
        with sync:
            with autocast:
                out = forward_model(model, video, mres.mask, None, generator=gen, **counts)
            loss = out.loss.float()
            parts.scaler.scale(loss / accum).backward()
        finite = torch.isfinite(loss.detach())
        stats.loss += torch.where(finite, loss.detach(), torch.zeros_like(loss)).double() / accum
        stats.bad += (~finite).double()
        stats.split += loss_split(out.token_loss, out.decoder_mask, mres.anchors).double()
        stats.clips += video.shape[0]
        stats.has_anchors = stats.has_anchors or mres.anchors is not None
    apply_update(parts, stats, cfg, info)
    return stats


def apply_update(parts: Parts, stats: StepStats, cfg: RunConfig, info: DistInfo) -> None:
    """Step the optimizer, or skip the step (zeroed gradients) on a non-finite loss or gradient on any rank."""
    if info.enabled:
        dist.all_reduce(stats.bad)  # any rank non-finite -> every rank skips
    scaler, optimizer = parts.scaler, parts.optimizer
    if not scaler.is_enabled():
        # bf16 / fp32: no scaler catches a non-finite gradient behind a finite loss; the gradients are
        # already all-reduced, so every rank sees the same norm. One host sync for both checks.
        norm = grad_norm_(parts.params, cfg.train.clip_grad)
        n_bad, grad_norm = torch.stack([stats.bad, norm.detach().to(stats.bad)]).tolist()
        stats.bad_loss, stats.bad_grad = n_bad > 0, not math.isfinite(grad_norm)
        stats.grad_norm = grad_norm
    else:
        stats.bad_loss = bool(stats.bad.item() > 0)
    if stats.skipped:
        stats.grad_norm = None
        optimizer.zero_grad(set_to_none=True)
        return
    if scaler.is_enabled() and cfg.train.clip_grad > 0:
        scaler.unscale_(optimizer)
        stats.grad_norm = grad_norm_(parts.params, cfg.train.clip_grad)  # a tensor, read at the next log
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    parts.objective.update_ema()


def forward_model(
    model: torch.nn.Module, video: torch.Tensor, mask: torch.Tensor, decoder_mask: torch.Tensor | None, **kwargs: Any
) -> Any:
    """One forward pass (a seam for tests that inject failures); ``kwargs`` go to the model."""
    return model(video, mask, decoder_mask, **kwargs)


def loss_split(token_loss: torch.Tensor, dec_mask: torch.Tensor, anchors: torch.Tensor | None) -> torch.Tensor:
    """``[anchor_loss_sum, anchor_count, other_loss_sum, other_count]`` over the reconstructed tokens.

    ``token_loss [B, L_dec]`` lists the tokens of ``dec_mask [B, L]`` in increasing index, so
    ``anchors[dec_mask].view(B, -1)`` lines up with it.
    """
    tl = token_loss.detach().float()
    if anchors is None:
        return torch.stack([tl.new_zeros(()), tl.new_zeros(()), tl.sum(), tl.new_full((), float(tl.numel()))])
    # the reconstructed tokens in increasing index, found without a host sync (no boolean indexing)
    n_dec = tl.shape[1]
    ids = torch.argsort(dec_mask.to(torch.int8), dim=1, stable=True)[:, dec_mask.shape[1] - n_dec :]  # [B, L_dec]
    a = anchors.to(dec_mask.device, non_blocking=True).gather(1, ids).float()  # [B, L_dec] 1 = anchor patch
    return torch.stack([(tl * a).sum(), a.sum(), (tl * (1 - a)).sum(), (1 - a).sum()])


def grad_norm_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """The total L2 norm of the gradients (a 0-d tensor, no host sync); clips them to ``max_norm`` when > 0."""
    if max_norm > 0:
        return local_norm(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return local_norm(torch.nn.utils.get_total_norm(grads))
