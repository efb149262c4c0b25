"""The ``difference`` masker: Difference-Masking from embedding statistics (``videomask fit``).

For a batch it embeds every tubelet token with the statistics' embedder (the same identity the
statistics were fitted with), L2-normalises the embeddings and scores each token by its cosine
similarity to the anchor centroids: ``score = max_k cos(e, c_k)`` (``score="max"``, default) or the
mean over anchors (``score="mean"``). Tube mode aggregates the scores over time (``reduce``).

Anchors (for the default ``selection="share"``, the seed's video rule):

* ``anchor_rule="word"`` (default): a token is an anchor when its nearest visual word (over the
  whole vocabulary) is an anchor word — the same assignment the TF-ICF counts were made with, so a
  token is an anchor exactly when it would have been counted as an anchor word;
* ``anchor_rule="threshold"``: a token is an anchor when its score exceeds ``threshold``.

``selection="topk"`` / ``"sample"`` use the scores with rules (a) / (c) instead. Everything runs
batched on the video's device; the embedder's forward is part of the masker's cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.masking.base import ScoredMasker, register_masker
from videomask.patches import Grid, as_tubelet
from videomask.stats import DifferenceStats, build_embedder, check_identity

SCORES = ("max", "mean")
ANCHOR_RULES = ("word", "threshold")


@register_masker("difference")
class DifferenceMasker(ScoredMasker):
    """Difference-Masking from fitted :class:`~videomask.stats.DifferenceStats`.

    ``stats``: a ``DifferenceStats`` or a path to a statistics file. ``embedder``: optional; by
    default rebuilt from the statistics' embedder identity (pixel embedders and checkpoint-backed
    model embedders can be rebuilt; a callable embedder must be passed). A passed embedder must have
    the identity the statistics were fitted with. ``tubelet`` defaults to the statistics' tubelet.
    Other options: see :class:`~videomask.masking.base.ScoredMasker` and the module docstring.
    """

    def __init__(
        self,
        *,
        stats: DifferenceStats | str | Path,
        embedder: Any = None,
        tubelet: int | Sequence[int] | None = None,
        ratio: float = 0.9,
        mode: str = "tube",
        selection: str = "share",
        alpha: float = 1.0,
        direction: str = "mask",
        reduce: str = "mean",
        temperature: float = 0.25,
        uniform_mix: float = 0.0,
        score: str = "max",
        anchor_rule: str = "word",
        threshold: float = 0.5,
    ) -> None:
        if not isinstance(stats, DifferenceStats):
            stats = DifferenceStats.load(stats)
        stats_tubelet = stats.settings.get("tubelet")
        if tubelet is None:
            tubelet = stats_tubelet or (2, 16, 16)
        elif stats_tubelet is not None and as_tubelet(tubelet) != as_tubelet(stats_tubelet):
            raise VideomaskError(f"tubelet {as_tubelet(tubelet)} differs from the statistics' tubelet {as_tubelet(stats_tubelet)}")
        super().__init__(
            tubelet=tubelet, ratio=ratio, mode=mode, selection=selection, alpha=alpha, direction=direction,
            reduce=reduce, temperature=temperature, uniform_mix=uniform_mix,
        )
        if score not in SCORES:
            raise VideomaskError(f"score must be one of {SCORES}, got {score!r}")
        if anchor_rule not in ANCHOR_RULES:
            raise VideomaskError(f"anchor_rule must be one of {ANCHOR_RULES}, got {anchor_rule!r}")
        if embedder is None:
            embedder = build_embedder(stats.embedder)
        else:
            check_identity(stats.embedder, embedder.identity)
        self.stats = stats
        self.embedder = embedder
        self.score = score
        self.anchor_rule = anchor_rule
        self.threshold = float(threshold)
        self.centroids = F.normalize(stats.centroids.float(), dim=1)  # [V, D]
        self.is_anchor_word = torch.zeros(stats.num_words, dtype=torch.bool)  # [V]
        self.is_anchor_word[stats.anchors] = True
        self.anchor_ids = self.is_anchor_word.nonzero().squeeze(1)  # [K] anchor word ids, ascending
        self._device = torch.device("cpu")

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> "DifferenceMasker":
        """A masker from a statistics file written by ``videomask fit`` / ``DifferenceStats.save``."""
        return cls(stats=DifferenceStats.load(path), **options)

    def to(self, device: torch.device | str) -> "DifferenceMasker":
        """Move the centroids and the embedder to ``device``."""
        device = torch.device(device)
        self.centroids = self.centroids.to(device)
        self.is_anchor_word = self.is_anchor_word.to(device)
        self.anchor_ids = self.anchor_ids.to(device)
        self.embedder.to(device)
        self._device = device
        return self

    @torch.no_grad()
    def token_scores(self, video: Tensor, batch: Tensor | Mapping[str, Any], grid: Grid) -> tuple[Tensor, Tensor]:
        if self._device != video.device:
            self.to(video.device)
        emb = self.embedder(video)  # [B, L, D]
        if emb.dim() != 3 or emb.shape[1] != grid.num_tokens or emb.shape[2] != self.centroids.shape[1]:
            raise VideomaskError(
                f"embedder gave {tuple(emb.shape)}, expected [B, {grid.num_tokens}, {self.centroids.shape[1]}] "
                f"(clip grid {grid}, vocabulary dim {self.centroids.shape[1]})"
            )
        B, L, D = emb.shape
        # one [B*L, D] x [D, V] matmul; the anchor columns by index (ascending, as a bool mask would give)
        emb = F.normalize(emb.float().reshape(B * L, D), dim=-1)  # [B*L, D]
        sims = emb @ self.centroids.T  # [B*L, V] cosine to every word
        anchor_sims = sims.index_select(1, self.anchor_ids)  # [B*L, K]
        scores = anchor_sims.amax(dim=1) if self.score == "max" else anchor_sims.mean(dim=1)  # [B*L]
        if self.anchor_rule == "word":
            anchors = self.is_anchor_word[sims.argmax(dim=1)]  # [B*L] nearest word is an anchor word
        else:
            anchors = scores > self.threshold  # [B*L]
        scores, anchors = scores.view(B, L), anchors.view(B, L)
        return scores, anchors

    def __repr__(self) -> str:
        return (
            super().__repr__()[:-1]
            + f", score={self.score!r}, anchor_rule={self.anchor_rule!r}, words={self.stats.num_words}, "
            f"anchors={self.stats.anchors.numel()}, embedder={self.stats.embedder.get('kind')!r})"
        )
