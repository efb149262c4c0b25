"""``videomask demo``: the end-to-end job on the shipped footage (``assets/``, ``configs/demo.yaml``).

1. pretrain a tiny VideoMAE on the source clips (no people) with tube masking;
2. fit difference statistics (source vs target) with stage 1's tubelet embedding as the embedder;
3. continue pretraining on the target clips (people) with the difference masker;
4. draw the difference masks on a target clip and print a short summary.

``configs/demo.yaml`` is a ``videomask pretrain`` config for stage 3 plus a ``demo`` section. Without
``--config`` the demo uses ``./configs/demo.yaml`` when there is one, else the copy shipped inside the
package (:mod:`videomask.resources`) with the shipped clips, and writes its run folder under the
current directory (``runs/demo``).
``key=value`` overrides apply to both training stages (``mask.*`` to stage 3 only); ``demo.key=value``
sets the demo section (``demo.source_steps=20``, ``demo.fit.num_words=16``).
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from videomask.commands import absolute as _absolute
from videomask.commands import shipped_resolver as _shipped_resolver
from videomask.config import load_config, load_config_dict
from videomask.errors import VideomaskError
from videomask.resources import data_dir, data_file

if TYPE_CHECKING:
    from videomask.config import RunConfig
    from videomask.difference import DifferenceStats
    from videomask.train import RunResult

HELP = "run the shipped end-to-end demo on assets/ with configs/demo.yaml"

DEMO_KEYS = ("source", "target", "source_steps", "source_mask", "fit")
FIT_KEYS = ("clips_per_video", "num_words", "num_anchors", "num_prototypes", "tokens_per_clip", "epochs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="demo config (default: configs/demo.yaml here, else the one shipped with videomask)",
    )
    parser.add_argument("--out", default=None, help="run folder (default: run.out_dir of the config)")
    parser.add_argument("--quick", action="store_true", help="a few steps of each stage (a smoke test)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=50")


def _find_config(path: str | None) -> tuple[Path, bool]:
    """The demo config and whether it is the shipped one.

    ``--config`` when given, else ./configs/demo.yaml, else the copy shipped in the package.
    """
    if path is not None:
        if not Path(path).is_file():
            raise VideomaskError(f"demo config not found: {path}")
        return Path(path), False
    if Path("configs/demo.yaml").is_file():
        return Path("configs/demo.yaml"), False

    return data_file("configs", "demo.yaml"), True


def _set_dotted(tree: dict[str, Any], dotted: str, text: str) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise VideomaskError(f"override {dotted}={text}: {key!r} is not a section")
    node[leaf] = yaml.safe_load(text) if text.strip() else ""


def _write_stage(raw: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _loss_summary(history: list[dict[str, Any]]) -> str:
    losses = [r["loss"] for r in history if r.get("loss") is not None]
    if not losses:
        return "no finite loss logged"
    text = f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"
    last = history[-1]
    if last.get("loss_anchor") is not None and last.get("loss_other") is not None:
        text += f" (last interval: anchor patches {last['loss_anchor']:.4f}, other masked {last['loss_other']:.4f})"
    return text


@dataclass
class DemoPlan:
    """The demo's inputs after reading the config and the command line."""

    raw: dict[str, Any]  # the stage-3 ``videomask pretrain`` config, paths made absolute
    demo: dict[str, Any]  # the ``demo`` section
    overrides: list[str]  # ``key=value`` overrides for the training stages
    source: Path
    target: Path
    out_dir: Path


def read_plan(args: argparse.Namespace) -> DemoPlan:
    """Read the demo config, apply ``demo.*`` overrides and ``--quick``, resolve the folders."""
    config_path, shipped = _find_config(args.config)
    base = config_path.resolve().parent
    if shipped:  # installed anywhere: the clips come from the package, the run folder goes under the cwd
        resolve = _shipped_resolver(data_dir("assets"), Path.cwd())
    else:
        resolve = lambda value: _absolute(value, base)  # noqa: E731
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise VideomaskError(f"cannot parse {config_path}: {str(err).splitlines()[0]}") from None
    demo = raw.pop("demo", None)
    if not isinstance(demo, dict) or "source" not in demo or "target" not in demo:
        raise VideomaskError(f"{config_path} needs a 'demo' section with 'source' and 'target' folders")
    overrides: list[str] = []
    for item in args.overrides:
        if "=" not in item:
            raise VideomaskError(f"override {item!r} is not of the form section.key=value")
        key, value = item.split("=", 1)
        if key.startswith("demo."):
            _set_dotted(demo, key[len("demo.") :], value)
        else:
            overrides.append(item)
    if args.quick:
        demo["source_steps"] = 4
        demo.setdefault("fit", {}).update(clips_per_video=1, epochs=1)
        overrides += ["train.steps=4", "train.log_every=1", "train.save_every=2", "data.num_workers=0"]

    source = Path(resolve(str(demo["source"])))
    target = Path(resolve(str(demo["target"])))
    for name, folder in (("source", source), ("target", target)):
        if not folder.exists():
            raise VideomaskError(f"demo {name} videos not found: {folder}")
    out_dir = (
        Path(args.out).resolve() if args.out else Path(resolve(str(raw.get("run", {}).get("out_dir", "runs/demo"))))
    )
    # Paths inside the stage configs are made absolute so the written files load from the run folder.
    for section, key in (("run", "out_dir"), ("data", "path"), ("model", "checkpoint")):
        value = raw.get(section, {}).get(key)
        if value:
            raw[section][key] = resolve(str(value))
    plan = DemoPlan(raw=raw, demo=demo, overrides=overrides, source=source, target=target, out_dir=out_dir)
    check_stages(plan)
    return plan


