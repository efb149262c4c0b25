"""The continued-pretraining loop: ``train(cfg) -> RunResult``, single process or under ``torchrun``.

One optimizer step = ``train.accum_steps`` micro-batches of ``data.batch_size`` videos per rank. For
every micro-batch the masker builds the mask on the training device with its own CPU
``torch.Generator`` seeded from ``(run.seed, step, micro, rank)`` (random numbers are drawn on the CPU
and moved), so masks are reproducible and a resumed run, on the same or another device type, draws
exactly the masks the uninterrupted run would have drawn. Data randomness comes from the dataset (per
item, from ``(seed, epoch, index)``) and a resumable ``DistributedSampler``. Drop-path noise comes from
the global torch RNG, seeded per rank after the (identical) model init and saved in checkpoints.

Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DistributedDataParallel (NCCL on CUDA,
Gloo on CPU; unused parameters such as ``fc_norm`` declared); every rank takes its own GPU
(:func:`pick_device`); rank 0 logs and writes checkpoints, with barriers around saves.

The run folder (``run.out_dir``) holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON object
per logged step), ``tb/`` (TensorBoard events), ``checkpoints/step_*`` (see :mod:`videomask.checkpoint`)
and ``final/`` (``model.safetensors``, plus ``hf/`` as a Hugging Face ``save_pretrained`` folder when
the model came from one or ``train.export_hf`` is set).

A step whose loss is NaN/inf on any rank, or (bf16/fp32; fp16's GradScaler handles its own) whose
gradient norm is, is skipped (no update, counted in ``skipped_steps``); after
``train.max_bad_steps`` consecutive skipped steps the run stops without writing another checkpoint, so
the last checkpoint on disk is the last good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from videomask import checkpoint as ckpt
from videomask.config import RunConfig, save_config
from videomask.errors import VideomaskError
from videomask.seeding import rank_seed, step_seed

if TYPE_CHECKING:
    from videomask.data import VideoDataset
    from videomask.masking import Masker
    from videomask.model import VideoMAE, VideoMAEConfig

# ----------------------------------------------------------------------------- results


@dataclass
class RunResult:
    """What :func:`train` returns (on every rank; metrics are global means)."""

    out_dir: Path
    steps: int  # optimizer steps done (including skipped ones)
    total_steps: int
    skipped_steps: int  # steps skipped for a non-finite loss or gradient
    stopped: str | None = None  # None when the run finished; else why it stopped early
    last_checkpoint: Path | None = None
    final_dir: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # logged records of this process's session

    @property
    def ok(self) -> bool:
        return self.stopped is None


# ----------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module started the process group (and ends it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(
    device_name: str,
    local_rank: int,
    world_size: int,
    *,
    cuda_available: bool | None = None,
    visible: int | None = None,
) -> torch.device:
    """The training device of one process (``run.device``, torchrun's ``LOCAL_RANK``, the visible GPUs).

    Single process: ``auto`` = ``cuda:0`` (else ``cpu``); ``cuda`` = ``cuda:0``; ``cuda:N`` as given. Under
    torchrun (``world_size > 1``) every rank needs its own GPU, so any ``cuda``/``cuda:N``/``auto`` picks
    ``cuda:LOCAL_RANK`` when the process sees several GPUs and ``cuda:0`` when it sees exactly one (one GPU
    per process, e.g. ``CUDA_VISIBLE_DEVICES`` set per rank); an explicit ``N`` is not used there.
    ``cuda_available``/``visible`` default to torch's view (parameters for tests).
    """
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if device_name == "auto":
        device_name = "cuda" if cuda_available else "cpu"
    try:
        device = torch.device(device_name)
    except RuntimeError:
        raise VideomaskError(f"run.device={device_name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type != "cuda":
        return device
    if not cuda_available:
        raise VideomaskError(f"run.device={device_name!r} but CUDA is not available (use cpu or auto)")
    if visible is None:
        visible = torch.cuda.device_count()
    if world_size > 1:
        if visible == 1:
            return torch.device("cuda:0")
        if local_rank >= visible:
            raise VideomaskError(
                f"local rank {local_rank} has no GPU of its own: this process sees {visible} "
                "GPUs; start at most that many processes per node (torchrun --nproc_per_node)"
            )
        return torch.device(f"cuda:{local_rank}")
    index = 0 if device.index is None else device.index
    if index >= visible:
        raise VideomaskError(
            f"run.device={device_name!r} but only {visible} GPU(s) are visible (cuda:0..cuda:{visible - 1})"
        )
    return torch.device(f"cuda:{index}")


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's env vars, pick the device (:func:`pick_device`), start the process group (NCCL on
    CUDA, Gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name, info.local_rank, world)
    if info.enabled and device.type == "cuda" and device_name not in ("auto", "cuda") and str(device) != device_name:
        _say(info, f"note: run.device={device_name} under torchrun; each rank uses its own GPU (rank 0: {device})")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        info.owns_group = True
    return info, device


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


# ----------------------------------------------------------------------------- small rules


def native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes in bf16 natively (compute capability 8.0+, Ampere and later; ROCm).

    ``torch.cuda.is_bf16_supported()`` also counts emulation by default (V100, T4, Pascal), where bf16 is
    slow; those get fp16 with a GradScaler.
    """
    if torch.version.hip:
        return bool(torch.cuda.is_bf16_supported())
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.precision`` (None = fp32). auto: bf16 on CUDA with native bf16
    (:func:`native_bf16`), fp16 on older GPUs, fp32 elsewhere."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise VideomaskError("train.precision=fp16 needs CUDA; use bf16 or fp32 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def effective_batch(cfg: RunConfig, world_size: int) -> int:
    """Clips per optimizer step over all ranks."""
    return cfg.data.batch_size * cfg.data.num_sample * cfg.train.accum_steps * world_size


def peak_lr(cfg: RunConfig, world_size: int) -> float:
    """``optim.lr`` when given, else VideoMAE's rule ``blr * effective_batch / 256``."""
    if cfg.optim.lr is not None:
        return cfg.optim.lr
    return cfg.optim.blr * effective_batch(cfg, world_size) / 256.0


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float, schedule: str) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up from 0, then cosine or constant."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    span = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    low = peak * min_ratio
    return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def unused_in_pretraining(model: torch.nn.Module) -> list[str]:
    """Names of trainable parameters the pretraining forward never uses (``fc_norm`` with ``use_mean_pooling``).

    DDP must be told about them (``find_unused_parameters``), or the second step fails waiting for their
    gradients.
    """
    fc_norm = getattr(model, "fc_norm", None)
    if not isinstance(fc_norm, torch.nn.Module):
        return []
    return [f"fc_norm.{n}" for n, p in fc_norm.named_parameters() if p.requires_grad]


