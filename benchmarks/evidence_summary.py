"""The evidence protocol's reports side by side: does the harness separate, which objective, which direction.

Reads the JSON of several ``videomask bench`` runs of the evidence protocol (the same footage and source
model, one objective or step count each) and prints Markdown tables:

* the sanity ladder in one line per report: conclusive cells (continued runs >= the margin above the best
  of random-init ViT / random-weights CNN) and the object tasks they cover;
* the trained encoders per report (mean over maskers and seeds) next to the references, on the object tasks;
* per variant, how many of its paired intervals against tube exclude 0, above and below (every accuracy
  cell, conclusive or not), and its paired difference on each conclusive cell.

    python benchmarks/evidence_summary.py benchmarks/results/evidence_teacher.json \\
        benchmarks/results/evidence_contrastive.json --out benchmarks/results/evidence_summary.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from videomask.bench.motion_config import FLOOR_REFERENCES, OBJECT_MOTION_TASKS

REFERENCES = ("random init", "random CNN", "teacher CNN", "base")
PROBES = ("linear", "knn", "temporal", "attentive")


def _objective(report: dict) -> str:
    """The continued runs' objective, read from the setup text the bench writes (``objective {...}``)."""
    clip = str(report["setup"].get("clip", ""))
    if "objective {" not in clip:
        return "pixels"
    obj = json.loads(clip[clip.index("objective {") + len("objective ") :])
    return f"{obj['name']}, clean {obj['clean']}" if obj["name"] == "contrastive" else str(obj["name"])


def _label(path: Path, report: dict) -> str:
    return f"{path.stem} ({_objective(report)}, {report['setup'].get('steps', '?')} steps)"


def _mean(report: dict, variant: str, key: str) -> float | None:
    values = [r["metrics"][key] for r in report["runs"] if r["variant"] == variant and key in r["metrics"]]
    return 100 * statistics.fmean(values) if values else None


def _trained_mean(report: dict, key: str) -> float | None:
    values = [
        r["metrics"][key]
        for r in report["runs"]
        if r["variant"] in report["paired"] or r["variant"] == "tube"
        if key in r["metrics"]
    ]
    return 100 * statistics.fmean(values) if values else None


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def summary(paths: list[Path]) -> str:
    reports = [(p, json.loads(p.read_text())) for p in paths]
    lines = ["## Does the harness separate?", ""]
    lines += ["| report | conclusive cells (gap to the floor, pts) | object tasks covered | bar (>= 2 tasks) |"]
    lines += ["|---|---|---|---|"]
    for p, r in reports:
        v = r["verdicts"]
        conclusive = [k for k in v if v[k]["conclusive"]]
        tasks = sorted({k.rsplit("_", 1)[0] for k in conclusive} & set(OBJECT_MOTION_TASKS))
        cells = ", ".join(f"{k} {v[k]['gap_pts']:+.1f}" for k in conclusive) or "none"
        bar = "met" if len(tasks) >= 2 else "not met"
        if any(ref not in r["summary"] for ref in FLOOR_REFERENCES):
            bar = "not settled (the random CNN floor is not in this run)"
        lines.append(f"| {_label(p, r)} | {cells} | {', '.join(tasks) or 'none'} | {bar} |")
    keys = [
        f"{t}_{probe}" for t in ("identity", "position", "direction", "obj_speed") for probe in ("linear", "temporal")
    ]
    lines += ["", "## Trained encoders and references (accuracy %, mean over maskers and seeds)", ""]
    lines += ["| row | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    first = reports[0][1]
    for ref in REFERENCES:
        lines.append(f"| {ref} | " + " | ".join(_fmt(_mean(first, ref, k)) for k in keys) + " |")
    for p, r in reports:
        lines.append(f"| trained: {_label(p, r)} | " + " | ".join(_fmt(_trained_mean(r, k)) for k in keys) + " |")
    lines += ["", "## Paired difference to tube, per variant", ""]
    lines += [
        "Cells = every task x probe (conclusive or not); above / below = the 95% t interval over seeds excludes 0",
        "on that side. On a conclusive cell the difference in points [interval].",
        "",
        "| report | variant | cells | above tube | below tube | on the conclusive cells |",
        "|---|---|---|---|---|---|",
    ]
    totals: dict[str, list[int]] = {"mask": [0, 0, 0], "keep": [0, 0, 0]}
    for p, r in reports:
        v = r["verdicts"]
        for variant, cells in r["paired"].items():
            acc = {k: c for k, c in cells.items() if k.endswith(tuple(f"_{probe}" for probe in PROBES))}
            above = sum(1 for c in acc.values() if c["low"] > 0)
            below = sum(1 for c in acc.values() if c["high"] < 0)
            direction = "mask" if variant.endswith("-mask") else "keep" if variant.endswith("-keep") else None
            if direction:
                totals[direction][0] += len(acc)
                totals[direction][1] += above
                totals[direction][2] += below
            on = [
                f"{k} {100 * acc[k]['mean']:+.1f} [{100 * acc[k]['low']:+.1f}, {100 * acc[k]['high']:+.1f}]"
                for k in acc
                if v.get(k, {}).get("conclusive")
            ]
            lines.append(f"| {_label(p, r)} | {variant} | {len(acc)} | {above} | {below} | {'; '.join(on) or '–'} |")
    lines += ["", "All reports together, by direction (difference and objects variants):", ""]
    lines += ["| direction | cells | above tube | below tube |", "|---|---|---|---|"]
    for direction, (n, above, below) in totals.items():
        lines.append(f"| {direction} | {n} | {above} | {below} |")
    lines += ["", "At a 95% interval, chance alone puts about 2.5% of the cells on each side."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="bench JSON files of the evidence protocol")
    parser.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    command = "python benchmarks/evidence_summary.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(["# The evidence protocol, every report", "", "Made by:", "", "```", command, "```", ""])
    text += summary(args.reports) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
