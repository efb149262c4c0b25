"""Agreement diagnostic: do the embedding-difference anchor patches fall on the detected people?

On clips of the target videos, compares two anchor sets on the same token grid:

* E: the ``difference`` masker's anchor tokens (nearest visual word is a TF-ICF anchor word), from
  statistics fitted on source vs target (``videomask fit``), for several numbers of anchor words K;
* D: the ``objects`` masker's anchor tokens, the tokens covered by detected people (``videomask
  detect`` boxes cache, nearest scanned frame).

Reports pooled precision |E∩D|/|E|, recall |E∩D|/|D| and IoU |E∩D|/|E∪D| over all clips, at token
level and tube level (any over time), against chance: per clip, a uniformly random token set of the
same size as E (``--draws`` draws; mean and 2.5-97.5 percentiles). Also the ROC AUC of the
difference score (max cosine to an anchor word) for separating person tokens (chance 0.5).

    python benchmarks/agreement.py [--target assets/target --source assets/source] [--anchors 1,2,4,8,16]

Writes ``benchmarks/results/agreement.md`` and ``agreement.json`` with the command that made them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=str(REPO / "assets" / "source"))
    p.add_argument("--target", default=str(REPO / "assets" / "target"))
    p.add_argument("--work", default=str(REPO / "runs" / "agreement"), help="folder for the boxes cache and statistics")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default="agreement")
    p.add_argument("--embedder", default="pixel",
                   help="comma-separated fit embedders: pixel and/or checkpoint:PATH (each gets its own rows)")
    p.add_argument("--num-words", type=int, default=64)
    p.add_argument("--anchors", default="1,2,4,8,16", help="comma-separated numbers of anchor words K")
    p.add_argument("--clips-per-video", type=int, default=4, help="clips per video for fitting and for the comparison")
    p.add_argument("--boxes", default=None, help="an existing boxes cache of the target videos (skips detection)")
    p.add_argument("--detector", default="people")
    p.add_argument("--stride", type=int, default=2, help="detect on every stride-th frame")
    p.add_argument("--labels", default="person", help="detected labels that count as people")
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--sampling-rate", type=int, default=2)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--tubelet", type=int, nargs=2, default=(2, 16), metavar=("T", "P"))
    p.add_argument("--draws", type=int, default=200, help="random draws for the chance level")
    p.add_argument("--detail-k", type=int, default=8, help="K of the per-video table")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def pooled(e: torch.Tensor, d: torch.Tensor) -> dict[str, float]:
    """Pooled precision / recall / IoU of bool sets ``e``, ``d`` ``[N, L]``."""
    inter = float((e & d).sum())
    ne, nd, union = float(e.sum()), float(d.sum()), float((e | d).sum())
    return {"precision": inter / ne if ne else float("nan"), "recall": inter / nd if nd else float("nan"),
            "iou": inter / union if union else float("nan")}


def random_like(e: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per row, a uniformly random set of the same size as ``e``'s row -> bool ``[N, L]``."""
    n, L = e.shape
    ranks = torch.rand(n, L, generator=gen).argsort(dim=1).argsort(dim=1)  # [N, L] random rank of each token
    return ranks < e.sum(dim=1, keepdim=True)