def grad_norm_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """The total L2 norm of the gradients (a 0-d tensor, no host sync); clips them to ``max_norm`` when > 0."""
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


# ----------------------------------------------------------------------------- data


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
    others (``min_frames``, ``timeout``, ``skip_log``, ...) go to the dataset. The normalisation defaults
    to the model's ``mean``/``std`` and the clip must fit the model's tubelet.
    """
    from videomask.data import ClipTransform, VideoDataset

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
    )
    options.update(ds_opts)
    try:
        return VideoDataset.from_path(d.path, **options)
    except TypeError as err:
        raise VideomaskError(f"data.options: {err}") from None


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
        self._it: Iterator[Any] | None = None
        self._loader: DataLoader | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.num_samples // self.batch_size

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self.sampler.start = self.consumed * self.batch_size
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)  # shared with the (persistent) workers
        if self._loader is None:  # one loader; persistent workers survive epochs, the sampler restarts
            workers = self.loader_kwargs.get("num_workers", 0)
            self._loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=self.sampler,
                drop_last=True,
                persistent_workers=workers > 0,
                **self.loader_kwargs,
            )
        self._it = iter(self._loader)

    def next(self) -> dict[str, Any]:
        """The next micro-batch; rolls over to the next epoch when one ends."""
        empty_epochs = 0
        while True:
            if self._it is None:
                self._start_epoch()
            try:
                batch = next(self._it)
            except StopIteration:
                if self.consumed == 0:
                    empty_epochs += 1
                    if empty_epochs > 1:
                        raise VideomaskError(
                            "the training data gave no batch in a whole epoch (all videos bad?)"
                        ) from None
                self.epoch, self.consumed, self._it = self.epoch + 1, 0, None
                continue
            self.consumed += 1
            return batch

    def close(self) -> None:
        """Drop the iterator and the loader (ends the worker processes)."""
        self._it = None
        self._loader = None


# ----------------------------------------------------------------------------- model and masker


def fused_adamw_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether this torch has a fused AdamW kernel for every parameter's device (CUDA; CPU from torch 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # pragma: no cover - private helper moved
        devices = {"cuda"}
    params = list(params)
    return bool(params) and all(p.device.type in devices and torch.is_floating_point(p) for p in params)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def build_model_from_config(cfg: RunConfig) -> tuple[VideoMAE, str]:
    """The model named by ``cfg.model``; returns ``(model, source)`` with source ``init|hf|pth|videomask``.

    ``model.checkpoint``: empty = random init of ``model.name`` + ``model.overrides``; a folder with
    ``config.json`` = Hugging Face ``save_pretrained``; a ``.pth``/``.pt`` = original VideoMAE weights
    (architecture inferred from the weights; ``model.overrides`` for what shapes cannot tell);
    a ``.safetensors`` file or a folder holding ``model.safetensors`` = a videomask checkpoint (its
    stored model config is used, ``model.overrides`` applied on top).
    """
    from videomask.model import build_model

    m = cfg.model
    torch.manual_seed(cfg.run.seed)
    if not m.checkpoint:
        return build_model(m.name, **m.overrides), "init"
    return ckpt.load_model(m.checkpoint, name=m.name, what="model.checkpoint", **m.overrides)


def model_meta(model: torch.nn.Module) -> dict[str, Any]:
    """Header metadata stored with the weights so a checkpoint rebuilds its own architecture."""
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config):
        return {
            "model_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
        }
    return {}


CACHED_EMBEDDERS = (
    "cnn",
    "model-patch",
    "model-block",
)  # read from a score cache by default (> 5% of a step in the loop)


def _embedder_kind(stats_path: Any) -> str:
    """``pixel``, ``cnn``, ``model-patch``, ``model-block`` or ``callable`` for a statistics file."""
    from videomask.stats import DifferenceStats

    ident = DifferenceStats.load(stats_path).embedder
    kind = str(ident.get("kind"))
    return f"model-{'patch' if ident.get('layer', 'patch') == 'patch' else 'block'}" if kind == "model" else kind


def prepare_score_cache(cfg: RunConfig, dataset: Any, info: DistInfo, device: torch.device) -> str | None:
    """The score cache the ``difference`` masker should read, building it once when needed.

    ``mask.options.cache``: a path (used as is), ``"none"`` (scores computed in the step), or ``"auto"`` /
    unset: a cache for the expensive embedders (:data:`CACHED_EMBEDDERS`; the in-loop cost of the cheap
    ones is a few percent of a step, see benchmarks/results/maskers.md), built by rank 0 into
    ``run.out_dir/scores.safetensors`` from the training videos at ``data.size`` and reused on resume.
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
    path = Path(cfg.run.out_dir) / "scores.safetensors"
    if info.is_main and not path.is_file():
        from videomask.masking import DifferenceMasker
        from videomask.scorecache import build_score_cache

        options = {k: v for k, v in cfg.mask.options.items() if k in ("scorer", "threshold", "anchor_share")}
        masker = DifferenceMasker.load(stats_path, anchor_rule="share", **options)
        _say(info, f"scoring {len(dataset.items)} videos once into {path} (embedder {kind})")
        transform = dataset.transform  # the training clips' normalisation, so the cache sees the same pixels
        built, skipped = build_score_cache(
            masker,
            [(it.video_id, it.path) for it in dataset.items],
            size=cfg.data.size,
            num_frames=cfg.data.num_frames,
            sampling_rate=cfg.data.sampling_rate,
            backend=cfg.data.backend,
            device=device,
            progress=cfg.train.progress,
            mean=transform.mean,
            std=transform.std,
        )
        built.save(path)
        if skipped:
            _say(info, f"score cache: {len(skipped)} unreadable video(s) skipped")
    _barrier(info)
    return str(path)


