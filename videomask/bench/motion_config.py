"""The known-answer bench's configuration (a bench YAML with ``protocol: motion``) and its task names."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from videomask.bench.config import base_mask_section, check_fields, read_bench_yaml
from videomask.bench.motion_energy import MOTION_BASELINE
from videomask.bench.object_tasks import OBJECT_TASKS
from videomask.config import config_from_dict
from videomask.errors import VideomaskError
from videomask.eval import PROBES, TASKS, AttentiveSettings

TASK_TITLES: dict[str, str] = {
    "direction": "object direction (8)",
    "obj_speed": "object speed (3)",
    "position": "object final cell (9)",
    "identity": "object identity (4)",
    "arrow": "arrow of time (2)",
    "speed": "playback speed (3)",
}


TASK_CLASSES: dict[str, int] = {**OBJECT_TASKS, **TASKS}


OBJECT_MOTION_TASKS = ("direction", "obj_speed", "position", "identity")


UPPER = "upper: tube, long"


REFERENCES = ("random init", "random CNN", "teacher CNN", "base", MOTION_BASELINE)

# encoders every trained cell must beat by ``eval.margin_pts`` (the best of those present) to be conclusive
FLOOR_REFERENCES = ("random init", "random CNN")

# reference encoders a bench can add (``references``): the CNN teacher with random and with ImageNet weights
CNN_REFERENCES = {"random CNN": "cnn-random", "teacher CNN": "cnn"}


@dataclass
class MotionEval:
    """Evaluation settings of the known-answer benchmark."""

    tasks: list[str] = field(default_factory=lambda: list(TASK_TITLES))
    probes: list[str] = field(default_factory=lambda: list(PROBES))
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
    """One known-answer benchmark run (see :func:`~videomask.bench.motion.run_motion_bench`)."""

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
    base_train: dict[str, Any] = field(default_factory=dict)  # train sections for the base stage (e.g. distill)
    random_init_seeds: int = 1  # random-init encoders evaluated (init seeds 0, 1, ...)
    references: list[str] = field(default_factory=list)  # CNN references: "random CNN", "teacher CNN"
    teacher_size: int = 0  # the CNN references' input size (0 = the clip size)
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

    p = Path(path)
    raw = read_bench_yaml(p)
    eval_raw = raw.pop("eval", {}) or {}
    cfg = MotionBenchConfig(**check_fields(MotionBenchConfig, raw, ""))
    cfg.eval = MotionEval(**check_fields(MotionEval, eval_raw, "eval."))
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
    if cfg.random_init_seeds < 1:
        raise VideomaskError("random_init_seeds must be >= 1")
    for ref in cfg.references:
        if ref not in CNN_REFERENCES:
            raise VideomaskError(f"unknown reference {ref!r} (choose from {', '.join(CNN_REFERENCES)})")
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
        if probe not in PROBES:
            raise VideomaskError(f"unknown probe {probe!r} (choose from {', '.join(PROBES)})")
    allowed = {f.name for f in dataclasses.fields(AttentiveSettings)}
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


def attentive_settings(cfg: MotionBenchConfig) -> AttentiveSettings:
    raw = dict(cfg.eval.attentive)
    if "weight_decays" in raw:
        raw["weight_decays"] = tuple(float(w) for w in raw["weight_decays"])
    raw.setdefault("device", cfg.eval.device)
    return AttentiveSettings(**raw)


def metric_keys(tasks: Sequence[str], probes: Sequence[str]) -> list[str]:
    return [f"{t}_{p}" for t in tasks for p in probes]
