"""What a run trains with: model, dataset and resumable batch stream, optimizer, loss scaler, masker."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from videomask.config import RunConfig
from videomask.data import ClipTransform, VideoDataset, collate_clips
from videomask.difference import DifferenceStats, build_score_cache_part, finish_score_cache
from videomask.errors import VideomaskError, one_line
from videomask.io import load_model, match_positions
from videomask.io.per_video import META_FILE as SCORE_CACHE_META
from videomask.masking import (
    MASKERS,
    DifferenceMasker,
    available_maskers,
    build_masker,
    masker_options,
    mode_option,
)
from videomask.model import VideoMAE, VideoMAEConfig, build_model
from videomask.objectives import Objective, TeacherCache, build_objective
from videomask.seeding import rank_seed
from videomask.train.distributed import DistInfo, barrier, resolve_precision, say
from videomask.train.fsdp import compile_blocks, shard_objective
from videomask.train.schedule import peak_lr

if TYPE_CHECKING:
    from videomask.data import VideoDataset
    from videomask.masking import Masker

SCORE_CACHE = "scores"  # the run folder's automatic score cache (a folder, see videomask.difference.cache)
SKIP_LOG = "skipped.tsv"  # the run folder's list of skipped videos (data.options.skip_log overrides it)


@dataclass
class Parts:
    """What a run trains with, built by :func:`build_parts` before the loop starts."""

    out_dir: Path
    device: torch.device
    model: VideoMAE  # the bare model (never the DDP wrapper): checkpoints, pictures, exports
    source: str  # where its weights came from: init | hf | pth | videomask
    dataset: VideoDataset
    stream: BatchStream
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    masker: Masker
    objective: Objective  # the model plus its objective's teacher / EMA copy: what the step calls
    teacher_cache: TeacherCache | None  # teacher targets looked up per clip (None: computed in the step)
    amp_dtype: torch.dtype | None  # None = fp32
    lr_peak: float
    total_steps: int
    params: list[torch.Tensor]  # the trainable parameters (gradient norm and clipping)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (deterministic shuffle from ``seed + epoch``) that can start mid-epoch.

    Set ``start`` to the number of this rank's samples already consumed in the current epoch.
    """

    def __init__(self, dataset: Any, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def build_dataset(cfg: RunConfig, model_config: VideoMAEConfig | None = None) -> VideoDataset:
    """The training :class:`~videomask.data.VideoDataset` from ``cfg.data`` (a folder, a list file or one video).

    ``data.options`` keys that are :class:`~videomask.data.ClipTransform` fields (``crop``, ``scales``,
    ``flip_prob``, ``area``, ``ratio``, ``short_side``, ``mean``, ``std``) configure the transform; the
    others (``min_frames``, ``skip_log``, ...) go to the dataset; ``data.timeout_s`` is its per-item time-out.
    The normalisation defaults to the model's ``mean``/``std`` and the clip must fit the model's tubelet.
    Skipped videos are listed in ``run.out_dir/skipped.tsv`` unless ``data.options.skip_log`` names another file.
    """

    d = cfg.data
    if not d.path:
        raise VideomaskError("set data.path to a folder of videos, a list file (csv/tsv/txt) or a video")
    transform_fields = {f.name for f in dataclasses.fields(ClipTransform)} - {"size", "train"}
    t_opts = {k: v for k, v in d.options.items() if k in transform_fields}
    ds_opts = {k: v for k, v in d.options.items() if k not in transform_fields}
    for key in ("scales", "area", "ratio", "mean", "std", "patch"):
        if isinstance(t_opts.get(key), list):
            t_opts[key] = tuple(t_opts[key])
    tubelet = None
    if model_config is not None:
        tubelet = model_config.tubelet
        t_opts.setdefault("mean", tuple(model_config.mean))
        t_opts.setdefault("std", tuple(model_config.std))
        t_opts.setdefault("patch", (model_config.patch_size, model_config.patch_size))
    try:
        transform = ClipTransform(size=(d.size, d.size), train=d.sampling == "random", **t_opts)
    except TypeError as err:
        raise VideomaskError(f"data.options: {err}") from None
    options: dict[str, Any] = dict(
        num_frames=d.num_frames,
        sampling_rate=d.sampling_rate,
        sampling=d.sampling,
        short=d.short,
        num_sample=d.num_sample,
        backend=d.backend,
        seed=cfg.run.seed,
        transform=transform,
        tubelet=tubelet,
        timeout=d.timeout_s or None,  # 0 = no limit
    )
    options["skip_log"] = str(Path(cfg.run.out_dir) / SKIP_LOG)  # kept with the run, where the user looks
    options["storage_options"] = dict(d.storage_options)  # for a data.path that is a URL (s3://...)
    options.update(ds_opts)
    try:
        return VideoDataset.from_path(d.path, **options)
    except TypeError as err:
        raise VideomaskError(f"data.options: {err}") from None


def epoch_permutation(sampler: ResumableSampler, epoch: int) -> list[int]:
    """The epoch's order of every video before ``DistributedSampler`` pads and deals it to the ranks: the same
    sampler's order on one rank (no padding)."""
    whole = ResumableSampler(sampler.dataset, num_replicas=1, rank=0, seed=sampler.seed, shuffle=sampler.shuffle)
    whole.set_epoch(epoch)
    return list(iter(whole))


def elastic_order(sampler: ResumableSampler, epoch: int, base: int, batch_size: int) -> list[int]:
    """This rank's rest of an epoch resumed on another world or batch size: the videos after the first ``base``
    of the epoch's permutation, dealt round-robin to the ranks, cut to the same whole batches on every rank."""
    rest = epoch_permutation(sampler, epoch)[base:]
    per_rank = len(rest) // sampler.num_replicas // batch_size * batch_size
    return rest[sampler.rank :: sampler.num_replicas][:per_rank]


class EpochKeys(Sampler):
    """Dataset keys ``(epoch, index)`` over the epochs from ``epoch`` on, without end.

    Each epoch is ``sampler``'s order for that epoch (``ResumableSampler``: a deterministic shuffle from
    ``seed + epoch``), cut to whole batches; the first epoch starts after ``consumed`` batches. With
    ``elastic_base`` set, the first epoch is :func:`elastic_order` from that base instead (an epoch resumed
    on another number of ranks or batch size). One DataLoader iterator over these keys prefetches across
    epoch boundaries, and every key carries its epoch, so workers never read a shared epoch counter.
    """

    def __init__(
        self, sampler: ResumableSampler, batch_size: int, epoch: int, consumed: int, elastic_base: int | None = None
    ) -> None:
        self.sampler, self.batch_size, self.epoch, self.consumed = sampler, batch_size, epoch, consumed
        self.elastic_base = elastic_base

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.epoch, self.consumed * self.batch_size
        while True:
            if epoch == self.epoch and self.elastic_base is not None:
                order = elastic_order(self.sampler, epoch, self.elastic_base, self.batch_size)
            else:
                self.sampler.set_epoch(epoch)
                self.sampler.start = 0
                order = list(iter(self.sampler))
            whole = len(order) // self.batch_size * self.batch_size
            for index in order[skip:whole]:
                yield epoch, index
            epoch, skip = epoch + 1, 0


class BatchStream:
    """Endless micro-batches over epochs that knows its position (epoch, batches consumed in the epoch)."""

    def __init__(
        self,
        dataset: Any,
        sampler: ResumableSampler,
        loader_kwargs: dict[str, Any],
        batch_size: int,
        epoch: int = 0,
        consumed: int = 0,
    ) -> None:
        self.dataset, self.sampler, self.loader_kwargs, self.batch_size = dataset, sampler, loader_kwargs, batch_size
        self.epoch, self.consumed = epoch, consumed
        # (epoch, base, batches): that epoch runs elastic_order from base, `batches` per rank (resume_elastic)
        self.elastic: tuple[int, int, int] | None = None
        self._it: Iterator[Any] | None = None
        self._loader: DataLoader | None = None

    @property
    def batches_per_epoch(self) -> int:
        """Batches per rank in the current epoch (an elastic epoch has what is left of it)."""
        if self.elastic is not None and self.elastic[0] == self.epoch:
            return self.elastic[2]
        return self.sampler.num_samples // self.batch_size

    @property
    def elastic_base(self) -> int | None:
        """The current epoch's elastic base (None: the usual order), saved with the position in a checkpoint."""
        return self.elastic[1] if self.elastic is not None and self.elastic[0] == self.epoch else None

    def resume_elastic(self, epoch: int, consumed_videos: int) -> None:
        """Continue ``epoch`` after the first ``consumed_videos`` of its permutation, on this stream's world and
        batch size: the rest of the epoch exactly once over the ranks (less a tail shorter than one batch per rank).
        """
        base = min(consumed_videos, len(self.sampler.dataset))
        batches = len(elastic_order(self.sampler, epoch, base, self.batch_size)) // self.batch_size
        if batches == 0:  # less than a batch per rank was left of it: the next epoch, as usual
            self.epoch, self.consumed, self.elastic = epoch + 1, 0, None
        else:
            self.epoch, self.consumed, self.elastic = epoch, 0, (epoch, base, batches)

    def _start(self) -> None:
        """One loader and one iterator from the current position on (they span epochs)."""
        if self.batches_per_epoch == 0:
            raise VideomaskError("the training data gave no batch in a whole epoch (all videos bad?)")
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)  # for code that reads the dataset's epoch; keys carry their own
        keys = EpochKeys(self.sampler, self.batch_size, self.epoch, self.consumed, self.elastic_base)
        workers = self.loader_kwargs.get("num_workers", 0)
        self._loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=keys,
            drop_last=True,
            persistent_workers=workers > 0,
            **self.loader_kwargs,
        )
        self._it = iter(self._loader)

    def next(self) -> dict[str, Any]:
        """The next micro-batch; the position rolls over to the next epoch when its first batch is taken."""
        if self._it is None:
            self._start()
        if self.consumed >= self.batches_per_epoch:
            self.epoch, self.consumed = self.epoch + 1, 0
        try:
            batch = next(self._it)
        except VideomaskError as err:  # from a worker, torch adds the worker's traceback to the message
            raise VideomaskError(one_line(err)) from None
        self.consumed += 1
        return batch

    def close(self) -> None:
        """Drop the iterator and the loader (ends the worker processes)."""
        self._it = None
        self._loader = None