def build_masker_from_config(cfg: RunConfig, model: VideoMAE, device: torch.device, cache: str | None = None) -> Masker:
    """The masker from ``cfg.mask``, with the model's tubelet, moved to the training device
    (``cache``: the difference masker's score cache from :func:`prepare_score_cache`)."""
    from videomask.masking import build_masker, mode_option

    options = dict(cfg.mask.options)
    if cfg.mask.name == "difference":
        options["cache"] = cache
    options.setdefault("tubelet", tuple(model.tubelet))
    options["ratio"] = cfg.mask.ratio
    options.update(mode_option(cfg.mask.name, cfg.mask.mode))
    return build_masker(cfg.mask.name, **options).to(device)


def loss_split(token_loss: torch.Tensor, dec_mask: torch.Tensor, anchors: torch.Tensor | None) -> torch.Tensor:
    """``[anchor_loss_sum, anchor_count, other_loss_sum, other_count]`` over the reconstructed tokens.

    ``token_loss [B, L_dec]`` lists the tokens of ``dec_mask [B, L]`` in increasing index, so
    ``anchors[dec_mask].view(B, -1)`` lines up with it.
    """
    tl = token_loss.detach().float()
    if anchors is None:
        return torch.stack([tl.new_zeros(()), tl.new_zeros(()), tl.sum(), tl.new_full((), float(tl.numel()))])
    # the reconstructed tokens in increasing index, found without a host sync (no boolean indexing)
    n_dec = tl.shape[1]
    ids = torch.argsort(dec_mask.to(torch.int8), dim=1, stable=True)[:, dec_mask.shape[1] - n_dec :]  # [B, L_dec]
    a = anchors.to(dec_mask.device, non_blocking=True).gather(1, ids).float()  # [B, L_dec] 1 = anchor patch
    return torch.stack([(tl * a).sum(), a.sum(), (tl * (1 - a)).sum(), (1 - a).sum()])


