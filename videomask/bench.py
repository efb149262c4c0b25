"""Head-to-head quality benchmark: tube vs random vs difference masking in continued pretraining.

Protocol (``videomask bench``; settings in ``configs/bench_full.yaml`` / ``configs/bench_quick.yaml``):

1. **Held-out target time.** Every target video is cut at ``cut = floor(train_share * N)`` frames.
   The first ``cut`` frames are written to a lossless copy (FFV1/MKV) that is the *only* target footage
   used for continued pretraining, statistics fitting and the objects masker; test windows lie in
   ``[cut + gap, N)`` and are never seen in training.
2. **Base model.** One model pretrained on the source set with tube masking (``base_masker``; or a given
   checkpoint).
3. **Anchors.** People are detected once on the target videos (boxes cache, JSON lines); difference
   statistics are fitted on source vs the target train copies.
4. **Continued pretraining**, from the same base weights, once per variant (tube, random, difference
   from embedding statistics, difference from detected people; mask or keep the anchors) and seed, at
   the same mask ratio, steps, data and seeds. Wall-clock per run is recorded.
5. **Evaluation** on frozen features with labels from the footage itself (:mod:`videomask.evaluate`):
   arrow of time and playback speed, linear probe and kNN, windows split by time within each target
   video; plus reconstruction error on person patches (detector boxes) of the held-out test windows
   under one fixed random token mask shared by every model.
6. **Report**: ``<name>.md`` (table of mean ± std over seeds, wall-clock, the command), ``<name>.json``
   (every run) and ``<name>.png`` (bars with std error bars) in the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from videomask import evaluate as ev
from videomask.errors import VideomaskError

if TYPE_CHECKING:
    from videomask.config import RunConfig

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


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """Frozen-feature evaluation settings (see :mod:`videomask.evaluate`)."""

    tasks: list[str] = field(default_factory=lambda: ["arrow", "speed"])
    stride: int = 2  # frame stride of arrow-of-time clips (speed uses 1/2/4)
    train_share: float = 0.7  # first share of each video's frames -> train windows and pretraining
    gap: int = 8  # frames between the train region's end and the first test window
    max_windows: int = 8  # per video and split (evenly spread)
    window_step: int = 0  # frames between window starts inside a split (0 = the window span: no overlap)
    knn_k: int = 5
    mask_ratio: float = 0.75  # of the one fixed random token mask for the reconstruction error
    mask_seed: int = 1234
    batch_size: int = 16


@dataclass
class BenchConfig:
    """One benchmark: footage, variants, seeds, budgets and the shared training settings."""

    source: str = "assets/source"  # folder (recursive) of source-domain videos (no people)
    target: str = "assets/target"  # folder of target-domain videos (people)
    out: str = "benchmarks/results"  # where <name>.md/.json/.png go
    name: str = "quality"
    work_dir: str = "runs/bench"  # run folders, caches, statistics
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    base_checkpoint: str = ""  # start from this instead of pretraining a base model on the source
    base_steps: int = 200
    base_masker: dict[str, Any] = field(default_factory=lambda: {"name": "tube"})  # the base's masker (a variant spec)
    steps: int = 100  # continued-pretraining steps per variant and seed
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {name: masker, options: {...}}
    train: dict[str, Any] = field(default_factory=dict)  # RunConfig sections shared by every training run
    fit: dict[str, Any] = field(default_factory=dict)  # difference-statistics settings
    detect: dict[str, Any] = field(default_factory=dict)  # detector settings
    eval: EvalSettings = field(default_factory=EvalSettings)
    threads: int = 0  # torch intra-op threads for the whole bench (0 = torch's default)


def _check_fields(cls: type, raw: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise VideomaskError(f"unknown bench config key '{where}{key}' (allowed: {', '.join(sorted(names))})")
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in raw.items():
        tp = hints[key]
        origin = typing.get_origin(tp) or tp
        if origin is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (
            origin in (int, float, str, list, dict)
            and not isinstance(value, origin)
            or (origin is int and isinstance(value, bool))
        ):
            raise VideomaskError(f"bench config key '{where}{key}' expects {origin.__name__}, got {value!r}")
        out[key] = value
    return out


def read_bench_yaml(path: Path) -> dict[str, Any]:
    """A bench config file's YAML mapping; one-line errors for a missing, unparsable or non-mapping file."""
    if not path.is_file():
        raise VideomaskError(f"bench config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise VideomaskError(f"cannot parse bench config {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise VideomaskError(f"bench config {path} must be a mapping")
    return raw


def load_bench_config(path: str | Path) -> BenchConfig:
    """Read a bench YAML strictly; relative paths (also in ``train``) resolve against the file's folder."""
    p = Path(path)
    raw = read_bench_yaml(p)
    eval_raw = raw.pop("eval", {}) or {}
    cfg = BenchConfig(**_check_fields(BenchConfig, raw, ""))
    cfg.eval = EvalSettings(**_check_fields(EvalSettings, eval_raw, "eval."))
    base = p.resolve().parent
    for key in ("source", "target", "out", "work_dir", "base_checkpoint"):
        value = getattr(cfg, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(cfg, key, str((base / Path(value).expanduser()).resolve()))
    from videomask.config import config_from_dict

    config_from_dict(cfg.train, base)  # unknown keys / bad values in the shared train sections fail now, not mid-run
    validate_bench_config(cfg)
    return cfg


def report_header(title: str, command: str) -> list[str]:
    """The first lines of every benchmark report: its title and the command that made it."""
    return [f"# {title}", "", "Made by:", "", "```", command, "```", ""]


def validate_bench_config(cfg: BenchConfig) -> BenchConfig:
    """Range checks with one-line errors."""
    if not cfg.seeds:
        raise VideomaskError("bench needs at least one seed")
    if cfg.steps < 1 or (cfg.base_steps < 1 and not cfg.base_checkpoint):
        raise VideomaskError("bench steps and base_steps must be >= 1 (or give base_checkpoint)")
    base_mask_section(cfg.base_masker)
    if not cfg.variants:
        raise VideomaskError("bench config lists no variants")
    for name, spec in cfg.variants.items():
        if not isinstance(spec, dict) or "name" not in spec:
            raise VideomaskError(
                f"variant {name!r} must be a mapping with a masker 'name' (and optional 'mode', 'options')"
            )
        unknown = set(spec) - {"name", "options", "mode"}
        if unknown:
            raise VideomaskError(f"variant {name!r} has unknown keys {sorted(unknown)} (allowed: name, mode, options)")
    for task in cfg.eval.tasks:
        if task not in ev.TASKS:
            raise VideomaskError(f"unknown eval task {task!r} (choose from {', '.join(ev.TASKS)})")
    if not 0.0 < cfg.eval.train_share < 1.0 or not 0.0 < cfg.eval.mask_ratio < 1.0:
        raise VideomaskError("eval.train_share and eval.mask_ratio must be in (0, 1)")
    return cfg


# ----------------------------------------------------------------------------------------------
# Footage: listing, held-out target time
# ----------------------------------------------------------------------------------------------


def write_lossless(frames: np.ndarray, path: Path, fps: float = 25.0) -> None:
    """Write uint8 ``[N, H, W, 3]`` frames as a lossless FFV1 MKV (frame i decodes to exactly frames[i])."""
    from fractions import Fraction

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.mkv")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "bgr0"  # lossless RGB
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


@dataclass
class TargetVideo:
    path: str  # the full video (evaluation)
    video_id: str  # id relative to the target folder
    num_frames: int
    cut: int  # frames [0, cut) form the train copy
    train_copy: str  # path of the lossless copy of frames [0, cut)
    train_id: str  # its id relative to the train-copy folder


def split_target(
    target_root: str | Path, out_dir: Path, train_share: float, backend: str = "pyav"
) -> list[TargetVideo]:
    """Decode each target video once, count its frames and write the train-time copy of its first frames."""
    from videomask.data import list_videos
    from videomask.video import open_video

    root = Path(target_root)
    videos = []
    for item in list_videos(root):
        path, vid = item.path, item.video_id
        copy_id = str(Path(vid).with_suffix(".mkv").as_posix())
        copy = out_dir / copy_id
        with open_video(str(path), backend=backend) as reader:
            frames = reader.read_all()  # uint8 [N, H, W, 3]
            fps = float(reader.meta.fps or 25.0)
        n = int(frames.shape[0])
        cut = int(math.floor(train_share * n))
        if cut < 2:
            continue
        write_lossless(frames[:cut], copy, fps)
        videos.append(TargetVideo(str(path), vid, n, cut, str(copy), copy_id))
    if not videos:
        raise VideomaskError(f"no usable target videos under {root}")
    return videos


# ----------------------------------------------------------------------------------------------
# Summaries and the report
# ----------------------------------------------------------------------------------------------


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
    for task, chance in (("arrow", 50.0), ("speed", 100.0 / len(ev.SPEED_STRIDES))):
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
    import matplotlib

    matplotlib.use("Agg")
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
            ax.axhline(100.0 / (2 if key.startswith("arrow") else len(ev.SPEED_STRIDES)), color="grey", ls="--", lw=0.8)
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


# ----------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------


def derive_train_cache(target_cache: Path, out: Path, targets: list[TargetVideo]) -> Path:
    """Boxes of the train copies: the target cache's records of frames ``< cut``, under the copies' ids."""
    from videomask.detect import read_cache

    records, _, _ = read_cache(target_cache)
    by_id = {t.video_id: t for t in targets}
    lines = []
    for rec in records:
        t = by_id.get(str(rec["video"]))
        if t is None:
            continue
        if rec.get("done"):
            lines.append({**rec, "video": t.train_id, "num_frames": t.cut})
        elif int(rec["frame"]) < t.cut:
            lines.append({**rec, "video": t.train_id})
    lines.sort(key=lambda r: (r["video"], bool(r.get("done")), r.get("frame", 0)))  # done line last per video
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in lines))
    tmp.replace(out)
    return out


def _train_config(
    cfg: BenchConfig,
    base_dir: Path,
    *,
    out_dir: Path,
    data_path: str,
    checkpoint: str,
    masker: dict[str, Any],
    steps: int,
    seed: int,
    name: str,
):
    """A :class:`~videomask.config.RunConfig` from the bench's shared ``train`` sections plus this run's fields."""
    from videomask.config import config_from_dict, validate_config

    run_cfg = config_from_dict(json.loads(json.dumps(cfg.train)), base_dir)
    run_cfg.run.name, run_cfg.run.out_dir, run_cfg.run.seed = name, str(out_dir), seed
    run_cfg.data.path = str(data_path)
    run_cfg.model.checkpoint = checkpoint
    run_cfg.mask.name = masker["name"]
    run_cfg.mask.options = dict(masker.get("options") or {})
    if masker.get("mode"):
        run_cfg.mask.mode = masker["mode"]
    run_cfg.train.steps, run_cfg.train.epochs, run_cfg.train.resume = steps, 0, False
    return validate_config(run_cfg)


def _run_training(run_cfg) -> tuple[Path, float, dict[str, Any]]:
    """Train; returns (final weights folder, wall-clock seconds, last logged record)."""
    from videomask.train import train

    if Path(run_cfg.run.out_dir).exists():
        shutil.rmtree(run_cfg.run.out_dir)
    t0 = time.perf_counter()
    result = train(run_cfg)
    wall = time.perf_counter() - t0
    if not result.ok or result.final_dir is None:
        raise VideomaskError(f"training run {run_cfg.run.out_dir} stopped: {result.stopped}")
    last = result.history[-1] if result.history else {}
    return Path(result.final_dir), wall, last


@dataclass
class EvalData:
    """Everything evaluated per model: the probe clip sets and the reconstruction clips with their anchors."""

    probes: dict[str, ev.ClipSet]
    recon_clips: torch.Tensor  # uint8 [N, 3, T, S, S]
    recon_anchors: torch.Tensor  # bool [N, L]
    mask: torch.Tensor  # bool [L], the one fixed random mask


def build_eval_data(
    cfg: BenchConfig,
    targets: list[TargetVideo],
    boxes_path: Path,
    *,
    num_frames: int,
    sampling_rate: int,
    size: int,
    tubelet: tuple[int, int, int],
    backend: str,
    progress: bool,
) -> EvalData:
    """Decode the probe windows (every task) and the held-out reconstruction windows once."""
    from videomask.detect import BoxCache
    from videomask.patches import grid_for, rasterise_boxes

    e = cfg.eval
    videos = [(t.path, t.video_id, t.num_frames) for t in targets]
    probes = {}
    for task in e.tasks:
        samples = ev.build_task_samples(
            videos,
            task,
            num_frames=num_frames,
            stride=e.stride,
            train_share=e.train_share,
            gap=e.gap,
            max_windows=e.max_windows,
            step=e.window_step or None,
        )
        clips = ev.decode_samples(samples, size, backend=backend, progress=progress)
        if int(clips.is_train.sum()) == 0 or int((~clips.is_train).sum()) == 0:
            raise VideomaskError(
                f"task {task}: the target videos are too short for train and test windows "
                f"({num_frames} frames; lower eval.gap or max stride)"
            )
        probes[task] = clips
    # reconstruction: the held-out (test) windows, clips sampled as in training (num_frames at sampling_rate)
    span = (num_frames - 1) * sampling_rate + 1
    recon_samples = []
    for path, vid, n in videos:
        _, test = ev.time_split_windows(
            n, span, train_share=e.train_share, gap=e.gap, max_windows=e.max_windows, step=e.window_step or None
        )
        for start in test:
            idx = tuple(start + k * sampling_rate for k in range(num_frames))
            recon_samples.append(ev.ProbeSample(path, vid, idx, -1, "test", len(recon_samples)))
    recon = ev.decode_samples(recon_samples, size, backend=backend, progress=False)
    cache = BoxCache.load(boxes_path)
    anchors = []
    for s, geom in zip(recon_samples, recon.geometry):
        frame_boxes = cache.boxes(s.video_id, list(s.indices))  # [N_k, 4] per frame, original pixels
        anchors.append(rasterise_boxes(frame_boxes, geom, tubelet))  # [L]
    grid = grid_for((num_frames, size, size), tubelet)
    mask = ev.fixed_random_mask(grid.num_tokens, e.mask_ratio, e.mask_seed)
    return EvalData(probes, recon.clips, torch.stack(anchors), mask)


def evaluate_model(model: torch.nn.Module, data: EvalData, settings: EvalSettings) -> dict[str, float]:
    """Every metric of one frozen model (see :data:`METRICS`)."""
    out: dict[str, float] = {}
    for task, clips in data.probes.items():
        feats = ev.extract_features(model, clips.clips, batch_size=settings.batch_size)  # [N, D]
        res = ev.probe_clipset(feats, clips, k=settings.knn_k, num_classes=ev.TASKS[task])
        out[f"{task}_linear"], out[f"{task}_knn"] = res["linear"], res["knn"]
    rec = ev.reconstruction_error(
        model, data.recon_clips, data.recon_anchors, data.mask, batch_size=settings.batch_size
    )
    out["recon_person"], out["recon_other"], out["recon_all"] = rec["anchor"], rec["other"], rec["all"]
    return out


def protocol_notes(ratio: float, grid: Any) -> list[str]:
    """Fixed remarks every report carries (budgets, what the wall-clock covers, where the footage comes from)."""
    from videomask.masking.base import budget

    tubes = budget(ratio, grid.num_tubes)
    return [
        f"`random` masks single tokens, as VideoMAE's random masking: {budget(ratio, grid.num_tokens)} of "
        f"{grid.num_tokens} tokens "
        f"per clip; the other maskers choose tubes: {tubes} of {grid.num_tubes} tubes = {tubes * grid.t} tokens per "
        "clip.",
        "Wall-clock per run is the continued-pretraining call only (evaluation, detection and fitting excluded); the "
        "CPU is "
        "shared with other processes, so it is indicative. Detection runs once and is cached; fitting runs once.",
        "The long-clip footage of the full run is built by `python benchmarks/quality.py` (fetch + encode, then this "
        "command); "
        "`--quick` runs on the shipped `assets/` clips, whose numbers say nothing about quality.",
    ]


MOTION_BASELINE = "motion energy (no model)"


def evaluate_motion_baseline(data: EvalData, settings: EvalSettings, patch: int) -> dict[str, float]:
    """The probe metrics of :func:`~videomask.evaluate.motion_energy_features` (a task-solvability check)."""
    out: dict[str, float] = {}
    for task, clips in data.probes.items():
        res = ev.probe_clipset(
            ev.motion_energy_features(clips.clips, patch), clips, k=settings.knn_k, num_classes=ev.TASKS[task]
        )
        out[f"{task}_linear"], out[f"{task}_knn"] = res["linear"], res["knn"]
    return out


def fit_difference_stats(
    source: str | Path,
    target: str | Path,
    out: Path,
    fit: dict[str, Any],
    *,
    base: str,
    log: Callable[[str], None],
    **clip: Any,
) -> str:
    """``videomask fit`` for a bench (a library call): ``fit`` options from the config (``{base}`` in a value is
    the base checkpoint, e.g. ``embedder: checkpoint:{base}``) on top of the clip geometry ``clip``; writes
    ``out`` and returns the equivalent ``videomask fit`` command line (for the report)."""
    from videomask.stats import fit_paths

    options = {**clip, **{k: (v.replace("{base}", base) if isinstance(v, str) else v) for k, v in fit.items()}}
    flags = [
        f"--{k.replace('_', '-')} " + (" ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
        for k, v in options.items()
    ]
    command = f"videomask fit --source {source} --target {target} -o {out} " + " ".join(flags)
    log(f"bench: {command}")
    stats, _, _ = fit_paths(source, target, progress=False, **options)
    stats.save(out)
    return command


def start_work(
    work_dir: str | Path, threads: int, log: Callable[[str], None]
) -> tuple[Callable[[str], None], Path, Path]:
    """Start a bench run: a log with elapsed seconds, the work folder, a fresh ``runs/`` under it, seed 0
    and the torch thread count; returns ``(log, work, runs_dir)``."""
    t_start = time.perf_counter()

    def timed(message: str) -> None:
        log(f"[{time.perf_counter() - t_start:6.0f} s] {message}")

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    runs_dir = work / "runs"
    if runs_dir.exists():
        shutil.rmtree(runs_dir)
    torch.manual_seed(0)
    if threads > 0:
        torch.set_num_threads(threads)
    return timed, work, runs_dir


@dataclass
class Anchors:
    """The detected boxes a bench's ``objects`` variants read (``cfg.detect``), cached in the work folder."""

    detector: str
    stride: int
    labels: list[str] | None
    boxes_target: Path  # every target video
    boxes_train: Path  # the train copies (ids of ``work/target_train``)


def detect_anchors(
    cfg: BenchConfig, targets: list[Any], work: Path, progress: bool, log: Callable[[str], None]
) -> Anchors:
    """Run the detector of ``cfg.detect`` over the target videos once (resumable cache)."""
    from videomask.detect import build_cache

    det = dict(cfg.detect)
    detector, stride = det.pop("detector", "people"), int(det.pop("stride", 4))
    labels = det.pop("labels", None)
    if det:
        raise VideomaskError(f"unknown bench detect keys {sorted(det)} (allowed: detector, stride, labels)")
    tag = Path(str(detector)).stem if str(detector).endswith((".jsonl", ".json")) else str(detector)
    boxes_target = work / f"boxes_{tag}_s{stride}.jsonl"
    log(
        f"bench: detecting {detector} in {len(targets)} target videos (every {stride} frames; cached in {boxes_target})"
    )
    build_cache([(t.video_id, t.path) for t in targets], boxes_target, detector, stride=stride, progress=progress)
    boxes_train = derive_train_cache(boxes_target, work / "boxes_train.jsonl", targets)
    return Anchors(str(detector), stride, labels, boxes_target, boxes_train)


def base_mask_section(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``mask`` section of the base model's pretraining from the config's ``base_masker``
    (``{name: tube | random, mode: tube | token}``; random defaults to VideoMAE's single-token mode)."""
    if not isinstance(spec, dict) or spec.get("name") not in ("tube", "random") or set(spec) - {"name", "mode"}:
        raise VideomaskError(f"base_masker must be {{name: tube | random, mode: tube | token}}, got {spec!r}")
    if spec.get("mode") not in (None, "tube", "token"):
        raise VideomaskError(f"base_masker mode must be tube or token, got {spec['mode']!r}")
    default_mode = "token" if spec["name"] == "random" else None
    return {"name": spec["name"], "options": {}, "mode": spec.get("mode") or default_mode}


def base_model(
    cfg: BenchConfig, base_dir: Path, runs_dir: Path, model_name: str, log: Callable[[str], None], source: str
) -> tuple[str, float, str]:
    """The model every variant continues from (``cfg.base_checkpoint``, or ``cfg.base_masker`` masking from
    random init on the ``source`` videos for ``cfg.base_steps``) -> ``(checkpoint, wall s, description)``."""
    if cfg.base_checkpoint:
        return cfg.base_checkpoint, 0.0, f"given checkpoint `{cfg.base_checkpoint}`"
    masker = base_mask_section(cfg.base_masker)
    how = f"{masker['name']} masking" + (f" ({masker['mode']} mode)" if masker["mode"] else "")
    log(f"bench: pretraining the base model on the source set ({cfg.base_steps} steps, {how})")
    base_cfg = _train_config(
        cfg,
        base_dir,
        out_dir=runs_dir / "base",
        data_path=str(source),
        checkpoint="",
        masker=masker,
        steps=cfg.base_steps,
        seed=0,
        name="base",
    )
    final, wall, _ = _run_training(base_cfg)
    desc = (
        f"`{model_name}` pretrained from random init on the source set, {cfg.base_steps} steps of {how} ({wall:.0f} s)"
    )
    return str(final), wall, desc


def variant_masker(
    spec: dict[str, Any], stats_path: Path, boxes: str | Path | None, labels: list[str] | None = None
) -> dict[str, Any]:
    """The ``mask`` section of one variant, pointed at the bench's statistics and boxes cache."""
    # VideoMAE's random masker works on single tokens, the others on tubes unless the variant says otherwise
    masker = {
        "name": spec["name"],
        "options": dict(spec.get("options") or {}),
        "mode": spec.get("mode") or ("token" if spec["name"] == "random" else None),
    }
    if masker["name"] == "difference":
        masker["options"].setdefault("stats", str(stats_path))
    if masker["name"] == "objects":
        masker["options"].setdefault("boxes", str(boxes))
        if labels is not None:
            masker["options"].setdefault("labels", labels)
    return masker


def shared_settings(
    cfg: BenchConfig, base_dir: Path, out_dir: Path, data_path: str | Path
) -> tuple[RunConfig, tuple[int, int, int]]:
    """The clip, model and mask settings every run of a bench shares (its ``train`` sections), as a run
    config that is never trained, and the model's tubelet."""
    from videomask.model import make_config

    probe_cfg = _train_config(
        cfg,
        base_dir,
        out_dir=out_dir,
        data_path=str(data_path),
        checkpoint="",
        masker={"name": "tube"},
        steps=1,
        seed=0,
        name="probe",
    )
    return probe_cfg, make_config(probe_cfg.model.name, **probe_cfg.model.overrides).tubelet


# Over 80 lines on purpose: the protocol's steps in order (split, detect, base, fit, evaluation data, references,
# variants x seeds), each a call.
def run_bench(
    cfg: BenchConfig,
    *,
    command: str,
    base_dir: str | Path = ".",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole protocol (module docstring) and return the result dict (also written by the caller)."""
    from videomask.patches import grid_for

    for name, folder in (("source", cfg.source), ("target", cfg.target)):
        if not Path(folder).is_dir():
            raise VideomaskError(
                f"bench {name} folder {folder} does not exist: build the footage with "
                "`python benchmarks/quality.py`, pass --source/--target, or run `videomask bench --quick`"
            )
    t_start = time.perf_counter()
    log, work, runs_dir = start_work(cfg.work_dir, cfg.threads, log)
    base_dir = Path(base_dir)

    # shared clip and model settings (from the bench's train sections)
    probe_cfg, tubelet = shared_settings(cfg, base_dir, runs_dir / "probe", cfg.source)
    d = probe_cfg.data
    clip_kwargs = dict(num_frames=d.num_frames, sampling_rate=d.sampling_rate, size=d.size, backend=d.backend)

    log(f"bench: splitting target videos by time (train share {cfg.eval.train_share})")
    targets = split_target(cfg.target, work / "target_train", cfg.eval.train_share, d.backend)
    anchors = detect_anchors(cfg, targets, work, progress, log)
    base, base_wall, base_desc = base_model(cfg, base_dir, runs_dir, probe_cfg.model.name, log, cfg.source)
    fit = {"embedder": "pixel", "num_words": 64, "num_anchors": 8, "clips_per_video": 4, "dim": 64, **cfg.fit}
    stats_path = work / "stats.safetensors"
    fit_difference_stats(
        cfg.source, work / "target_train", stats_path, fit, base=base, log=log, tubelet=tubelet[:2], **clip_kwargs
    )
    log("bench: decoding evaluation windows")
    data = build_eval_data(cfg, targets, anchors.boxes_target, tubelet=tubelet, progress=progress, **clip_kwargs)

    log("bench: evaluating reference models")
    rand = ev.load_encoder(probe_cfg.model.name, overrides=probe_cfg.model.overrides, seed=0)
    base_metrics = {**evaluate_model(ev.load_encoder(base), data, cfg.eval), "wall_s": base_wall}
    runs: list[dict[str, Any]] = [
        {"variant": "random init", "seed": 0, "metrics": evaluate_model(rand, data, cfg.eval)},
        {"variant": "base", "seed": 0, "metrics": base_metrics},
        {"variant": MOTION_BASELINE, "seed": 0, "metrics": evaluate_motion_baseline(data, cfg.eval, tubelet[1])},
    ]
    for variant, spec in cfg.variants.items():
        masker = variant_masker(spec, stats_path, anchors.boxes_train, anchors.labels)
        for seed in cfg.seeds:
            name = f"{variant}-s{seed}"
            log(f"bench: continued pretraining {name} ({cfg.steps} steps)")
            run_cfg = _train_config(
                cfg,
                base_dir,
                out_dir=runs_dir / name,
                data_path=str(work / "target_train"),
                checkpoint=base,
                masker=masker,
                steps=cfg.steps,
                seed=seed,
                name=name,
            )
            final, wall, last = _run_training(run_cfg)
            metrics = evaluate_model(ev.load_encoder(str(final)), data, cfg.eval)
            metrics.update({"wall_s": wall, "train_loss": last.get("loss") or float("nan")})
            runs.append({"variant": variant, "seed": seed, "masker": masker, "last_log": last, "metrics": metrics})
            log(f"bench: {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    setup = bench_setup(cfg, probe_cfg, data, targets, anchors, fit, base_desc, tubelet)
    result = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, load average at the end {os.getloadavg()[0]:.1f}",
        "total_s": time.perf_counter() - t_start,
        "setup": setup,
        "runs": runs,
    }
    result["summary"] = summarise(runs, [*METRICS, "wall_s", "train_loss"])
    result["notes"] = protocol_notes(probe_cfg.mask.ratio, grid_for((d.num_frames, d.size, d.size), tubelet))
    return result


def bench_setup(
    cfg: BenchConfig,
    probe_cfg: Any,
    data: Any,
    targets: list[Any],
    anchors: Anchors,
    fit: dict[str, Any],
    base_desc: str,
    tubelet: tuple[int, int, int],
) -> dict[str, Any]:
    """The ``setup`` block of the result: what was run, in words the report prints."""
    from videomask.data import list_videos

    d = probe_cfg.data
    lr = probe_cfg.optim.lr if probe_cfg.optim.lr is not None else "blr rule"
    n_probe = {
        task: f"{int(c.is_train.sum())} train / {int((~c.is_train).sum())} test clips"
        for task, c in data.probes.items()
    }
    recon_anchor_tokens = int((data.recon_anchors & data.mask).sum())
    n_detections = sum(1 for _ in open(anchors.boxes_target)) - len(targets)
    return {
        "source": str(cfg.source),
        "target": str(cfg.target),
        "num_source": len(list_videos(cfg.source)),
        "num_target": len(targets),
        "base": base_desc,
        "steps": cfg.steps,
        "base_steps": cfg.base_steps,
        "seeds": list(cfg.seeds),
        "variants": {k: v for k, v in cfg.variants.items()},
        "mask_ratio": probe_cfg.mask.ratio,
        "clip": f"model `{probe_cfg.model.name}` {json.dumps(probe_cfg.model.overrides)}, clips of {d.num_frames} "
        f"frames at stride {d.sampling_rate}, {d.size}x{d.size} px, tubelet {tubelet}, batch {d.batch_size}, "
        f"lr {lr}, mask mode {probe_cfg.mask.mode}",
        "anchors": f"difference: `videomask fit` with {json.dumps(fit)} on source vs target train copies; objects: "
        f"detector `{anchors.detector}` on one frame in every {anchors.stride}, {n_detections} "
        f"detections in {len(targets)} target videos, anchor labels {anchors.labels or 'all'}",
        "eval": dataclasses.asdict(cfg.eval),
        "probe_counts": "; ".join(f"{k}: {v}" for k, v in n_probe.items()),
        "recon_tokens": {
            "anchor": recon_anchor_tokens,
            "other": int(data.mask.sum()) * len(data.recon_clips) - recon_anchor_tokens,
            "clips": len(data.recon_clips),
        },
    }
