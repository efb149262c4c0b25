"""Continued pretraining: ``train(cfg) -> RunResult``, single process or under ``torchrun``.

from videomask.config import load_config
from videomask.train import train

result = train(load_config("configs/pretrain_base.yaml", ["data.path=videos/my_domain"]))
"""

from __future__ import annotations

from videomask.io import model_meta
from videomask.seeding import rank_seed, step_seed
from videomask.train.checkpoint import (
    STATE_FILE,
    capture_rng_state,
    checkpoint_dir,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from videomask.train.distributed import (
    DistInfo,
    native_bf16,
    pick_device,
    resolve_precision,
    setup_distributed,
    unused_in_pretraining,
    wrap_ddp,
)
from videomask.train.log import LogWindow, MetricsLog, run_banner
from videomask.train.loop import RunResult, finish_run, prepare_run_folder, restore_checkpoint, save_run, train
from videomask.train.parts import (
    CACHED_EMBEDDERS,
    BatchStream,
    Parts,
    ResumableSampler,
    build_dataset,
    build_masker_from_config,
    build_model_from_config,
    build_parts,
    check_mask_section,
    fused_adamw_supported,
    prepare_score_cache,
)
from videomask.train.schedule import effective_batch, lr_at, peak_lr
from videomask.train.step import StepStats, apply_update, forward_model, grad_norm_, loss_split, train_step

__all__ = [
    "CACHED_EMBEDDERS",
    "STATE_FILE",
    "BatchStream",
    "DistInfo",
    "LogWindow",
    "MetricsLog",
    "Parts",
    "ResumableSampler",
    "RunResult",
    "StepStats",
    "apply_update",
    "build_dataset",
    "build_masker_from_config",
    "build_model_from_config",
    "build_parts",
    "capture_rng_state",
    "check_mask_section",
    "checkpoint_dir",
    "effective_batch",
    "find_latest_checkpoint",
    "finish_run",
    "forward_model",
    "fused_adamw_supported",
    "grad_norm_",
    "list_checkpoints",
    "load_checkpoint",
    "loss_split",
    "lr_at",
    "model_meta",
    "native_bf16",
    "peak_lr",
    "pick_device",
    "prepare_run_folder",
    "prepare_score_cache",
    "prune_checkpoints",
    "rank_seed",
    "resolve_precision",
    "restore_checkpoint",
    "restore_rng_state",
    "run_banner",
    "save_checkpoint",
    "save_run",
    "setup_distributed",
    "step_seed",
    "train",
    "train_step",
    "unused_in_pretraining",
    "wrap_ddp",
]