def too_few_videos(dataset: VideoDataset, batch_size: int, world_size: int) -> str:
    """The message for data smaller than one batch per rank, counting unreadable videos as unreadable."""
    bad = dataset.unreadable()
    n, readable = len(dataset), len(dataset) - len(bad)
    need = f"data.batch_size x ranks = {batch_size} x {world_size}"
    if not bad:
        return f"data has {n} video{'' if n == 1 else 's'}, fewer than {need}; lower data.batch_size or add videos"
    first = f"{bad[0][0]}: {bad[0][1]}"
    if not readable:
        return f"no video in data.path can be read ({n} unreadable; first: {first})"
    return (
        f"data has {readable} readable video{'' if readable == 1 else 's'} ({len(bad)} unreadable; first: {first}), "
        f"fewer than {need}; lower data.batch_size or add videos"
    )


def fused_adamw_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether this torch has a fused AdamW kernel for every parameter's device (CUDA; CPU from torch 2.4)."""
    try:
        # a private torch helper: imported where its absence can be caught
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # pragma: no cover - private helper moved
        devices = {"cuda"}
    params = list(params)
    return bool(params) and all(p.device.type in devices and torch.is_floating_point(p) for p in params)


def build_model_from_config(cfg: RunConfig) -> tuple[VideoMAE, str]:
    """The model named by ``cfg.model``; returns ``(model, source)`` with source ``init|hf|pth|videomask``.

    ``model.checkpoint``: empty = random init of ``model.name`` + ``model.overrides``; a folder with
    ``config.json`` = Hugging Face ``save_pretrained``; a ``.pth``/``.pt`` = original VideoMAE weights
    (architecture inferred from the weights; ``model.overrides`` for what shapes cannot tell);
    a ``.safetensors`` file or a folder holding ``model.safetensors`` = a videomask checkpoint (its
    stored model config is used, ``model.overrides`` applied on top). A fresh model is configured at the run's
    clip size (so its saved config names the grid its positions are learned on); a checkpoint whose token
    grid differs from the run's clips gets its position table resampled in 3-D (one log line).
    """
    m, d = cfg.model, cfg.data
    torch.manual_seed(cfg.run.seed)
    clip = (d.num_frames, d.size, d.size)
    if not m.checkpoint:
        model = build_model(m.name, **{"num_frames": d.num_frames, "img_size": d.size, **m.overrides})
        match_positions(model, clip, "model.overrides")  # overrides that name another size
        return model, "init"
    return load_model(m.checkpoint, name=m.name, what="model.checkpoint", clip=clip, **m.overrides)


