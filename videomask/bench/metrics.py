"""Metrics for difference scores on footage with a known answer: box coverage per token, ROC AUC, and
anchor precision / recall / IoU against chance.

Token labels from boxes: a token is **object** when boxes cover at least half of its patch (averaged
over its ``t`` frames), **background** when no box touches it in any of its frames, and **border**
otherwise; border tokens are left out of every metric, so a score is judged on tokens whose answer is clear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from videomask.patches import ClipGeometry, Tubelet, grid_for

__all__ = ["token_coverage", "token_labels", "roc_auc", "anchor_agreement"]


def token_coverage(
    frame_boxes: Sequence[Tensor | Sequence[Sequence[float]]], geometry: ClipGeometry, tubelet: Tubelet
) -> tuple[Tensor, Tensor]:
    """Per-frame boxes of one clip (original pixels, ``x0, y0, x1, y1``) -> ``(mean share [L], any [L])``.

    ``mean share``: the share of each token's patch covered by a box (the largest over boxes), averaged
    over the token's ``t`` frames; ``any``: True when a box touches the patch in any of them.
    """
    T = len(frame_boxes)
    H, W = int(round(geometry.out_h)), int(round(geometry.out_w))
    grid = grid_for((T, H, W), tubelet)
    t, ph, pw = tubelet
    share = torch.zeros(T, grid.h, grid.w, dtype=torch.float64)
    ys = torch.arange(grid.h, dtype=torch.float64) * ph
    xs = torch.arange(grid.w, dtype=torch.float64) * pw
    for k, boxes in enumerate(frame_boxes):
        b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        if b.numel() == 0:
            continue
        b = geometry.map_boxes(b)  # [N, 4] output pixels
        ov_y = (torch.minimum(b[:, 3:4], ys + ph) - torch.maximum(b[:, 1:2], ys)).clamp(min=0)  # [N, h]
        ov_x = (torch.minimum(b[:, 2:3], xs + pw) - torch.maximum(b[:, 0:1], xs)).clamp(min=0)  # [N, w]
        share[k] = (ov_y[:, :, None] * ov_x[:, None, :] / (ph * pw)).amax(dim=0)  # [h, w]
    share = share[: grid.t * t].view(grid.t, t, grid.h, grid.w)  # [t', t, h, w]
    return share.mean(dim=1).reshape(-1).float(), (share > 0).any(dim=1).reshape(-1)  # [L], [L]


def token_labels(mean_share: Tensor, touched: Tensor) -> tuple[Tensor, Tensor]:
    """``(object, valid)`` bool tensors: object = share >= 0.5; valid = object or untouched background."""
    obj = mean_share >= 0.5
    return obj, obj | ~touched


def roc_auc(scores: Tensor, labels: Tensor, valid: Tensor | None = None) -> float:
    """ROC AUC (Mann-Whitney U, ties averaged) of ``scores`` for bool ``labels``, over ``valid`` entries."""
    s, y = scores.flatten().double(), labels.flatten().bool()
    if valid is not None:
        keep = valid.flatten().bool()
        s, y = s[keep], y[keep]
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    uniq, inverse = torch.unique(s, return_inverse=True)
    counts = torch.bincount(inverse, minlength=uniq.numel()).double()
    first = counts.cumsum(0) - counts  # rank (0-based) of the first of each tied group
    avg_rank = first + (counts + 1) / 2  # 1-based average rank of each group
    ranks = avg_rank[inverse]
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def anchor_agreement(anchors: Tensor, labels: Tensor, valid: Tensor) -> dict[str, float]:
    """Pooled agreement of bool anchors with bool object labels over ``valid`` tokens.

    ``precision = |A & O| / |A|``, ``chance`` = the object share (a random set's expected precision),
    ``lift = precision / chance``, ``recall = |A & O| / |O|``, ``iou = |A & O| / |A | O|``, and
    ``anchor_share`` = the share of valid tokens that are anchors.
    """
    a, o = anchors.bool() & valid.bool(), labels.bool() & valid.bool()
    n_valid = float(valid.sum())
    inter, n_a, n_o = float((a & o).sum()), float(a.sum()), float(o.sum())
    union = float((a | o).sum())
    precision = inter / n_a if n_a else float("nan")
    chance = n_o / n_valid if n_valid else float("nan")
    return {
        "anchor_share": n_a / n_valid if n_valid else float("nan"),
        "precision": precision,
        "chance": chance,
        "lift": precision / chance if chance and chance == chance and n_a else float("nan"),
        "recall": inter / n_o if n_o else float("nan"),
        "iou": inter / union if union else float("nan"),
    }
