"""The quality bench's report: the table, comparisons, summary sentences and the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from videomask.bench.motion_energy import MOTION_BASELINE
from videomask.bench.report import report_header
from videomask.eval import SPEED_STRIDES

# metric key -> (column title, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "arrow_linear": ("arrow lin. %", True),
    "arrow_knn": ("arrow kNN %", True),
    "speed_linear": ("speed lin. %", True),
    "speed_knn": ("speed kNN %", True),
    "recon_person": ("recon. person ↓", False),
    "recon_other": ("recon. other ↓", False),
}


PERCENT = {"arrow_linear", "arrow_knn", "speed_linear", "speed_knn"}


def _fmt(stat: dict[str, float] | None, key: str) -> str:
    if not stat:
        return "–"
    scale = 100.0 if key in PERCENT else 1.0
    digits = 1 if key in PERCENT else (3 if key.startswith("recon") else 1)
    if stat["n"] > 1:
        return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f}"


def markdown_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """The result table: one row per variant, mean ± std over seeds."""
    head = ["variant", "seeds"] + [METRICS[k][0] for k in METRICS] + ["wall s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, stats in summary.items():
        n = max((int(s["n"]) for s in stats.values()), default=0)
        cells = [variant, str(n)] + [_fmt(stats.get(k), k) for k in METRICS] + [_fmt(stats.get("wall_s"), "wall_s")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(summary: dict[str, dict[str, dict[str, float]]], reference: str, variants: list[str]) -> list[str]:
    """Plain sentences: each variant's difference to ``reference`` per metric, flagged when it exceeds
    the combined seed std (``|Δ| > sqrt(std_a² + std_b²)``), else called within noise."""
    ref = summary.get(reference)
    lines: list[str] = []
    if not ref:
        return lines
    for variant in variants:
        if variant == reference or variant not in summary:
            continue
        parts = []
        for key, (title, higher) in METRICS.items():
            a, b = summary[variant].get(key), ref.get(key)
            if not a or not b:
                continue
            scale = 100.0 if key in PERCENT else 1.0
            delta = (a["mean"] - b["mean"]) * scale
            noise = math.hypot(a["std"], b["std"]) * scale
            better = (delta > 0) == higher
            if min(a["n"], b["n"]) < 2:
                verdict = "one seed, no noise estimate"
            elif abs(delta) <= noise:
                verdict = "within noise"
            elif delta == 0:
                verdict = "equal"
            else:
                verdict = "better" if better else "worse"
            unit = " pts" if key in PERCENT else ""
            parts.append(f"{title.replace(' ↓', '')} {delta:+.{1 if key in PERCENT else 3}f}{unit} ({verdict})")
        lines.append(f"- **{variant}** vs {reference}: " + "; ".join(parts))
    return lines


def headline(summary: dict[str, dict[str, dict[str, float]]], trained: list[str]) -> list[str]:
    """Summary sentences computed from the table: the ranking on person-patch reconstruction and how far
    the probe accuracies of the encoders are from chance (against the model-free motion reference)."""
    lines = []
    ranked = sorted(
        (v for v in trained if "recon_person" in summary.get(v, {})), key=lambda v: summary[v]["recon_person"]["mean"]
    )
    if ranked:
        lines.append(
            "- Reconstruction error on held-out person patches, lowest first: "
            + ", ".join(f"{v} {_fmt(summary[v]['recon_person'], 'recon_person')}" for v in ranked)
            + "."
        )
    encoders = [v for v in summary if v != MOTION_BASELINE]
    for task, chance in (("arrow", 50.0), ("speed", 100.0 / len(SPEED_STRIDES))):
        vals = [
            summary[v][f"{task}_{kind}"]["mean"] * 100
            for v in encoders
            for kind in ("linear", "knn")
            if f"{task}_{kind}" in summary[v]
        ]
        if not vals:
            continue
        text = (
            f"- {task} probe: every encoder row (linear and kNN, means) lies in {min(vals):.1f}-{max(vals):.1f}% "
            f"(chance {chance:.1f}%)"
        )
        motion = summary.get(MOTION_BASELINE, {})
        if f"{task}_linear" in motion:
            text += f"; the model-free motion reference reaches {motion[f'{task}_linear']['mean'] * 100:.1f}% (linear)"
        lines.append(text + ".")
    return lines


def write_plot(
    summary: dict[str, dict[str, dict[str, float]]], path: Path, title: str, runs: list[dict[str, Any]] | None = None
) -> None:
    """One bar panel per metric, mean with std error bars, one bar per variant; each seed as a dot."""
    import matplotlib  # the bench extra, loaded only when a report is drawn

    matplotlib.use("Agg")
    # matplotlib is in the bench extra: loaded only to draw the plot
    import matplotlib.pyplot as plt

    keys = [k for k in METRICS if any(k in s for s in summary.values())]
    variants = list(summary)
    cols = 3
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colours = plt.cm.tab10(np.arange(len(variants)) % 10)
    for ax, key in zip(axes.flat, keys):
        scale = 100.0 if key in PERCENT else 1.0
        means = [summary[v].get(key, {}).get("mean", float("nan")) * scale for v in variants]
        stds = [summary[v].get(key, {}).get("std", 0.0) * scale for v in variants]
        ax.bar(range(len(variants)), means, yerr=stds, color=colours, capsize=3)
        for i, v in enumerate(variants):
            seeds = [
                r["metrics"][key] * scale for r in runs or [] if r["variant"] == v and r["metrics"].get(key) is not None
            ]
            if len(seeds) > 1:
                ax.plot([i] * len(seeds), seeds, "k.", ms=3)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, rotation=40, ha="right", fontsize=7)
        ax.set_title(METRICS[key][0], fontsize=9)
        finite = [m for m in means if not math.isnan(m)]
        if finite and key in PERCENT:
            ax.axhline(100.0 / (2 if key.startswith("arrow") else len(SPEED_STRIDES)), color="grey", ls="--", lw=0.8)
        if finite and key not in PERCENT:
            lo, hi = min(finite), max(finite)
            pad = max(1e-3, (hi - lo) * 0.5)
            ax.set_ylim(max(0.0, lo - pad), hi + pad)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict[str, Any], out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = result["summary"]
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    paths["json"].write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_plot(
        summary,
        paths["png"],
        f"videomask bench: {result['setup']['steps']} steps, {len(result['setup']['seeds'])} seed(s); "
        "bars: mean ± std over seeds, dots: seeds",
        result["runs"],
    )
    setup = result["setup"]
    trained = [v for v in summary if v in setup["variants"]]
    md = [
        *report_header(f"Quality benchmark: {name}", result["command"]),
        f"Date (UTC): {result['date']}; machine: {result['machine']}; total wall-clock {result['total_s']:.0f} s.",
        "",
        "## Setup",
        "",
        f"- Source videos: {setup['num_source']} (`{setup['source']}`), target videos: {setup['num_target']} "
        f"(`{setup['target']}`).",
        f"- Base model: {setup['base']}.",
        f"- Continued pretraining on the first {setup['eval']['train_share']:.0%} of each target video's frames: "
        f"{setup['steps']} steps per run, seeds {setup['seeds']}, mask ratio {setup['mask_ratio']}, same data and "
        "settings for every variant.",
        f"- Model / clips: {setup['clip']}.",
        f"- Anchors: {setup['anchors']}.",
        "- Probe tasks: arrow of time (2 classes) and playback speed (stride 1/2/4, 3 classes) on target windows "
        "split by time "
        f"(train windows in the first {setup['eval']['train_share']:.0%} of each video, test windows from "
        f"{setup['eval']['gap']} frames after it, "
        f"so no train and test clip share a frame; a window starts every {setup['eval'].get('window_step') or 'span'} "
        "frames within a split, "
        f"at most {setup['eval']['max_windows']} per video and split; {setup['probe_counts']}). "
        "Linear probe: logistic regression (L-BFGS, standardised features, weight decay from {1e-3, 1e-2, 0.1, 1} "
        "chosen by 3-fold CV on train, folds grouped by video); "
        f"kNN: cosine, k = {setup['eval']['knn_k']}. Chance: arrow 50%, speed 33.3%.",
        "- Reconstruction error: mean per-token normalised-pixel loss of the held-out test windows under one fixed "
        "random token mask "
        f"(ratio {setup['eval']['mask_ratio']}, seed {setup['eval']['mask_seed']}) shared by all models, on "
        "detected-person tokens "
        f"(`recon. person`, {setup['recon_tokens']['anchor']} tokens) and on the other tokens (`recon. other`, "
        f"{setup['recon_tokens']['other']} tokens). Lower is better.",
        "",
        "## Results (mean ± std over seeds)",
        "",
        markdown_table(summary),
        "",
        "Reference rows are not trained on the target and have one value each: `random init`, `base` and "
        f"`{MOTION_BASELINE}` "
        "(mean absolute frame difference per patch and time step, probed the same way: it shows the speed labels are "
        "learnable "
        "from these clips; it cannot see the direction of time).",
        "",
        "## Summary (computed from the table)",
        "",
        *headline(summary, trained),
        "",
        "## Differences to random masking (|Δ| within the combined seed std = within noise)",
        "",
        *compare(summary, "random", trained),
        "",
        "## Differences to tube masking",
        "",
        *compare(summary, "tube", trained),
        "",
        f"Plot: `{paths['png'].name}`. Every run (per seed) is in `{paths['json'].name}`.",
        "",
    ]
    if result.get("notes"):
        md += ["## Notes", "", *[f"- {n}" for n in result["notes"]], ""]
    paths["md"].write_text("\n".join(md))
    return paths
