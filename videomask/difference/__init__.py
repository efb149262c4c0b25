"""Difference statistics: embedders, the visual vocabulary, difference scores, the statistics file, fitting
and the score cache (docs/difference.md).

    stats = fit_statistics(source, target, PixelEmbedder())
    stats.save("stats.safetensors")
"""

from videomask.difference.cache import (
    ScoreCache,
    build_score_cache,
    build_score_cache_part,
    finish_score_cache,
    stats_fingerprint,
)
from videomask.difference.embedders import (
    CallableEmbedder,
    CNNEmbedder,
    Embedder,
    ModelEmbedder,
    PixelEmbedder,
    build_embedder,
    check_identity,
)
from videomask.difference.fit import fit_paths, fit_statistics
from videomask.difference.kmeans import StreamingKMeans
from videomask.difference.mobilenet import MOBILENET_WEIGHTS, mobilenet_trunk
from videomask.difference.scores import (
    SCORERS,
    TFICF_FORMULA,
    enriched_words,
    enrichment_scores,
    prototype_distance,
    tficf_scores,
)
from videomask.difference.statistics import STATS_FORMAT, STATS_VERSION, DifferenceStats

__all__ = [
    "Embedder",
    "PixelEmbedder",
    "ModelEmbedder",
    "CNNEmbedder",
    "CallableEmbedder",
    "build_embedder",
    "check_identity",
    "mobilenet_trunk",
    "MOBILENET_WEIGHTS",
    "StreamingKMeans",
    "SCORERS",
    "TFICF_FORMULA",
    "tficf_scores",
    "enrichment_scores",
    "enriched_words",
    "prototype_distance",
    "STATS_FORMAT",
    "STATS_VERSION",
    "DifferenceStats",
    "fit_statistics",
    "fit_paths",
    "ScoreCache",
    "build_score_cache",
    "build_score_cache_part",
    "finish_score_cache",
    "stats_fingerprint",
]
