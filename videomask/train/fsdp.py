"""Training options for many GPUs: FSDP2 (``train.parallel: fsdp``), per-block ``torch.compile``
(``train.compile``), sharded checkpoints through ``torch.distributed.checkpoint`` (DCP) and their conversion
to the single-file checkpoint.

Under ``train.parallel: fsdp`` every transformer block (encoder and decoder) is sharded with ``fully_shard``,
then the objective (the model's remaining parameters, a frozen teacher, an EMA copy) as the root. A
checkpoint then holds ``sharded/`` (one DCP file per rank: model, optimizer, EMA) beside the usual
``state.safetensors`` (step, data position, every rank's RNG, loss scaler). DCP reshards on load, so a run
resumes on another number of ranks. :func:`convert_checkpoint` turns such a folder into the usual
``model.safetensors`` + ``state.safetensors`` (``videomask convert``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from videomask.errors import VideomaskError
from videomask.io import save_hf_checkpoint
from videomask.model import VideoMAE, VideoMAEConfig
from videomask.train.checkpoint import SHARDED_DIR, is_sharded, load_checkpoint, write_checkpoint


def compile_blocks(model: VideoMAE, backend: str = "inductor") -> None:
    """``torch.compile`` each encoder and decoder block in place (as timm and torchtitan do): the state dict
    keys stay the same, and blocks of one shape share their compiled code."""
    for block in [*model.blocks, *model.decoder_blocks]:
        block.compile(backend=backend)


def shard_objective(objective: torch.nn.Module, model: VideoMAE) -> None:
    """FSDP2: ``fully_shard`` each block of ``model``, then ``objective`` (holding ``model``) as the root.

    Call it before the optimizer is built: sharding replaces the parameters with sharded ones (DTensors).
    """
    for block in [*model.blocks, *model.decoder_blocks]:
        fully_shard(block)
    fully_shard(objective)


def is_fsdp(module: torch.nn.Module) -> bool:
    """Whether ``module`` was sharded by :func:`shard_objective`."""
    return isinstance(module, FSDPModule)


def local_norm(norm: torch.Tensor) -> torch.Tensor:
    """A gradient norm as a plain tensor (a norm over sharded gradients is a replicated DTensor)."""
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def set_gradient_sync(model: torch.nn.Module, enabled: bool) -> None:
    """FSDP's ``no_sync``: skip the gradient reduce-scatter on accumulation micro-batches but the last."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)


def _sharded_state(objective: torch.nn.Module, model: VideoMAE, optimizer: torch.optim.Optimizer | None) -> dict:
    """What DCP saves and loads: ``model``, ``optim`` (keyed by parameter name) and ``ema`` when there is one."""
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(model, optimizer)
    ema = getattr(objective, "ema", None)
    if ema is not None:
        state["ema"] = get_model_state_dict(ema)
    return state


def save_shards(objective: torch.nn.Module, model: VideoMAE, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Every rank: write its shards of model, optimizer and EMA into ``folder`` (a collective; one process
    without a process group writes one shard)."""
    group = dist.is_initialized()
    if folder.exists() and (not group or dist.get_rank() == 0):
        shutil.rmtree(folder)  # a save of this step that was killed before it finished
    if group:
        dist.barrier()
    dcp.save(_sharded_state(objective, model, optimizer), checkpoint_id=str(folder))


def load_shards(
    objective: torch.nn.Module, model: VideoMAE, optimizer: torch.optim.Optimizer | None, checkpoint: Path
) -> None:
    """Load a sharded checkpoint into the sharded ``model`` / ``optimizer`` / EMA (any number of ranks)."""
    state = _sharded_state(objective, model, optimizer)
    dcp.load(state, checkpoint_id=str(Path(checkpoint) / SHARDED_DIR))
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optim"])
    if "ema" in state:
        set_model_state_dict(objective.ema, state["ema"])


def full_model(model: VideoMAE) -> VideoMAE | None:
    """Every rank gathers the full weights (a collective); rank 0 gets a plain CPU copy of ``model``, others None."""
    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return model  # one process: nothing is sharded
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    plain = VideoMAE(dataclasses.replace(model.config, grad_checkpointing=False))
    plain.load_state_dict(full)
    return plain


def _optimizer_for(model: VideoMAE, saved_keys: set[str]) -> torch.optim.Optimizer:
    """A plain AdamW over the parameters of ``model`` that the saved optimizer trained, grouped as in training
    (the groups' settings come from the checkpoint)."""
    for name, p in model.named_parameters():
        p.requires_grad_(f"optim.state.{name}.step" in saved_keys)  # the objective froze the others
    return torch.optim.AdamW(model.param_groups(0.0))


def convert_checkpoint(src: str | Path, out: str | Path, hf: bool = False) -> Path:
    """A sharded checkpoint folder ``src`` -> the usual checkpoint folder ``out`` (``model.safetensors``,
    ``state.safetensors`` with the full optimizer); ``hf``: also ``out/hf`` (Hugging Face ``save_pretrained``).

    Runs in one process, without a process group; ``out`` resumes a ``train.parallel: ddp`` run and loads as a
    plain model (``model.checkpoint``).
    """
    src, out = Path(src), Path(out)
    if not is_sharded(src):
        raise VideomaskError(f"{src} is not a sharded checkpoint folder (no {SHARDED_DIR}/.metadata)")
    if out.exists():
        raise VideomaskError(f"{out} already exists; choose a new folder for the converted checkpoint")
    state = load_checkpoint(src)
    meta = state["model_meta"]
    if "model_config" not in meta:
        raise VideomaskError(f"{src} stores no model_config; cannot rebuild its model")
    config = meta["model_config"]
    config = json.loads(config) if isinstance(config, str) else config
    known = {f.name for f in dataclasses.fields(VideoMAEConfig)}
    model = VideoMAE(VideoMAEConfig(**{k: v for k, v in config.items() if k in known}))
    reader = dcp.FileSystemReader(str(src / SHARDED_DIR))
    saved_keys = set(reader.read_metadata().state_dict_metadata)
    has_ema = any(k.startswith("ema.") for k in saved_keys)
    weights = {"model": model.state_dict()}
    optimizer = _optimizer_for(model, saved_keys)
    weights["optim"] = get_optimizer_state_dict(model, optimizer)  # the optimizer's state, zeros to be filled
    ema = VideoMAE(model.config) if has_ema else None
    if ema is not None:
        weights["ema"] = ema.state_dict()
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
        dcp.load(weights, storage_reader=reader)
    model.load_state_dict(weights["model"])
    set_optimizer_state_dict(model, optimizer, weights["optim"])
    extra = {} if ema is None else {f"ema.{k}": v for k, v in weights["ema"].items()}
    rng = state["rng"]
    path = write_checkpoint(
        out,
        int(state["step"]),
        model,
        optimizer=optimizer,
        scaler=None,
        train_state=state["train"],
        rng_states=rng,
        model_meta={k: v for k, v in meta.items() if k != "step"},
        extra=extra,
    )
    if hf:
        save_hf_checkpoint(model, path / "hf")
    return path
