"""The known-answer benchmark: maskers compared on tasks whose labels come from the footage's generator.

Protocol (``videomask bench --config configs/bench_motion.yaml``; a config with ``protocol: motion``):

1. **Footage with known answers** (:func:`videomask.footage.build_known_difference`): real scenery in
   both domains, a real object crop pasted into every target clip, moving in a straight line with a
   known direction (8 classes), speed class (3) and box in every frame. Target clips are split **by
   video**: every ``test_every``-th clip is a test video, never used for pretraining, fitting,
   detection or probe training.
2. **Base model**: one model pretrained on the source clips with tube masking (``base_masker``; or a
   given checkpoint).
3. **Anchors**: difference statistics fitted (``videomask fit`` with its default scorer and embedder)
   on source vs the target *train* clips; object boxes from the generator (ground truth) and from a
   detector run on the target train clips.
4. **Continued pretraining** from the base weights on the target train clips, once per variant and
   seed, same ratio, steps, data and seeds; wall clock per run.
5. **Evaluation** of the frozen encoders with four probes (:data:`videomask.evaluate.PROBES`: linear and
   kNN on the token mean, the temporal linear probe, the attentive probe; hyper-parameters chosen on the
   train videos only) on five tasks: the pasted object's motion direction, speed class and final 3x3
   cell (labels from the generator), arrow of time and playback speed (labels from the frame order);
   reconstruction error on object tokens (generator boxes) and on the rest of the held-out test clips
   under one fixed random mask.
6. **Sanity ladder**: random init, base (source only), the model-free motion-energy feature and an upper
   reference (tube masking trained ``upper_steps`` on the target). A (task, probe) cell where the trained
   encoders do not beat the random init by ``margin_pts`` is marked *inconclusive* and no masker is
   ranked on it.
7. **Report**: mean ± std over seeds, the paired difference of every masker to tube (per seed, with a
   95% t interval over seeds), ``<name>.md`` / ``.json`` / ``.png``.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from videomask import evaluate as ev
from videomask.bench import (
    MOTION_BASELINE,
    BenchConfig,
    _check_fields,
    _run_training,
    _train_config,
    base_mask_section,
    base_model,
    fit_difference_stats,
    read_bench_yaml,
    report_header,
    shared_settings,
    start_work,
    summarise,
    variant_masker,
)
from videomask.errors import VideomaskError

TASK_TITLES: dict[str, str] = {
    "direction": "object direction (8)",
    "obj_speed": "object speed (3)",
    "position": "object final cell (9)",
    "arrow": "arrow of time (2)",
    "speed": "playback speed (3)",
}
TASK_CLASSES: dict[str, int] = {**ev.OBJECT_TASKS, **ev.TASKS}
OBJECT_MOTION_TASKS = ("direction", "obj_speed", "position")
UPPER = "upper: tube, long"
REFERENCES = ("random init", "base", MOTION_BASELINE)


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class MotionEval:
    """Evaluation settings of the known-answer benchmark."""

    tasks: list[str] = field(default_factory=lambda: list(TASK_TITLES))
    probes: list[str] = field(default_factory=lambda: list(ev.PROBES))
    windows: int = 2  # evaluation clips per target clip for the object tasks (spread over the clip)
    arrow_windows: int = 1  # windows per target clip for arrow of time (each gives a forward and a reversed clip)
    arrow_stride: int = 2
    knn_k: int = 5
    margin_pts: float = 5.0  # trained encoders must beat the random init by this much, else "inconclusive"
    mask_ratio: float = 0.75
    mask_seed: int = 1234
    batch_size: int = 16
    device: str = "cpu"  # frozen encoders, token extraction, reconstruction and the attentive probe run here
    attentive: dict[str, Any] = field(default_factory=dict)  # AttentiveSettings fields


@dataclass
class MotionBenchConfig:
    """One known-answer benchmark run (module docstring)."""

    protocol: str = "motion"
    assets: str = "assets"  # scenery (assets/source) and object crops (assets/target) for the footage
    footage: dict[str, Any] = field(default_factory=dict)  # build_known_difference keyword arguments
    test_every: int = 3  # target clip i is a test video when i % test_every == test_every - 1
    out: str = "benchmarks/results"
    name: str = "motion"
    work_dir: str = "runs/bench_motion"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    base_checkpoint: str = ""
    base_steps: int = 200
    base_masker: dict[str, Any] = field(default_factory=lambda: {"name": "tube"})  # {name: tube | random, mode}
    steps: int = 100
    upper_steps: int = 0  # 0 = no upper reference
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    detect: dict[str, Any] = field(default_factory=dict)
    eval: MotionEval = field(default_factory=MotionEval)
    threads: int = 0


def is_motion_config(path: str | Path) -> bool:
    """Whether a bench YAML selects this protocol (``protocol: motion``)."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and raw.get("protocol") == "motion"


