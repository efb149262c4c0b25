"""The quality bench (``videomask bench``): tube vs random vs difference masking in continued pretraining.

Settings in ``configs/bench_full.yaml`` / ``configs/bench_quick.yaml``; :func:`run_bench` lists the steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from videomask.bench.config import BenchConfig, EvalSettings
from videomask.bench.holdout import TargetVideo, derive_train_cache, split_target
from videomask.bench.motion_energy import MOTION_BASELINE, motion_energy_features
from videomask.bench.quality_report import METRICS
from videomask.bench.reconstruction import fixed_random_mask, reconstruction_error
from videomask.bench.runs import (
    base_model,
    fit_difference_stats,
    run_training,
    shared_settings,
    start_work,
    train_config,
    variant_masker,
)
from videomask.bench.stats import summarise
from videomask.data import list_videos
from videomask.detect import BoxCache, build_cache
from videomask.errors import VideomaskError
from videomask.eval import (
    TASKS,
    ClipSet,
    ProbeSample,
    build_task_samples,
    decode_samples,
    extract_features,
    load_encoder,
    probe_clipset,
    time_split_windows,
)
from videomask.masking.base import budget
from videomask.patches import grid_for, rasterise_boxes


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


@dataclass
class EvalData:
    """Everything evaluated per model: the probe clip sets and the reconstruction clips with their anchors."""

    probes: dict[str, ClipSet]
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

    e = cfg.eval
    videos = [(t.path, t.video_id, t.num_frames) for t in targets]
    probes = {}
    for task in e.tasks:
        samples = build_task_samples(
            videos,
            task,
            num_frames=num_frames,
            stride=e.stride,
            train_share=e.train_share,
            gap=e.gap,
            max_windows=e.max_windows,
            step=e.window_step or None,
        )
        clips = decode_samples(samples, size, backend=backend, progress=progress)
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
        _, test = time_split_windows(
            n, span, train_share=e.train_share, gap=e.gap, max_windows=e.max_windows, step=e.window_step or None
        )
        for start in test:
            idx = tuple(start + k * sampling_rate for k in range(num_frames))
            recon_samples.append(ProbeSample(path, vid, idx, -1, "test", len(recon_samples)))
    recon = decode_samples(recon_samples, size, backend=backend, progress=False)
    cache = BoxCache.load(boxes_path)
    anchors = []
    for s, geom in zip(recon_samples, recon.geometry):
        frame_boxes = cache.boxes(s.video_id, list(s.indices))  # [N_k, 4] per frame, original pixels
        anchors.append(rasterise_boxes(frame_boxes, geom, tubelet))  # [L]
    grid = grid_for((num_frames, size, size), tubelet)
    mask = fixed_random_mask(grid.num_tokens, e.mask_ratio, e.mask_seed)
    return EvalData(probes, recon.clips, torch.stack(anchors), mask)


def evaluate_model(model: torch.nn.Module, data: EvalData, settings: EvalSettings) -> dict[str, float]:
    """Every metric of one frozen model (see :data:`METRICS`)."""
    out: dict[str, float] = {}
    for task, clips in data.probes.items():
        feats = extract_features(model, clips.clips, batch_size=settings.batch_size)  # [N, D]
        res = probe_clipset(feats, clips, k=settings.knn_k, num_classes=TASKS[task])
        out[f"{task}_linear"], out[f"{task}_knn"] = res["linear"], res["knn"]
    rec = reconstruction_error(model, data.recon_clips, data.recon_anchors, data.mask, batch_size=settings.batch_size)
    out["recon_person"], out["recon_other"], out["recon_all"] = rec["anchor"], rec["other"], rec["all"]
    return out


def evaluate_motion_baseline(data: EvalData, settings: EvalSettings, patch: int) -> dict[str, float]:
    """The probe metrics of :func:`~videomask.bench.motion_energy.motion_energy_features` (a task-solvability check)."""
    out: dict[str, float] = {}
    for task, clips in data.probes.items():
        res = probe_clipset(
            motion_energy_features(clips.clips, patch), clips, k=settings.knn_k, num_classes=TASKS[task]
        )
        out[f"{task}_linear"], out[f"{task}_knn"] = res["linear"], res["knn"]
    return out


def protocol_notes(ratio: float, grid: Any) -> list[str]:
    """Fixed remarks every report carries (budgets, what the wall-clock covers, where the footage comes from)."""

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


def run_bench(
    cfg: BenchConfig,
    *,
    command: str,
    base_dir: str | Path = ".",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole protocol and return the result dict (written by :func:`write_report`).

    1. **Held-out target time.** Every target video is cut at ``cut = floor(train_share * N)`` frames. The
       first ``cut`` frames go to a lossless copy, the *only* target footage used for continued pretraining,
       statistics fitting and the objects masker; test windows lie in ``[cut + gap, N)``.
    2. **Base model.** One model pretrained on the source set with ``base_masker`` (or a given checkpoint).
    3. **Anchors.** People detected once on the target videos (boxes cache); difference statistics fitted on
       source vs the target train copies.
    4. **Continued pretraining** from the base weights, once per variant and seed, at the same mask ratio,
       steps, data and seeds; wall-clock per run recorded.
    5. **Evaluation** on frozen features (:mod:`videomask.eval`): arrow of time and playback speed, linear
       probe and kNN, windows split by time within each target video; reconstruction error on person
       patches of the held-out test windows under one fixed random token mask shared by every model.
    6. **Report** (:func:`write_report`): ``<name>.md``, ``<name>.json`` and ``<name>.png``.
    """

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
    rand = load_encoder(probe_cfg.model.name, overrides=probe_cfg.model.overrides, seed=0)
    base_metrics = {**evaluate_model(load_encoder(base), data, cfg.eval), "wall_s": base_wall}
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
            run_cfg = train_config(
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
            final, wall, last = run_training(run_cfg)
            metrics = evaluate_model(load_encoder(str(final)), data, cfg.eval)
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
