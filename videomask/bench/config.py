"""Bench configuration: the quality bench's YAML, strict field checks and the base model's masker."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from videomask.config import config_from_dict
from videomask.errors import VideomaskError
from videomask.eval import TASKS


@dataclass
class EvalSettings:
    """Frozen-feature evaluation settings (see :mod:`videomask.eval`)."""

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
    base_train: dict[str, Any] = field(default_factory=dict)  # train sections merged in for the base stage only
    steps: int = 100  # continued-pretraining steps per variant and seed
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {name: masker, options: {...}}
    train: dict[str, Any] = field(default_factory=dict)  # RunConfig sections shared by every training run
    fit: dict[str, Any] = field(default_factory=dict)  # difference-statistics settings
    detect: dict[str, Any] = field(default_factory=dict)  # detector settings
    eval: EvalSettings = field(default_factory=EvalSettings)
    threads: int = 0  # torch intra-op threads for the whole bench (0 = torch's default)


def check_fields(cls: type, raw: dict[str, Any], where: str) -> dict[str, Any]:
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
    cfg = BenchConfig(**check_fields(BenchConfig, raw, ""))
    cfg.eval = EvalSettings(**check_fields(EvalSettings, eval_raw, "eval."))
    base = p.resolve().parent
    for key in ("source", "target", "out", "work_dir", "base_checkpoint"):
        value = getattr(cfg, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(cfg, key, str((base / Path(value).expanduser()).resolve()))

    config_from_dict(cfg.train, base)  # unknown keys / bad values in the shared train sections fail now, not mid-run
    validate_bench_config(cfg)
    return cfg


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
        if task not in TASKS:
            raise VideomaskError(f"unknown eval task {task!r} (choose from {', '.join(TASKS)})")
    if not 0.0 < cfg.eval.train_share < 1.0 or not 0.0 < cfg.eval.mask_ratio < 1.0:
        raise VideomaskError("eval.train_share and eval.mask_ratio must be in (0, 1)")
    return cfg


def base_mask_section(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``mask`` section of the base model's pretraining from the config's ``base_masker``
    (``{name: tube | random, mode: tube | token}``; random defaults to VideoMAE's single-token mode)."""
    if not isinstance(spec, dict) or spec.get("name") not in ("tube", "random") or set(spec) - {"name", "mode"}:
        raise VideomaskError(f"base_masker must be {{name: tube | random, mode: tube | token}}, got {spec!r}")
    if spec.get("mode") not in (None, "tube", "token"):
        raise VideomaskError(f"base_masker mode must be tube or token, got {spec['mode']!r}")
    default_mode = "token" if spec["name"] == "random" else None
    return {"name": spec["name"], "options": {}, "mode": spec.get("mode") or default_mode}
