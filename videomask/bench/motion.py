"""The known-answer bench (``videomask bench --config configs/bench_motion.yaml``): maskers compared on tasks
whose labels come from the footage's generator. :func:`run_motion_bench` lists the steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from videomask.bench.config import BenchConfig
from videomask.bench.motion_config import CNN_REFERENCES, UPPER, MotionBenchConfig, attentive_settings
from videomask.bench.motion_energy import MOTION_BASELINE
from videomask.bench.motion_eval import (
    Footage,
    ProbeSet,
    ReconData,
    build_probe_sets,
    build_recon_data,
    evaluate_encoder,
    prepare_footage,
)
from videomask.bench.runs import (
    base_model,
    fit_difference_stats,
    merge_sections,
    run_training,
    shared_settings,
    start_work,
    train_config,
    variant_masker,
)
from videomask.data import list_videos
from videomask.detect import build_cache
from videomask.errors import VideomaskError
from videomask.eval import load_encoder
from videomask.io.per_video import META_FILE
from videomask.objectives import FrameTeacher, build_teacher, build_teacher_cache
from videomask.patches import grid_for


def _as_bench_config(cfg: MotionBenchConfig) -> BenchConfig:
    """The fields the shared training helpers of :mod:`videomask.bench.runs` read."""
    return BenchConfig(
        train=cfg.train,
        variants=cfg.variants,
        seeds=cfg.seeds,
        steps=cfg.steps,
        base_steps=cfg.base_steps,
        base_checkpoint=cfg.base_checkpoint,
        base_masker=cfg.base_masker,
        base_train=cfg.base_train,
    )


class CNNEncoder(torch.nn.Module):
    """A frame teacher as a frozen encoder for the probes: ``encode(video) -> [B, L, t*C]`` (its targets)."""

    def __init__(self, teacher: FrameTeacher) -> None:
        super().__init__()
        self.teacher = teacher
        self.net = teacher.net  # registered, so .to() / .eval() reach it

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.teacher(video)  # [B, L, t*C]


def teacher_cache_overrides(
    cfg: MotionBenchConfig, tubelet: tuple[int, int, int], folder: Path, out: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """``{"objective": {"teacher_cache": path}}`` for runs on ``folder`` when the objective has a cnn teacher
    (the cache is built once, here), else ``{}``."""
    objective = merge_sections(cfg.train, {}).get("objective") or {}
    return _cache_for(objective, tubelet, folder, out, log)


def _cache_for(
    objective: dict[str, Any], tubelet: tuple[int, int, int], folder: Path, out: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    spec = str(objective.get("teacher", ""))
    if not spec.startswith("cnn") or objective.get("teacher_cache"):
        return {}
    teacher = build_teacher(spec, tubelet=tubelet, size=int(objective.get("teacher_size", 0)))
    stamp = out.with_suffix(".json")
    wanted = json.dumps({"teacher": teacher.identity, "folder": str(folder)}, sort_keys=True)
    if not (out / META_FILE).is_file() or not stamp.is_file() or stamp.read_text() != wanted:
        log(f"bench: teacher features of {folder.name} once ({spec}, size {teacher.size or 'native'}) -> {out.name}")
        items = list_videos(folder)
        build_teacher_cache(teacher, [(it.video_id, it.path) for it in items], out, progress=False)
        stamp.write_text(wanted)
    return {"objective": {"teacher_cache": str(out)}}


def run_motion_bench(
    cfg: MotionBenchConfig,
    *,
    command: str,
    base_dir: str | Path = ".",
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole protocol; returns the result dict (written by :func:`write_motion_report`).

    1. **Footage with known answers** (:func:`~videomask.bench.footage.build_known_difference`): a real
       object crop pasted into every target clip, moving in a straight line with a known direction (8
       classes), speed class (3) and box in every frame. Every ``test_every``-th target clip is a test video,
       never used for pretraining, fitting, detection or probe training.
    2. **Base model** pretrained on the source clips with ``base_masker`` (or a given checkpoint).
    3. **Anchors**: difference statistics fitted on source vs the target *train* clips; object boxes from
       the generator (ground truth) and from a detector run on the target train clips.
    4. **Continued pretraining** from the base weights on the target train clips, once per variant and
       seed, same ratio, steps, data and seeds; wall clock per run.
    5. **Evaluation** of the frozen encoders with the probes of :data:`videomask.eval.PROBES`
       (hyper-parameters chosen on the train videos only) on five tasks: the object's direction, speed class
       and final 3x3 cell, arrow of time and playback speed; reconstruction error on object tokens and on
       the rest of the held-out test clips under one fixed random mask.
    6. **Sanity ladder**: random init, base, the motion-energy feature and an upper reference (tube masking
       trained ``upper_steps``). A (task, probe) cell where the trained encoders do not beat the random init
       by ``margin_pts`` is *inconclusive* and no masker is ranked on it.
    7. **Report** (:func:`write_motion_report`): mean ± std over seeds, the paired difference of every
       masker to tube with a 95% t interval over seeds.
    """

    if not (Path(cfg.assets) / "source").is_dir():
        raise VideomaskError(f"bench assets folder {cfg.assets} has no source/ scenery clips")
    t_start = time.perf_counter()
    log, work, runs_dir = start_work(cfg.work_dir, cfg.threads, log)
    bcfg = _as_bench_config(cfg)
    probe_cfg, tubelet = shared_settings(bcfg, Path(base_dir), runs_dir / "probe", work)
    d = probe_cfg.data
    grid = grid_for((d.num_frames, d.size, d.size), tubelet)
    clip = dict(num_frames=d.num_frames, sampling_rate=d.sampling_rate, size=d.size, backend=d.backend)

    foot = prepare_footage(cfg, work, log)
    n_source = len(list(foot.source.glob("*.mp4")))
    log(f"bench: {len(foot.train)} train / {len(foot.test)} test target videos, {n_source} source videos")
    boxes_det, det_desc = detector_boxes(cfg, foot, work, progress, log)
    base_objective = merge_sections(cfg.train, cfg.base_train).get("objective") or {}
    base_cache = _cache_for(base_objective, tubelet, foot.source, work / "teacher_source", log)
    target_cache = teacher_cache_overrides(cfg, tubelet, foot.train_dir, work / "teacher_target", log)
    base, base_wall, base_desc = base_model(
        bcfg, Path(base_dir), runs_dir, probe_cfg.model.name, log, foot.source, overrides=base_cache
    )
    # difference statistics: videomask fit with its defaults (plus the clip geometry and cfg.fit)
    stats_path = work / "stats.safetensors"
    fit_command = ""
    if any(v["name"] == "difference" for v in cfg.variants.values()):
        fit_command = fit_difference_stats(
            foot.source, foot.train_dir, stats_path, dict(cfg.fit), base=base, log=log, tubelet=tubelet[:2], **clip
        )

    log("bench: decoding evaluation clips")
    sets = build_probe_sets(foot, cfg, **clip)
    recon = build_recon_data(foot, cfg, tubelet=tubelet, **clip)
    evaluate = lambda model: evaluate_encoder(model, sets, recon, cfg, time_slots=grid.t, patch=tubelet[1])  # noqa: E731

    log("bench: evaluating the reference models")
    t0 = time.perf_counter()
    rand = load_encoder(probe_cfg.model.name, overrides=probe_cfg.model.overrides, seed=0)
    runs: list[dict[str, Any]] = [{"variant": "random init", "seed": 0, "metrics": evaluate(rand)}]
    eval_s = time.perf_counter() - t0
    log(f"bench: one encoder's evaluation took {eval_s:.0f} s")
    for init_seed in range(1, cfg.random_init_seeds):
        rand = load_encoder(probe_cfg.model.name, overrides=probe_cfg.model.overrides, seed=init_seed)
        runs.append({"variant": "random init", "seed": init_seed, "metrics": evaluate(rand)})
    for ref in cfg.references:
        cnn = CNNEncoder(build_teacher(CNN_REFERENCES[ref], tubelet=tubelet, size=cfg.teacher_size))
        metrics = evaluate_encoder(cnn, sets, None, cfg, time_slots=grid.t, patch=tubelet[1])
        runs.append({"variant": ref, "seed": 0, "metrics": metrics})
    runs.append({"variant": "base", "seed": 0, "metrics": {**evaluate(load_encoder(base)), "wall_s": base_wall}})
    motion = evaluate_encoder(None, sets, None, cfg, time_slots=grid.t, patch=tubelet[1])
    runs.append({"variant": MOTION_BASELINE, "seed": 0, "metrics": motion})

    def train_variant(variant: str, spec: dict[str, Any], seed: int, steps: int) -> dict[str, Any]:
        """Continue pretraining ``base`` with one variant's masker and evaluate it (its weights are not kept)."""
        boxes = boxes_det if spec.get("boxes") == "detector" else foot.boxes_truth
        masker = variant_masker(spec, stats_path, boxes)
        name = f"{variant}-s{seed}".replace(" ", "_").replace(":", "").replace(",", "")
        log(f"bench: continued pretraining {variant} seed {seed} ({steps} steps)")
        run_cfg = train_config(
            bcfg,
            Path(base_dir),
            out_dir=runs_dir / name,
            data_path=str(foot.train_dir),
            checkpoint=base,
            masker=masker,
            steps=steps,
            seed=seed,
            name=name,
            overrides=target_cache,
        )
        final, wall, last = run_training(run_cfg)
        metrics = evaluate(load_encoder(str(final)))
        metrics.update({"wall_s": wall, "train_loss": last.get("loss") or float("nan")})
        shutil.rmtree(runs_dir / name, ignore_errors=True)  # weights are not kept (disk)
        log(f"bench: {variant} s{seed}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        return {"variant": variant, "seed": seed, "masker": masker, "metrics": metrics}

    setup = motion_setup(cfg, probe_cfg, foot, sets, recon, tubelet, grid.t, base_desc, fit_command, det_desc)

    def assemble() -> dict[str, Any]:
        return {
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, load average at the end {os.getloadavg()[0]:.1f}",
            "total_s": time.perf_counter() - t_start,
            "eval_s_per_encoder": eval_s,
            "setup": setup,
            "runs": runs,
        }

    partial = work / "partial.json"
    if cfg.upper_steps:
        runs.append(train_variant(UPPER, {"name": "tube"}, 0, cfg.upper_steps))
    partial.write_text(json.dumps(assemble(), default=str))
    for seed in cfg.seeds:  # seed-major: a stopped run still has every variant for the first seeds
        for variant, spec in cfg.variants.items():
            runs.append(train_variant(variant, spec, seed, cfg.steps))
            partial.write_text(json.dumps(assemble(), default=str))  # every finished run, in case the bench is stopped
    return assemble()


def detector_boxes(
    cfg: MotionBenchConfig, foot: Footage, work: Path, progress: bool, log: Callable[[str], None]
) -> tuple[Path, str]:
    """Detector boxes on the train clips, when a variant asks for them -> ``(cache path, description)``."""

    det = dict(cfg.detect)
    detector, stride = det.pop("detector", "faces"), int(det.pop("stride", 2))
    if det:
        raise VideomaskError(f"unknown bench detect keys {sorted(det)} (allowed: detector, stride)")
    boxes = work / f"boxes_{Path(str(detector)).stem}_s{stride}.jsonl"
    if not any(v.get("boxes") == "detector" for v in cfg.variants.values()):
        return boxes, ""
    log(f"bench: detecting {detector} in {len(foot.train)} train clips (every {stride} frames)")
    build_cache([(n, str(foot.train_dir / n)) for n in foot.train], boxes, detector, stride=stride, progress=progress)
    n_boxes = sum(1 for line in open(boxes) if '"box"' in line) if boxes.is_file() else 0
    return boxes, f"`{detector}` on one frame in every {stride} of the train clips: {n_boxes} boxes"


def motion_setup(
    cfg: MotionBenchConfig,
    probe_cfg: Any,
    foot: Footage,
    sets: dict[str, ProbeSet],
    recon: ReconData,
    tubelet: tuple[int, int, int],
    time_slots: int,
    base_desc: str,
    fit_command: str,
    det_desc: str,
) -> dict[str, Any]:
    """The ``setup`` block of the result: what was run, in words the report prints."""
    d = probe_cfg.data
    lr = probe_cfg.optim.lr if probe_cfg.optim.lr is not None else "blr rule"
    object_tokens = int((recon.anchors & recon.mask).sum())
    return {
        "footage": {
            "assets": cfg.assets,
            **json.loads((foot.root / "settings.json").read_text()),
            "train_videos": len(foot.train),
            "test_videos": len(foot.test),
            "source_videos": len(list(foot.source.glob("*.mp4"))),
        },
        "base": base_desc,
        "steps": cfg.steps,
        "upper_steps": cfg.upper_steps,
        "seeds": list(cfg.seeds),
        "variants": cfg.variants,
        "mask_ratio": probe_cfg.mask.ratio,
        "clip": f"model `{probe_cfg.model.name}` {json.dumps(probe_cfg.model.overrides)}, clips of {d.num_frames} "
        f"frames at stride {d.sampling_rate}, {d.size}x{d.size} px, tubelet {tubelet}, batch {d.batch_size}, "
        f"lr {lr}, mask mode {probe_cfg.mask.mode}, objective "
        f"{json.dumps({k: v for k, v in dataclasses.asdict(probe_cfg.objective).items() if v not in ('', None)})}",
        "fit": fit_command,
        "detector": det_desc,
        "eval": dataclasses.asdict(cfg.eval),
        "attentive": dataclasses.asdict(attentive_settings(cfg)),
        "probe_counts": {
            k: f"{int(ps.is_train.sum())} train / {int((~ps.is_train).sum())} test clips" for k, ps in sets.items()
        },
        "recon_tokens": {
            "object": object_tokens,
            "other": int(recon.mask.sum()) * len(recon.clips) - object_tokens,
            "clips": len(recon.clips),
        },
        "time_slots": time_slots,
    }
