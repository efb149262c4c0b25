"""The known-answer bench's report: sanity ladder, accuracy tables, paired differences to tube, the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from videomask.bench.motion_config import (
    FLOOR_REFERENCES,
    OBJECT_MOTION_TASKS,
    TASK_CLASSES,
    TASK_TITLES,
    UPPER,
    metric_keys,
)
from videomask.bench.motion_energy import MOTION_BASELINE
from videomask.bench.report import report_header
from videomask.bench.stats import paired_table, sanity_verdicts, summarise_runs


def _pct(stat: dict[str, float] | None) -> str:
    if not stat:
        return "–"
    if stat["n"] > 1:
        return f"{stat['mean'] * 100:.1f} ± {stat['std'] * 100:.1f}"
    return f"{stat['mean'] * 100:.1f}"


def _num(stat: dict[str, float] | None, digits: int = 3) -> str:
    if not stat:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat["n"] > 1 else f"{stat['mean']:.{digits}f}"


def _interval(p: dict[str, float] | None, scale: float, digits: int) -> str:
    if not p:
        return "–"
    if math.isnan(p["low"]):
        return f"{p['mean'] * scale:+.{digits}f} (1 seed)"
    star = " *" if p["low"] > 0 or p["high"] < 0 else ""
    return f"{p['mean'] * scale:+.{digits}f} [{p['low'] * scale:+.{digits}f}, {p['high'] * scale:+.{digits}f}]{star}"


def analyse(result: dict[str, Any]) -> dict[str, Any]:
    """Summary, sanity verdicts and paired differences of a result dict (stored back into it)."""
    e = result["setup"]["eval"]
    trained = [v for v in result["setup"]["variants"]]
    keys = metric_keys(e["tasks"], e["probes"])
    summary = summarise_runs(result["runs"])
    verdicts = sanity_verdicts(summary, trained, keys, float(e["margin_pts"]), FLOOR_REFERENCES)
    paired = (
        paired_table(result["runs"], "tube", trained, keys + ["recon_object", "recon_other"])
        if "tube" in trained
        else {}
    )
    result.update(summary=summary, verdicts=verdicts, paired=paired)
    return result


def headline(result: dict[str, Any]) -> list[str]:
    """Plain sentences computed from the numbers: does the harness separate anything, does difference help."""
    e = result["setup"]["eval"]
    v = result["verdicts"]
    lines = []
    if v:
        best = max(v, key=lambda k: v[k]["gap_pts"])
        conclusive = [k for k in v if v[k]["conclusive"]]
        lines.append(
            f"- Largest gap between the trained encoders (mean over maskers and seeds) and the floor "
            f"(the best of {' / '.join(FLOOR_REFERENCES)}): "
            f"{best} {v[best]['gap_pts']:+.1f} pts ({v[best]['trained_mean'] * 100:.1f}% vs "
            f"{v[best]['random_init'] * 100:.1f}%)."
        )
        bar_tasks = sorted({k.rsplit("_", 1)[0] for k in conclusive} & set(OBJECT_MOTION_TASKS))
        missing = [ref for ref in FLOOR_REFERENCES if ref not in result["summary"]]
        status = "not settled" if missing else "met" if len(bar_tasks) >= 2 else "not met"
        lines.append(
            f"- The harness bar (conclusive cells on at least two object tasks; arrow of time and playback speed "
            f"are motion guards outside it) is {status}: conclusive on "
            + (", ".join(bar_tasks) or "no object task")
            + (f" against a partial floor ({', '.join(missing)} not in this run)." if missing else ".")
        )
        lines.append(
            f"- Conclusive cells (gap >= {e['margin_pts']:g} pts): "
            + (", ".join(f"{k} ({v[k]['gap_pts']:+.1f})" for k in conclusive) or "none")
            + "."
        )
        summary = result["summary"]
        rand = summary.get("random init", {})
        for ref in (UPPER, "base"):
            st = summary.get(ref, {})
            gaps = {k: (st[k]["mean"] - rand[k]["mean"]) * 100 for k in v if k in st and k in rand}
            if gaps:
                top = max(gaps, key=gaps.get)
                lines.append(
                    f"- {ref} vs random init: best cell {top} {gaps[top]:+.1f} pts; "
                    f"{sum(g > 0 for g in gaps.values())} of {len(gaps)} cells above the random init."
                )
        motion = summary.get(MOTION_BASELINE, {})
        for t in e["tasks"]:
            if f"{t}_linear" in motion:
                enc = max(
                    (
                        summary[m][f"{t}_{p}"]["mean"]
                        for m in summary
                        if m != MOTION_BASELINE
                        for p in e["probes"]
                        if f"{t}_{p}" in summary[m]
                    ),
                    default=float("nan"),
                )
                lines.append(
                    f"- {TASK_TITLES[t]}: the model-free motion-energy feature reaches "
                    f"{motion[f'{t}_linear']['mean'] * 100:.1f}% (linear), "
                    f"the best encoder row {enc * 100:.1f}%."
                )
    for variant in [k for k in result["paired"] if k.startswith("difference")]:
        row = result["paired"][variant]
        cells = [k for k in row if k.split("_")[0] in ("direction", "position") or k.startswith("obj_speed")]
        cells = [k for k in cells if v.get(k, {}).get("conclusive")]
        if not cells:
            lines.append(f"- {variant} vs tube on the object-motion tasks: no conclusive cell to rank on.")
            continue
        wins = [k for k in cells if row[k]["mean"] * 100 >= 2 and row[k]["low"] > 0]
        lows = [k for k in cells if row[k]["high"] < 0]
        parts = ", ".join(f"{k} {_interval(row[k], 100, 1)}" for k in cells)
        verdict = (
            ("reaches the goal (>= 2 pts, interval above 0) on " + ", ".join(wins))
            if wins
            else "does not reach the goal (>= 2 pts with the interval above 0) on any of them"
        )
        if lows:
            verdict += "; it is worse than tube (interval below 0) on " + ", ".join(lows)
        lines.append(
            f"- {variant} vs tube on the conclusive object-motion cells (pts, 95% interval over seeds): {parts}. It "
            f"{verdict}."
        )
    return lines


def write_motion_plot(result: dict[str, Any], path: Path) -> None:
    """One panel per task (each probe's accuracy per model, the time-keeping probes highlighted), one for
    reconstruction."""
    import matplotlib  # the bench extra, loaded only when a report is drawn

    matplotlib.use("Agg")
    # matplotlib is in the bench extra: loaded only to draw the plot
    import matplotlib.pyplot as plt

    e = result["setup"]["eval"]
    summary = result["summary"]
    models = list(summary)
    panels = list(e["tasks"]) + ["recon"]
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.6 * rows), squeeze=False)
    probes = list(e["probes"])
    width = 0.8 / max(1, len(probes))
    for ax, panel in zip(axes.flat, panels):
        if panel == "recon":
            ms = [m for m in models if "recon_object" in summary[m]]
            for j, key in enumerate(("recon_object", "recon_other")):
                ax.bar(
                    np.arange(len(ms)) + (j - 0.5) * 0.4,
                    [summary[m][key]["mean"] for m in ms],
                    0.4,
                    yerr=[summary[m][key]["std"] for m in ms],
                    label=key.replace("recon_", ""),
                    capsize=2,
                )
            ax.set_xticks(range(len(ms)))
            ax.set_xticklabels(ms, rotation=40, ha="right", fontsize=7)
            vals = [summary[m][k]["mean"] for m in ms for k in ("recon_object", "recon_other")]
            if vals:
                ax.set_ylim(min(vals) * 0.95, max(vals) * 1.03)
            ax.set_title("reconstruction error on test clips (lower is better)", fontsize=9)
            ax.legend(fontsize=7)
            continue
        for j, p in enumerate(probes):
            key = f"{panel}_{p}"
            means = [summary[m].get(key, {}).get("mean", float("nan")) * 100 for m in models]
            stds = [summary[m].get(key, {}).get("std", 0.0) * 100 for m in models]
            ax.bar(
                np.arange(len(models)) + (j - (len(probes) - 1) / 2) * width,
                means,
                width,
                yerr=stds,
                label=p,
                capsize=1.5,
            )
        ax.axhline(100.0 / TASK_CLASSES[panel], color="grey", ls="--", lw=0.8)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=40, ha="right", fontsize=7)
        ax.set_title(TASK_TITLES[panel] + " accuracy %", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"known-answer bench: {result['setup']['steps']} steps, {len(result['setup']['seeds'])} seed(s); bars: mean ± "
        "std over seeds; "
        "dashed: chance",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _report_setup(result: dict[str, Any], name: str) -> list[str]:
    """The report's title, setup and the head of the sanity-ladder table."""
    s, e = result["setup"], result["setup"]["eval"]
    f = s["footage"]
    md = [
        *report_header(f"Known-answer benchmark: {name}", result["command"]),
        f"Date (UTC): {result['date']}; machine: {result['machine']}; total wall-clock {result['total_s']:.0f} s "
        f"(evaluation of one encoder: {result['eval_s_per_encoder']:.0f} s).",
        "",
        "## Setup",
        "",
        f"- Footage: `videomask.bench.footage.build_known_difference` on `{Path(f['assets']).name}/` "
        f"({json.dumps({k: v for k, v in f.items() if k not in ('assets',)})}): real scenery in both domains, a real "
        "object crop "
        f"moving in a straight line pasted into every target clip. Split by video: {f['train_videos']} train / "
        f"{f['test_videos']} test target "
        "videos; the test videos are never used for pretraining, fitting, detection or probe training.",
        f"- Base model: {s['base']}.",
        f"- Continued pretraining on the train target videos: {s['steps']} steps per run, seeds {s['seeds']}, mask "
        f"ratio {s['mask_ratio']}, "
        "same data and settings for every variant (a seed fixes the data order and the masker's randomness, so runs "
        "with one seed are paired).",
        f"- Model / clips: {s['clip']}.",
        f"- Difference statistics: `{s['fit'] or 'not used'}` (the fit command's default scorer and embedder).",
        "- Objects masker: ground-truth boxes from the generator (`boxes: truth`) or detector boxes (`boxes: "
        f"detector`, {s['detector'] or 'not used'}).",
        f"- Upper reference: tube masking trained {s['upper_steps']} steps (vs {s['steps']}) on the same data, seed 0."
        if s["upper_steps"]
        else "- Upper reference: none in this run.",
        f"- Tasks: {', '.join(TASK_TITLES[t] for t in e['tasks'])}. Object labels come from the generator "
        "(final cell: the object box centre at the clip's last frame in a 3x3 grid), arrow/speed from the frame "
        "order. "
        f"Clips: {'; '.join(f'{k}: {v}' for k, v in s['probe_counts'].items())}.",
        "- Probes on frozen tokens: `linear` (logistic regression on the token mean, weight decay by grouped 3-fold "
        "CV on train), "
        f"`knn` (cosine, k = {e['knn_k']}, token mean), `temporal` (logistic regression on the {s['time_slots']} "
        "per-time-slot means, "
        "concatenated), `attentive` (one learned query cross-attending over the tokens, then MLP + linear; "
        f"{json.dumps(s['attentive'])}: "
        "weight decay and step count chosen on held-out train videos). Groups = videos, so no choice sees a test "
        "video.",
        f"- Reconstruction error: per-token normalised-pixel loss on the {s['recon_tokens']['clips']} test clips "
        "under one fixed random mask "
        f"(ratio {e['mask_ratio']}, seed {e['mask_seed']}): on tokens the object box covers "
        f"({s['recon_tokens']['object']}) and on the rest "
        f"({s['recon_tokens']['other']}).",
        "",
        "## Sanity ladder: can the harness tell a trained encoder from a random one?",
        "",
        "Trained = the mean over every continued-pretraining run (all maskers, all seeds). A cell is "
        f"**inconclusive** when trained − floor (the best of {' / '.join(FLOOR_REFERENCES)} present) "
        f"< {e['margin_pts']:g} pts; no masker is ranked on it.",
        "",
        "| task | " + " | ".join(e["probes"]) + " |",
        "|---|" + "---|" * len(e["probes"]),
    ]
    return md


def _report_ladder(e: dict[str, Any], verdicts: dict[str, Any]) -> list[str]:
    """The sanity-ladder rows: trained mean vs random init per task and probe."""
    md: list[str] = []
    for t in e["tasks"]:
        cells = []
        for p in e["probes"]:
            vd = verdicts.get(f"{t}_{p}")
            cells.append(
                "–"
                if not vd
                else f"{vd['trained_mean'] * 100:.1f} vs {vd['random_init'] * 100:.1f}: {vd['gap_pts']:+.1f} "
                + ("(conclusive)" if vd["conclusive"] else "(inconclusive)")
            )
        md.append(f"| {TASK_TITLES[t]} | " + " | ".join(cells) + " |")
    return md


def _report_accuracy(e: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """One accuracy table per task (every model, mean ± std over seeds)."""
    md: list[str] = []
    md += ["", "## Accuracy per task (%, mean ± std over seeds; chance in the title)", ""]
    for t in e["tasks"]:
        md += [
            f"### {TASK_TITLES[t]}, chance {100 / TASK_CLASSES[t]:.1f}%",
            "",
            "| model | seeds | " + " | ".join(e["probes"]) + " |",
            "|---|---|" + "---|" * len(e["probes"]),
        ]
        for m in summary:
            st = summary[m]
            if not any(f"{t}_{p}" in st for p in e["probes"]):
                continue
            n = max(int(st[k]["n"]) for k in st if k.startswith(t + "_"))
            md.append(f"| {m} | {n} | " + " | ".join(_pct(st.get(f"{t}_{p}")) for p in e["probes"]) + " |")
        md.append("")
    return md


def _report_recon(summary: dict[str, Any]) -> list[str]:
    """Reconstruction error on object / other tokens, train loss and wall clock per model."""
    md: list[str] = []
    md += [
        "## Reconstruction error and wall clock",
        "",
        "| model | seeds | recon. object ↓ | recon. other ↓ | train loss | wall s / run |",
        "|---|---|---|---|---|---|",
    ]
    for m in summary:
        st = summary[m]
        if "recon_object" not in st:
            continue
        md.append(
            f"| {m} | {int(st['recon_object']['n'])} | {_num(st.get('recon_object'))} | {_num(st.get('recon_other'))} "
            "| "
            f"{_num(st.get('train_loss'))} | {_num(st.get('wall_s'), 0)} |"
        )
    return md


def _report_paired(result: dict[str, Any], e: dict[str, Any], verdicts: dict[str, Any]) -> list[str]:
    """Paired differences to tube (conclusive cells only, then every cell for the record)."""
    md: list[str] = []
    md += [
        "",
        "## Paired difference to tube (same seed; mean [95% t interval over seeds]; * = interval excludes 0)",
        "",
    ]
    if result["paired"]:
        cols = [k for k in metric_keys(e["tasks"], [p for p in e["probes"] if p in ("temporal", "attentive")])]
        head = [k for k in cols] + ["recon_object", "recon_other"]
        md += [
            "Accuracy in points (inconclusive cells are not ranked); reconstruction error in loss units (negative = "
            "better).",
            "",
            "| variant | " + " | ".join(head) + " |",
            "|---|" + "---|" * len(head),
        ]
        for variant, row in result["paired"].items():
            cells = []
            for k in cols:
                cells.append(_interval(row.get(k), 100, 1) if verdicts.get(k, {}).get("conclusive") else "inconclusive")
            cells += [_interval(row.get("recon_object"), 1, 3), _interval(row.get("recon_other"), 1, 3)]
            md.append(f"| {variant} | " + " | ".join(cells) + " |")
        md += ["", "The mean-pooled probes (`linear`, `knn`) are in the JSON (`paired`) with the same statistics."]
        if any(not verdicts.get(k, {}).get("conclusive") for k in cols):
            md += [
                "",
                "For the record, the same paired differences on every cell, inconclusive ones included (on an "
                "inconclusive "
                "cell the trained encoders do not beat a random one, so these are not a ranking):",
                "",
                "| variant | " + " | ".join(cols) + " |",
                "|---|" + "---|" * len(cols),
            ]
            for variant, row in result["paired"].items():
                md.append(f"| {variant} | " + " | ".join(_interval(row.get(k), 100, 1) for k in cols) + " |")
    else:
        md.append("No `tube` variant in this run.")
    return md


def write_motion_report(result: dict[str, Any], out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png``; returns their paths."""
    result = analyse(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    paths["json"].write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_motion_plot(result, paths["png"])
    e, summary, verdicts = result["setup"]["eval"], result["summary"], result["verdicts"]
    md = [
        *_report_setup(result, name),
        *_report_ladder(e, verdicts),
        *_report_accuracy(e, summary),
        *_report_recon(summary),
        *_report_paired(result, e, verdicts),
    ]
    md += [
        "",
        "## Summary (computed from the tables)",
        "",
        *headline(result),
        "",
        f"Plot: `{paths['png'].name}`. Every run (per seed) is in `{paths['json'].name}`.",
        "",
    ]
    paths["md"].write_text("\n".join(md))
    return paths
