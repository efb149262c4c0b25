"""Fitting difference statistics from source and target clips (:func:`fit_statistics`, :func:`fit_paths`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from videomask.data import ClipTransform, VideoDataset, collate_clips
from videomask.difference.calibration import HIST_BINS, QUANTILE_LEVELS, histogram, quantiles
from videomask.difference.embedders import build_embedder
from videomask.difference.kmeans import StreamingKMeans
from videomask.difference.scores import (
    TFICF_FORMULA,
    enriched_words,
    enrichment_scores,
    prototype_distance,
    tficf_scores,
)
from videomask.difference.statistics import DifferenceStats
from videomask.errors import VideomaskError
from videomask.patches import as_tubelet

__all__ = ["fit_statistics", "fit_paths"]


def _batches(data: Any, batch_size: int, num_workers: int) -> Iterable[Any]:
    """Re-iterable batches from a DataLoader, a map-style dataset, or any re-iterable of batches."""

    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Tensor):  # one batch of videos [B, C, T, H, W]
        return [data]
    if isinstance(data, Dataset) or (
        hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (list, tuple))
    ):
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_clips)
    if isinstance(data, Iterator):
        raise VideomaskError(
            "fit_statistics needs a re-iterable source (a dataset, DataLoader or list), not a one-shot iterator"
        )
    return data


def _video_of(batch: Any) -> Tensor:
    video = batch.get("video") if isinstance(batch, Mapping) else batch
    if not isinstance(video, Tensor) or video.dim() != 5:
        raise VideomaskError("batches must be video tensors [B, C, T, H, W] or dicts with a 'video' tensor")
    return video


def _limited(batches: Iterable[Any], max_clips: int | None) -> Iterator[tuple[Tensor, list | None]]:
    """``(video, video ids or None)`` from ``batches``, stopping after ``max_clips`` clips (the last batch is cut)."""
    seen = 0
    for batch in batches:
        video = _video_of(batch)
        ids = list(batch["video_id"]) if isinstance(batch, Mapping) and "video_id" in batch else None
        if max_clips is not None:
            if seen >= max_clips:
                return
            video = video[: max_clips - seen]
            ids = ids[: video.shape[0]] if ids is not None else None
        seen += video.shape[0]
        out = [(video, ids)]
        del batch, video, ids
        yield out.pop()  # suspended here, the generator holds no reference to the batch it gave


class _HoldOut:
    """Which source clips calibrate the distance (and stay out of the prototypes): every ``every``-th *video*
    in order of first appearance when the batches name their videos, else every ``every``-th clip."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.order: dict[str, int] = {}
        self.clips = 0

    def __call__(self, ids: list | None, batch: int) -> Tensor:
        if ids is None:
            out = (torch.arange(self.clips, self.clips + batch) % self.every) == self.every - 1
        else:
            out = torch.tensor(
                [self.order.setdefault(str(v), len(self.order)) % self.every == self.every - 1 for v in ids]
            )
        self.clips += batch
        return out  # [B] bool


@torch.no_grad()
def _embed(embedder: Any, video: Tensor, device: torch.device) -> Tensor:
    """Normalised embeddings ``[B, L, D]`` on ``device``."""
    emb = embedder(video.to(device))
    if emb.dim() != 3:
        raise VideomaskError(f"embedder must return [B, L, D], got shape {tuple(emb.shape)}")
    return F.normalize(emb.float(), dim=-1)