def forward_model(
    model: torch.nn.Module, video: torch.Tensor, mask: torch.Tensor, decoder_mask: torch.Tensor | None, **kwargs: Any
) -> Any:
    """One forward pass (a seam for tests that inject failures); ``kwargs`` go to the model."""
    return model(video, mask, decoder_mask, **kwargs)


# ----------------------------------------------------------------------------- logging


class MetricsLog:
    """Rank 0: ``metrics.jsonl`` (appended; lines past the resume step dropped) and TensorBoard events."""

    def __init__(self, out_dir: Path, start_step: int, tensorboard: bool) -> None:
        self.path = out_dir / "metrics.jsonl"
        if self.path.exists():  # after a crash, lines beyond the checkpoint we resume from are replayed
            kept = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= start_step
            ]
            ckpt.write_bytes_atomic(self.path, "".join(ln + "\n" for ln in kept).encode())
        self.fh = open(self.path, "a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out_dir / "tb"), purge_step=start_step + 1 if start_step else None)

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        self.fh.close()
        if self.writer is not None:
            self.writer.close()


def _say(info: DistInfo, message: str) -> None:
    if info.is_main:
        print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the loop


def train(cfg: RunConfig) -> RunResult:
    """Run (or resume) continued pretraining as configured; see the module docstring."""
    info, device = setup_distributed(cfg.run.device)
    try:
        return _train(cfg, info, device)
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


# The loop itself (a little over 80 lines): logging, pictures, stopping and saving around train_step.
def _train(cfg: RunConfig, info: DistInfo, device: torch.device) -> RunResult:
    """The loop: prepare the run folder, build the parts, restore, then :func:`train_step` until done."""
    latest = prepare_run_folder(cfg, info)
    parts = build_parts(cfg, info, device)
    start_step, skipped = restore_checkpoint(parts, latest, cfg, info)
    model = wrap_ddp(parts.model, info, device)  # what the step calls; parts.model stays the bare VideoMAE
    _say(info, run_banner(parts, cfg, info, device))

    log = MetricsLog(parts.out_dir, start_step, cfg.train.tensorboard) if info.is_main else None
    from videomask.viz import ReconLogger

    recon = ReconLogger.for_run(cfg, parts.dataset, parts.masker, log.writer) if log is not None else None
    result = RunResult(
        out_dir=parts.out_dir,
        steps=start_step,
        total_steps=parts.total_steps,
        skipped_steps=skipped,
        last_checkpoint=latest,
    )
    bar = None
    if info.is_main and cfg.train.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=parts.total_steps, initial=start_step, desc=cfg.run.name, dynamic_ncols=True, file=sys.stderr)

    window = LogWindow.empty(device)
    step, bad_streak = start_step, 0
    try:
        while step < parts.total_steps:
            o = cfg.optim
            lr = lr_at(step, parts.total_steps, parts.lr_peak, o.warmup_steps, o.min_lr_ratio, o.schedule)
            for group in parts.optimizer.param_groups:
                group["lr"] = lr
            # the model checks the mask counts (a host sync) on the first step and on logged steps only
            logged = (step + 1) % cfg.train.log_every == 0 or step + 1 == parts.total_steps
            stats = train_step(parts, model, step, cfg, info, check=step == start_step or logged)
            if stats.skipped:
                skipped, bad_streak = skipped + 1, bad_streak + 1
                why = "loss" if stats.bad_loss else "gradient"
                _say(info, f"step {step + 1}: non-finite {why}, step skipped ({bad_streak} in a row, {skipped} in all)")
            else:
                bad_streak = 0
            window.add(stats)
            step += 1
            result.steps, result.skipped_steps = step, skipped
            if bar is not None:
                bar.update(1)

            stopping = bad_streak >= cfg.train.max_bad_steps
            if step % cfg.train.log_every == 0 or step == parts.total_steps or stopping:
                record = window.record(info, step=step, epoch=parts.stream.epoch, lr=lr, skipped_steps=skipped)
                result.history.append(record)
                if log is not None:
                    log.write(record)
                if bar is not None and record["loss"] is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                window = LogWindow.empty(device)

            if recon is not None and not stats.skipped:
                recon.maybe_log(parts.model, step)
            if stopping:
                result.stopped = (
                    f"{bad_streak} consecutive non-finite losses or gradients at step {step}; "
                    f"last good checkpoint: {result.last_checkpoint or 'none'}"
                )
                _say(info, f"stopping: {result.stopped}")
                break
            if (
                cfg.train.save_every
                and step % cfg.train.save_every == 0
                and step < parts.total_steps
                and bad_streak == 0
            ):
                result.last_checkpoint = save_run(parts, cfg, info, step, skipped)
    finally:
        parts.stream.close()
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    if result.stopped is None:
        finish_run(parts, cfg, info, result, step, skipped)
    return result


