"""The attentive probe: one learned query cross-attends over frozen tokens (V-JEPA / VideoMAE V2 style)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.eval.probes import ProbeResult
from videomask.model import sinusoid_table


class AttentiveProbe(torch.nn.Module):
    """The frozen-evaluation head of V-JEPA / VideoMAE V2: one learned query cross-attends over the frozen
    tokens (multi-head, a fixed sine-cosine table of the token index added to keys and values, so where
    and when a token sits is visible), then a residual MLP and a linear classifier.

    ``[B, L, D]`` tokens -> ``[B, num_classes]`` logits.
    """

    def __init__(self, dim: int, num_classes: int, num_tokens: int, *, width: int = 64, heads: int = 4) -> None:
        super().__init__()

        if width % heads:
            raise VideomaskError(f"attentive probe width {width} is not a multiple of its {heads} heads")
        self.heads = heads
        self.norm = torch.nn.LayerNorm(dim)
        self.kv = torch.nn.Linear(dim, 2 * width)
        self.register_buffer("pos", sinusoid_table(num_tokens, width), persistent=False)  # [L, width]
        self.query = torch.nn.Parameter(torch.randn(heads, width // heads) * 0.02)  # [h, d]
        self.proj = torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(
            torch.nn.LayerNorm(width),
            torch.nn.Linear(width, 2 * width),
            torch.nn.GELU(),
            torch.nn.Linear(2 * width, width),
        )
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, num_classes))

    def forward(self, tokens: Tensor) -> Tensor:
        b, length, _ = tokens.shape
        k, v = self.kv(self.norm(tokens)).chunk(2, dim=-1)  # [B, L, width] each
        k, v = k + self.pos[:length], v + self.pos[:length]
        k = k.view(b, length, self.heads, -1)  # [B, L, h, d]
        v = v.view(b, length, self.heads, -1)
        scores = torch.einsum("hd,blhd->bhl", self.query, k) / math.sqrt(k.shape[-1])  # [B, h, L]
        pooled = torch.einsum("bhl,blhd->bhd", scores.softmax(dim=-1), v).reshape(b, -1)  # [B, width]
        x = self.proj(pooled)
        x = x + self.mlp(x)
        return self.head(x)  # [B, K]


@dataclass(frozen=True)
class AttentiveSettings:
    """Training of the attentive probe: AdamW (full batch, or seeded minibatches of ``batch_size``);
    ``weight_decays`` and the number of steps (a multiple of ``eval_every`` up to ``steps``) are chosen on
    a grouped hold-out part of the train split."""

    steps: int = 200
    eval_every: int = 25
    lr: float = 3e-3
    weight_decays: tuple[float, ...] = (1e-3, 1e-1)
    width: int = 64
    heads: int = 4
    holdout: float = 0.3  # share of train groups held out for the choice
    pca_dim: int = 48  # tokens -> this many principal components of the train tokens first (0 = keep all)
    seed: int = 0
    device: str = "cpu"  # where the probe trains (the tokens are moved there)
    batch_size: int = 0  # samples per step (seeded random minibatches); 0 = the whole train set every step


def _train_attentive(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    weight_decay: float,
    s: AttentiveSettings,
    steps: int,
    val: tuple[Tensor, Tensor] | None = None,
) -> tuple[AttentiveProbe, list[tuple[int, float]]]:
    """Fit one probe; with ``val``, its accuracy every ``eval_every`` steps is returned as ``[(step, acc)]``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        probe = AttentiveProbe(x.shape[-1], num_classes, x.shape[1], width=s.width, heads=s.heads)
    probe = probe.to(s.device)
    x, y = x.to(s.device), y.to(s.device)
    val = None if val is None else (val[0].to(s.device), val[1].to(s.device))
    opt = torch.optim.AdamW(probe.parameters(), lr=s.lr, weight_decay=weight_decay)
    curve: list[tuple[int, float]] = []
    gen = torch.Generator().manual_seed(s.seed + 1)
    for step in range(1, steps + 1):
        probe.train()
        opt.zero_grad()
        if 0 < s.batch_size < x.shape[0]:
            pick = torch.randperm(x.shape[0], generator=gen)[: s.batch_size].to(x.device)
            F.cross_entropy(probe(x[pick]), y[pick]).backward()
        else:
            F.cross_entropy(probe(x), y).backward()
        opt.step()
        if val is not None and step % s.eval_every == 0:
            probe.eval()
            with torch.no_grad():
                curve.append((step, float((probe(val[0]).argmax(1) == val[1]).float().mean())))
    probe.eval()
    return probe, curve


