"""The ``difference`` masker: Difference-Masking from embedding statistics (``videomask fit``).

For a batch it embeds every tubelet token with the statistics' embedder (the identity the statistics
were fitted with; L2-normalised) and scores it with one of three scorers:

* ``scorer="distance"`` (default): **novelty against the source**, the cosine distance from the token
  to the nearest of the source prototypes (k-means on source tokens only). Calibrated by the
  distances of held-out source tokens: a token is an anchor when its distance exceeds the source's
  ``threshold`` quantile (default 0.99, so about 1% of source-like tokens are anchors by chance);
* ``scorer="enrichment"``: the log-odds z-score (informative Dirichlet prior) of the token's visual
  word; anchors are tokens whose word is significantly more frequent in the target (``enriched``);
* ``scorer="tficf"``: the text paper's rule, the cosine similarity to the nearest of the top-K TF-ICF
  words; anchors are tokens whose nearest word is one of them. Over a k-means vocabulary all words have
  similar frequencies, so ICF barely varies and TF-ICF ranks the *frequent* target words (often shared
  scenery) first; it is kept for comparison.

``anchor_rule``: ``"auto"`` (``calibrated`` for distance, ``word`` for the word scorers); ``"threshold"``
(score above ``threshold``; for distance a source-quantile level, default 0.99); ``"share"`` (the top
``anchor_share`` of each clip's tokens by score, default 10%); ``"calibrated"`` (both: above the
threshold *and* in the clip's top share, so a clip with nothing new has few anchors and a clip whose
whole scenery shifted still has only its most novel tenth); ``"word"`` (the token's visual word is an
anchor word). Tube mode aggregates scores over time (``reduce``) and
a tube is an anchor when any of its tokens is. Selection is the shared step (``selection``).

With ``cache=`` (a score cache from ``videomask score-cache``) and loader batches (``video_id``,
``frame_indices``, ``geometry``), the scores are looked up instead of computed: the embedder is frozen,
so a video's scores can be computed once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.difference import (
    SCORERS,
    DifferenceStats,
    ScoreCache,
    build_embedder,
    check_identity,
    prototype_distance,
)
from videomask.errors import VideomaskError
from videomask.masking.base import ScoredMasker, register_masker
from videomask.patches import Grid, as_tubelet

SCORES = ("max", "mean")
ANCHOR_RULES = ("auto", "calibrated", "threshold", "word", "share")
DEFAULT_THRESHOLDS = {"distance": 0.99, "enrichment": 1.96, "tficf": 0.5}


@register_masker("difference")
class DifferenceMasker(ScoredMasker):
    """Difference-Masking from fitted :class:`~videomask.difference.DifferenceStats`.

    ``stats``: a ``DifferenceStats`` or a path to a statistics file. ``embedder``: optional; by
    default rebuilt from the statistics' embedder identity (pixel, cnn and checkpoint-backed model
    embedders can be rebuilt; a callable embedder must be passed). A passed embedder must have the
    identity the statistics were fitted with. ``tubelet`` defaults to the statistics' tubelet.
    ``scorer``, ``anchor_rule``, ``threshold``, ``anchor_share``, ``score`` (TF-ICF: ``max`` or ``mean``
    over anchor words) and ``cache``: see the module docstring. Other options: see
    :class:`~videomask.masking.base.ScoredMasker`.
    """

    def __init__(
        self,
        *,
        stats: DifferenceStats | str | Path,
        embedder: Any = None,
        tubelet: int | Sequence[int] | None = None,
        scorer: str | None = None,
        anchor_rule: str = "auto",
        threshold: float | None = None,
        anchor_share: float = 0.1,
        score: str = "max",
        cache: Any = None,
        **options: Any,
    ) -> None:
        self.check_options(
            dict(
                embedder=embedder,
                scorer=scorer,
                anchor_rule=anchor_rule,
                threshold=threshold,
                anchor_share=anchor_share,
                score=score,
            )
        )
        if not isinstance(stats, DifferenceStats):
            stats = DifferenceStats.load(stats)
        stats_tubelet = stats.settings.get("tubelet")
        if tubelet is None:
            tubelet = stats_tubelet or (2, 16, 16)
        elif stats_tubelet is not None and as_tubelet(tubelet) != as_tubelet(stats_tubelet):
            raise VideomaskError(
                f"tubelet {as_tubelet(tubelet)} differs from the statistics' tubelet {as_tubelet(stats_tubelet)}"
            )
        super().__init__(tubelet=tubelet, **options)  # ratio, mode, selection, alpha, direction, reduce, ...
        scorer = scorer or stats.scorers[0]
        if scorer not in stats.scorers:
            raise VideomaskError(
                f"these statistics support scorers {stats.scorers}, not {scorer!r} (refit with `videomask fit`)"
            )
        if anchor_rule == "auto":
            anchor_rule = "calibrated" if scorer == "distance" else "word"
        self.check_options(dict(scorer=scorer, anchor_rule=anchor_rule))
        self.threshold = float(DEFAULT_THRESHOLDS[scorer] if threshold is None else threshold)
        if scorer == "distance" and anchor_rule in ("threshold", "calibrated") and not 0.0 < self.threshold < 1.0:
            raise VideomaskError(f"the distance threshold is a source quantile level in (0, 1), got {self.threshold}")
        if cache in ("auto", "none"):  # the training run's choices; outside a run the scores are computed here
            cache = None
        if embedder is None and cache is None:
            embedder = build_embedder(stats.embedder)
        elif embedder is not None:
            check_identity(stats.embedder, embedder.identity)
        self.stats = stats
        self.embedder = embedder
        self.scorer = scorer
        self.anchor_rule = anchor_rule
        self.anchor_share = float(anchor_share)
        self.score = score
        # the distance above which a token is an anchor (distance scorer, threshold rule)
        self.distance_threshold = stats.source_quantile(self.threshold) if scorer == "distance" else None
        self.cache = ScoreCache.load(cache) if isinstance(cache, (str, Path)) else cache
        if self.cache is not None:
            self.cache.check(stats, scorer)
            if anchor_rule == "word":
                raise VideomaskError(
                    "a score cache holds scores, not visual words: use anchor_rule 'calibrated', 'threshold' or 'share'"
                )
        self.centroids = F.normalize(stats.centroids.float(), dim=1)  # [V, D]
        self.prototypes = None if stats.prototypes is None else F.normalize(stats.prototypes.float(), dim=1)  # [M, D]
        word_anchors = stats.anchors if scorer == "tficf" else stats.enriched
        self.is_anchor_word = torch.zeros(stats.num_words, dtype=torch.bool)  # [V]
        if word_anchors is not None and word_anchors.numel():
            self.is_anchor_word[word_anchors] = True
        self.anchor_ids = self.is_anchor_word.nonzero().squeeze(1)  # [K] anchor word ids, ascending
        self.word_z = stats.enrichment.float() if stats.enrichment is not None else None  # [V]
        self._device = torch.device("cpu")

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Check the option values that need no statistics (a run checks its config so before any work; the
        rest is checked when the masker is built)."""
        embedder = options.get("embedder")
        if embedder is not None and not (
            callable(embedder) and isinstance(getattr(embedder, "identity", None), Mapping)
        ):
            raise VideomaskError(
                f"embedder: the difference masker takes an embedder object (Python only), not {embedder!r}; it "
                "scores with the embedder its statistics were fitted with (for another one, fit statistics with "
                "it: videomask fit --embedder ...)"
            )
        for key, allowed in (("scorer", SCORERS), ("anchor_rule", ANCHOR_RULES), ("score", SCORES)):
            value = options.get(key)
            if value is not None and value not in allowed:
                raise VideomaskError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        for key in ("threshold", "anchor_share"):
            value = options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise VideomaskError(f"{key} must be a number, got {value!r}")
        share = options.get("anchor_share")
        if share is not None and not 0.0 < share <= 1.0:
            raise VideomaskError(f"anchor_share must be in (0, 1], got {share}")
        if options.get("anchor_rule") == "word" and options.get("scorer") == "distance":
            raise VideomaskError("anchor_rule 'word' needs a word scorer (enrichment or tficf), not 'distance'")

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> "DifferenceMasker":
        """A masker from a statistics file written by ``videomask fit`` / ``DifferenceStats.save``."""
        return cls(stats=DifferenceStats.load(path), **options)

    def to(self, device: torch.device | str) -> "DifferenceMasker":
        """Move the statistics' tensors and the embedder to ``device``."""
        device = torch.device(device)
        self.centroids = self.centroids.to(device)
        if self.prototypes is not None:
            self.prototypes = self.prototypes.to(device)
        if self.word_z is not None:
            self.word_z = self.word_z.to(device)
        self.is_anchor_word = self.is_anchor_word.to(device)
        self.anchor_ids = self.anchor_ids.to(device)
        if self.embedder is not None:
            self.embedder.to(device)
        self._device = device
        return self

    def embed(self, video: Tensor, grid: Grid) -> Tensor:
        """Unit embeddings ``[B, L, D]`` of every token (checked against the statistics' dimension)."""
        if self.embedder is None:
            raise VideomaskError(
                "this difference masker has only a score cache; batches need video_id, frame_indices, geometry"
            )
        fitted, side = self.stats.size, min(video.shape[-2:])
        if fitted is not None and side != fitted:  # the scale the embeddings depend on (DifferenceStats.check_clip)
            raise VideomaskError(
                f"clips of {video.shape[-2]}x{video.shape[-1]} px, statistics fitted at {fitted} px clips: refit with "
                f"`videomask fit --size {side}` or resize the clips to {fitted} px"
            )
        emb = self.embedder(video)  # [B, L, D]
        if emb.dim() != 3 or emb.shape[1] != grid.num_tokens or emb.shape[2] != self.centroids.shape[1]:
            raise VideomaskError(
                f"embedder gave {tuple(emb.shape)}, expected [B, {grid.num_tokens}, {self.centroids.shape[1]}] "
                f"(clip grid {grid}, vocabulary dim {self.centroids.shape[1]})"
            )
        return F.normalize(emb.float(), dim=-1)

    def scores_from_embeddings(self, emb: Tensor) -> tuple[Tensor, Tensor | None]:
        """``emb [B, L, D]`` (unit vectors) -> ``(scores [B, L], nearest word [B, L] or None)`` for the scorer."""
        B, L, D = emb.shape
        flat = emb.reshape(B * L, D)  # [B*L, D]
        if self.scorer == "distance":
            assert self.prototypes is not None
            return prototype_distance(flat, self.prototypes).view(B, L), None
        sims = flat @ self.centroids.T  # [B*L, V] cosine to every word
        nearest = sims.argmax(dim=1)  # [B*L]
        if self.scorer == "enrichment":
            assert self.word_z is not None
            scores = self.word_z[nearest]  # [B*L] z-score of the token's word
        else:
            anchor_sims = sims.index_select(1, self.anchor_ids)  # [B*L, K]
            scores = anchor_sims.amax(dim=1) if self.score == "max" else anchor_sims.mean(dim=1)  # [B*L]
        return scores.view(B, L), nearest.view(B, L)

    def anchors_from_scores(self, scores: Tensor, nearest: Tensor | None) -> Tensor:
        """Anchor flags ``[B, L]`` from the scores (and nearest words) by ``anchor_rule``."""
        if self.anchor_rule == "word":
            if nearest is None:
                raise VideomaskError("anchor_rule 'word' needs the tokens' visual words (not stored in a score cache)")
            return self.is_anchor_word[nearest]
        above = scores > (self.distance_threshold if self.scorer == "distance" else self.threshold)  # [B, L]
        if self.anchor_rule == "threshold":
            return above
        B, L = scores.shape
        n = max(1, int(round(self.anchor_share * L)))
        top = torch.zeros_like(above).scatter_(1, scores.topk(n, dim=1).indices, True)  # [B, L] the top share
        return top if self.anchor_rule == "share" else top & above

    @torch.no_grad()
    def token_scores(self, video: Tensor, batch: Tensor | Mapping[str, Any], grid: Grid) -> tuple[Tensor, Tensor]:
        if self._device != video.device:
            self.to(video.device)
        if (
            self.cache is not None
            and isinstance(batch, Mapping)
            and all(k in batch for k in ("video_id", "frame_indices", "geometry"))
        ):
            scores, nearest = self.cache.lookup(batch, grid, self.tubelet).to(video.device), None  # [B, L]
        else:
            scores, nearest = self.scores_from_embeddings(self.embed(video, grid))  # [B, L]
        return scores, self.anchors_from_scores(scores, nearest)

    def __repr__(self) -> str:
        return (
            super().__repr__()[:-1]
            + f", scorer={self.scorer!r}, anchor_rule={self.anchor_rule!r}, threshold={self.threshold}, "
            f"words={self.stats.num_words}, embedder={self.stats.embedder.get('kind')!r})"
        )
