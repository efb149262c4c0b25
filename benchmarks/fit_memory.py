"""Peak memory of ``videomask fit`` against the number of clips (it should stay flat: streaming k-means).

For each N in ``--clips``, a fresh Python process runs ``videomask fit`` (the CLI entry point,
in-process) on list files holding N source and N target rows (the given videos repeated in turn), with
``tracemalloc`` on (``--no-tracemalloc``: off), and reports:

* peak RSS (``ru_maxrss``) and its rise over the RSS just before the fit (after imports);
* the ``tracemalloc`` peak (allocations made through Python's allocator; torch tensor storage is
  *not* traced, the RSS covers it) and tracemalloc's own memory at the end (its trace tables, which are
  part of the RSS);
* the fit's wall-clock time.

    python benchmarks/fit_memory.py [--clips 8,32,128] [--source assets/source --target assets/target]
        [--baseline OLD.json --baseline-label "before the fix"] [--note "a line for the report"]

Writes ``benchmarks/results/fit_memory.md`` / ``.json`` / ``.png`` with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, tracemalloc
from videomask.cli import main
import videomask.commands.fit, videomask.difference, videomask.data, torch  # imports before the baseline

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

trace = sys.argv[1] == "trace"
base = rss_mb()
if trace:
    tracemalloc.start()
t0 = time.perf_counter()
rc = main(sys.argv[2:])
seconds = time.perf_counter() - t0
_, traced_peak = tracemalloc.get_traced_memory() if trace else (0, float("nan"))
own = tracemalloc.get_tracemalloc_memory() if trace else float("nan")  # tracemalloc's own bookkeeping now
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({"rc": rc, "seconds": seconds, "rss_before_mb": base, "peak_rss_mb": peak,
                              "traced_peak_mb": traced_peak / 2**20, "tracemalloc_own_mb": own / 2**20,
                              "tracemalloc": trace}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=str(REPO / "assets" / "source"))
    p.add_argument("--target", default=str(REPO / "assets" / "target"))
    p.add_argument("--clips", default="8,32,128,512", help="comma-separated numbers of clips per set")
    p.add_argument(
        "--arena-max",
        default="default,1",
        help="comma-separated glibc MALLOC_ARENA_MAX settings, one series each ('default' = unset)",
    )
    p.add_argument(
        "--no-tracemalloc",
        action="store_true",
        help="run the fits without tracemalloc (its own bookkeeping grows with the allocations it has seen)",
    )
    p.add_argument("--repeats", type=int, default=1, help="fresh processes per N; the row is the median run")
    p.add_argument(
        "--code",
        default=None,
        help="a checkout of videomask to measure instead of this one (the fits run there: e.g. a `git archive` of an "
        "earlier commit)",
    )
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--sampling-rate", type=int, default=2)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--num-words", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--work", default=str(REPO / "runs" / "fit_memory"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default="fit_memory")
    p.add_argument(
        "--baseline",
        default=None,
        help="an earlier fit_memory.json (e.g. `git show REV:benchmarks/results/fit_memory.json`) to compare with",
    )
    p.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    p.add_argument(
        "--baseline-label",
        default="baseline",
        help="what the baseline is, for the report (e.g. 'before the fix, commit abc123')",
    )
    return p.parse_args(argv)


def write_list(videos: list[str], n: int, path: Path) -> Path:
    """A list file of ``n`` lines (one absolute path each, no header) cycling through ``videos``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{videos[i % len(videos)]}\n" for i in range(n)))
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from videomask.data import list_videos

    work = Path(args.work)
    sources = [it.path for it in list_videos(args.source)]
    targets = [it.path for it in list_videos(args.target)]
    rows = []
    for arena in [a.strip() for a in args.arena_max.split(",") if a.strip()]:
        env = dict(os.environ)
        if arena != "default":
            env["MALLOC_ARENA_MAX"] = arena
        if args.code:
            env["PYTHONPATH"] = os.path.abspath(args.code)
        for n in sorted({int(c) for c in args.clips.split(",") if c.strip()}):
            src = write_list(sources, n, work / f"source_{n}.txt")
            tgt = write_list(targets, n, work / f"target_{n}.txt")
            fit = [
                "fit",
                "--source",
                str(src),
                "--target",
                str(tgt),
                "-o",
                str(work / f"stats_{n}.safetensors"),
                "--num-frames",
                str(args.num_frames),
                "--sampling-rate",
                str(args.sampling_rate),
                "--size",
                str(args.size),
                "--num-words",
                str(args.num_words),
                "--batch-size",
                str(args.batch_size),
            ]
            runs = []
            for _ in range(max(1, args.repeats)):
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, "plain" if args.no_tracemalloc else "trace", *fit],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=args.code,  # python -c imports from its working directory first
                )
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if proc.returncode != 0 or line is None:
                    print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
                    return 1
                runs.append(json.loads(line[len("RESULT ") :]))
                print(
                    f"MALLOC_ARENA_MAX={arena}, {n} clips per set: peak RSS {runs[-1]['peak_rss_mb']:.0f} MB "
                    f"(RSS before {runs[-1]['rss_before_mb']:.0f}), tracemalloc peak {runs[-1]['traced_peak_mb']:.1f} "
                    "MB, "
                    f"{runs[-1]['seconds']:.1f} s",
                    file=sys.stderr,
                )
            res = sorted(runs, key=lambda r: r["peak_rss_mb"])[(len(runs) - 1) // 2]  # the median run (lower)
            res.update({"clips": n, "rise_mb": res["peak_rss_mb"] - res["rss_before_mb"], "arena_max": arena})
            res["peak_rss_runs_mb"] = [round(r["peak_rss_mb"], 1) for r in runs]
            rows.append(res)
    command = "python benchmarks/fit_memory.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    result = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "settings": vars(args),
        "source_videos": len(sources),
        "target_videos": len(targets),
        "rows": rows,
    }
    if args.note:
        result["notes"] = list(args.note)
    if args.baseline:
        base = json.loads(Path(args.baseline).read_text())
        result["baseline"] = {
            "label": args.baseline_label,
            "command": base.get("command"),
            "date": base.get("date"),
            "rows": base["rows"],
        }
    write_report(result, Path(args.out), args.name)
    return 0