def chance(e: torch.Tensor, d: torch.Tensor, draws: int, seed: int) -> dict[str, dict[str, float]]:
    gen = torch.Generator().manual_seed(seed)
    samples = [pooled(random_like(e, gen), d) for _ in range(draws)]
    out = {}
    for key in ("precision", "recall", "iou"):
        vals = torch.tensor([s[key] for s in samples], dtype=torch.float64)
        out[key] = {"mean": float(vals.mean()), "lo": float(vals.quantile(0.025)), "hi": float(vals.quantile(0.975))}
    return out


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC (Mann-Whitney, ties averaged) of ``scores`` for bool ``labels`` (flattened)."""
    s, y = scores.flatten().double(), labels.flatten()
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = s.argsort()
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    uniq, inverse = torch.unique(s, return_inverse=True)  # average the ranks of tied scores
    sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (sums / counts)[inverse]
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from videomask.cli import main as cli_main
    from videomask.data import ClipTransform, VideoDataset, collate_clips, list_videos
    from videomask.detect import BoxCache, build_cache
    from videomask.masking import build_masker
    from videomask.patches import grid_for, tokens_to_tubes
    from videomask.stats import DifferenceStats

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tubelet = (args.tubelet[0], args.tubelet[1], args.tubelet[1])
    ks = sorted({int(k) for k in args.anchors.split(",") if k.strip()})
    targets = list_videos(args.target)

    if args.boxes:
        boxes = Path(args.boxes)
    else:
        boxes = work / f"boxes_{Path(args.detector).stem}_s{args.stride}.jsonl"
        build_cache([(it.video_id, it.path) for it in targets], boxes, args.detector, stride=args.stride)
    embedders = [e.strip() for e in args.embedder.split(",") if e.strip()]
    stats = {}
    for emb_spec in embedders:
        stats_path = work / f"stats_{emb_spec.replace(':', '_').replace('/', '_')}_{args.num_words}.safetensors"
        fit_args = ["fit", "--source", args.source, "--target", args.target, "-o", str(stats_path),
                    "--embedder", emb_spec, "--num-words", str(args.num_words), "--num-anchors", str(max(ks)),
                    "--clips-per-video", str(args.clips_per_video), "--num-frames", str(args.num_frames),
                    "--sampling-rate", str(args.sampling_rate), "--size", str(args.size),
                    "--tubelet", str(tubelet[0]), str(tubelet[1]), "--seed", str(args.seed)]
        if cli_main(fit_args) != 0:
            return 1
        stats[emb_spec] = DifferenceStats.load(stats_path)

    # the comparison clips: a different seed from the fit, so these clips are not the fitted ones
    dataset = VideoDataset.from_folder(
        args.target, num_frames=args.num_frames, sampling_rate=args.sampling_rate, sampling="random",
        num_sample=args.clips_per_video, transform=ClipTransform.for_eval(args.size, patch=tubelet[1:]),
        tubelet=tubelet, seed=args.seed + 1,
    )
    batch = collate_clips([dataset[i] for i in range(len(dataset))])  # video [N, C, T, H, W]
    grid = grid_for(batch["video"].shape[2:], tubelet)
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    people = build_masker("objects", boxes=BoxCache.load(boxes), labels=labels, tubelet=tubelet, ratio=0.5,
                          mode="token", on_missing="fallback").generate(batch).anchors  # [N, L]
    rows = []
    for (emb_spec, st), k in ((item, k) for item in stats.items() for k in ks):
        order = st.tficf.argsort(descending=True, stable=True)
        stats_k = dataclasses.replace(st, anchors=order[:k])
        res = build_masker("difference", stats=stats_k, tubelet=tubelet, ratio=0.5, mode="token").generate(batch)
        emb = res.anchors  # [N, L]
        row = {"embedder": emb_spec, "k": k, "anchor_share": float(emb.float().mean()), "auc": auc(res.scores, people)}
        vids = batch["video_id"]
        row["per_video"] = {v: {**pooled(emb[idx], people[idx]), "person_share": float(people[idx].float().mean()),
                                "anchor_share": float(emb[idx].float().mean())}
                            for v in dict.fromkeys(vids) for idx in [torch.tensor([i for i, x in enumerate(vids) if x == v])]}
        for level, (e, d) in {"token": (emb, people),
                              "tube": (tokens_to_tubes(emb, grid, "any"), tokens_to_tubes(people, grid, "any"))}.items():
            row[level] = {"observed": pooled(e, d), "chance": chance(e, d, args.draws, args.seed)}
        rows.append(row)
        print(f"{emb_spec} K={k}: token precision {row['token']['observed']['precision']:.3f} (chance {row['token']['chance']['precision']['mean']:.3f}), "
              f"recall {row['token']['observed']['recall']:.3f}, IoU {row['token']['observed']['iou']:.3f} "
              f"(chance {row['token']['chance']['iou']['mean']:.3f}), AUC {row['auc']:.3f}", file=sys.stderr)

    command = "python benchmarks/agreement.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    result = {
        "command": command.strip(), "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "seconds": time.perf_counter() - t0,
        "clips": int(batch["video"].shape[0]), "videos": len(targets), "grid": dataclasses.asdict(grid),
        "person_share": float(people.float().mean()), "person_tube_share": float(tokens_to_tubes(people, grid, "any").float().mean()),
        "clips_with_people": int(people.any(dim=1).sum()), "settings": vars(args), "rows": rows,
        "stats": {spec: {"num_words": st.num_words, "embedder": st.embedder} for spec, st in stats.items()},
    }
    write_report(result, Path(args.out), args.name)
    return 0


def _cell(obs: float, ch: dict[str, float]) -> str:
    return f"{obs:.3f} ({ch['mean']:.3f} [{ch['lo']:.3f}, {ch['hi']:.3f}])"


def write_report(result: dict, out: Path, name: str) -> None:
    from videomask.bench import report_header

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    s = result["settings"]
    md = [
        *report_header("Agreement: embedding-difference anchors vs detected people", result["command"]),
        f"Date (UTC): {result['date']}, {result['seconds']:.0f} s. {result['clips']} clips ({s['clips_per_video']} per video) "
        f"of {result['videos']} target videos from `{s['target']}`, {s['num_frames']} frames at stride {s['sampling_rate']}, "
        f"{s['size']}x{s['size']} px (centre crop), tubelet {s['tubelet'][0]}x{s['tubelet'][1]}x{s['tubelet'][1]}, "
        f"grid {result['grid']}.",
        "",
        f"- E (embedding difference): anchor tokens of the `difference` masker (a token's nearest visual word is one of the "
        f"top-K TF-ICF words), statistics from `videomask fit` with each embedder below, {s['num_words']} words, "
        f"source `{s['source']}` vs target `{s['target']}`.",
        f"- D (detected people): tokens covered by boxes with labels {s['labels']} from "
        f"{('the cache `' + s['boxes'] + '`') if s['boxes'] else ('detector `' + s['detector'] + '` on one frame in every ' + str(s['stride']))} "
        f"(nearest scanned frame). People cover {100 * result['person_share']:.1f}% of the tokens "
        f"({100 * result['person_tube_share']:.1f}% of the tubes); {result['clips_with_people']} of {result['clips']} clips have any.",
        "- Cells: observed (chance mean [2.5%, 97.5%] over "
        f"{s['draws']} draws of a random token set of the same size as E in every clip). Pooled over all clips.",
        "- AUC: ROC AUC of the difference score (max cosine to an anchor word) for person tokens; chance 0.5.",
        "",
        "| embedder | K | E share % | token precision | token recall | token IoU | tube precision | tube recall | tube IoU | score AUC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        t, u = r["token"], r["tube"]
        md.append("| " + " | ".join([
            f"`{r['embedder']}`", str(r["k"]), f"{100 * r['anchor_share']:.1f}",
            *(_cell(t["observed"][m], t["chance"][m]) for m in ("precision", "recall", "iou")),
            *(_cell(u["observed"][m], u["chance"][m]) for m in ("precision", "recall", "iou")),
            f"{r['auc']:.3f}",
        ]) + " |")
    detail_k = int(s.get("detail_k", 8))
    for r in result["rows"]:
        if r["k"] != detail_k:
            continue
        md += ["", f"Per video, `{r['embedder']}`, K = {detail_k} (token level; chance precision = person share):", "",
               "| video | person share % | E share % | precision | recall | IoU |", "|---|---|---|---|---|---|"]
        for v, m in r["per_video"].items():
            md.append(f"| {v} | {100 * m['person_share']:.1f} | {100 * m['anchor_share']:.1f} | {m['precision']:.3f} | "
                      f"{m['recall']:.3f} | {m['iou']:.3f} |")
    md += ["", "## Reading", ""]
    for r in result["rows"]:
        o, c = r["token"]["observed"], r["token"]["chance"]
        above = o["precision"] > c["precision"]["hi"]
        below = o["precision"] < c["precision"]["lo"]
        verdict = "above chance" if above else ("below chance" if below else "within the chance interval")
        lift = o["precision"] / c["precision"]["mean"] if c["precision"]["mean"] > 0 else float("nan")
        md.append(f"- `{r['embedder']}`, K = {r['k']}: token precision {o['precision']:.3f} is {verdict} "
                  f"({lift:.2f}x the chance mean {c['precision']['mean']:.3f}); IoU {o['iou']:.3f} vs chance {c['iou']['mean']:.3f}; AUC {r['auc']:.3f}.")
    md.append("")
    (out / f"{name}.md").write_text("\n".join(md))
    print(f"wrote {out / (name + '.md')}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