# read from a score cache by default: computing them in the step is costly (see benchmarks/results/maskers.md)
CACHED_EMBEDDERS = ("cnn", "model-patch", "model-block")


def _embedder_kind(stats_path: Any) -> str:
    """``pixel``, ``cnn``, ``model-patch``, ``model-block`` or ``callable`` for a statistics file."""

    ident = DifferenceStats.load(stats_path).embedder
    kind = str(ident.get("kind"))
    return f"model-{'patch' if ident.get('layer', 'patch') == 'patch' else 'block'}" if kind == "model" else kind


def uses_score_cache(cfg: RunConfig) -> bool:
    """Whether the run's ``difference`` masker reads a score cache (the choice :func:`prepare_score_cache` makes)."""
    cache = cfg.mask.options.get("cache", "auto")
    if cfg.mask.name != "difference" or cache in (None, "none"):
        return False
    stats_path = cfg.mask.options.get("stats")
    return cache != "auto" or (stats_path is not None and _embedder_kind(stats_path) in CACHED_EMBEDDERS)


def prepare_score_cache(
    cfg: RunConfig, dataset: Any, info: DistInfo, device: torch.device, masker: Masker | None = None
) -> str | None:
    """The score cache the ``difference`` masker should read, building it once when needed.

    ``mask.options.cache``: a path (used as is), ``"none"`` (scores computed in the step), or ``"auto"`` /
    unset: a cache for the expensive embedders (:data:`CACHED_EMBEDDERS`; the cheap ones are computed in the
    step, see benchmarks/results/maskers.md), built into the folder ``run.out_dir/scores`` from the training
    videos at the statistics' clip size (``data.size`` for files that record none) and reused on resume.
    Every rank scores its share of the videos (:func:`~videomask.difference.cache.rank_share`), then rank 0
    merges the ranks' reports (seconds), so no rank waits alone behind a barrier for a whole decode of the
    data; the barriers are bounded by ``run.dist_timeout_s``, and a build stopped by one resumes.
    A run folder from an older videomask keeps its ``scores.safetensors`` (read lazily too).
    ``masker``: the run's difference masker with its embedder (from :func:`build_masker_from_config`), which
    then scores the videos; by default one is built from the statistics.
    """
    if cfg.mask.name != "difference":
        return None
    cache = cfg.mask.options.get("cache", "auto")
    if cache in (None, "none"):
        return None
    if cache != "auto":
        return str(cache)
    stats_path = cfg.mask.options.get("stats")
    kind = None if stats_path is None else _embedder_kind(stats_path)
    if kind not in CACHED_EMBEDDERS:
        return None
    out = Path(cfg.run.out_dir)
    path = out / SCORE_CACHE
    if not (path / SCORE_CACHE_META).is_file() and (out / "scores.safetensors").is_file():
        return str(out / "scores.safetensors")  # an older videomask's cache (one file)
    # every rank looks before the first barrier, and meta.json is only written after it: all take one branch
    if not (path / SCORE_CACHE_META).is_file():
        if not isinstance(masker, DifferenceMasker) or masker.embedder is None:
            options = {k: v for k, v in cfg.mask.options.items() if k in ("scorer", "threshold", "anchor_share")}
            masker = DifferenceMasker.load(stats_path, anchor_rule="share", **options)
        say(info, f"scoring {len(dataset.items)} videos once into {path} on {info.world_size} rank(s) ({kind})")
        transform = dataset.transform  # the training clips' normalisation, so the cache sees the same pixels
        fitted = masker.stats.clip_size
        _, skipped = build_score_cache_part(
            masker,
            [(it.video_id, it.path) for it in dataset.items],
            path,
            rank=info.rank,
            world_size=info.world_size,
            size=masker.stats.size or cfg.data.size,  # the statistics' scale (the lookup maps any clip size)
            num_frames=fitted[0] if fitted else cfg.data.num_frames,
            sampling_rate=cfg.data.sampling_rate,
            backend=cfg.data.backend,
            device=device,
            progress=cfg.train.progress and info.is_main,
            mean=transform.mean,
            std=transform.std,
            opener=dataset.opener(),  # videos in shards are read from them, not from files
        )
        barrier(info)
        if info.is_main:
            built = finish_score_cache(path, info.world_size)
            if built.meta["skipped"]:
                say(info, f"score cache: {len(built.meta['skipped'])} unreadable video(s) skipped")
    barrier(info)
    return str(path)