def load_motion_config(path: str | Path) -> MotionBenchConfig:
    """Read a ``protocol: motion`` bench YAML strictly; relative paths resolve against its folder."""
    from videomask.config import config_from_dict

    p = Path(path)
    raw = read_bench_yaml(p)
    eval_raw = raw.pop("eval", {}) or {}
    cfg = MotionBenchConfig(**_check_fields(MotionBenchConfig, raw, ""))
    cfg.eval = MotionEval(**_check_fields(MotionEval, eval_raw, "eval."))
    base = p.resolve().parent
    for key in ("assets", "out", "work_dir", "base_checkpoint"):
        value = getattr(cfg, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(cfg, key, str((base / Path(value).expanduser()).resolve()))
    config_from_dict(cfg.train, base)
    return validate_motion_config(cfg)


def validate_motion_config(cfg: MotionBenchConfig) -> MotionBenchConfig:
    """Range checks with one-line errors."""
    if cfg.protocol != "motion":
        raise VideomaskError(f"bench protocol must be 'motion' here, got {cfg.protocol!r}")
    if not cfg.seeds:
        raise VideomaskError("bench needs at least one seed")
    if cfg.steps < 1 or (cfg.base_steps < 1 and not cfg.base_checkpoint) or cfg.upper_steps < 0:
        raise VideomaskError("bench steps and base_steps must be >= 1 (or give base_checkpoint), upper_steps >= 0")
    base_mask_section(cfg.base_masker)
    if cfg.test_every < 2:
        raise VideomaskError("test_every must be >= 2 (every test_every-th target clip is a test video)")
    if not cfg.variants:
        raise VideomaskError("bench config lists no variants")
    for name, spec in cfg.variants.items():
        if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "options", "mode", "boxes"}:
            raise VideomaskError(
                f"variant {name!r} must be a mapping with a masker 'name' (and optional 'mode', 'options', "
                "'boxes': truth | detector for the objects masker)"
            )
        if spec.get("boxes", "truth") not in ("truth", "detector"):
            raise VideomaskError(f"variant {name!r}: boxes must be 'truth' or 'detector'")
    for task in cfg.eval.tasks:
        if task not in TASK_TITLES:
            raise VideomaskError(f"unknown eval task {task!r} (choose from {', '.join(TASK_TITLES)})")
    for probe in cfg.eval.probes:
        if probe not in ev.PROBES:
            raise VideomaskError(f"unknown probe {probe!r} (choose from {', '.join(ev.PROBES)})")
    allowed = {f.name for f in dataclasses.fields(ev.AttentiveSettings)}
    unknown = set(cfg.eval.attentive) - allowed
    if unknown:
        raise VideomaskError(f"unknown eval.attentive keys {sorted(unknown)} (allowed: {', '.join(sorted(allowed))})")
    bad = set(cfg.footage) - {
        "num_source",
        "num_target",
        "num_frames",
        "sizes",
        "speeds",
        "shift",
        "seed",
        "square",
        "fps",
        "balance_every",
    }
    if bad:
        raise VideomaskError(f"unknown footage keys {sorted(bad)}")
    return cfg


def attentive_settings(cfg: MotionBenchConfig) -> ev.AttentiveSettings:
    raw = dict(cfg.eval.attentive)
    if "weight_decays" in raw:
        raw["weight_decays"] = tuple(float(w) for w in raw["weight_decays"])
    raw.setdefault("device", cfg.eval.device)
    return ev.AttentiveSettings(**raw)


# ----------------------------------------------------------------------------------------------
# Statistics: summaries, paired differences, the sanity verdict
# ----------------------------------------------------------------------------------------------


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Paired difference ``a - b`` over seeds (``a[i]`` and ``b[i]`` share seed ``i``): the mean, the
    sample std, and the two-sided t interval ``mean ± t_{(1+c)/2, n-1} * std / sqrt(n)`` (NaN bounds for
    one pair)."""
    from scipy.stats import t as student_t

    if len(a) != len(b) or not a:
        raise VideomaskError(f"paired difference needs equal, non-empty lists (got {len(a)} and {len(b)})")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    mean = statistics.fmean(d)
    if n < 2:
        return {"mean": mean, "std": float("nan"), "low": float("nan"), "high": float("nan"), "n": n}
    sd = statistics.stdev(d)
    half = float(student_t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "std": sd, "low": mean - half, "high": mean + half, "n": n}


def metric_keys(tasks: Sequence[str], probes: Sequence[str]) -> list[str]:
    return [f"{t}_{p}" for t in tasks for p in probes]


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and metric: mean, sample std over seeds (0 for one) and n (every metric a run reports)."""
    return summarise(runs)


