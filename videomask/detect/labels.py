"""Anchor labels by TF-ICF: the labels most typical of a target boxes cache and rare in a source one."""

from __future__ import annotations

import math
from pathlib import Path

from videomask.detect.boxes import BoxCache
from videomask.errors import VideomaskError

__all__ = ["choose_anchor_labels", "label_tficf"]


def label_tficf(target: BoxCache, source: BoxCache) -> dict[str, float]:
    """TF-ICF of every label detected in the target, at frame level (see :func:`choose_anchor_labels`)."""
    f_t, n_t = target.frame_counts()
    f_s, n_s = source.frame_counts()
    labels = [name for name in target.labels if f_t[name] > 0]
    V = len(set(labels) | {name for name in source.labels if f_s[name] > 0})
    scores = {}
    for name in labels:
        tf = f_t[name] / max(n_t, 1)
        icf = math.log((n_s + V) / (f_s.get(name, 0) + 1))
        scores[name] = tf * icf
    return scores


def choose_anchor_labels(
    target_cache: BoxCache | str | Path, source_cache: BoxCache | str | Path, top_k: int = 1
) -> list[str]:
    """The ``top_k`` labels most typical of the target and rare in the source, by TF-ICF over scanned frames.

    With ``f_T(l)`` / ``f_S(l)`` the number of scanned target / source frames holding at least one
    detection of label ``l``, ``F_T`` / ``F_S`` the scanned frames in each cache and ``V`` the number
    of labels seen in either::

        tf_T(l)    = f_T(l) / F_T
        icf(l)     = log((F_S + V) / (f_S(l) + 1))
        tficf(l)   = tf_T(l) * icf(l)

    (the same shape as :func:`videomask.difference.tficf_scores`, counted in frames instead of tokens).
    Labels never detected in the target are not candidates; ties go to the alphabetically first label.
    """
    target = target_cache if isinstance(target_cache, BoxCache) else BoxCache.load(target_cache)
    source = source_cache if isinstance(source_cache, BoxCache) else BoxCache.load(source_cache)
    if top_k < 1:
        raise VideomaskError(f"top_k must be >= 1, got {top_k}")
    scores = label_tficf(target, source)
    if not scores:
        raise VideomaskError(
            f"the target boxes cache {target.path or ''} holds no detections to choose anchor labels from"
        )
    ranked = sorted(scores, key=lambda name: (-scores[name], name))
    return ranked[:top_k]