def write_report(result: dict, out: Path, name: str) -> None:
    import matplotlib

    from videomask.bench import report_header

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    rows = result["rows"]
    series = list(dict.fromkeys(r["arena_max"] for r in rows))
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    for arena, style in zip(series, ("-", "--", ":", "-.")):
        sub = [r for r in rows if r["arena_max"] == arena]
        n = [r["clips"] for r in sub]
        label = f"MALLOC_ARENA_MAX={arena}"
        ax[0].plot(n, [r["peak_rss_mb"] for r in sub], "o" + style, label=f"peak RSS, {label}")
        ax[0].plot(n, [r["traced_peak_mb"] for r in sub], "^" + style, label=f"tracemalloc peak, {label}")
        ax[1].plot(n, [r["seconds"] for r in sub], "o" + style, label=label)
    ax[0].set_xscale("log", base=2)
    ax[0].set_xlabel("clips per set (source = target)")
    ax[0].set_ylabel("MB")
    ax[0].set_ylim(bottom=0)
    ax[0].legend(fontsize=7)
    ax[0].set_title("videomask fit: memory", fontsize=9)
    ax[1].legend(fontsize=7)
    ax[1].set_xscale("log", base=2)
    ax[1].set_yscale("log")
    ax[1].set_xlabel("clips per set")
    ax[1].set_ylabel("seconds")
    ax[1].set_title("videomask fit: time", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)
    s = result["settings"]
    summary = []
    traced = not s.get("no_tracemalloc")
    for arena in series:
        sub = [r for r in rows if r["arena_max"] == arena]
        first, last = sub[0], sub[-1]
        summary.append(
            f"- MALLOC_ARENA_MAX={arena}: from {first['clips']} to {last['clips']} clips per set "
            f"({last['clips'] / first['clips']:.0f}x the data, "
            f"{last['seconds'] / first['seconds']:.1f}x the time) the peak RSS goes from {first['peak_rss_mb']:.0f} "
            f"to {last['peak_rss_mb']:.0f} MB "
            f"({last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x; rise over the pre-fit RSS {first['rise_mb']:.0f} -> "
            f"{last['rise_mb']:.0f} MB)"
            + (
                f" and the tracemalloc peak from {first['traced_peak_mb']:.1f} to {last['traced_peak_mb']:.1f} MB."
                if traced
                else "."
            )
        )
        flat = last["peak_rss_mb"] / first["peak_rss_mb"] <= 1.05
        clip_mb = s["num_frames"] * s["size"] ** 2 * 3 * 4 / 2**20  # one float32 clip
        per_clip = (last["peak_rss_mb"] - first["peak_rss_mb"]) / (2 * (last["clips"] - first["clips"]))
        if flat:
            summary.append(
                f"  Reading: the peak RSS is flat (within +5%): {per_clip:+.3f} MB per added clip, against "
                f"{clip_mb:.1f} MB to hold one float32 clip"
                + ("; Python-object memory (tracemalloc) stays at a few MB." if traced else ".")
            )
        else:
            summary.append(
                f"  Reading: the peak RSS is not flat (more than +5%): it grows, far slower than the data: "
                f"{per_clip:.2f} MB per added clip, against {clip_mb:.1f} MB to hold one float32 clip, so the clips "
                "themselves are not kept (whether the growth levels off beyond the largest N is not measured here). "
                "Python-object memory (tracemalloc) stays at a few MB; the growth is native (decoder / tensor "
                "buffers, allocator "
                "arenas; compare the MALLOC_ARENA_MAX series)."
            )
    compare = []
    if result.get("baseline"):
        b = result["baseline"]
        old = {(r["arena_max"], r["clips"]): r for r in b["rows"]}
        compare = [
            "",
            f"Compared with the baseline ({b['label']}; `{b['command']}`, {b['date']} UTC):",
            "",
            "| MALLOC_ARENA_MAX | clips per set | peak RSS MB, baseline | peak RSS MB, now | fit s, baseline | fit "
            "s, now |",
            "|---|---|---|---|---|---|",
            *[
                f"| {r['arena_max']} | {r['clips']} | {old[(r['arena_max'], r['clips'])]['peak_rss_mb']:.0f} | "
                f"{r['peak_rss_mb']:.0f} | "
                f"{old[(r['arena_max'], r['clips'])]['seconds']:.1f} | {r['seconds']:.1f} |"
                for r in rows
                if (r["arena_max"], r["clips"]) in old
            ],
        ]
        compare.append("")
        for arena in series:
            sub = sorted((r for r in b["rows"] if r["arena_max"] == arena), key=lambda r: r["clips"])
            if len(sub) >= 2:
                growth = (sub[-1]["peak_rss_mb"] - sub[0]["peak_rss_mb"]) / (2 * (sub[-1]["clips"] - sub[0]["clips"]))
                compare.append(
                    f"- baseline, MALLOC_ARENA_MAX={arena}: {sub[0]['peak_rss_mb']:.0f} -> "
                    f"{sub[-1]['peak_rss_mb']:.0f} MB "
                    f"from {sub[0]['clips']} to {sub[-1]['clips']} clips per set ({growth:.2f} MB per added clip)."
                )
    md = [
        *report_header("Peak memory of `videomask fit` against the number of clips", result["command"]),
        f"Date (UTC): {result['date']}. Each row is the median of {s.get('repeats', 1)} fresh processes "
        f"({'code: ' + s['code'] + '; ' if s.get('code') else ''}every run's peak in the last column) running "
        "`videomask fit` (in-process CLI) "
        + ("without tracemalloc (its columns are n/a), " if s.get("no_tracemalloc") else "with tracemalloc on, ")
        + f"on list files of N source and N target paths cycling through {result['source_videos']} source / "
        f"{result['target_videos']} "
        f"target videos; {s['num_frames']} frames at stride {s['sampling_rate']}, {s['size']} px, {s['num_words']} "
        "words, "
        f"pixel embedder, batch {s['batch_size']}. RSS before = after imports, just before the fit. tracemalloc "
        "traces Python's "
        "allocator only (not torch tensor storage); the RSS covers everything.",
        "",
        "| MALLOC_ARENA_MAX | clips per set | peak RSS MB | rise over RSS before MB | tracemalloc peak MB | "
        "tracemalloc's own memory MB | fit s | peak RSS MB, every run |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['arena_max']} | {r['clips']} | {r['peak_rss_mb']:.0f} | {r['rise_mb']:.0f} | "
            f"{r['traced_peak_mb']:.1f} | "
            f"{r.get('tracemalloc_own_mb', float('nan')):.1f} | {r['seconds']:.1f} | "
            f"{', '.join(f'{v:.0f}' for v in r.get('peak_rss_runs_mb', [r['peak_rss_mb']]))} |"
            for r in rows
        ],
        "",
        *summary,
        *compare,
        *[line for note in result.get("notes", []) for line in ("", note)],
        "",
        f"Plot: `{name}.png`.",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(md))
    print(f"wrote {out / (name + '.md')}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