def sanity_verdicts(
    summary: dict[str, dict[str, dict[str, float]]], trained: Sequence[str], keys: Sequence[str], margin_pts: float
) -> dict[str, dict[str, Any]]:
    """Per probe metric: the mean of the trained maskers' means minus the random init (points), and
    whether that clears ``margin_pts`` (conclusive) or not (inconclusive)."""
    out = {}
    rand = summary.get("random init", {})
    for key in keys:
        means = [summary[v][key]["mean"] for v in trained if key in summary.get(v, {})]
        if not means or key not in rand:
            continue
        gap = (statistics.fmean(means) - rand[key]["mean"]) * 100
        out[key] = {
            "trained_mean": statistics.fmean(means),
            "random_init": rand[key]["mean"],
            "gap_pts": gap,
            "best_trained": max(means),
            "conclusive": gap >= margin_pts,
        }
    return out


def paired_table(
    runs: list[dict[str, Any]], reference: str, trained: Sequence[str], keys: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """variant -> metric -> :func:`paired_difference` against ``reference`` (pairs = same seed)."""
    by = {(r["variant"], r["seed"]): r["metrics"] for r in runs}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for v in trained:
        if v == reference:
            continue
        seeds = sorted(s for (name, s) in by if name == v and (reference, s) in by)
        row = {}
        for key in keys:
            pairs = [(by[(v, s)].get(key), by[(reference, s)].get(key)) for s in seeds]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if pairs:
                row[key] = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
        out[v] = row
    return out


# ----------------------------------------------------------------------------------------------
# Footage, splits and evaluation data
# ----------------------------------------------------------------------------------------------


@dataclass
class Footage:
    root: Path
    source: Path
    target: Path
    train_dir: Path  # copies of the train target clips (pretraining, fitting, detection)
    labels: dict[str, dict]  # clip name -> labels.json entry
    train: list[str]
    test: list[str]
    boxes_truth: Path


def prepare_footage(cfg: MotionBenchConfig, work: Path, log: Callable[[str], None]) -> Footage:
    """Build (or reuse, when its settings match) the known-difference footage and split it by video."""
    from videomask.footage import build_known_difference

    root = work / "footage"
    settings = {"num_source": 24, "num_target": 96, "square": True, **cfg.footage}
    stamp = root / "settings.json"
    wanted = json.dumps({"assets": cfg.assets, **settings}, sort_keys=True)
    if not stamp.is_file() or stamp.read_text() != wanted or not (root / "labels.json").is_file():
        if root.exists():
            shutil.rmtree(root)
        log(f"bench: building known-difference footage ({json.dumps(settings)})")
        build_known_difference(root, assets=cfg.assets, **settings)
        stamp.write_text(wanted)
    labels = {c["clip"]: c for c in json.loads((root / "labels.json").read_text())["clips"]}
    names = list(labels)
    test = [n for i, n in enumerate(names) if i % cfg.test_every == cfg.test_every - 1]
    train = [n for n in names if n not in set(test)]
    train_dir = work / "target_train"
    if train_dir.exists():
        shutil.rmtree(train_dir)
    train_dir.mkdir(parents=True)
    for n in train:
        shutil.copyfile(root / "target" / n, train_dir / n)
    return Footage(root, root / "source", root / "target", train_dir, labels, train, test, root / "target_boxes.jsonl")


@dataclass
class ProbeSet:
    """Decoded clips of one or more tasks that share them, with one label tensor per task."""

    clips: torch.Tensor  # uint8 [N, 3, T, S, S]
    labels: dict[str, torch.Tensor]  # task -> long [N]
    is_train: torch.Tensor  # bool [N]
    groups: torch.Tensor  # long [N], the video index (hyper-parameter folds never split a video)


def _samples_to_set(samples: list[ev.ProbeSample], size: int, backend: str) -> ev.ClipSet:
    return ev.decode_samples(samples, size, backend=backend)


def build_probe_sets(
    foot: Footage, cfg: MotionBenchConfig, *, num_frames: int, sampling_rate: int, size: int, backend: str
) -> dict[str, ProbeSet]:
    """The evaluation clips: ``objects`` (direction, speed class, final cell share the clips), ``arrow``, ``speed``."""
    tasks = cfg.eval.tasks
    split = {n: "train" for n in foot.train} | {n: "test" for n in foot.test}
    vid_index = {n: i for i, n in enumerate(foot.labels)}
    sets: dict[str, ProbeSet] = {}
    clip_frames = int(next(iter(foot.labels.values()))["boxes"].__len__())
    if any(t in tasks for t in OBJECT_MOTION_TASKS):
        starts = ev.object_clip_starts(clip_frames, num_frames, sampling_rate, cfg.eval.windows)
        samples = [
            ev.ProbeSample(
                str(foot.target / n),
                n,
                tuple(s + k * sampling_rate for k in range(num_frames)),
                -1,
                split[n],
                vid_index[n],
            )
            for n in foot.labels
            for s in starts
        ]
        cs = _samples_to_set(samples, size, backend)
        labels = {t: [] for t in OBJECT_MOTION_TASKS}
        for s, geom in zip(samples, cs.geometry):
            for t, y in ev.object_task_labels(foot.labels[s.video_id], s.indices, geom).items():
                labels[t].append(y)
        sets["objects"] = ProbeSet(
            cs.clips, {t: torch.tensor(v) for t, v in labels.items() if t in tasks}, cs.is_train, cs.windows
        )
    for task in ("arrow", "speed"):
        if task not in tasks:
            continue
        span = ev.task_span(task, num_frames, cfg.eval.arrow_stride)
        if span > clip_frames:
            raise VideomaskError(f"task {task} needs {span} frames per window; the footage clips have {clip_frames}")
        starts = (
            ev.object_clip_starts(clip_frames, num_frames, cfg.eval.arrow_stride, cfg.eval.arrow_windows)
            if task == "arrow"
            else [0]
        )
        samples = [
            ev.ProbeSample(str(foot.target / n), n, tuple(idx), label, split[n], vid_index[n])
            for n in foot.labels
            for s in starts
            for idx, label in ev.task_samples(task, s, num_frames, cfg.eval.arrow_stride)
        ]
        cs = _samples_to_set(samples, size, backend)
        sets[task] = ProbeSet(cs.clips, {task: cs.labels}, cs.is_train, cs.windows)
    return sets


@dataclass
class ReconData:
    clips: torch.Tensor  # uint8 [N, 3, T, S, S], held-out test clips
    anchors: torch.Tensor  # bool [N, L], tokens covered by the generator's object box
    mask: torch.Tensor  # bool [L], the one fixed random mask


def build_recon_data(
    foot: Footage,
    cfg: MotionBenchConfig,
    *,
    num_frames: int,
    sampling_rate: int,
    size: int,
    tubelet: tuple[int, int, int],
    backend: str,
) -> ReconData:
    from videomask.detect import BoxCache
    from videomask.patches import grid_for, rasterise_boxes

    idx = tuple(k * sampling_rate for k in range(num_frames))
    samples = [ev.ProbeSample(str(foot.target / n), n, idx, -1, "test", i) for i, n in enumerate(foot.test)]
    cs = _samples_to_set(samples, size, backend)
    cache = BoxCache.load(foot.boxes_truth)
    anchors = torch.stack(
        [rasterise_boxes(cache.boxes(s.video_id, list(s.indices)), g, tubelet) for s, g in zip(samples, cs.geometry)]
    )
    grid = grid_for((num_frames, size, size), tubelet)
    return ReconData(cs.clips, anchors, ev.fixed_random_mask(grid.num_tokens, cfg.eval.mask_ratio, cfg.eval.mask_seed))


def evaluate_encoder(
    model: torch.nn.Module | None,
    sets: dict[str, ProbeSet],
    recon: ReconData | None,
    cfg: MotionBenchConfig,
    *,
    time_slots: int,
    patch: int,
) -> dict[str, float]:
    """Every probe on every task for one frozen encoder (``model=None``: the motion-energy features, whose
    "tokens" are per time step and patch; only the probes that make sense for it)."""
    e = cfg.eval
    settings = attentive_settings(cfg)
    out: dict[str, float] = {}
    for ps in sets.values():
        if model is None:
            feats = ev.motion_energy_features(ps.clips, patch)  # [N, (T-1)*h*w]
            tokens = feats.view(feats.shape[0], -1, 1)  # [N, (T-1)*h*w, 1]
        else:
            tokens = ev.extract_tokens(
                model.to(e.device), ps.clips, batch_size=e.batch_size, device=e.device
            )  # [N, L, D]
        for task, labels in ps.labels.items():
            if model is None:
                probes = [p for p in e.probes if p in ("linear", "knn")]
                flat = tokens.flatten(1)  # [N, F]: the linear probe sees every (time, patch) cell
                tr = ps.is_train
                if "linear" in probes:
                    out[f"{task}_linear"] = ev.linear_probe(
                        flat[tr],
                        labels[tr],
                        flat[~tr],
                        labels[~tr],
                        num_classes=TASK_CLASSES[task],
                        groups=ps.groups[tr],
                    ).accuracy
                if "knn" in probes:
                    out[f"{task}_knn"] = ev.knn_accuracy(
                        flat[tr], labels[tr], flat[~tr], labels[~tr], k=e.knn_k, num_classes=TASK_CLASSES[task]
                    )
                continue
            res = ev.probe_tokens(
                tokens,
                labels,
                ps.is_train,
                ps.groups,
                time_slots=time_slots,
                num_classes=TASK_CLASSES[task],
                probes=e.probes,
                k=e.knn_k,
                attentive=settings,
            )
            out.update({f"{task}_{p}": v for p, v in res.items()})
    if model is not None and recon is not None:
        rec = ev.reconstruction_error(
            model.to(e.device), recon.clips, recon.anchors, recon.mask, batch_size=e.batch_size, device=e.device
        )
        out["recon_object"], out["recon_other"] = rec["anchor"], rec["other"]
    return out


# ----------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------


def _as_bench_config(cfg: MotionBenchConfig) -> BenchConfig:
    """The fields the shared training helpers of :mod:`videomask.bench` read."""
    return BenchConfig(
        train=cfg.train,
        variants=cfg.variants,
        seeds=cfg.seeds,
        steps=cfg.steps,
        base_steps=cfg.base_steps,
        base_checkpoint=cfg.base_checkpoint,
        base_masker=cfg.base_masker,
    )


# Over 80 lines on purpose: the protocol's steps in order (footage, base, statistics, probes, references,
# variants x seeds), each a call; train_variant closes over what every run shares.
def run_motion_bench(
    cfg: MotionBenchConfig,
    *,
    command: str,
    base_dir: str | Path = ".",
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole protocol (module docstring); returns the result dict (written by :func:`write_motion_report`)."""
    from videomask.patches import grid_for

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
    base, base_wall, base_desc = base_model(bcfg, Path(base_dir), runs_dir, probe_cfg.model.name, log, foot.source)
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
    rand = ev.load_encoder(probe_cfg.model.name, overrides=probe_cfg.model.overrides, seed=0)
    runs: list[dict[str, Any]] = [{"variant": "random init", "seed": 0, "metrics": evaluate(rand)}]
    eval_s = time.perf_counter() - t0
    log(f"bench: one encoder's evaluation took {eval_s:.0f} s")
    runs.append({"variant": "base", "seed": 0, "metrics": {**evaluate(ev.load_encoder(base)), "wall_s": base_wall}})
    motion = evaluate_encoder(None, sets, None, cfg, time_slots=grid.t, patch=tubelet[1])
    runs.append({"variant": MOTION_BASELINE, "seed": 0, "metrics": motion})

    def train_variant(variant: str, spec: dict[str, Any], seed: int, steps: int) -> dict[str, Any]:
        """Continue pretraining ``base`` with one variant's masker and evaluate it (its weights are not kept)."""
        boxes = boxes_det if spec.get("boxes") == "detector" else foot.boxes_truth
        masker = variant_masker(spec, stats_path, boxes)
        name = f"{variant}-s{seed}".replace(" ", "_").replace(":", "").replace(",", "")
        log(f"bench: continued pretraining {variant} seed {seed} ({steps} steps)")
        run_cfg = _train_config(
            bcfg,
            Path(base_dir),
            out_dir=runs_dir / name,
            data_path=str(foot.train_dir),
            checkpoint=base,
            masker=masker,
            steps=steps,
            seed=seed,
            name=name,
        )
        final, wall, last = _run_training(run_cfg)
        metrics = evaluate(ev.load_encoder(str(final)))
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
    from videomask.detect import build_cache

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
        f"lr {lr}, mask mode {probe_cfg.mask.mode}",
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


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


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
    verdicts = sanity_verdicts(summary, trained, keys, float(e["margin_pts"]))
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
            f"- Largest gap between the trained encoders (mean over maskers and seeds) and the random init: "
            f"{best} {v[best]['gap_pts']:+.1f} pts ({v[best]['trained_mean'] * 100:.1f}% vs "
            f"{v[best]['random_init'] * 100:.1f}%). "
            f"The harness bar (>= 10 pts on at least one task) is {'met' if v[best]['gap_pts'] >= 10 else 'not met'}."
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
        f"- Footage: `videomask.footage.build_known_difference` on `{Path(f['assets']).name}/` "
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
        "**inconclusive** when trained − random init "
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
