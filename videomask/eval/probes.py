"""Probes on frozen features: a logistic-regression linear probe and cosine kNN.

:func:`linear_probe` standardises features with the train statistics and chooses the L2 weight decay by
grouped cross-validation on the train split only; :func:`knn_accuracy` takes the majority vote of the
``k`` most similar train samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.eval.clips import ClipSet

DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float
    train_accuracy: float
    weight_decay: float
    num_train: int
    num_test: int
    num_classes: int


def _standardise(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor]:
    mean = train_x.mean(0, keepdim=True)
    std = train_x.std(0, keepdim=True).clamp_min(1e-6)
    return (train_x - mean) / std, (test_x - mean) / std


def _fit_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression, full-batch L-BFGS, loss = CE + weight_decay/2 * |W|^2.

    Starts from zero, or from ``init`` (a warm start from a nearby weight decay's solution).
    """
    x = x.double()
    w0, b0 = (
        init
        if init is not None
        else (torch.zeros(x.shape[1], num_classes, dtype=torch.float64), torch.zeros(num_classes, dtype=torch.float64))
    )
    weight = w0.clone().requires_grad_(True)  # [D, K]
    bias = b0.clone().requires_grad_(True)  # [K]
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


def _predict(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return (x.double() @ weight + bias).argmax(1)


def _group_folds(groups: Tensor, folds: int) -> list[Tensor]:
    """Split sample indices into ``folds`` folds by group (a group never spans two folds)."""
    uniq = torch.unique(groups)
    gen = torch.Generator().manual_seed(0)
    uniq = uniq[torch.randperm(uniq.numel(), generator=gen)]
    return [torch.isin(groups, chunk).nonzero().flatten() for chunk in torch.tensor_split(uniq, folds) if chunk.numel()]


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    groups: Tensor | None = None,
    folds: int = 3,
    max_iter: int = 100,
) -> ProbeResult:
    """Logistic-regression probe on standardised features; weight decay chosen by grouped CV on train.

    ``groups`` (``[N_train]``) keeps samples of one group (e.g. the classes cut from one window) in
    the same fold; without it every sample is its own group. With one weight decay, no CV runs.
    The chosen decay is refit on the whole train split and scored once on the test split.
    """
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise VideomaskError("the probe needs at least one train and one test sample")
    k = int(num_classes if num_classes is not None else int(max(train_y.max(), test_y.max())) + 1)
    tr, te = _standardise(train_x.float(), test_x.float())
    train_y, test_y = train_y.long(), test_y.long()
    decays = list(weight_decays)
    best = decays[0]
    if len(decays) > 1:
        g = groups if groups is not None else torch.arange(tr.shape[0])
        fold_ids = _group_folds(g, folds) if torch.unique(g).numel() >= folds else []
        if len(fold_ids) >= 2:
            order = sorted(range(len(decays)), key=lambda i: -decays[i])  # strong -> weak decay, warm-started
            scores = [0] * len(decays)
            for val in fold_ids:
                keep = torch.ones(tr.shape[0], dtype=torch.bool)
                keep[val] = False
                fx, vx = _standardise(train_x[keep].float(), train_x[val].float())
                start = None
                for i in order:
                    start = _fit_logistic(fx, train_y[keep], k, decays[i], max_iter, init=start)
                    scores[i] += int((_predict(vx, *start) == train_y[val]).sum())
            best = decays[int(np.argmax(scores))]  # ties -> the decay listed first
    w, b = _fit_logistic(tr, train_y, k, best, max_iter)
    return ProbeResult(
        accuracy=float((_predict(te, w, b) == test_y).float().mean()),
        train_accuracy=float((_predict(tr, w, b) == train_y).float().mean()),
        weight_decay=float(best),
        num_train=int(tr.shape[0]),
        num_test=int(te.shape[0]),
        num_classes=k,
    )


def knn_accuracy(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, k: int = 5, num_classes: int | None = None
) -> float:
    """Cosine kNN: each test sample takes the majority label of its ``k`` most similar train samples."""
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise VideomaskError("kNN needs at least one train and one test sample")
    if k < 1:
        raise VideomaskError(f"k must be >= 1, got {k}")
    c = int(num_classes if num_classes is not None else int(max(train_y.max(), test_y.max())) + 1)
    sim = F.normalize(test_x.float(), dim=1) @ F.normalize(train_x.float(), dim=1).T  # [N_test, N_train]
    kk = min(k, train_x.shape[0])
    top_sim, top_idx = sim.topk(kk, dim=1)  # [N_test, k]
    votes = F.one_hot(train_y.long()[top_idx], c).float()  # [N_test, k, C]
    score = votes.sum(1) + 1e-3 * (votes * top_sim.unsqueeze(-1)).sum(1)  # count, ties -> summed similarity
    return float((score.argmax(1) == test_y.long()).float().mean())


def probe_clipset(
    features: Tensor,
    clips: ClipSet,
    *,
    k: int = 5,
    num_classes: int | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
) -> dict[str, float]:
    """Linear-probe and kNN accuracy of ``features [N, D]`` on a :class:`ClipSet`'s train/test split.

    The weight decay's cross-validation folds group train clips by video (windows of one video may
    overlap), or by window when there are fewer than 3 videos.
    """
    tr, te = clips.is_train, ~clips.is_train
    video_index = {v: i for i, v in enumerate(dict.fromkeys(clips.video_ids))}
    by_video = torch.tensor([video_index[v] for v in clips.video_ids], dtype=torch.long)
    groups = by_video[tr] if torch.unique(by_video[tr]).numel() >= 3 else clips.windows[tr]
    lin = linear_probe(
        features[tr],
        clips.labels[tr],
        features[te],
        clips.labels[te],
        num_classes=num_classes,
        weight_decays=weight_decays,
        groups=groups,
    )
    knn = knn_accuracy(features[tr], clips.labels[tr], features[te], clips.labels[te], k=k, num_classes=num_classes)
    return {
        "linear": lin.accuracy,
        "knn": knn,
        "linear_train": lin.train_accuracy,
        "weight_decay": lin.weight_decay,
        "num_train": lin.num_train,
        "num_test": lin.num_test,
    }