# ----------------------------------------------------------------------------- one step


@dataclass
class StepStats:
    """What one optimizer step leaves for the log, summed on the training device (no host sync)."""

    loss: torch.Tensor  # float64 scalar: mean over the micro-batches of their finite losses
    bad: torch.Tensor  # float64 scalar: micro-batches with a non-finite loss (summed over ranks)
    split: torch.Tensor  # [4] float64: anchor loss sum, anchor tokens, other loss sum, other tokens
    clips: int = 0
    has_anchors: bool = False  # the masker reported anchor patches
    bad_loss: bool = False  # the step was skipped for a non-finite loss ...
    bad_grad: bool = False  # ... or a non-finite gradient norm
    grad_norm: float | None = None  # None on a skipped step, and with fp16 loss scaling but no clipping

    @classmethod
    def zeros(cls, device: torch.device) -> StepStats:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return cls(loss=zero.clone(), bad=zero.clone(), split=torch.zeros(4, dtype=torch.float64, device=device))

    @property
    def skipped(self) -> bool:
        return self.bad_loss or self.bad_grad


def train_step(
    parts: Parts, model: torch.nn.Module, step: int, cfg: RunConfig, info: DistInfo, check: bool
) -> StepStats:
    """One optimizer step: ``train.accum_steps`` x (batch -> mask -> model -> loss -> backward), then the update.

    ``model`` is ``parts.model`` or its DDP wrapper. ``check``: let the model read the mask counts back
    (a host sync); otherwise the masker's exact count is passed on. The masker and the model's decoder
    mask draw from one CPU generator seeded from ``(run.seed, step, micro, rank)``, so a resumed run (on
    any device) draws the same masks.
    """
    accum, device, masker = cfg.train.accum_steps, parts.device, parts.masker
    stats = StepStats.zeros(device)
    for micro in range(accum):
        batch = parts.stream.next()
        video = batch["video"].to(device, non_blocking=True)  # [B, C, T, H, W]
        gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, step, micro, info.rank))
        counts = {} if check else {"num_masked": masker.num_masked(masker.grid(video))}
        with torch.no_grad():
            mres = masker.generate({**batch, "video": video}, generator=gen)  # mask [B, L]
        sync = contextlib.nullcontext() if not info.enabled or micro == accum - 1 else model.no_sync()
        autocast = torch.autocast(
            device_type=device.type, dtype=parts.amp_dtype or torch.float32, enabled=parts.amp_dtype is not None
        )
        with sync:
            with autocast:
                out = forward_model(model, video, mres.mask, None, generator=gen, **counts)
            loss = out.loss.float()
            parts.scaler.scale(loss / accum).backward()
        finite = torch.isfinite(loss.detach())
        stats.loss += torch.where(finite, loss.detach(), torch.zeros_like(loss)).double() / accum
        stats.bad += (~finite).double()
        stats.split += loss_split(out.token_loss, out.decoder_mask, mres.anchors).double()
        stats.clips += video.shape[0]
        stats.has_anchors = stats.has_anchors or mres.anchors is not None
    apply_update(parts, stats, cfg, info)
    return stats


