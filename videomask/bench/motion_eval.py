"""The known-answer bench's footage, evaluation clips and the evaluation of one frozen encoder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from videomask.bench.footage import build_known_difference
from videomask.bench.motion_config import (
    OBJECT_MOTION_TASKS,
    TASK_CLASSES,
    MotionBenchConfig,
    attentive_settings,
)
from videomask.bench.motion_energy import motion_energy_features
from videomask.bench.object_tasks import object_clip_starts, object_task_labels
from videomask.bench.reconstruction import fixed_random_mask, reconstruction_error
from videomask.detect import BoxCache
from videomask.errors import VideomaskError
from videomask.eval import (
    ClipSet,
    ProbeSample,
    decode_samples,
    extract_tokens,
    knn_accuracy,
    linear_probe,
    probe_tokens,
    task_samples,
    task_span,
)
from videomask.patches import grid_for, rasterise_boxes


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


def _samples_to_set(samples: list[ProbeSample], size: int, backend: str) -> ClipSet:
    return decode_samples(samples, size, backend=backend)


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
        starts = object_clip_starts(clip_frames, num_frames, sampling_rate, cfg.eval.windows)
        samples = [
            ProbeSample(
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
        objects = json.loads((foot.root / "labels.json").read_text())["summary"]["objects"]
        for s, geom in zip(samples, cs.geometry):
            for t, y in object_task_labels(foot.labels[s.video_id], s.indices, geom, objects).items():
                labels[t].append(y)
        sets["objects"] = ProbeSet(
            cs.clips, {t: torch.tensor(v) for t, v in labels.items() if t in tasks}, cs.is_train, cs.windows
        )
    for task in ("arrow", "speed"):
        if task not in tasks:
            continue
        span = task_span(task, num_frames, cfg.eval.arrow_stride)
        if span > clip_frames:
            raise VideomaskError(f"task {task} needs {span} frames per window; the footage clips have {clip_frames}")
        starts = (
            object_clip_starts(clip_frames, num_frames, cfg.eval.arrow_stride, cfg.eval.arrow_windows)
            if task == "arrow"
            else [0]
        )
        samples = [
            ProbeSample(str(foot.target / n), n, tuple(idx), label, split[n], vid_index[n])
            for n in foot.labels
            for s in starts
            for idx, label in task_samples(task, s, num_frames, cfg.eval.arrow_stride)
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

    idx = tuple(k * sampling_rate for k in range(num_frames))
    samples = [ProbeSample(str(foot.target / n), n, idx, -1, "test", i) for i, n in enumerate(foot.test)]
    cs = _samples_to_set(samples, size, backend)
    cache = BoxCache.load(foot.boxes_truth)
    anchors = torch.stack(
        [rasterise_boxes(cache.boxes(s.video_id, list(s.indices)), g, tubelet) for s, g in zip(samples, cs.geometry)]
    )
    grid = grid_for((num_frames, size, size), tubelet)
    return ReconData(cs.clips, anchors, fixed_random_mask(grid.num_tokens, cfg.eval.mask_ratio, cfg.eval.mask_seed))


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
            feats = motion_energy_features(ps.clips, patch)  # [N, (T-1)*h*w]
            tokens = feats.view(feats.shape[0], -1, 1)  # [N, (T-1)*h*w, 1]
        else:
            tokens = extract_tokens(model.to(e.device), ps.clips, batch_size=e.batch_size, device=e.device)  # [N, L, D]
        for task, labels in ps.labels.items():
            if model is None:
                probes = [p for p in e.probes if p in ("linear", "knn")]
                flat = tokens.flatten(1)  # [N, F]: the linear probe sees every (time, patch) cell
                tr = ps.is_train
                if "linear" in probes:
                    out[f"{task}_linear"] = linear_probe(
                        flat[tr],
                        labels[tr],
                        flat[~tr],
                        labels[~tr],
                        num_classes=TASK_CLASSES[task],
                        groups=ps.groups[tr],
                    ).accuracy
                if "knn" in probes:
                    out[f"{task}_knn"] = knn_accuracy(
                        flat[tr], labels[tr], flat[~tr], labels[~tr], k=e.knn_k, num_classes=TASK_CLASSES[task]
                    )
                continue
            res = probe_tokens(
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
        rec = reconstruction_error(
            model.to(e.device), recon.clips, recon.anchors, recon.mask, batch_size=e.batch_size, device=e.device
        )
        out["recon_object"], out["recon_other"] = rec["anchor"], rec["other"]
    return out
