"""Run configuration: dataclasses loaded from YAML, with strict ``key=value`` dotted overrides.

A config file has up to seven sections, each a dataclass below: ``run``, ``data``, ``model``, ``mask``,
``optim``, ``train``, ``objective``. Loading is strict: an unknown key, or a value of the wrong type, raises a
one-line :class:`~videomask.errors.VideomaskError` that names the key and what is allowed.

Rules:

* Booleans accept ``true/false/yes/no/on/off/1/0`` (any case); nothing else (no ``type=bool`` trap).
* Relative paths written in a config file resolve against that file's folder; relative paths given as
  command-line overrides resolve against the current directory. Path keys are the fields marked as
  paths below, plus ``mask.options`` / ``data.options`` keys named ``stats``, ``boxes``, ``skip_log`` or
  ending in ``_path``/``_file``/``_dir``.
* ``model.overrides`` and ``mask.options`` are free dicts passed on as keyword arguments
  (``mask.options.alpha=0.5`` sets one entry).

Learning rate (VideoMAE's base-lr scaling rule): when ``optim.lr`` is not given,
``lr = optim.blr * effective_batch / 256`` where
``effective_batch = data.batch_size * data.num_sample * train.accum_steps * world_size`` (clips per
optimizer step). The schedule warms up linearly from 0 over ``optim.warmup_steps`` optimizer steps,
then follows a half cosine from ``lr`` down to ``lr * optim.min_lr_ratio`` at the last step
(``schedule: constant`` keeps ``lr`` after warm-up).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from videomask.errors import VideomaskError

_PATH = {"path": True}


@dataclass
class RunSection:
    """Where the run goes and how it is seeded."""

    name: str = "pretrain"
    out_dir: str = field(default="runs/pretrain", metadata=_PATH)  # the run folder
    seed: int = 0
    device: str = "auto"  # auto = cuda:LOCAL_RANK when CUDA is available, else cpu; or "cpu", "cuda", "cuda:1"
    # seconds a rank waits for the others in a collective (barrier, all-reduce, the start) before the run
    # fails with a one-line error; 1800 = torch's NCCL default
    dist_timeout_s: float = 1800.0


@dataclass
class DataSection:
    """Training videos and clip sampling (see videomask.data)."""

    path: str = field(
        default="", metadata=_PATH
    )  # a folder of videos (recursive), a list file (csv/tsv/txt) or a video
    num_frames: int = 16  # frames per clip
    sampling_rate: int = 4  # stride between sampled frames
    size: int = 224  # output clip height = width
    num_sample: int = 1  # clips per decoded video (VideoMAE/MGMAE repeated sampling)
    batch_size: int = 8  # videos per micro-batch and rank (clips = batch_size * num_sample)
    num_workers: int = 4  # DataLoader worker processes (0 = in the main process)
    backend: Literal["pyav", "decord", "opencv", "auto"] = "pyav"
    sampling: Literal["random", "center", "uniform"] = "random"  # random = training crops; else centre crops
    short: Literal["loop", "pad", "skip"] = "loop"  # policy for videos shorter than a clip
    # seconds one item (open + clip decode) may take; past it the video is skipped for good, replaced by the
    # next one in the list as a corrupt video is (same seed, same replacement) and listed in the skip log,
    # so a hung or very slow read stalls its rank this long at most (0 = no limit; benchmarks/results/item_timeout.md)
    timeout_s: float = 30.0
    # extra options: ClipTransform fields (crop, scales, flip_prob, area, ratio, short_side, mean, std)
    # and VideoDataset keywords (min_frames, skip_log, ...)
    options: dict[str, Any] = field(default_factory=dict)
    # fsspec filesystem options for a data.path that is a URL (s3://bucket/prefix): endpoint_url, anon,
    # key, secret, ...; empty = fsspec's defaults (for S3 the AWS environment variables and files)
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSection:
    """Which model to start from."""

    name: str = "base"  # a size in videomask.model.MODEL_SIZES (used when no checkpoint, or for .pth/.safetensors)
    # "" = random init; a Hugging Face save_pretrained folder; a VideoMAE .pth; a videomask .safetensors
    # file or a folder holding model.safetensors (e.g. a previous run's final/ checkpoint).
    checkpoint: str = field(default="", metadata=_PATH)
    overrides: dict[str, Any] = field(default_factory=dict)  # VideoMAEConfig fields for build_model


@dataclass
class MaskSection:
    """Which masker chooses the masked patches (see videomask.masking)."""

    name: str = "tube"  # random | tube | difference | objects
    ratio: float = 0.9
    # None = the masker's default; the random and tube maskers fix theirs (masking.mode_option)
    mode: Literal["tube", "token"] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # masker-specific (stats, boxes, alpha, direction, ...)


@dataclass
class OptimSection:
    """AdamW and its schedule."""

    lr: float | None = None  # absolute peak lr; None = blr * effective_batch / 256
    blr: float = 1.5e-4  # base lr per 256 clips (VideoMAE's default)
    min_lr_ratio: float = 0.01  # final lr of the cosine as a share of the peak
    weight_decay: float = 0.05  # not applied to biases, norms and 1-D parameters
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 0  # optimizer steps of linear warm-up
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclass
class TrainSection:
    """The loop: length, accumulation, precision, logging, checkpoints."""

    steps: int = 0  # optimizer steps; 0 = use epochs
    epochs: int = 0  # used when steps = 0: steps = epochs * optimizer steps per epoch
    accum_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)
    clip_grad: float = 0.0  # max global grad norm; 0 = no clipping
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto = bf16 (or fp16) on CUDA, fp32 on CPU
    grad_checkpointing: bool = False
    # under torchrun: ddp = every rank holds the whole model (DistributedDataParallel); fsdp = FSDP2, each
    # transformer block sharded across the ranks (fully_shard), checkpoints sharded (docs/training.md)
    parallel: Literal["ddp", "fsdp"] = "ddp"
    compile: bool = False  # torch.compile each transformer block (a C compiler on the CPU)
    # Weights & Biases beside metrics.jsonl / TensorBoard (pip install videomask[wandb]); {} = off, else
    # project (required), name, entity, group, tags, mode (online|offline|disabled), dir
    wandb: dict[str, Any] = field(default_factory=dict)
    log_every: int = 10  # optimizer steps between log lines
    save_every: int = 100  # optimizer steps between checkpoints (0 = only the final one)
    keep_last: int = 3  # checkpoints kept in checkpoints/
    max_bad_steps: int = 5  # stop after this many consecutive non-finite losses
    resume: bool = False  # continue from the latest complete checkpoint in run.out_dir
    export_hf: bool = False  # also write final/hf (save_pretrained); always done when the model came from one
    tensorboard: bool = True
    recon_every: int = 500  # optimizer steps between reconstruction pictures of a fixed clip in TensorBoard (0 = off)
    progress: bool = True  # tqdm bar on rank 0


@dataclass
class ObjectiveSection:
    """What the model learns to predict (docs/objectives.md): ``pixels`` (VideoMAE), ``teacher`` (a frozen
    teacher's features at the masked tokens), ``contrastive`` (clean-branch features of the masked tokens,
    InfoNCE) or ``distill`` (every token regressed on its teacher features, no mask: a source model)."""

    name: Literal["pixels", "teacher", "contrastive", "distill"] = "pixels"
    teacher: str = ""  # "" = none; cnn | cnn:PATH | cnn-random | checkpoint:PATH
    teacher_layer: str = "last"  # checkpoint teachers: "last" or "block:N"
    teacher_size: int = 0  # cnn teachers: shorter side of the frames they see (0 = the clip size)
    teacher_cache: str = field(default="", metadata=_PATH)  # `videomask teacher-cache` output; "" = in the step
    distill_weight: float = 1.0  # visible tokens regress their teacher features (keeps a source model's knowledge)
    teacher_weight: float = 1.0  # contrastive: weight of the decoder's teacher-feature term (0 = InfoNCE alone)
    temperature: float = 0.1  # contrastive: InfoNCE temperature
    clean: Literal["stopgrad", "ema"] = "stopgrad"  # contrastive: the clean branch's encoder
    ema_decay: float = 0.996  # clean: ema


@dataclass
class RunConfig:
    """The whole run; one section per dataclass."""

    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    mask: MaskSection = field(default_factory=MaskSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)


_OPTION_PATH_KEY = re.compile(r"^(stats|boxes|skip_log|.*_path|.*_file|.*_dir)$")
_PATH_OPTION_SECTIONS = ("mask", "data")  # sections whose ``options`` entries named like paths are resolved
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list, dict):
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any, from_text: bool) -> Any:
    """Check / convert ``value`` to type ``tp``; ``from_text`` = it came from a command-line string."""

    def bad() -> VideomaskError:
        return VideomaskError(f"config key {key!r} expects {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (from_text and str(value).lower() in ("null", "none", "~"))):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg, from_text)
            except VideomaskError:
                pass
        raise bad()
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise VideomaskError(f"config key {key!r} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise VideomaskError(f"config key {key!r} expects a boolean (true/false/yes/no/1/0), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise bad()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        if from_text or isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if origin in (tuple, list):
        if isinstance(value, str) and from_text:
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise bad()
        args = typing.get_args(tp)
        if origin is tuple:
            if len(args) != len(value):
                raise bad()
            return tuple(_coerce(key, v, a, from_text) for v, a in zip(value, args))
        return [_coerce(key, v, args[0], from_text) for v in value]
    if origin is dict:
        if isinstance(value, str) and from_text:
            value = yaml.safe_load(value)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    raise bad()  # pragma: no cover - only the types used above appear in the dataclasses


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _resolve(value: str, base: Path) -> str:
    if not value or re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", value):  # a URL (s3://...) stays as written
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_options(options: dict[str, Any], base: Path) -> dict[str, Any]:
    return {
        k: (_resolve(v, base) if isinstance(v, str) and _OPTION_PATH_KEY.match(k) else v) for k, v in options.items()
    }


def _resolve_field(section: str, key: str, field_: dataclasses.Field, value: Any, base: Path) -> Any:
    """``section.key = value`` with relative paths made absolute against ``base``: path fields, and the
    path-like entries of ``mask.options`` / ``data.options``."""
    if field_.metadata.get("path") and isinstance(value, str):
        value = _resolve(value, base)
    if key == "options" and section in _PATH_OPTION_SECTIONS:
        value = _resolve_options(value, base)
    return value


def _section_from_dict(section: str, cls: type, raw: Any, base: Path) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise VideomaskError(f"config section {section!r} must be a mapping of keys, got {raw!r}")
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise VideomaskError(f"unknown config key '{section}.{key}' (allowed in {section}: {', '.join(fields)})")
        value = _coerce(f"{section}.{key}", value, hints[key], from_text=False)
        kwargs[key] = _resolve_field(section, key, fields[key], value, base)
    return cls(**kwargs)


def _apply_override(cfg: RunConfig, item: str) -> None:
    if "=" not in item:
        raise VideomaskError(f"override {item!r} is not of the form section.key=value (e.g. train.steps=100)")
    dotted, text = item.split("=", 1)
    parts = dotted.strip().split(".")
    sections = _fields(RunConfig)
    if parts[0] not in sections:
        raise VideomaskError(f"unknown config section {parts[0]!r} in {item!r} (allowed: {', '.join(sections)})")
    section = getattr(cfg, parts[0])
    fields = _fields(type(section))
    if len(parts) < 2 or parts[1] not in fields:
        name = parts[1] if len(parts) > 1 else ""
        raise VideomaskError(f"unknown config key '{parts[0]}.{name}' (allowed in {parts[0]}: {', '.join(fields)})")
    key = parts[1]
    tp = typing.get_type_hints(type(section))[key]
    cwd = Path.cwd()
    if len(parts) > 2:  # a dict entry: mask.options.alpha=0.5, model.overrides.depth=2
        if typing.get_origin(tp) is not dict or len(parts) != 3:
            raise VideomaskError(f"config key '{parts[0]}.{key}' has no sub-key {'.'.join(parts[2:])!r}")
        value = yaml.safe_load(text) if text.strip() else ""
        if isinstance(value, str) and _OPTION_PATH_KEY.match(parts[2]) and parts[0] in _PATH_OPTION_SECTIONS:
            value = _resolve(value, cwd)
        getattr(section, key)[parts[2]] = value
        return
    value = _coerce(dotted, text, tp, from_text=True)
    setattr(section, key, _resolve_field(parts[0], key, fields[key], value, cwd))


def ratio_message(name: str, ratio: float) -> str:
    """The one wording of the mask-ratio range, for a config key or a command-line flag."""
    return f"{name} must be in (0, 1) (the share of tokens masked), got {ratio}"


def check_mask_ratio(ratio: float, name: str = "mask.ratio") -> float:
    """``ratio`` when it is in (0, 1), the range every command accepts; else a one-line VideomaskError."""
    if not 0.0 < ratio < 1.0:
        raise VideomaskError(ratio_message(name, ratio))
    return ratio


def validate_config(cfg: RunConfig) -> RunConfig:
    """Check value ranges that types cannot express; raise a one-line VideomaskError."""
    checks = [
        (cfg.run.dist_timeout_s > 0, f"run.dist_timeout_s must be > 0 seconds, got {cfg.run.dist_timeout_s:g}"),
        (cfg.data.num_frames >= 1, "data.num_frames must be >= 1"),
        (cfg.data.sampling_rate >= 1, "data.sampling_rate must be >= 1"),
        (cfg.data.size >= 1, "data.size must be >= 1"),
        (cfg.data.num_sample >= 1, "data.num_sample must be >= 1"),
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.data.num_workers >= 0, "data.num_workers must be >= 0"),
        (cfg.data.timeout_s >= 0, f"data.timeout_s must be >= 0 seconds (0 = no limit), got {cfg.data.timeout_s:g}"),
        (
            cfg.data.timeout_s < cfg.run.dist_timeout_s,
            f"data.timeout_s={cfg.data.timeout_s:g} must be shorter than run.dist_timeout_s="
            f"{cfg.run.dist_timeout_s:g} (the other ranks wait that long for a rank stuck on one video)",
        ),
        ("timeout" not in cfg.data.options, "data.options.timeout is now data.timeout_s (seconds per item)"),
        (0.0 < cfg.mask.ratio < 1.0, ratio_message("mask.ratio", cfg.mask.ratio)),
        (cfg.optim.lr is None or cfg.optim.lr > 0, "optim.lr must be > 0 (or null for the base-lr rule)"),
        (cfg.optim.blr > 0, "optim.blr must be > 0"),
        (0.0 <= cfg.optim.min_lr_ratio <= 1.0, "optim.min_lr_ratio must be in [0, 1]"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (all(0.0 <= b < 1.0 for b in cfg.optim.betas), "optim.betas must be in [0, 1)"),
        (cfg.optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (cfg.train.steps >= 0 and cfg.train.epochs >= 0, "train.steps and train.epochs must be >= 0"),
        (cfg.train.steps > 0 or cfg.train.epochs > 0, "set train.steps or train.epochs to a positive number"),
        (cfg.train.accum_steps >= 1, "train.accum_steps must be >= 1"),
        (cfg.train.clip_grad >= 0, "train.clip_grad must be >= 0 (0 = off)"),
        (cfg.train.log_every >= 1, "train.log_every must be >= 1"),
        (cfg.train.save_every >= 0, "train.save_every must be >= 0"),
        (cfg.train.keep_last >= 1, "train.keep_last must be >= 1"),
        (cfg.train.max_bad_steps >= 1, "train.max_bad_steps must be >= 1"),
        (cfg.train.recon_every >= 0, "train.recon_every must be >= 0 (0 = off)"),
        (
            cfg.objective.name in ("pixels", "contrastive") or bool(cfg.objective.teacher),
            f"objective {cfg.objective.name} needs objective.teacher (e.g. cnn)",
        ),
        (cfg.objective.teacher_size >= 0, "objective.teacher_size must be >= 0 (0 = the clip size)"),
        (cfg.objective.temperature > 0, "objective.temperature must be > 0"),
        (0.0 <= cfg.objective.ema_decay < 1.0, "objective.ema_decay must be in [0, 1)"),
        (
            cfg.objective.distill_weight >= 0 and cfg.objective.teacher_weight >= 0,
            "objective.distill_weight and objective.teacher_weight must be >= 0",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise VideomaskError(message)
    check_wandb(cfg.train.wandb)
    return cfg


WANDB_KEYS = ("project", "name", "entity", "group", "tags", "mode", "dir")


def check_wandb(options: dict[str, Any]) -> None:
    """``train.wandb``: empty (off) or known keys with a ``project``; a one-line VideomaskError otherwise."""
    if not options:
        return
    unknown = sorted(set(options) - set(WANDB_KEYS))
    if unknown:
        raise VideomaskError(f"unknown train.wandb keys {', '.join(unknown)} (allowed: {', '.join(WANDB_KEYS)})")
    if not options.get("project"):
        raise VideomaskError("train.wandb needs a project (train.wandb.project=NAME), or leave train.wandb empty")
    if options.get("mode", "online") not in ("online", "offline", "disabled"):
        raise VideomaskError(f"train.wandb.mode must be online, offline or disabled, got {options['mode']!r}")


def config_from_dict(raw: dict[str, Any], base_dir: str | Path = ".", extra_sections: Sequence[str] = ()) -> RunConfig:
    """Build a :class:`RunConfig` from a nested dict (as read from YAML), strictly; no range checks.

    Top-level keys named in ``extra_sections`` (e.g. ``demo``) are ignored; any other unknown key is an error.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise VideomaskError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    sections = _fields(RunConfig)
    hints = typing.get_type_hints(RunConfig)
    for key in raw:
        if key not in sections and key not in extra_sections:
            raise VideomaskError(f"unknown config section {key!r} (allowed: {', '.join(sections)})")
    base = Path(base_dir).resolve()
    return RunConfig(**{name: _section_from_dict(name, hints[name], raw.get(name), base) for name in sections})


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), extra_sections: Sequence[str] = ()
) -> RunConfig:
    """Load a YAML config (or the defaults when ``path`` is None), apply ``section.key=value`` overrides.

    Unknown keys, wrong types and out-of-range values raise a one-line :class:`VideomaskError`.
    ``extra_sections``: top-level sections another command reads itself (e.g. ``demo``), skipped here.
    """
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise VideomaskError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid YAML"
            raise VideomaskError(f"cannot parse config {p}: {first}") from None
        base = p.resolve().parent
    return load_config_dict(raw, overrides, base, extra_sections)


def load_config_dict(
    raw: dict[str, Any],
    overrides: Sequence[str] = (),
    base_dir: str | Path = ".",
    extra_sections: Sequence[str] = (),
) -> RunConfig:
    """:func:`load_config` of a nested dict whose relative paths resolve against ``base_dir``: a config a
    command assembles itself is checked (keys, types, overrides, ranges) before anything runs."""
    base = Path(base_dir)
    cfg = config_from_dict(raw, base, extra_sections)
    for item in overrides:
        _apply_override(cfg, item)
    # defaults that are paths resolve against the current directory, so config.yaml holds absolute paths
    for section in (getattr(cfg, name) for name in _fields(RunConfig)):
        for name, f in _fields(type(section)).items():
            if f.metadata.get("path") and getattr(section, name):
                setattr(section, name, _resolve(getattr(section, name), Path.cwd()))
    return validate_config(cfg)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain nested dicts and lists (tuples become lists), ready for YAML or JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (paths are absolute, so it loads back from anywhere)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    text = "# resolved videomask config\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
