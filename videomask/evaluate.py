"""Frozen-feature evaluation: linear probe, kNN, self-supervised labels from footage, reconstruction error.

Three things live here, all on *frozen* encoders (``VideoMAE.features(video) -> [B, D]``):

* **Probes.** :func:`linear_probe` (multinomial logistic regression, full-batch L-BFGS on features
  standardised with the train statistics; the L2 weight decay is chosen by grouped cross-validation
  on the train split only) and :func:`knn_accuracy` (cosine similarity, majority vote of the ``k``
  nearest train samples, ties broken by summed similarity).
* **Labels that come from the footage itself**, not from a detector: *arrow of time* (a clip played
  forward = 0 or reversed = 1) and *playback speed* (frame stride 1 / 2 / 4 -> class 0 / 1 / 2).
  Windows are split **by time within each video** (:func:`time_split_windows`): train windows lie in
  the first ``train_share`` of the video's frames, test windows start ``gap`` frames after that, so
  no train and test window share a frame (windows of one split overlap only with a ``step`` below
  the window span).
* **Reconstruction error** of a masked autoencoder on anchor (e.g. detected person) patches versus
  the other patches, under one fixed random token mask shared by every clip and every model
  (:func:`fixed_random_mask`, :func:`reconstruction_error`).

:func:`load_encoder` turns a checkpoint spec into a model: a videomask run checkpoint (safetensors),
a Hugging Face ``save_pretrained`` directory, a VideoMAE ``.pth``, or a model size name (random init,
the baseline). User-labelled data: :func:`read_labelled_list` + :func:`list_samples` (``videomask probe``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402  (one definition, re-exported here)
from videomask.errors import VideomaskError
from videomask.patches import ClipGeometry

SPEED_STRIDES: tuple[int, ...] = (1, 2, 4)  # class k = playback at stride SPEED_STRIDES[k]
TASKS: dict[str, int] = {"arrow": 2, "speed": len(SPEED_STRIDES)}  # task -> number of classes
DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)


# ----------------------------------------------------------------------------------------------
# Labels from the footage: arrow of time and playback speed
# ----------------------------------------------------------------------------------------------


def task_span(task: str, num_frames: int, stride: int = 2) -> int:
    """Frames of video one window of ``task`` covers (the widest clip of the task)."""
    if task == "arrow":
        return (num_frames - 1) * stride + 1
    if task == "speed":
        return (num_frames - 1) * max(SPEED_STRIDES) + 1
    raise VideomaskError(f"unknown probe task {task!r} (choose from {', '.join(TASKS)})")


def arrow_indices(start: int, num_frames: int, stride: int, reverse: bool) -> list[int]:
    """Frame indices of an arrow-of-time sample: forward (label 0) or the same frames reversed (label 1)."""
    forward = [start + k * stride for k in range(num_frames)]
    return forward[::-1] if reverse else forward


def speed_indices(start: int, num_frames: int, speed_class: int) -> list[int]:
    """Frame indices of a playback-speed sample of class ``speed_class`` (stride ``SPEED_STRIDES[c]``).

    Every class is centred in the same window of ``task_span('speed')`` frames starting at ``start``,
    so the classes see the same moment of the video and differ only in speed.
    """
    stride = SPEED_STRIDES[speed_class]
    span = (num_frames - 1) * max(SPEED_STRIDES) + 1
    own = (num_frames - 1) * stride + 1
    first = start + (span - own) // 2
    return [first + k * stride for k in range(num_frames)]


def task_samples(task: str, start: int, num_frames: int, stride: int = 2) -> list[tuple[list[int], int]]:
    """All labelled samples one window gives: ``[(frame indices, label), ...]`` (one per class)."""
    if task == "arrow":
        return [(arrow_indices(start, num_frames, stride, reverse=bool(c)), c) for c in range(2)]
    if task == "speed":
        return [(speed_indices(start, num_frames, c), c) for c in range(len(SPEED_STRIDES))]
    raise VideomaskError(f"unknown probe task {task!r} (choose from {', '.join(TASKS)})")


def time_split_windows(
    num_video_frames: int,
    span: int,
    *,
    train_share: float = 0.7,
    gap: int = 8,
    max_windows: int | None = None,
    step: int | None = None,
) -> tuple[list[int], list[int]]:
    """Start frames of windows of ``span`` frames, split by time within one video.

    Rule: ``cut = floor(train_share * N)``. Train windows lie inside ``[0, cut)``, test windows inside
    ``[cut + gap, N)``, so no train window shares a frame with a test window and the nearest train and
    test frames are at least ``gap + 1`` apart. Inside each region a window starts every ``step``
    frames (default ``span``: back to back, no two windows share a frame; a smaller step gives more,
    overlapping windows *within* a split). ``max_windows`` keeps at most that many per split, evenly
    spread. A region too short for one window gives none.
    """
    if span < 1 or num_video_frames < 0:
        raise VideomaskError(f"bad window span {span} or frame count {num_video_frames}")
    if not 0.0 < train_share < 1.0:
        raise VideomaskError(f"train_share must be in (0, 1), got {train_share}")
    step = span if step is None else int(step)
    if step < 1:
        raise VideomaskError(f"window step must be >= 1, got {step}")
    cut = int(math.floor(train_share * num_video_frames))

    def pack(lo: int, hi: int) -> list[int]:
        starts = list(range(lo, hi - span + 1, step))
        if max_windows is not None and len(starts) > max_windows:
            pick = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
            starts = [starts[i] for i in pick]
        return starts

    return pack(0, cut), pack(cut + max(0, gap), num_video_frames)


@dataclass(frozen=True)
class ProbeSample:
    """One labelled clip: which video, which frames (in playback order), its label and split."""

    video: str  # path to open
    video_id: str
    indices: tuple[int, ...]
    label: int
    split: str  # "train" | "test"
    window: int  # id of the window it came from (samples of one window share frames)


def build_task_samples(
    videos: Sequence[tuple[str, str, int]],
    task: str,
    *,
    num_frames: int,
    stride: int = 2,
    train_share: float = 0.7,
    gap: int = 8,
    max_windows: int | None = None,
    step: int | None = None,
) -> list[ProbeSample]:
    """Labelled samples of ``task`` for ``videos = [(path, video_id, num_frames_in_video), ...]``
    (windows from :func:`time_split_windows`; every window gives one sample per class)."""
    span = task_span(task, num_frames, stride)
    samples: list[ProbeSample] = []
    window = 0
    for path, video_id, n in videos:
        train, test = time_split_windows(n, span, train_share=train_share, gap=gap, max_windows=max_windows, step=step)
        for split, starts in (("train", train), ("test", test)):
            for start in starts:
                for indices, label in task_samples(task, start, num_frames, stride):
                    samples.append(ProbeSample(path, video_id, tuple(indices), label, split, window))
                window += 1
    return samples


# ----------------------------------------------------------------------------------------------
# Decoding clips for evaluation (centre square crop, resize, uint8 kept until the model needs it)
# ----------------------------------------------------------------------------------------------


def centre_square(frames: np.ndarray, size: int) -> tuple[Tensor, ClipGeometry]:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[3, T, size, size]`` (centre square crop, bilinear resize) + geometry."""
    T, H, W, _ = frames.shape
    side = min(H, W)
    y0, x0 = (H - side) // 2, (W - side) // 2
    clip = torch.from_numpy(np.ascontiguousarray(frames[:, y0 : y0 + side, x0 : x0 + side]))  # [T, s, s, 3]
    clip = clip.permute(0, 3, 1, 2).float()  # [T, 3, s, s]
    if side != size:
        clip = F.interpolate(clip, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    clip = clip.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3).contiguous()  # [3, T, size, size]
    return clip, ClipGeometry(
        float(H), float(W), float(y0), float(x0), float(side), float(side), float(size), float(size)
    )


