"""Two known-answer bench reports compared run by run: same variant, same seed, one setting changed.

For two ``videomask bench`` JSON files whose runs share the footage, the base model and the seeds (for
example the contrastive objective with ``clean: stopgrad`` and with ``clean: ema``), prints a Markdown
table of the paired difference B - A per variant and metric: mean and 95% t interval over the shared seeds
(accuracy in points, reconstruction error in loss units). Refuses two reports whose base models differ.

    python benchmarks/compare_runs.py benchmarks/results/evidence_contrastive.json \\
        benchmarks/results/evidence_contrastive_ema.json --names stopgrad ema \\
        --out benchmarks/results/contrastive_clean.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from videomask.bench.stats import paired_difference

REFERENCE_ROWS = ("random init", "random CNN", "teacher CNN", "base", "motion energy (no model)")


def _runs(report: dict) -> dict[tuple[str, int], dict[str, float]]:
    return {(r["variant"], int(r.get("seed") or 0)): r["metrics"] for r in report["runs"]}


def compare(a: dict, b: dict) -> tuple[list[str], dict[str, dict[str, dict[str, float]]]]:
    """``(metrics, {variant: {metric: paired_difference(B, A)}})`` over the (variant, seed) runs both hold."""
    ra, rb = _runs(a), _runs(b)
    base_a = {k: v for k, v in ra.get(("base", 0), {}).items() if k != "wall_s"}
    base_b = {k: v for k, v in rb.get(("base", 0), {}).items() if k != "wall_s"}
    if base_a != base_b:
        raise SystemExit("the two reports' base models differ: their runs are not paired")
    variants = sorted({v for v, _ in ra if v not in REFERENCE_ROWS} & {v for v, _ in rb if v not in REFERENCE_ROWS})
    metrics = [
        k
        for k in next(iter(rb.values()))
        if k.endswith(("_linear", "_knn", "_temporal", "_attentive")) or k.startswith("recon_")
    ]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for v in variants:
        seeds = sorted(s for (name, s) in ra if name == v and (v, s) in rb)
        scale = {m: (1.0 if m.startswith("recon_") else 100.0) for m in metrics}
        out[v] = {
            m: paired_difference([scale[m] * rb[(v, s)][m] for s in seeds], [scale[m] * ra[(v, s)][m] for s in seeds])
            for m in metrics
            if all(m in ra[(v, s)] and m in rb[(v, s)] for s in seeds)
        }
    return metrics, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="bench JSON A")
    parser.add_argument("b", help="bench JSON B")
    parser.add_argument("--names", nargs=2, default=["A", "B"], help="what A and B are called in the table")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    metrics, diffs = compare(json.loads(Path(args.a).read_text()), json.loads(Path(args.b).read_text()))
    a_name, b_name = args.names
    lines = [
        f"# {b_name} - {a_name}: paired by variant and seed",
        "",
        "Made by:",
        "",
        "```",
        "python benchmarks/compare_runs.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "```",
        "",
        f"A = `{args.a}` ({a_name}), B = `{args.b}` ({b_name}); the same footage, base model and seeds.",
        "Mean of B - A over the seeds both hold, [95% t interval]; * = the interval excludes 0. Accuracy in",
        "points, reconstruction error in loss units (negative = B reconstructs better).",
        "",
    ]
    for variant, cells in diffs.items():
        n = next(iter(cells.values()))["n"] if cells else 0
        lines += [f"## {variant} ({n} seeds)", "", "| metric | B - A | excludes 0 |", "|---|---|---|"]
        for m in metrics:
            if m not in cells:
                continue
            d = cells[m]
            fmt = "{:+.3f}" if m.startswith("recon_") else "{:+.1f}"
            star = "*" if d["low"] > 0 or d["high"] < 0 else ""
            interval = f"{fmt.format(d['mean'])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"
            lines.append(f"| {m} | {interval} | {star} |")
        hits = sum(1 for d in cells.values() if d["low"] > 0 or d["high"] < 0)
        lines += ["", f"{hits} of {len(cells)} intervals exclude 0.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