def _fit_words_and_prototypes(
    src: Any,
    tgt: Any,
    embedder: Any,
    device: torch.device,
    num_words: int,
    num_prototypes: int,
    holdout_every: int,
    tokens_per_clip: int,
    max_clips: int | None,
    epochs: int,
    init_tokens: int,
    seed: int,
    progress: bool,
) -> tuple[Tensor, Tensor, bool, tuple | None]:
    """Pass 1 of :func:`fit_statistics` -> ``(word centroids [V, D], prototypes [M, D], calibrated, clip size)``.

    The vocabulary sees source and target batches in turn (so the first chunk holds both); the source
    prototypes see source tokens only, without the calibration clips (``calibrated``: some were held out;
    when none could be, the prototypes are refitted on every source clip).
    """

    g = torch.Generator().manual_seed(seed)
    words = StreamingKMeans(num_words, init_tokens=init_tokens, seed=seed)
    protos = StreamingKMeans(num_prototypes, init_tokens=max(init_tokens, 4 * num_prototypes), seed=seed + 1)
    bar = tqdm(desc="fit vocabulary and prototypes", unit="clip", disable=not progress)
    clip_size: tuple | None = None
    held_any = False
    for _ in range(max(1, int(epochs))):
        hold = _HoldOut(holdout_every)
        # source and target batches in turn; each batch is dropped before the next is loaded (zip_longest
        # would keep the previous pair alive while it loads the next: two batches more at the peak)
        streams = [(True, iter(_limited(src, max_clips))), (False, iter(_limited(tgt, max_clips)))]
        while streams:
            for is_source, stream in list(streams):
                item = next(stream, None)
                if item is None:
                    streams.remove((is_source, stream))
                    continue
                video, ids = item
                del item
                emb = _embed(embedder, video, device)  # [B, L, D]
                B, L, D = emb.shape
                n = min(tokens_per_clip, L)
                pick = torch.rand(B, L, generator=g).argsort(dim=1)[:, :n].to(device)  # [B, n]
                sample = emb.gather(1, pick[..., None].expand(B, n, D))  # [B, n, D]
                words.partial_fit(sample.reshape(B * n, D))
                if is_source:
                    held = hold(ids, B)  # [B]
                    held_any = held_any or bool(held.any())
                    keep = ~held
                    if keep.any():
                        protos.partial_fit(sample[keep.to(device)].reshape(-1, D))
                clip_size = clip_size or tuple(video.shape[2:])
                bar.update(B)
                del video, emb, pick, sample  # drop this batch before the next is loaded
    bar.close()
    centroids = words.finalize().to(device)  # [V, D]
    calibrated = held_any and (protos.centroids is not None or protos._buffered > 0)
    if not calibrated:  # too few source clips to hold any out: fit the prototypes on all of them
        protos = StreamingKMeans(num_prototypes, init_tokens=max(init_tokens, 4 * num_prototypes), seed=seed + 1)
        g2 = torch.Generator().manual_seed(seed + 2)
        for video, _ in _limited(src, max_clips):
            emb = _embed(embedder, video, device)
            B, L, D = emb.shape
            pick = torch.rand(B, L, generator=g2).argsort(dim=1)[:, : min(tokens_per_clip, L)].to(device)
            protos.partial_fit(emb.gather(1, pick[..., None].expand(B, pick.shape[1], D)).reshape(-1, D))
            del video, emb, pick
    prototypes = protos.finalize(allow_fewer=True).to(device)  # [M, D] (M <= num_prototypes)
    return centroids, prototypes, calibrated, clip_size


def _count_tokens(
    name: str,
    data: Any,
    embedder: Any,
    device: torch.device,
    centroids: Tensor,
    prototypes: Tensor,
    holdout_every: int | None,
    max_clips: int | None,
    progress: bool,
) -> tuple[Tensor, int, Tensor]:
    """Pass 2 of :func:`fit_statistics` over one set -> ``(word counts [V], clips, distance histogram)``.

    Every token's visual word is counted; its distance to the source prototypes goes into the histogram
    (``holdout_every``: only the held-out calibration clips' distances, for the source set).
    """

    c = torch.zeros(centroids.shape[0], dtype=torch.long, device=device)
    hist = torch.zeros(HIST_BINS, dtype=torch.long)
    n_clips = 0
    hold = _HoldOut(holdout_every) if holdout_every is not None else None
    counting = tqdm(desc=f"count {name} tokens", unit="batch", disable=not progress)
    for video, ids in _limited(data, max_clips):  # (tqdm around it would hold the last batch while loading)
        emb = _embed(embedder, video, device)  # [B, L, D]
        word = StreamingKMeans.assign(emb.reshape(-1, emb.shape[-1]), centroids)  # [B*L]
        c += torch.bincount(word, minlength=centroids.shape[0])
        dist = prototype_distance(emb, prototypes)  # [B, L]
        if hold is not None:
            dist = dist[hold(ids, video.shape[0]).to(device)]  # calibration clips only
        hist += histogram(dist)
        n_clips += video.shape[0]
        counting.update(1)
        del video, emb, word, dist  # drop this batch before the next is loaded
    counting.close()
    if n_clips == 0:
        raise VideomaskError(f"the {name} set gave no clips")
    return c.cpu(), n_clips, hist