def check_mask_section(cfg: RunConfig) -> None:
    """``cfg.mask`` checked without building the masker (nothing read from disk): the masker's name, its mode,
    its option names and the option values that need no statistics or boxes. A run calls this before it
    writes anything; the rest is checked when :func:`build_parts` builds the masker, before the data."""
    name = cfg.mask.name
    if name not in MASKERS:
        raise VideomaskError(f"unknown masker mask.name={name!r} (choose from {', '.join(available_maskers())})")
    mode_option(name, cfg.mask.mode)
    accepted = masker_options(MASKERS[name])
    unknown = sorted(set(cfg.mask.options) - set(accepted))
    if unknown:
        raise VideomaskError(
            f"masker {name!r}: unknown mask.options {', '.join(unknown)} (it takes {', '.join(accepted)})"
        )
    check = getattr(MASKERS[name], "check_options", None)
    if check is not None:
        check(cfg.mask.options)


def build_masker_from_config(cfg: RunConfig, model: VideoMAE, device: torch.device, cache: str | None = None) -> Masker:
    """The masker from ``cfg.mask``, with the model's tubelet, moved to the training device
    (``cache``: the difference masker's score cache from :func:`prepare_score_cache`)."""

    options = dict(cfg.mask.options)
    if cfg.mask.name == "difference":
        options["cache"] = cache
    options.setdefault("tubelet", tuple(model.tubelet))
    options["ratio"] = cfg.mask.ratio
    options.update(mode_option(cfg.mask.name, cfg.mask.mode))
    return build_masker(cfg.mask.name, **options).to(device)