def apply_update(parts: Parts, stats: StepStats, cfg: RunConfig, info: DistInfo) -> None:
    """Step the optimizer, or skip the step (zeroed gradients) on a non-finite loss or gradient on any rank."""
    if info.enabled:
        dist.all_reduce(stats.bad)  # any rank non-finite -> every rank skips
    scaler, optimizer = parts.scaler, parts.optimizer
    if not scaler.is_enabled():
        # bf16 / fp32: no scaler catches a non-finite gradient behind a finite loss; the gradients are
        # already all-reduced, so every rank sees the same norm. One host sync for both checks.
        norm = grad_norm_(parts.params, cfg.train.clip_grad)
        n_bad, grad_norm = torch.stack([stats.bad, norm.detach().to(stats.bad)]).tolist()
        stats.bad_loss, stats.bad_grad = n_bad > 0, not math.isfinite(grad_norm)
        stats.grad_norm = grad_norm
    else:
        stats.bad_loss = bool(stats.bad.item() > 0)
    if stats.skipped:
        stats.grad_norm = None
        optimizer.zero_grad(set_to_none=True)
        return
    if scaler.is_enabled() and cfg.train.clip_grad > 0:
        scaler.unscale_(optimizer)
        stats.grad_norm = grad_norm_(parts.params, cfg.train.clip_grad)  # a tensor, read at the next log
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class LogWindow:
    """Sums over one logging interval, on the training device; read back (and summed over ranks) per record."""

    loss: torch.Tensor  # float64 scalars: summed step losses of the good steps ...
    good_steps: torch.Tensor  # ... and their number
    split: torch.Tensor  # [4] float64: summed StepStats.split of the good steps
    clips: torch.Tensor  # float64 scalar: clips seen (skipped steps included)
    anchor_steps: torch.Tensor  # float64 scalar: good steps whose masker reported anchors
    started: float = field(default_factory=time.perf_counter)
    grad_norm: Any = None  # the last step's gradient norm (a float or a device tensor)

    @classmethod
    def empty(cls, device: torch.device) -> LogWindow:
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(), z(), torch.zeros(4, dtype=torch.float64, device=device), z(), z())

    def add(self, stats: StepStats) -> None:
        self.grad_norm = stats.grad_norm
        if not stats.skipped:
            self.loss += stats.loss
            self.good_steps += 1
            self.split += stats.split
            self.anchor_steps += float(stats.has_anchors)
        self.clips += stats.clips

    def record(self, info: DistInfo, **fields: Any) -> dict[str, Any]:
        """The ``metrics.jsonl`` record of this window (``fields``: step, epoch, lr, skipped_steps)."""
        sums = torch.cat([self.loss.view(1), self.good_steps.view(1), self.split, self.clips.view(1)])
        sums = torch.cat([sums, self.anchor_steps.view(1)])
        if info.enabled:
            dist.all_reduce(sums)  # one collective for the whole window
        loss, good, a_sum, a_n, o_sum, o_n, clips, anchor_steps = sums.tolist()
        elapsed = time.perf_counter() - self.started
        return {
            "step": fields["step"],
            "epoch": fields["epoch"],
            "loss": loss / good if good else None,  # mean over ranks and finite steps of the interval
            "loss_anchor": a_sum / a_n if a_n else None,
            "loss_other": o_sum / o_n if o_n else None,
            # share of the reconstructed (masked) tokens that are anchor patches
            "anchor_share": a_n / (a_n + o_n) if anchor_steps and a_n + o_n else None,
            "lr": fields["lr"],
            "grad_norm": None if self.grad_norm is None else float(self.grad_norm),
            "clips_per_s": clips / elapsed if elapsed > 0 else None,
            "skipped_steps": fields["skipped_steps"],
        }