def stage1_config(plan: DemoPlan) -> tuple[dict[str, Any], list[str]]:
    """Stage 1's ``videomask pretrain`` config and overrides: the demo's source masker and length."""
    stage1 = copy.deepcopy(plan.raw)
    stage1.setdefault("run", {}).update(name="demo-source", out_dir=str(plan.out_dir / "source"))
    stage1.setdefault("data", {})["path"] = str(plan.source)
    ratio = plan.raw.get("mask", {}).get("ratio", 0.9)
    stage1["mask"] = {"name": str(plan.demo.get("source_mask", "tube")), "ratio": ratio}
    stage1.setdefault("train", {})["steps"] = plan.demo.get("source_steps", 100)
    # stage 1 takes the overrides but its own masker and length (demo.source_steps)
    return stage1, [o for o in plan.overrides if not o.startswith(("mask.", "train.steps="))]


def stage3_config(plan: DemoPlan) -> dict[str, Any]:
    """Stage 3's ``videomask pretrain`` config (with ``plan.overrides``): stage 1's model, stage 2's statistics."""
    stage3 = copy.deepcopy(plan.raw)
    stage3.setdefault("run", {}).update(out_dir=str(plan.out_dir / "target"))
    stage3.setdefault("data", {})["path"] = str(plan.target)
    stage3.setdefault("model", {})["checkpoint"] = str(plan.out_dir / "source" / "final")
    stage3.setdefault("mask", {}).setdefault("options", {})["stats"] = str(plan.out_dir / "stats.safetensors")
    return stage3


