"""The random-init rung of the known-answer bench over several init seeds (the bench itself draws one).

Evaluates ``random init`` encoders (seeds 0..N-1) with the bench's own evaluation (same footage, clips,
probes) and compares each (task, probe) cell with the trained encoders' mean from the bench's JSON:

    python benchmarks/motion_random_init.py --config configs/bench_motion_cpu.yaml \
        --bench benchmarks/results/motion.json --seeds 3

Writes ``benchmarks/results/motion_random_init.md`` / ``.json`` (``--name`` changes the file stem).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    import torch

    from videomask.bench import report_header, shared_settings
    from videomask.bench.motion import _as_bench_config
    from videomask.bench.motion_config import load_motion_config, metric_keys
    from videomask.bench.motion_eval import build_probe_sets, evaluate_encoder, prepare_footage
    from videomask.bench.motion_report import analyse
    from videomask.eval import load_encoder
    from videomask.patches import grid_for

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "bench_motion_cpu.yaml"))
    p.add_argument("--bench", type=Path, default=REPO / "benchmarks" / "results" / "motion.json")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--name", default="motion_random_init", help="report file stem (<name>.md / .json under --out)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    cfg = load_motion_config(args.config)
    torch.set_num_threads(max(1, cfg.threads))
    work = Path(cfg.work_dir)
    foot = prepare_footage(cfg, work, print)
    bench_cfg = _as_bench_config(cfg)
    probe_cfg, tubelet = shared_settings(bench_cfg, Path(args.config).resolve().parent, work / "probe_ri", work)
    d = probe_cfg.data
    grid = grid_for((d.num_frames, d.size, d.size), tubelet)
    sets = build_probe_sets(
        foot, cfg, num_frames=d.num_frames, sampling_rate=d.sampling_rate, size=d.size, backend=d.backend
    )
    runs = []
    for seed in range(args.seeds):
        model = load_encoder(probe_cfg.model.name, overrides=probe_cfg.model.overrides, seed=seed)
        runs.append(
            {"seed": seed, "metrics": evaluate_encoder(model, sets, None, cfg, time_slots=grid.t, patch=tubelet[1])}
        )
        print(f"random init seed {seed}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    bench = json.loads(args.bench.read_text())
    bench = analyse(bench)
    keys = metric_keys(cfg.eval.tasks, cfg.eval.probes)
    trained = [v for v in bench["setup"]["variants"]]
    rows = []
    for key in keys:
        vals = [r["metrics"][key] for r in runs]
        means = [bench["summary"][v][key]["mean"] for v in trained if key in bench["summary"].get(v, {})]
        tm = statistics.fmean(means)
        rows.append(
            {
                "cell": key,
                "random_mean": statistics.fmean(vals),
                "random_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "random_min": min(vals),
                "random_max": max(vals),
                "trained_mean": tm,
                "gap_pts": (tm - statistics.fmean(vals)) * 100,
                "conclusive": (tm - statistics.fmean(vals)) * 100 >= cfg.eval.margin_pts,
            }
        )
    result = {
        "command": "python benchmarks/motion_random_init.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "total_s": time.perf_counter() - t0,
        "bench": str(args.bench.name),
        "runs": runs,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = [
        *report_header("Known-answer bench: the random-init rung over init seeds", result["command"]),
        f"Date (UTC): {result['date']}; total {result['total_s']:.0f} s. Same footage, clips and probes as "
        f"`{args.bench.name}`; "
        f"random-init encoders with init seeds 0-{args.seeds - 1}; trained = the mean over the bench's "
        "continued-pretraining runs.",
        "",
        "| cell | random init, mean ± std (min-max) % | trained mean % | trained − random init, pts | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['cell']} | {r['random_mean'] * 100:.1f} ± {r['random_std'] * 100:.1f} "
            f"({r['random_min'] * 100:.1f}-{r['random_max'] * 100:.1f}) | "
            f"{r['trained_mean'] * 100:.1f} | {r['gap_pts']:+.1f} | "
            f"{'conclusive' if r['conclusive'] else 'inconclusive'} |"
        )
    n_ahead = sum(r["gap_pts"] < 0 for r in rows)
    best = max(rows, key=lambda r: r["gap_pts"])
    md += [
        "",
        f"The random init is ahead of the trained mean on {n_ahead} of {len(rows)} cells; the largest gap in favour "
        "of training is "
        f"{best['cell']} {best['gap_pts']:+.1f} pts.",
        "",
    ]
    (args.out / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
