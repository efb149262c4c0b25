"""Reconstruction error of a masked autoencoder on anchor patches vs the rest, under one fixed random mask."""

from __future__ import annotations

import torch
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.eval import normalise


def fixed_random_mask(num_tokens: int, ratio: float, seed: int = 1234) -> Tensor:
    """One random token mask ``[L]`` (True = masked, ``int(ratio * L)`` masked), the same for a given seed."""
    count = int(ratio * num_tokens)
    if not 0 < count < num_tokens:
        raise VideomaskError(
            f"mask ratio {ratio} masks {count} of {num_tokens} tokens; need at least one masked and one visible"
        )
    order = torch.randperm(num_tokens, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(num_tokens, dtype=torch.bool)
    mask[order[:count]] = True
    return mask


@torch.no_grad()
def reconstruction_error(
    model: torch.nn.Module,
    clips: Tensor,
    anchors: Tensor,
    mask: Tensor,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Mean per-token reconstruction loss on masked anchor tokens, on the other masked tokens, and overall.

    ``clips`` uint8 ``[N, 3, T, H, W]``; ``anchors`` bool ``[N, L]``; ``mask`` bool ``[L]`` applied to
    every clip. Uses ``VideoMAE.forward(video, mask).token_loss [B, L_mask]`` (masked tokens listed in
    increasing token index). Also returns how many masked anchor / other tokens were scored.
    """
    was_training = model.training
    model.eval()
    sums = {"anchor": 0.0, "other": 0.0}
    counts = {"anchor": 0, "other": 0}
    for lo in range(0, clips.shape[0], batch_size):
        video = normalise(clips[lo : lo + batch_size]).to(device)  # [b, 3, T, H, W]
        b = video.shape[0]
        m = mask.to(device).unsqueeze(0).expand(b, -1).contiguous()  # [b, L]
        out = model(video, m, decoder_mask=m)  # reconstruct every masked token (no decoder masking)
        token_loss = out.token_loss.float().cpu()  # [b, L_mask]
        on_anchor = anchors[lo : lo + batch_size][m.cpu()].view(b, -1)  # [b, L_mask], lines up with token_loss
        sums["anchor"] += float(token_loss[on_anchor].sum())
        sums["other"] += float(token_loss[~on_anchor].sum())
        counts["anchor"] += int(on_anchor.sum())
        counts["other"] += int((~on_anchor).sum())
    model.train(was_training)
    total = counts["anchor"] + counts["other"]
    return {
        "anchor": sums["anchor"] / counts["anchor"] if counts["anchor"] else float("nan"),
        "other": sums["other"] / counts["other"] if counts["other"] else float("nan"),
        "all": (sums["anchor"] + sums["other"]) / total if total else float("nan"),
        "anchor_tokens": counts["anchor"],
        "other_tokens": counts["other"],
    }