# ----------------------------------------------------------------------------- the run's parts


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
    amp_dtype: torch.dtype | None  # None = fp32
    lr_peak: float
    total_steps: int
    params: list[torch.Tensor]  # the trainable parameters (gradient norm and clipping)


def prepare_run_folder(cfg: RunConfig, info: DistInfo) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); writes ``config.yaml``. Every rank reads the folder."""
    out_dir = Path(cfg.run.out_dir)
    latest = ckpt.find_latest_checkpoint(out_dir)
    if info.enabled:  # every rank must see the same run folder (one shared filesystem across nodes)
        seen: list[Any] = [None] * info.world_size
        dist.all_gather_object(seen, latest.name if latest is not None else None)
        if len(set(seen)) > 1:
            raise VideomaskError(
                f"ranks see different checkpoints in {out_dir} ({seen}); run.out_dir must be "
                "on a filesystem shared by all nodes"
            )
    if latest is not None and not cfg.train.resume:
        raise VideomaskError(
            f"run folder {out_dir} already has checkpoints (latest {latest.name}); pass --resume "
            f"(train.resume=true) to continue it, or choose another run.out_dir"
        )
    if latest is None and cfg.train.resume:
        _say(info, f"no checkpoint in {out_dir}; starting from scratch")
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    _barrier(info)
    return latest


def build_parts(cfg: RunConfig, info: DistInfo, device: torch.device) -> Parts:
    """Model, data stream, optimizer, loss scaler and masker of a run, on ``device`` (nothing restored yet)."""
    from videomask.data import collate_clips

    model, source = build_model_from_config(cfg)
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
        raise VideomaskError(
            f"data has {len(dataset)} videos, fewer than data.batch_size x ranks = "
            f"{cfg.data.batch_size} x {info.world_size}; lower data.batch_size or add videos"
        )
    total_steps = cfg.train.steps or max(1, cfg.train.epochs * stream.batches_per_epoch // cfg.train.accum_steps)

    if cfg.train.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device).train()
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
    masker = build_masker_from_config(cfg, model, device, prepare_score_cache(cfg, dataset, info, device))
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
        amp_dtype=amp_dtype,
        lr_peak=lr_peak,
        total_steps=total_steps,
        params=[p for p in model.parameters() if p.requires_grad],
    )


def restore_checkpoint(parts: Parts, latest: Path | None, cfg: RunConfig, info: DistInfo) -> tuple[int, int]:
    """Load ``latest`` (weights, optimizer, scaler, data position, this rank's RNG) -> ``(step, skipped_steps)``."""
    if latest is None:
        return 0, 0
    state = ckpt.load_checkpoint(latest, parts.model, optimizer=parts.optimizer, scaler=parts.scaler)
    if parts.scaler.is_enabled() and not state.get("scaler_restored", True):
        _say(info, f"note: {latest.name} was written without fp16 loss scaling; the GradScaler starts afresh")
    t = state["train"]
    if (
        t.get("world_size", info.world_size) != info.world_size
        or t.get("batch_size", cfg.data.batch_size) != cfg.data.batch_size
    ):
        _say(
            info,
            f"warning: resuming with a different world size / batch size than {latest.name}; "
            "the data position is approximate",
        )
    stream = parts.stream
    stream.epoch, stream.consumed = int(t.get("epoch", 0)), int(t.get("batches_in_epoch", 0))
    rng = state["rng"]
    if rng:
        ckpt.restore_rng_state(*rng[info.rank if len(rng) == info.world_size else 0])
    step = int(state["step"])
    _say(info, f"resuming from {latest} (step {step}, epoch {stream.epoch}, batch {stream.consumed})")
    return step, int(t.get("skipped_steps", 0))


def wrap_ddp(model: VideoMAE, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel under torchrun (after the restore: DDP broadcasts rank 0's weights)."""
    if not info.enabled:
        return model
    unused = unused_in_pretraining(model)  # e.g. fc_norm: DDP would wait for its gradients forever
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=bool(unused)
    )


def run_banner(parts: Parts, cfg: RunConfig, info: DistInfo, device: torch.device) -> str:
    """The one line a run prints when it starts."""
    n_params = sum(p.numel() for p in parts.model.parameters())
    ranks = f" x {info.world_size} ranks" if info.enabled else ""
    precision = "fp32" if parts.amp_dtype is None else str(parts.amp_dtype).split(".")[-1]
    return (
        f"videomask pretrain: {n_params / 1e6:.2f}M params ({parts.source}), device {device}{ranks}, precision "
        f"{precision}, masker {parts.masker!r}, {len(parts.dataset)} videos, {parts.total_steps} steps of "
        f"{effective_batch(cfg, info.world_size)} clips, peak lr {parts.lr_peak:.3g}, run folder {parts.out_dir}"
    )


def save_run(parts: Parts, cfg: RunConfig, info: DistInfo, step: int, skipped: int) -> Path:
    """Checkpoint ``step`` on rank 0 with every rank's RNG state; barriers on both sides."""
    _barrier(info)
    rng = ckpt.capture_rng_state()
    states = [rng]
    if info.enabled:
        gathered: list[Any] = [None] * info.world_size if info.is_main else None  # type: ignore[assignment]
        dist.gather_object(rng, gathered, dst=0)
        states = gathered
    path = ckpt.checkpoint_dir(parts.out_dir, step)
    if info.is_main:
        train_state = {
            "epoch": parts.stream.epoch,
            "batches_in_epoch": parts.stream.consumed,
            "world_size": info.world_size,
            "batch_size": cfg.data.batch_size,
            "skipped_steps": skipped,
            "total_steps": parts.total_steps,
            "scheduler": {
                "kind": f"warmup+{cfg.optim.schedule}",
                "peak_lr": parts.lr_peak,
                "warmup_steps": cfg.optim.warmup_steps,
                "min_lr_ratio": cfg.optim.min_lr_ratio,
            },
        }
        path = ckpt.save_checkpoint(
            parts.out_dir,
            step,
            parts.model,
            optimizer=parts.optimizer,
            scaler=parts.scaler,
            train_state=train_state,
            rng_states=states,
            model_meta=model_meta(parts.model),
        )
        ckpt.prune_checkpoints(parts.out_dir, cfg.train.keep_last)
    _barrier(info)
    return path


def finish_run(parts: Parts, cfg: RunConfig, info: DistInfo, result: RunResult, step: int, skipped: int) -> None:
    """The last checkpoint (unless the last save was this step) and ``final/`` (weights, plus ``hf/``)."""
    out_dir, model = parts.out_dir, parts.model
    if result.last_checkpoint is None or result.last_checkpoint.name != ckpt.checkpoint_dir(out_dir, step).name:
        result.last_checkpoint = save_run(parts, cfg, info, step, skipped)
    result.final_dir = out_dir / "final"
    if info.is_main:
        ckpt.save_model_weights(model, result.final_dir / ckpt.MODEL_FILE, {**model_meta(model), "step": str(step)})
        if parts.source == "hf" or cfg.train.export_hf:
            from videomask.hf import save_hf_checkpoint

            save_hf_checkpoint(model, result.final_dir / "hf")
    _barrier(info)
    _say(info, f"done: {step} steps ({skipped} skipped); final weights in {result.final_dir}")