def build_parts(cfg: RunConfig, info: DistInfo, device: torch.device) -> Parts:
    """Model, data stream, optimizer, loss scaler and masker of a run, on ``device`` (nothing restored yet)."""

    model, source = build_model_from_config(cfg)
    # the masker first: every option is checked before the data, the score cache and the loop
    masker = build_masker_from_config(cfg, model, device)
    if isinstance(masker, DifferenceMasker) and not uses_score_cache(cfg):  # scored in the step: same scale
        clip = (cfg.data.num_frames, cfg.data.size, cfg.data.size)
        masker.stats.check_clip(clip, size_key="data.size", frames_key="data.num_frames")
    if uses_score_cache(cfg) and getattr(masker, "anchor_rule", None) == "word":
        raise VideomaskError(
            "a score cache holds scores, not visual words: set mask.options.anchor_rule to calibrated, threshold "
            "or share, or mask.options.cache=none"
        )
    dataset = build_dataset(cfg, model.config)
    sampler = ResumableSampler(dataset, num_replicas=info.world_size, rank=info.rank, seed=cfg.run.seed)
    # the loader's own generator: starting an epoch's iterator must not draw from the global torch RNG,
    # which drop-path uses (a resumed run starts one more iterator than the uninterrupted run)
    loader_kwargs = dict(
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_clips,
        generator=torch.Generator().manual_seed(cfg.run.seed),
    )
    stream = BatchStream(dataset, sampler, loader_kwargs, cfg.data.batch_size)
    if stream.batches_per_epoch == 0:
        raise VideomaskError(too_few_videos(dataset, cfg.data.batch_size, info.world_size))
    total_steps = cfg.train.steps or max(1, cfg.train.epochs * stream.batches_per_epoch // cfg.train.accum_steps)

    if cfg.train.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device).train()
    # the objective adds the heads it needs and freezes those it does not use, before the optimizer sees them
    objective, teacher_cache = build_objective(cfg.objective, model, device)
    objective.train()
    if cfg.train.compile:
        compile_blocks(model)
    if cfg.train.parallel == "fsdp" and info.enabled:  # before the optimizer: sharding replaces the parameters
        shard_objective(objective, model)
    lr_peak = peak_lr(cfg, info.world_size)
    optimizer = torch.optim.AdamW(
        model.param_groups(cfg.optim.weight_decay),
        lr=lr_peak,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
        fused=fused_adamw_supported(model.parameters()) or None,  # None: torch's default kernel (foreach)
    )
    amp_dtype = resolve_precision(cfg.train.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    cache = prepare_score_cache(cfg, dataset, info, device, masker=masker)
    if cache is not None:  # from now on the masker reads its scores from the cache
        masker = build_masker_from_config(cfg, model, device, cache)
    # every rank draws its own drop-path / dropout noise (the model init above used run.seed on all ranks)
    torch.manual_seed(rank_seed(cfg.run.seed, info.rank))
    return Parts(
        out_dir=Path(cfg.run.out_dir),
        device=device,
        model=model,
        source=source,
        dataset=dataset,
        stream=stream,
        optimizer=optimizer,
        scaler=scaler,
        masker=masker,
        objective=objective,
        teacher_cache=teacher_cache,
        amp_dtype=amp_dtype,
        lr_peak=lr_peak,
        total_steps=total_steps,
        params=[p for p in model.parameters() if p.requires_grad],
    )