def normalise(clips: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """uint8 ``[B, 3, T, H, W]`` -> float ``[B, 3, T, H, W]`` normalised with ``mean`` / ``std``."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1)
    return (clips.float() / 255.0 - m) / s


@dataclass
class ClipSet:
    """Decoded evaluation clips, kept as uint8 so many fit in memory."""

    clips: Tensor  # uint8 [N, 3, T, S, S]
    labels: Tensor  # long [N]
    is_train: Tensor  # bool [N]
    windows: Tensor  # long [N], the window each clip came from
    video_ids: list[str]
    indices: list[tuple[int, ...]]
    geometry: list[ClipGeometry]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.numel())


def decode_samples(
    samples: Sequence[ProbeSample], size: int, *, backend: str = "pyav", progress: bool = False
) -> ClipSet:
    """Decode every sample (one open per video, one read per window) into a :class:`ClipSet`."""
    from videomask.video import open_video

    if not samples:
        raise VideomaskError("no evaluation windows: the videos are too short for the clip length and split")
    order: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        order.setdefault(s.video, []).append(i)
    clips: list[Tensor | None] = [None] * len(samples)
    geoms: list[ClipGeometry | None] = [None] * len(samples)
    items = order.items()
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="decode", unit="video")
    for path, ids in items:
        wanted = sorted({f for i in ids for f in samples[i].indices})
        with open_video(path, backend=backend) as reader:
            frames = reader.read(wanted)  # uint8 [F, H, W, 3]
        where = {f: k for k, f in enumerate(wanted)}
        for i in ids:
            sel = frames[[where[f] for f in samples[i].indices]]  # [T, H, W, 3] in the sample's order
            clips[i], geoms[i] = centre_square(sel, size)
    return ClipSet(
        clips=torch.stack(clips),  # type: ignore[arg-type]
        labels=torch.tensor([s.label for s in samples], dtype=torch.long),
        is_train=torch.tensor([s.split == "train" for s in samples], dtype=torch.bool),
        windows=torch.tensor([s.window for s in samples], dtype=torch.long),
        video_ids=[s.video_id for s in samples],
        indices=[s.indices for s in samples],
        geometry=geoms,  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------------------------
# Features and probes
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def extract_features(
    model: torch.nn.Module, clips: Tensor, *, batch_size: int = 16, device: str | torch.device = "cpu"
) -> Tensor:
    """Frozen pooled features: uint8 ``[N, 3, T, H, W]`` (or normalised float) -> float ``[N, D]``."""
    return _frozen_pass(model.features, model, clips, batch_size, device)  # [N, D]


def _frozen_pass(
    fn: Callable[[Tensor], Tensor], model: torch.nn.Module, clips: Tensor, batch_size: int, device: str | torch.device
) -> Tensor:
    """``fn`` (a method of ``model``, in eval mode) over ``clips`` in batches, normalised on the way; CPU float."""
    was_training = model.training
    model.eval()
    out = []
    for lo in range(0, clips.shape[0], batch_size):
        batch = clips[lo : lo + batch_size]
        video = normalise(batch) if batch.dtype == torch.uint8 else batch.float()  # [b, 3, T, H, W]
        out.append(fn(video.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def motion_energy_features(clips: Tensor, patch: int = 16) -> Tensor:
    """A model-free reference: mean absolute frame difference per patch and time step.

    uint8 ``[N, 3, T, H, W]`` -> float ``[N, (T-1) * (H/patch) * (W/patch)]``. It sees how much moves,
    not which way, so it can tell playback speeds apart but not the arrow of time.
    """
    v = clips.float() / 255.0  # [N, 3, T, H, W]
    diff = (v[:, :, 1:] - v[:, :, :-1]).abs().mean(dim=1)  # [N, T-1, H, W]
    pooled = F.avg_pool2d(diff, kernel_size=patch)  # [N, T-1, H/p, W/p]
    return pooled.flatten(1)


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float
    train_accuracy: float
    weight_decay: float
    num_train: int
    num_test: int
    num_classes: int


def _standardise(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor]:
    mean = train_x.mean(0, keepdim=True)
    std = train_x.std(0, keepdim=True).clamp_min(1e-6)
    return (train_x - mean) / std, (test_x - mean) / std


def _fit_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression, full-batch L-BFGS, loss = CE + weight_decay/2 * |W|^2.

    Starts from zero, or from ``init`` (a warm start from a nearby weight decay's solution).
    """
    x = x.double()
    w0, b0 = (
        init
        if init is not None
        else (torch.zeros(x.shape[1], num_classes, dtype=torch.float64), torch.zeros(num_classes, dtype=torch.float64))
    )
    weight = w0.clone().requires_grad_(True)  # [D, K]
    bias = b0.clone().requires_grad_(True)  # [K]
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


def _predict(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return (x.double() @ weight + bias).argmax(1)


def _group_folds(groups: Tensor, folds: int) -> list[Tensor]:
    """Split sample indices into ``folds`` folds by group (a group never spans two folds)."""
    uniq = torch.unique(groups)
    gen = torch.Generator().manual_seed(0)
    uniq = uniq[torch.randperm(uniq.numel(), generator=gen)]
    return [torch.isin(groups, chunk).nonzero().flatten() for chunk in torch.tensor_split(uniq, folds) if chunk.numel()]


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    groups: Tensor | None = None,
    folds: int = 3,
    max_iter: int = 100,
) -> ProbeResult:
    """Logistic-regression probe on standardised features; weight decay chosen by grouped CV on train.

    ``groups`` (``[N_train]``) keeps samples of one group (e.g. the classes cut from one window) in
    the same fold; without it every sample is its own group. With one weight decay, no CV runs.
    The chosen decay is refit on the whole train split and scored once on the test split.
    """
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise VideomaskError("the probe needs at least one train and one test sample")
    k = int(num_classes if num_classes is not None else int(max(train_y.max(), test_y.max())) + 1)
    tr, te = _standardise(train_x.float(), test_x.float())
    train_y, test_y = train_y.long(), test_y.long()
    decays = list(weight_decays)
    best = decays[0]
    if len(decays) > 1:
        g = groups if groups is not None else torch.arange(tr.shape[0])
        fold_ids = _group_folds(g, folds) if torch.unique(g).numel() >= folds else []
        if len(fold_ids) >= 2:
            order = sorted(range(len(decays)), key=lambda i: -decays[i])  # strong -> weak decay, warm-started
            scores = [0] * len(decays)
            for val in fold_ids:
                keep = torch.ones(tr.shape[0], dtype=torch.bool)
                keep[val] = False
                fx, vx = _standardise(train_x[keep].float(), train_x[val].float())
                start = None
                for i in order:
                    start = _fit_logistic(fx, train_y[keep], k, decays[i], max_iter, init=start)
                    scores[i] += int((_predict(vx, *start) == train_y[val]).sum())
            best = decays[int(np.argmax(scores))]  # ties -> the decay listed first
    w, b = _fit_logistic(tr, train_y, k, best, max_iter)
    return ProbeResult(
        accuracy=float((_predict(te, w, b) == test_y).float().mean()),
        train_accuracy=float((_predict(tr, w, b) == train_y).float().mean()),
        weight_decay=float(best),
        num_train=int(tr.shape[0]),
        num_test=int(te.shape[0]),
        num_classes=k,
    )


def knn_accuracy(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, k: int = 5, num_classes: int | None = None
) -> float:
    """Cosine kNN: each test sample takes the majority label of its ``k`` most similar train samples."""
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise VideomaskError("kNN needs at least one train and one test sample")
    if k < 1:
        raise VideomaskError(f"k must be >= 1, got {k}")
    c = int(num_classes if num_classes is not None else int(max(train_y.max(), test_y.max())) + 1)
    sim = F.normalize(test_x.float(), dim=1) @ F.normalize(train_x.float(), dim=1).T  # [N_test, N_train]
    kk = min(k, train_x.shape[0])
    top_sim, top_idx = sim.topk(kk, dim=1)  # [N_test, k]
    votes = F.one_hot(train_y.long()[top_idx], c).float()  # [N_test, k, C]
    score = votes.sum(1) + 1e-3 * (votes * top_sim.unsqueeze(-1)).sum(1)  # count, ties -> summed similarity
    return float((score.argmax(1) == test_y.long()).float().mean())


def probe_clipset(
    features: Tensor,
    clips: ClipSet,
    *,
    k: int = 5,
    num_classes: int | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
) -> dict[str, float]:
    """Linear-probe and kNN accuracy of ``features [N, D]`` on a :class:`ClipSet`'s train/test split.

    The weight decay's cross-validation folds group train clips by video (windows of one video may
    overlap), or by window when there are fewer than 3 videos.
    """
    tr, te = clips.is_train, ~clips.is_train
    video_index = {v: i for i, v in enumerate(dict.fromkeys(clips.video_ids))}
    by_video = torch.tensor([video_index[v] for v in clips.video_ids], dtype=torch.long)
    groups = by_video[tr] if torch.unique(by_video[tr]).numel() >= 3 else clips.windows[tr]
    lin = linear_probe(
        features[tr],
        clips.labels[tr],
        features[te],
        clips.labels[te],
        num_classes=num_classes,
        weight_decays=weight_decays,
        groups=groups,
    )
    knn = knn_accuracy(features[tr], clips.labels[tr], features[te], clips.labels[te], k=k, num_classes=num_classes)
    return {
        "linear": lin.accuracy,
        "knn": knn,
        "linear_train": lin.train_accuracy,
        "weight_decay": lin.weight_decay,
        "num_train": lin.num_train,
        "num_test": lin.num_test,
    }


# ----------------------------------------------------------------------------------------------
# Reconstruction error on anchor patches under one fixed random mask
# ----------------------------------------------------------------------------------------------


def fixed_random_mask(num_tokens: int, ratio: float, seed: int = 1234) -> Tensor:
    """One random token mask ``[L]`` (True = masked, ``int(ratio * L)`` masked), the same for a given seed."""
    count = int(ratio * num_tokens)
    if not 0 < count < num_tokens:
        raise VideomaskError(
            f"mask ratio {ratio} masks {count} of {num_tokens} tokens; need at least one masked and one visible"
        )
    order = torch.randperm(num_tokens, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(num_tokens, dtype=torch.bool)
    mask[order[:count]] = True
    return mask


@torch.no_grad()
def reconstruction_error(
    model: torch.nn.Module,
    clips: Tensor,
    anchors: Tensor,
    mask: Tensor,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Mean per-token reconstruction loss on masked anchor tokens, on the other masked tokens, and overall.

    ``clips`` uint8 ``[N, 3, T, H, W]``; ``anchors`` bool ``[N, L]``; ``mask`` bool ``[L]`` applied to
    every clip. Uses ``VideoMAE.forward(video, mask).token_loss [B, L_mask]`` (masked tokens listed in
    increasing token index). Also returns how many masked anchor / other tokens were scored.
    """
    was_training = model.training
    model.eval()
    sums = {"anchor": 0.0, "other": 0.0}
    counts = {"anchor": 0, "other": 0}
    for lo in range(0, clips.shape[0], batch_size):
        video = normalise(clips[lo : lo + batch_size]).to(device)  # [b, 3, T, H, W]
        b = video.shape[0]
        m = mask.to(device).unsqueeze(0).expand(b, -1).contiguous()  # [b, L]
        out = model(video, m, decoder_mask=m)  # reconstruct every masked token (no decoder masking)
        token_loss = out.token_loss.float().cpu()  # [b, L_mask]
        on_anchor = anchors[lo : lo + batch_size][m.cpu()].view(b, -1)  # [b, L_mask], lines up with token_loss
        sums["anchor"] += float(token_loss[on_anchor].sum())
        sums["other"] += float(token_loss[~on_anchor].sum())
        counts["anchor"] += int(on_anchor.sum())
        counts["other"] += int((~on_anchor).sum())
    model.train(was_training)
    total = counts["anchor"] + counts["other"]
    return {
        "anchor": sums["anchor"] / counts["anchor"] if counts["anchor"] else float("nan"),
        "other": sums["other"] / counts["other"] if counts["other"] else float("nan"),
        "all": (sums["anchor"] + sums["other"]) / total if total else float("nan"),
        "anchor_tokens": counts["anchor"],
        "other_tokens": counts["other"],
    }


# ----------------------------------------------------------------------------------------------
# Checkpoints -> frozen encoders
# ----------------------------------------------------------------------------------------------


def load_encoder(spec: str, *, name: str = "tiny", overrides: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """A :class:`~videomask.model.VideoMAE` from ``spec``, in eval mode (the same rules as ``model.checkpoint``).

    ``spec`` is one of: a model size name (``tiny``, ``small``, ``base``; random init with ``seed``, the
    baseline) or ``""`` (random init of ``name``); a Hugging Face ``save_pretrained`` folder; a videomask
    checkpoint (``model.safetensors`` or a folder holding one, e.g. a run's ``final/``; its stored model
    config is used); a VideoMAE ``.pth`` (weights-only load, architecture ``name`` + ``overrides``).
    """
    from videomask.checkpoint import load_model
    from videomask.model import MODEL_SIZES, build_model

    overrides = dict(overrides or {})
    if not spec or spec in MODEL_SIZES:  # random init: the baseline
        torch.manual_seed(seed)
        return build_model(spec or name, **overrides).eval()
    if not Path(spec).exists():
        raise VideomaskError(
            f"checkpoint {spec!r} is neither an existing file/folder nor a model size ({', '.join(MODEL_SIZES)})"
        )
    torch.manual_seed(seed)  # layers a checkpoint does not hold start from the same init as before
    model, _ = load_model(spec, name=name, what="checkpoint", **overrides)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Labelled list files (the user's own labels) for `videomask probe --data list.csv`
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListRow:
    path: str  # resolved path to open
    video_id: str  # the path as written in the list
    label: int
    split: str | None


def read_labelled_list(path: str | Path, split_column: str | None = None) -> tuple[list[ListRow], list[str]]:
    """Rows of a labelled list file (any format :func:`videomask.data.read_video_list` reads) and the class names.

    ``split_column`` names a header column of a CSV / TSV list holding ``train`` or ``test`` (``val`` counts
    as test) for each row. Every row needs a label.
    """
    from videomask.data import read_video_list

    items, classes = read_video_list(path)
    if any(item.label < 0 for item in items):
        missing = next(item.video_id for item in items if item.label < 0)
        raise VideomaskError(f"every row of {path} needs a label for probing (first without one: {missing})")
    names = classes or [str(c) for c in range(max(item.label for item in items) + 1)]
    splits: list[str | None] = [None] * len(items)
    if split_column:
        text = Path(path).read_text(encoding="utf-8-sig")
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        delimiter = "\t" if "\t" in lines[0] else ","
        rows = list(csv.reader(lines, delimiter=delimiter))
        header = [c.strip().lower() for c in rows[0]]
        if split_column.lower() not in header:
            raise VideomaskError(
                f"split column {split_column!r} is not in the header of {path} (columns: {', '.join(header)})"
            )
        col = header.index(split_column.lower())
        body = rows[1:]
        if len(body) != len(items):
            raise VideomaskError(f"{path}: cannot line up the split column with the rows")
        for k, row in enumerate(body):
            value = row[col].strip().lower()
            value = "test" if value in ("val", "valid", "validation") else value
            if value not in ("train", "test"):
                raise VideomaskError(f"{path}: row {k + 1}: split must be train or test (or val), got {row[col]!r}")
            splits[k] = value
    return [ListRow(it.path, it.video_id, it.label, sp) for it, sp in zip(items, splits)], names


def stratified_split(labels: Sequence[int], train_share: float = 0.7, seed: int = 0) -> list[str]:
    """The default split rule: within each class, a seeded shuffle; the first ``ceil(train_share * n)``
    rows are train, the rest test (a class with >= 2 rows always has one of each)."""
    gen = np.random.default_rng(seed)
    split = ["train"] * len(labels)
    for c in sorted(set(labels)):
        rows = [i for i, y in enumerate(labels) if y == c]
        gen.shuffle(rows)
        n_train = min(len(rows) - 1, math.ceil(train_share * len(rows))) if len(rows) > 1 else 1
        for i in rows[n_train:]:
            split[i] = "test"
    return split


def list_samples(
    rows: Sequence[ListRow],
    *,
    num_frames: int,
    sampling_rate: int,
    train_share: float = 0.7,
    seed: int = 0,
    backend: str = "pyav",
) -> list[ProbeSample]:
    """One centre clip per row (short videos loop); the split from the list, or :func:`stratified_split`."""
    from videomask.data import sample_indices
    from videomask.video import open_video

    labels = [r.label for r in rows]
    given = [r.split for r in rows]
    splits = list(given) if all(s is not None for s in given) else stratified_split(labels, train_share, seed)
    samples = []
    for k, (row, split) in enumerate(zip(rows, splits)):
        with open_video(row.path, backend=backend) as reader:
            n = int(reader.meta.num_frames)
        indices = sample_indices(n, num_frames, sampling_rate, mode="center", short="loop")
        samples.append(ProbeSample(row.path, row.video_id, tuple(indices), row.label, split, k))
    return samples


# ----------------------------------------------------------------------------------------------
# Probes that keep time: token features, a temporal linear probe and an attentive probe
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def extract_tokens(
    model: torch.nn.Module, clips: Tensor, *, batch_size: int = 16, device: str | torch.device = "cpu"
) -> Tensor:
    """Frozen encoder tokens of every clip: uint8 ``[N, 3, T, H, W]`` -> float ``[N, L, D]`` (token order
    ``i_t*(h*w) + i_h*w + i_w``; the encoder output before any pooling)."""
    return _frozen_pass(model.encode, model, clips, batch_size, device)  # [N, L, D]


def mean_pool(tokens: Tensor) -> Tensor:
    """``[N, L, D]`` -> ``[N, D]``: the mean over all tokens (throws away where and when)."""
    return tokens.mean(dim=1)


def temporal_pool(tokens: Tensor, time_slots: int) -> Tensor:
    """``[N, L, D]`` -> ``[N, time_slots * D]``: tokens averaged per time slot, the slots concatenated in
    time order (the features of the temporal linear probe; ``L`` must be a multiple of ``time_slots``)."""
    n, length, dim = tokens.shape
    if time_slots < 1 or length % time_slots:
        raise VideomaskError(f"{length} tokens do not split into {time_slots} time slots")
    return tokens.view(n, time_slots, length // time_slots, dim).mean(dim=2).flatten(1)  # [N, t*D]


class AttentiveProbe(torch.nn.Module):
    """The frozen-evaluation head of V-JEPA / VideoMAE V2: one learned query cross-attends over the frozen
    tokens (multi-head, a fixed sine-cosine table of the token index added to keys and values, so where
    and when a token sits is visible), then a residual MLP and a linear classifier.

    ``[B, L, D]`` tokens -> ``[B, num_classes]`` logits.
    """

    def __init__(self, dim: int, num_classes: int, num_tokens: int, *, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        from videomask.model import sinusoid_table

        if width % heads:
            raise VideomaskError(f"attentive probe width {width} is not a multiple of its {heads} heads")
        self.heads = heads
        self.norm = torch.nn.LayerNorm(dim)
        self.kv = torch.nn.Linear(dim, 2 * width)
        self.register_buffer("pos", sinusoid_table(num_tokens, width), persistent=False)  # [L, width]
        self.query = torch.nn.Parameter(torch.randn(heads, width // heads) * 0.02)  # [h, d]
        self.proj = torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(
            torch.nn.LayerNorm(width),
            torch.nn.Linear(width, 2 * width),
            torch.nn.GELU(),
            torch.nn.Linear(2 * width, width),
        )
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, num_classes))

    def forward(self, tokens: Tensor) -> Tensor:
        b, length, _ = tokens.shape
        k, v = self.kv(self.norm(tokens)).chunk(2, dim=-1)  # [B, L, width] each
        k, v = k + self.pos[:length], v + self.pos[:length]
        k = k.view(b, length, self.heads, -1)  # [B, L, h, d]
        v = v.view(b, length, self.heads, -1)
        scores = torch.einsum("hd,blhd->bhl", self.query, k) / math.sqrt(k.shape[-1])  # [B, h, L]
        pooled = torch.einsum("bhl,blhd->bhd", scores.softmax(dim=-1), v).reshape(b, -1)  # [B, width]
        x = self.proj(pooled)
        x = x + self.mlp(x)
        return self.head(x)  # [B, K]


@dataclass(frozen=True)
class AttentiveSettings:
    """Training of the attentive probe: AdamW (full batch, or seeded minibatches of ``batch_size``);
    ``weight_decays`` and the number of steps (a multiple of ``eval_every`` up to ``steps``) are chosen on
    a grouped hold-out part of the train split."""

    steps: int = 200
    eval_every: int = 25
    lr: float = 3e-3
    weight_decays: tuple[float, ...] = (1e-3, 1e-1)
    width: int = 64
    heads: int = 4
    holdout: float = 0.3  # share of train groups held out for the choice
    pca_dim: int = 48  # tokens -> this many principal components of the train tokens first (0 = keep all)
    seed: int = 0
    device: str = "cpu"  # where the probe trains (the tokens are moved there)
    batch_size: int = 0  # samples per step (seeded random minibatches); 0 = the whole train set every step


def _train_attentive(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    weight_decay: float,
    s: AttentiveSettings,
    steps: int,
    val: tuple[Tensor, Tensor] | None = None,
) -> tuple[AttentiveProbe, list[tuple[int, float]]]:
    """Fit one probe; with ``val``, its accuracy every ``eval_every`` steps is returned as ``[(step, acc)]``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        probe = AttentiveProbe(x.shape[-1], num_classes, x.shape[1], width=s.width, heads=s.heads)
    probe = probe.to(s.device)
    x, y = x.to(s.device), y.to(s.device)
    val = None if val is None else (val[0].to(s.device), val[1].to(s.device))
    opt = torch.optim.AdamW(probe.parameters(), lr=s.lr, weight_decay=weight_decay)
    curve: list[tuple[int, float]] = []
    gen = torch.Generator().manual_seed(s.seed + 1)
    for step in range(1, steps + 1):
        probe.train()
        opt.zero_grad()
        if 0 < s.batch_size < x.shape[0]:
            pick = torch.randperm(x.shape[0], generator=gen)[: s.batch_size].to(x.device)
            F.cross_entropy(probe(x[pick]), y[pick]).backward()
        else:
            F.cross_entropy(probe(x), y).backward()
        opt.step()
        if val is not None and step % s.eval_every == 0:
            probe.eval()
            with torch.no_grad():
                curve.append((step, float((probe(val[0]).argmax(1) == val[1]).float().mean())))
    probe.eval()
    return probe, curve


def attentive_probe(
    train_tokens: Tensor,
    train_y: Tensor,
    test_tokens: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    groups: Tensor | None = None,
    settings: AttentiveSettings = AttentiveSettings(),
) -> ProbeResult:
    """Attentive probe (:class:`AttentiveProbe`) on frozen tokens ``[N, L, D]``; returns test accuracy.

    Tokens are standardised per channel with the train statistics and, with ``settings.pca_dim``, reduced
    to that many principal components of the train tokens (a fixed linear map; it makes the CPU probe
    several times cheaper). The weight decay and the number of steps are chosen on a hold-out part of the
    *train* split (whole ``groups`` held out, e.g. videos); the choice is then refit on the whole train split
    and scored once on the test split.
    """
    if train_tokens.shape[0] == 0 or test_tokens.shape[0] == 0:
        raise VideomaskError("the probe needs at least one train and one test sample")
    k = int(num_classes if num_classes is not None else int(max(train_y.max(), test_y.max())) + 1)
    mean = train_tokens.mean(dim=(0, 1), keepdim=True)
    std = train_tokens.std(dim=(0, 1), keepdim=True).clamp_min(1e-6)
    tr, te = (train_tokens.float() - mean) / std, (test_tokens.float() - mean) / std
    if 0 < settings.pca_dim < tr.shape[-1]:
        flat = tr.reshape(-1, tr.shape[-1])  # [N*L, D]
        pick = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(settings.seed))[:20000]
        _, _, vh = torch.linalg.svd(flat[pick] - flat[pick].mean(0), full_matrices=False)  # vh [D, D]
        basis = vh[: settings.pca_dim].T  # [D, pca_dim]
        tr, te = tr @ basis, te @ basis  # [N, L, pca_dim]
    train_y, test_y = train_y.long(), test_y.long()
    g = groups if groups is not None else torch.arange(tr.shape[0])
    uniq = torch.unique(g)
    best = (settings.weight_decays[0], settings.steps)
    if uniq.numel() >= 3 and (len(settings.weight_decays) > 1 or settings.eval_every < settings.steps):
        gen = torch.Generator().manual_seed(settings.seed)
        held = uniq[torch.randperm(uniq.numel(), generator=gen)[: max(1, int(round(settings.holdout * uniq.numel())))]]
        val = torch.isin(g, held)
        scores = []
        for wd in settings.weight_decays:
            _, curve = _train_attentive(
                tr[~val], train_y[~val], k, wd, settings, settings.steps, (tr[val], train_y[val])
            )
            scores += [(acc, -step, -wd) for step, acc in curve]  # ties -> fewer steps, weaker decay
        acc, neg_step, neg_wd = max(scores)
        best = (-neg_wd, -neg_step)
    probe, _ = _train_attentive(tr, train_y, k, best[0], settings, best[1])
    dev = settings.device
    with torch.no_grad():
        test_acc = float((probe(te.to(dev)).argmax(1).cpu() == test_y).float().mean())
        train_acc = float((probe(tr.to(dev)).argmax(1).cpu() == train_y).float().mean())
    return ProbeResult(test_acc, train_acc, float(best[0]), int(tr.shape[0]), int(te.shape[0]), k)


PROBES: tuple[str, ...] = ("linear", "knn", "temporal", "attentive")  # mean-linear, mean-kNN, time slots, attentive


def probe_tokens(
    tokens: Tensor,
    labels: Tensor,
    is_train: Tensor,
    groups: Tensor,
    *,
    time_slots: int,
    num_classes: int,
    probes: Sequence[str] = PROBES,
    k: int = 5,
    attentive: AttentiveSettings = AttentiveSettings(),
) -> dict[str, float]:
    """Test accuracy of each probe in ``probes`` on frozen ``tokens [N, L, D]`` (split ``is_train [N]``;
    ``groups [N]`` keep related samples, e.g. one video's clips, in one fold of every hyper-parameter choice)."""
    tr, te = is_train, ~is_train
    out: dict[str, float] = {}
    mean = mean_pool(tokens)  # [N, D]
    for name in probes:
        if name == "linear":
            out[name] = linear_probe(
                mean[tr], labels[tr], mean[te], labels[te], num_classes=num_classes, groups=groups[tr]
            ).accuracy
        elif name == "knn":
            out[name] = knn_accuracy(mean[tr], labels[tr], mean[te], labels[te], k=k, num_classes=num_classes)
        elif name == "temporal":
            feats = temporal_pool(tokens, time_slots)  # [N, t*D]
            out[name] = linear_probe(
                feats[tr], labels[tr], feats[te], labels[te], num_classes=num_classes, groups=groups[tr]
            ).accuracy
        elif name == "attentive":
            out[name] = attentive_probe(
                tokens[tr],
                labels[tr],
                tokens[te],
                labels[te],
                num_classes=num_classes,
                groups=groups[tr],
                settings=attentive,
            ).accuracy
        else:
            raise VideomaskError(f"unknown probe {name!r} (choose from {', '.join(PROBES)})")
    return out


# ----------------------------------------------------------------------------------------------
# Tasks with known answers on the known-difference footage (labels from its generator)
# ----------------------------------------------------------------------------------------------

OBJECT_TASKS: dict[str, int] = {"direction": 8, "obj_speed": 3, "position": 9}  # task -> classes


def position_cell(box: Sequence[float], geometry: ClipGeometry, cells: int = 3) -> int:
    """The ``cells x cells`` grid cell (row-major, 0 = top left) of a box centre, in the evaluation crop
    described by ``geometry`` (centres outside the crop count in the nearest border cell)."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    u = (cx - geometry.x0) / geometry.crop_w
    v = (cy - geometry.y0) / geometry.crop_h
    col = min(cells - 1, max(0, int(math.floor(u * cells))))
    row = min(cells - 1, max(0, int(math.floor(v * cells))))
    return row * cells + col


def object_clip_starts(clip_frames: int, num_frames: int, stride: int, windows: int = 2) -> list[int]:
    """Start frames of ``windows`` evaluation clips (``num_frames`` at ``stride``) spread over a clip of
    ``clip_frames`` frames: the first and the last possible start, and evenly between."""
    span = (num_frames - 1) * stride + 1
    if span > clip_frames:
        raise VideomaskError(
            f"{num_frames} frames at stride {stride} need {span} frames; the footage clips have {clip_frames}"
        )
    last = clip_frames - span
    starts = sorted({int(round(x)) for x in np.linspace(0, last, max(1, windows))})
    return starts


def object_task_labels(label: dict, indices: Sequence[int], geometry: ClipGeometry) -> dict[str, int]:
    """The known answers of one evaluation clip of a known-difference target clip (a ``labels.json`` entry):
    motion direction (0..7, from the generator), speed class, and the 3x3 cell of the object's centre at
    the clip's last frame (from the generator's box of that frame, mapped into the evaluation crop)."""
    return {
        "direction": int(label["direction"]),
        "obj_speed": int(label["speed_class"]),
        "position": position_cell(label["boxes"][int(indices[-1])], geometry),
    }
