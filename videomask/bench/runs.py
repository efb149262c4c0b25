"""The training runs every bench protocol shares: work folder, run configs, base model, maskers, statistics."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from videomask.bench.config import BenchConfig, base_mask_section
from videomask.config import config_from_dict, validate_config
from videomask.difference import fit_paths
from videomask.errors import VideomaskError
from videomask.model import make_config
from videomask.train import train

if TYPE_CHECKING:
    from videomask.config import RunConfig


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


def train_config(
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
    overrides: dict[str, Any] | None = None,
):
    """A :class:`~videomask.config.RunConfig` from the bench's shared ``train`` sections, with ``overrides``
    (sections merged key by key, e.g. the base stage's objective) and this run's fields."""

    raw = merge_sections(cfg.train, overrides or {})
    run_cfg = config_from_dict(raw, base_dir)
    run_cfg.run.name, run_cfg.run.out_dir, run_cfg.run.seed = name, str(out_dir), seed
    run_cfg.data.path = str(data_path)
    run_cfg.model.checkpoint = checkpoint
    run_cfg.mask.name = masker["name"]
    run_cfg.mask.options = dict(masker.get("options") or {})
    if masker.get("mode"):
        run_cfg.mask.mode = masker["mode"]
    run_cfg.train.steps, run_cfg.train.epochs, run_cfg.train.resume = steps, 0, False
    return validate_config(run_cfg)


def merge_sections(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, nested mappings key by key (copies; the inputs are not changed)."""
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_sections(out[key], value)
        else:
            out[key] = json.loads(json.dumps(value))
    return out


def run_training(run_cfg) -> tuple[Path, float, dict[str, Any]]:
    """Train; returns (final weights folder, wall-clock seconds, last logged record)."""

    if Path(run_cfg.run.out_dir).exists():
        shutil.rmtree(run_cfg.run.out_dir)
    t0 = time.perf_counter()
    result = train(run_cfg)
    wall = time.perf_counter() - t0
    if not result.ok or result.final_dir is None:
        raise VideomaskError(f"training run {run_cfg.run.out_dir} stopped: {result.stopped}")
    last = result.history[-1] if result.history else {}
    return Path(result.final_dir), wall, last


def base_model(
    cfg: BenchConfig,
    base_dir: Path,
    runs_dir: Path,
    model_name: str,
    log: Callable[[str], None],
    source: str,
    overrides: dict[str, Any] | None = None,
) -> tuple[str, float, str]:
    """The model every variant continues from (``cfg.base_checkpoint``, or ``cfg.base_masker`` masking from
    random init on the ``source`` videos for ``cfg.base_steps``) -> ``(checkpoint, wall s, description)``."""
    if cfg.base_checkpoint:
        return cfg.base_checkpoint, 0.0, f"given checkpoint `{cfg.base_checkpoint}`"
    masker = base_mask_section(cfg.base_masker)
    overrides = merge_sections(cfg.base_train, overrides or {})
    base_objective = merge_sections(cfg.train, overrides).get("objective") or {}
    objective = base_objective.get("name", "pixels")
    how = f"{masker['name']} masking" + (f" ({masker['mode']} mode)" if masker["mode"] else "")
    if objective == "distill":
        teacher = base_objective.get("teacher", "")
        how = f"feature distillation from the {teacher} teacher (every token, no mask)"
    elif objective != "pixels":
        how += f", {objective} objective"
    log(f"bench: pretraining the base model on the source set ({cfg.base_steps} steps, {how})")
    base_cfg = train_config(
        cfg,
        base_dir,
        out_dir=runs_dir / "base",
        data_path=str(source),
        checkpoint="",
        masker=masker,
        steps=cfg.base_steps,
        seed=0,
        name="base",
        overrides=overrides,
    )
    final, wall, _ = run_training(base_cfg)
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

    probe_cfg = train_config(
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
