"""Summaries over seeds, paired differences with Student's t intervals, and the sanity verdict."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from videomask.errors import VideomaskError


def summarise(runs: list[dict[str, Any]], keys: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and metric: mean, std (sample std over seeds; 0 for one seed) and n.

    ``keys``: the metrics to summarise (default: every metric a run of the variant reports)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == variant]
        stats: dict[str, dict[str, float]] = {}
        for key in keys if keys is not None else dict.fromkeys(k for r in rows for k in r["metrics"]):
            vals = [float(r["metrics"][key]) for r in rows if r["metrics"].get(key) is not None]
            vals = [v for v in vals if not math.isnan(v)]
            if vals:
                stats[key] = {
                    "mean": statistics.fmean(vals),
                    "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "n": len(vals),
                }
        out[variant] = stats
    return out


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and metric: mean, sample std over seeds (0 for one) and n (every metric a run reports)."""
    return summarise(runs)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Paired difference ``a - b`` over seeds (``a[i]`` and ``b[i]`` share seed ``i``): the mean, the
    sample std, and the two-sided t interval ``mean ± t_{(1+c)/2, n-1} * std / sqrt(n)`` (NaN bounds for
    one pair)."""
    from scipy.stats import t as student_t  # the bench extra, loaded only when a bench runs

    if len(a) != len(b) or not a:
        raise VideomaskError(f"paired difference needs equal, non-empty lists (got {len(a)} and {len(b)})")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    mean = statistics.fmean(d)
    if n < 2:
        return {"mean": mean, "std": float("nan"), "low": float("nan"), "high": float("nan"), "n": n}
    sd = statistics.stdev(d)
    half = float(student_t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "std": sd, "low": mean - half, "high": mean + half, "n": n}


def paired_table(
    runs: list[dict[str, Any]], reference: str, trained: Sequence[str], keys: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """variant -> metric -> :func:`paired_difference` against ``reference`` (pairs = same seed)."""
    by = {(r["variant"], r["seed"]): r["metrics"] for r in runs}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for v in trained:
        if v == reference:
            continue
        seeds = sorted(s for (name, s) in by if name == v and (reference, s) in by)
        row = {}
        for key in keys:
            pairs = [(by[(v, s)].get(key), by[(reference, s)].get(key)) for s in seeds]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if pairs:
                row[key] = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
        out[v] = row
    return out


def sanity_verdicts(
    summary: dict[str, dict[str, dict[str, float]]],
    trained: Sequence[str],
    keys: Sequence[str],
    margin_pts: float,
    floors: Sequence[str] = ("random init",),
) -> dict[str, dict[str, Any]]:
    """Per probe metric: the mean of the trained maskers' means minus the best of the ``floors`` references
    present (random init, random CNN; points), and whether that clears ``margin_pts`` (conclusive) or not."""
    out = {}
    for key in keys:
        means = [summary[v][key]["mean"] for v in trained if key in summary.get(v, {})]
        refs = [summary[f][key]["mean"] for f in floors if key in summary.get(f, {})]
        if not means or not refs:
            continue
        gap = (statistics.fmean(means) - max(refs)) * 100
        out[key] = {
            "trained_mean": statistics.fmean(means),
            "random_init": max(refs),
            "gap_pts": gap,
            "best_trained": max(means),
            "conclusive": gap >= margin_pts,
        }
    return out