def check_demo_section(demo: dict[str, Any]) -> None:
    """The ``demo`` section's keys and stage 2's settings (positive integers)."""
    unknown = sorted(set(demo) - set(DEMO_KEYS))
    if unknown:
        raise VideomaskError(f"unknown demo key(s) {', '.join(unknown)} (allowed: {', '.join(DEMO_KEYS)})")
    steps = demo.get("source_steps", 100)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise VideomaskError(f"demo.source_steps must be a positive integer, got {steps!r}")
    fit = demo.get("fit", {})
    if not isinstance(fit, dict):
        raise VideomaskError(f"demo.fit must be a mapping of {', '.join(FIT_KEYS)}")
    for key, value in fit.items():
        if key not in FIT_KEYS:
            raise VideomaskError(f"unknown demo.fit key {key!r} (allowed: {', '.join(FIT_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VideomaskError(f"demo.fit.{key} must be a positive integer, got {value!r}")


def check_stages(plan: DemoPlan) -> None:
    """The demo section, both training stages' configs with the overrides, and their maskers' options,
    checked before stage 1."""
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.train import check_mask_section

    check_demo_section(plan.demo)
    stage1, overrides1 = stage1_config(plan)
    cfg1 = load_config_dict(stage1, overrides1, plan.out_dir)
    try:
        check_mask_section(cfg1)
    except VideomaskError as err:
        raise VideomaskError(f"demo.source_mask: {err}") from None
    check_mask_section(load_config_dict(stage3_config(plan), plan.overrides, plan.out_dir))


def pretrain_source(plan: DemoPlan) -> tuple[RunConfig, RunResult]:
    """Stage 1: pretrain on the source clips with the demo's source masker (tube) for ``demo.source_steps``."""
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.train import train

    stage1, overrides = stage1_config(plan)
    cfg1 = load_config(_write_stage(stage1, plan.out_dir / "stage1_source.yaml"), overrides)
    print(
        f"[1/4] pretraining a {cfg1.model.name} model on {plan.source} ({cfg1.train.steps} steps, "
        f"{cfg1.mask.name} masking)"
    )
    result1 = train(cfg1)
    if not result1.ok or result1.final_dir is None:
        raise VideomaskError(f"stage 1 stopped early: {result1.stopped}")
    return cfg1, result1


def fit_difference(plan: DemoPlan, cfg1: RunConfig, result1: RunResult) -> tuple[DifferenceStats, Path]:
    """Stage 2: difference statistics (source vs target) with stage 1's tubelet embedding as the embedder."""
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.data import ClipTransform, VideoDataset
    from videomask.difference import ModelEmbedder, fit_statistics
    from videomask.train import build_model_from_config

    trained = copy.deepcopy(cfg1)
    trained.model.checkpoint = str(result1.final_dir)
    model, _ = build_model_from_config(trained)
    tubelet = tuple(model.tubelet)
    fit = dict(plan.demo.get("fit", {}))
    transform = ClipTransform.for_eval(cfg1.data.size, patch=tubelet[1:])
    source, target = (
        VideoDataset.from_path(
            folder,
            num_frames=cfg1.data.num_frames,
            sampling_rate=cfg1.data.sampling_rate,
            sampling="random",
            num_sample=int(fit.get("clips_per_video", 2)),
            transform=transform,
            tubelet=tubelet,
            backend=cfg1.data.backend,
            seed=cfg1.run.seed,
        )
        for folder in (plan.source, plan.target)
    )
    embedder = ModelEmbedder(model, layer="patch", source=str(result1.final_dir))
    print(
        f"[2/4] fitting difference statistics (source prototypes, V={fit.get('num_words', 32)} words) "
        "on source vs target"
    )
    stats = fit_statistics(
        source,
        target,
        embedder,
        num_words=int(fit.get("num_words", 32)),
        num_anchors=int(fit.get("num_anchors", 4)),
        num_prototypes=int(fit.get("num_prototypes", 256)),
        tokens_per_clip=int(fit.get("tokens_per_clip", 256)),
        epochs=int(fit.get("epochs", 1)),
        seed=cfg1.run.seed,
        batch_size=cfg1.data.batch_size * cfg1.data.num_sample,
    )
    stats_path = plan.out_dir / "stats.safetensors"
    stats.save(stats_path)
    return stats, stats_path


def pretrain_target(plan: DemoPlan, result1: RunResult, stats_path: Path) -> tuple[RunConfig, RunResult]:
    """Stage 3: continue pretraining stage 1's model on the target clips with the configured (difference) masker."""
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.train import train

    stage3 = stage3_config(plan)
    stage3["model"]["checkpoint"] = str(result1.final_dir)
    stage3["mask"]["options"]["stats"] = str(stats_path)
    cfg3 = load_config(_write_stage(stage3, plan.out_dir / "stage3_target.yaml"), plan.overrides)
    print(f"[3/4] continuing pretraining on {plan.target} ({cfg3.train.steps} steps, {cfg3.mask.name} masking)")
    result3 = train(cfg3)
    if not result3.ok or result3.final_dir is None:
        raise VideomaskError(f"stage 3 stopped early: {result3.stopped}")
    return cfg3, result3


def draw_picture(plan: DemoPlan, cfg3: RunConfig, tubelet: tuple[int, ...]) -> tuple[Any, Any]:
    """Stage 4: the stage-3 masker's masks on the first target clip -> ``(masker, picture)``."""
    # heavy imports load when the command runs, so `videomask --help` stays fast
    import torch

    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.masking import build_masker, mode_option
    from videomask.viz import load_clip, show_masks

    clips = sorted(p for p in plan.target.rglob("*") if p.suffix.lower() in (".mp4", ".avi", ".mkv", ".webm", ".mov"))
    options = dict(
        cfg3.mask.options, ratio=cfg3.mask.ratio, tubelet=tubelet, **mode_option(cfg3.mask.name, cfg3.mask.mode)
    )
    masker = build_masker(cfg3.mask.name, **options)
    clip = load_clip(
        clips[0],
        num_frames=cfg3.data.num_frames,
        sampling_rate=cfg3.data.sampling_rate,
        size=cfg3.data.size,
        patch=tubelet[1:],
        backend=cfg3.data.backend,
    )
    with torch.no_grad():
        picture = show_masks(clip, masker, plan.out_dir / "masks.gif", seed=cfg3.run.seed)
    print(f"[4/4] mask picture of {clips[0].name}: {picture.gif} and {picture.png}")
    return masker, picture


def _shown(path: Any) -> str:
    """A path for the summary: relative to the current folder when inside it (as the README shows it)."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run(args: argparse.Namespace) -> int:
    """The four stages, then a summary of what each left in the run folder."""
    plan = read_plan(args)
    started = time.perf_counter()
    cfg1, result1 = pretrain_source(plan)
    stats, stats_path = fit_difference(plan, cfg1, result1)
    cfg3, result3 = pretrain_target(plan, result1, stats_path)
    masker, picture = draw_picture(plan, cfg3, tuple(stats.tubelet))

    target_share, source_share = stats.novelty_share(0.99)
    print()
    print(f"videomask demo done in {time.perf_counter() - started:.0f} s; run folder {_shown(plan.out_dir)}")
    print(f"  stage 1 (source, {cfg1.mask.name}):       {_loss_summary(result1.history)}")
    print(
        f"  statistics:                   {_shown(stats_path)} ({masker.scorer} scorer: {target_share:.1%} of target "
        f"tokens beyond the source's 99th percentile, {source_share:.0%} of source tokens)"
    )
    print(f"  stage 3 (target, {cfg3.mask.name}): {_loss_summary(result3.history)}")
    print(f"  checkpoint:                   {_shown(result3.final_dir)}")
    print(f"  metrics:                      {_shown(result3.out_dir / 'metrics.jsonl')}")
    print(
        f"  masks:                        {_shown(picture.gif)} (masked {picture.masked_share:.0%}, "
        f"anchors {picture.anchor_share or 0:.0%})"
    )
    return 0