def fit_statistics(
    source: Any,
    target: Any,
    embedder: Any,
    *,
    num_words: int = 64,
    num_anchors: int = 8,
    num_prototypes: int = 256,
    z_min: float = 1.96,
    prior: float = 0.0,
    holdout_every: int = 4,
    tokens_per_clip: int = 256,
    max_clips: int | None = None,
    epochs: int = 1,
    init_tokens: int = 4096,
    seed: int = 0,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> DifferenceStats:
    """Fit everything the difference scorers need from source and target clips (see docs/difference.md).

    ``source`` / ``target``: a ``VideoDataset`` (or any map-style dataset of clip dicts), a
    ``DataLoader``, or a re-iterable of batches (video tensors ``[B, C, T, H, W]`` or dicts with
    ``video``). ``embedder``: an :class:`Embedder`. Pass 1 feeds ``tokens_per_clip`` random tokens per
    clip (seeded) to two streaming k-means: the joint vocabulary (``num_words``, source and target) and
    the source prototypes (``num_prototypes``, source only, without the calibration videos: every
    ``holdout_every``-th source video, or clip when the batches carry no ``video_id``). Pass 2 embeds every
    token: word counts per set (TF-ICF, enrichment) and distance histograms (held-out source, target).
    ``max_clips`` caps the clips taken from each set per pass.
    """

    if num_anchors < 1 or num_anchors > num_words:
        raise VideomaskError(f"num_anchors must be in [1, num_words={num_words}], got {num_anchors}")
    if num_prototypes < 1 or holdout_every < 2:
        raise VideomaskError(f"need num_prototypes >= 1 and holdout_every >= 2, got {num_prototypes}, {holdout_every}")
    device = torch.device(device)
    embedder.to(device)
    src = _batches(source, batch_size, num_workers)
    tgt = _batches(target, batch_size, num_workers)
    centroids, prototypes, calibrated, clip_size = _fit_words_and_prototypes(
        src,
        tgt,
        embedder,
        device,
        num_words,
        num_prototypes,
        holdout_every,
        tokens_per_clip,
        max_clips,
        epochs,
        init_tokens,
        seed,
        progress,
    )  # [V, D], [M, D]
    counts, clips, hists = {}, {}, {}
    for name, data in (("source", src), ("target", tgt)):
        held = holdout_every if name == "source" and calibrated else None  # source: the calibration clips only
        counts[name], clips[name], hists[name] = _count_tokens(
            name, data, embedder, device, centroids, prototypes, held, max_clips, progress
        )

    tficf = tficf_scores(counts["target"], counts["source"])  # [V]
    anchors = tficf.argsort(descending=True, stable=True)[:num_anchors]  # [K] best first
    z = enrichment_scores(counts["target"], counts["source"], prior)  # [V]
    enriched = enriched_words(counts["target"], counts["source"], z, max_words=num_anchors, z_min=z_min)
    tubelet = getattr(embedder, "tubelet", None) or embedder.identity.get("tubelet")
    settings = {
        "num_words": num_words,
        "num_anchors": num_anchors,
        "num_prototypes": int(prototypes.shape[0]),
        "z_min": z_min,
        "prior": prior,
        "holdout_every": holdout_every,
        "calibration": f"held-out source videos (every {holdout_every}-th)"
        if calibrated
        else "all source clips (too few to hold any out)",
        "tokens_per_clip": tokens_per_clip,
        "epochs": int(epochs),
        "init_tokens": init_tokens,
        "seed": seed,
        "max_clips": max_clips,
        "source_clips": clips["source"],
        "target_clips": clips["target"],
        "clip_size": list(clip_size) if clip_size else None,
        "tficf": TFICF_FORMULA,
    }
    if tubelet is not None:
        settings["tubelet"] = list(as_tubelet(tubelet))
    return DifferenceStats(
        centroids=centroids.cpu(),
        anchors=anchors,
        counts_target=counts["target"],
        counts_source=counts["source"],
        tficf=tficf,
        embedder=embedder.identity,
        settings=settings,
        enrichment=z,
        enriched=enriched,
        prototypes=prototypes.cpu(),
        source_quantiles=quantiles(hists["source"], QUANTILE_LEVELS),
        target_quantiles=quantiles(hists["target"], QUANTILE_LEVELS),
    )


def fit_paths(
    source: str | Path,
    target: str | Path,
    *,
    embedder: str = "pixel",
    layer: str = "patch",
    num_frames: int = 16,
    sampling_rate: int = 4,
    size: int = 224,
    tubelet: Sequence[int] = (2, 16),
    dim: int = 64,
    pool: int = 2,
    clips_per_video: int = 1,
    backend: str = "pyav",
    seed: int = 0,
    workers: int = 0,
    **fit_options: Any,
) -> tuple[DifferenceStats, Any, Any]:
    """``videomask fit`` as a function: folders or list files of source and target videos -> statistics.

    Clips: ``clips_per_video`` random (seeded) windows of ``num_frames`` at ``sampling_rate``, shorter side
    to ``size`` and the centre crop. ``embedder``: a :func:`build_embedder` spec (``tubelet = (t, p)``,
    ``dim``/``pool`` for pixel, ``layer`` for a checkpoint). ``fit_options`` go to :func:`fit_statistics`.
    Returns ``(stats, source dataset, target dataset)`` (the datasets count skipped videos).
    """

    for name, value in (("clips_per_video", clips_per_video), ("dim", dim), ("pool", pool)):
        if value < 1:
            raise VideomaskError(f"{name} must be >= 1, got {value}")
    for name in ("num_words", "num_anchors", "num_prototypes", "batch_size", "tokens_per_clip", "epochs"):
        if name in fit_options and int(fit_options[name]) < 1:
            raise VideomaskError(f"{name} must be >= 1, got {fit_options[name]}")
    torch.manual_seed(seed)
    t, p = int(tubelet[0]), int(tubelet[-1])
    built = build_embedder(embedder, tubelet=(t, p, p), dim=dim, seed=seed, pool=pool, layer=layer)
    tube = tuple(getattr(built, "tubelet", None) or (t, p, p))  # a model embedder brings its own

    def dataset(path: str | Path, which: str) -> Any:
        if not Path(path).exists():
            raise VideomaskError(f"{which} {path} does not exist (give a folder of videos or a list file)")
        try:
            return VideoDataset.from_path(
                Path(path),
                num_frames=num_frames,
                sampling_rate=sampling_rate,
                sampling="random",  # seeded per (seed, epoch, video, clip): both passes see the same clips
                num_sample=clips_per_video,
                transform=ClipTransform.for_eval(size, patch=tube[1:]),
                tubelet=tube,
                backend=backend,
                seed=seed,
            )
        except VideomaskError as err:
            raise VideomaskError(f"{which} {path}: {err}") from None

    src, tgt = dataset(source, "source"), dataset(target, "target")
    stats = fit_statistics(src, tgt, built, seed=seed, num_workers=workers, **fit_options)
    stats.settings.update(
        {
            "source": str(source),
            "target": str(target),
            "tubelet": list(tube),
            "clip": {
                "num_frames": num_frames,
                "sampling_rate": sampling_rate,
                "size": size,
                "clips_per_video": clips_per_video,
            },
        }
    )
    return stats, src, tgt