def attentive_probe(
    train_tokens: Tensor,
    train_y: Tensor,
    test_tokens: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    groups: Tensor | None = None,
    settings: AttentiveSettings = AttentiveSettings(),
) -> ProbeResult:
    """Attentive probe (:class:`AttentiveProbe`) on frozen tokens ``[N, L, D]``; returns test accuracy.

    Tokens are standardised per channel with the train statistics and, with ``settings.pca_dim``, reduced
    to that many principal components of the train tokens (a fixed linear map that makes the probe
    cheaper). The weight decay and the number of steps are chosen on a hold-out part of the
    *train* split (whole ``groups`` held out, e.g. videos); the choice is then refit on the whole train split
    and scored once on the test split.
    """
    if train_tokens.shape[0] == 0 or test_tokens.shape[0] == 0:
        raise VideomaskError("the probe needs at least one train and one test sample")
    k = int(num_classes if num_classes is not None else int(max(train_y.max(), test_y.max())) + 1)
    mean = train_tokens.mean(dim=(0, 1), keepdim=True)
    std = train_tokens.std(dim=(0, 1), keepdim=True).clamp_min(1e-6)
    tr, te = (train_tokens.float() - mean) / std, (test_tokens.float() - mean) / std
    if 0 < settings.pca_dim < tr.shape[-1]:
        flat = tr.reshape(-1, tr.shape[-1])  # [N*L, D]
        pick = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(settings.seed))[:20000]
        _, _, vh = torch.linalg.svd(flat[pick] - flat[pick].mean(0), full_matrices=False)  # vh [D, D]
        basis = vh[: settings.pca_dim].T  # [D, pca_dim]
        tr, te = tr @ basis, te @ basis  # [N, L, pca_dim]
    train_y, test_y = train_y.long(), test_y.long()
    g = groups if groups is not None else torch.arange(tr.shape[0])
    uniq = torch.unique(g)
    best = (settings.weight_decays[0], settings.steps)
    if uniq.numel() >= 3 and (len(settings.weight_decays) > 1 or settings.eval_every < settings.steps):
        gen = torch.Generator().manual_seed(settings.seed)
        held = uniq[torch.randperm(uniq.numel(), generator=gen)[: max(1, int(round(settings.holdout * uniq.numel())))]]
        val = torch.isin(g, held)
        scores = []
        for wd in settings.weight_decays:
            _, curve = _train_attentive(
                tr[~val], train_y[~val], k, wd, settings, settings.steps, (tr[val], train_y[val])
            )
            scores += [(acc, -step, -wd) for step, acc in curve]  # ties -> fewer steps, weaker decay
        acc, neg_step, neg_wd = max(scores)
        best = (-neg_wd, -neg_step)
    probe, _ = _train_attentive(tr, train_y, k, best[0], settings, best[1])
    dev = settings.device
    with torch.no_grad():
        test_acc = float((probe(te.to(dev)).argmax(1).cpu() == test_y).float().mean())
        train_acc = float((probe(tr.to(dev)).argmax(1).cpu() == train_y).float().mean())
    return ProbeResult(test_acc, train_acc, float(best[0]), int(tr.shape[0]), int(te.shape[0]), k)
