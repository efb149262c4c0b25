"""Probes that keep time: the temporal linear probe and the attentive probe on frozen tokens."""

from __future__ import annotations

import pytest
import torch

from videomask import eval as ev
from videomask.patches import patchify


def order_only_task(windows: int = 40, frames: int = 8, size: int = 16, seed: int = 0):
    """Clips whose only difference is temporal order: a noisy texture fading in (label 0) and the same
    frames reversed, fading out (label 1). Returns single-frame patch tokens ``[N, L, D]``, labels, windows."""
    g = torch.Generator().manual_seed(seed)
    clips, labels, groups = [], [], []
    ramp = torch.linspace(0.15, 1.0, frames).view(1, frames, 1, 1)
    for w in range(windows):
        texture = torch.rand(3, 1, size, size, generator=g)
        forward = (texture * ramp + 0.05 * torch.randn(3, frames, size, size, generator=g)).clamp(0, 1)  # [3, T, S, S]
        for label, clip in ((0, forward), (1, forward.flip(1))):
            clips.append(clip)
            labels.append(label)
            groups.append(w)
    tokens = patchify(torch.stack(clips), (1, 4, 4))  # [N, T*(S/4)^2, 4*4*3]: one frame per token
    return tokens, torch.tensor(labels), torch.tensor(groups)


def test_attentive_probe_learns_temporal_order_that_the_mean_cannot():
    tokens, labels, groups = order_only_task()
    is_train = groups < 28
    settings = ev.AttentiveSettings(steps=60, eval_every=20, weight_decays=(0.01,), width=32, heads=4, pca_dim=24)
    res = ev.probe_tokens(
        tokens,
        labels,
        is_train,
        groups,
        time_slots=8,
        num_classes=2,
        probes=("linear", "knn", "temporal", "attentive"),
        attentive=settings,
    )
    # the token mean of a clip and of its reversal are the same multiset average: no mean-pooled probe can tell
    # them apart
    assert res["linear"] <= 0.6 and res["knn"] <= 0.6, res
    assert res["attentive"] >= 0.9, res
    assert res["temporal"] >= 0.9, res


def test_temporal_pool_keeps_time_slot_order():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)  # 2 clips, 3 slots x 2 patches, D = 3
    out = ev.temporal_pool(tokens, 3)
    assert out.shape == (2, 9)
    assert torch.allclose(out[0, :3], tokens[0, :2].mean(0)) and torch.allclose(out[0, 6:], tokens[0, 4:].mean(0))
    with pytest.raises(Exception, match="time slots"):
        ev.temporal_pool(tokens, 4)
