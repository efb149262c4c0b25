"""Run-state checkpoints: ``<run>/checkpoints/step_00000120/`` with ``model.safetensors`` and
``state.safetensors`` (optimizer, loss scaler, RNG states, loop counters, data position), written
atomically and read without unpickling; see docs/training.md for the layout."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from videomask.errors import VideomaskError
from videomask.io.weights import (
    MODEL_FILE,
    fsync_dir,
    load_model_weights,
    model_to_bytes,
    read_weights_metadata,
    unique_tensors,
)

STATE_FILE = "state.safetensors"
SHARDED_DIR = "sharded"  # train.parallel=fsdp: model, optimizer and EMA as torch.distributed.checkpoint shards
_STEP_DIR = re.compile(r"^step_(\d+)$")


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's torch CPU/CUDA, numpy and python RNG states as (tensors, JSON-able dict)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, pstate, gauss = random.getstate()
    info = {"numpy": [name, int(pos), int(has_gauss), float(cached)], "python": [version, list(pstate), gauss]}
    return tensors, info


def restore_rng_state(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(tensors["torch"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([c.to(torch.uint8) for c in cuda])
        else:
            warnings.warn("checkpoint CUDA RNG states are for a different device count; not restored", stacklevel=2)
    name, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, pstate, gauss = info["python"]
    random.setstate((version, tuple(pstate), gauss))


def _optimizer_to_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                plain.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "plain_state": plain}


def _optimizer_from_parts(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entry in info.get("plain_state", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = []
    for group in info["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """``<run_dir>/checkpoints/step_<step:08d>``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module | None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    train_state: dict[str, Any] | None = None,
    rng_states: list[tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None,
    model_meta: dict[str, Any] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    sharded: Path | None = None,
) -> Path:
    """Write a complete checkpoint folder for ``step`` atomically; return its path (see :func:`write_checkpoint`)."""
    return write_checkpoint(
        checkpoint_dir(run_dir, step),
        step,
        model,
        optimizer=optimizer,
        scaler=scaler,
        train_state=train_state,
        rng_states=rng_states,
        model_meta=model_meta,
        extra=extra,
        sharded=sharded,
    )


def write_checkpoint(
    final: Path,
    step: int,
    model: torch.nn.Module | None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    train_state: dict[str, Any] | None = None,
    rng_states: list[tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None,
    model_meta: dict[str, Any] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    sharded: Path | None = None,
) -> Path:
    """Write the checkpoint folder ``final`` atomically; return it.

    ``extra``: further tensors the run needs to resume (e.g. the contrastive objective's EMA encoder).
    ``train_state`` is any JSON-able dict (loop counters, data position, scheduler).
    ``rng_states`` holds one :func:`capture_rng_state` result per rank (index = rank).
    ``sharded``: a finished ``torch.distributed.checkpoint`` folder (train.parallel=fsdp), moved in as
    ``sharded/`` in place of ``model.safetensors`` (``model`` is then None; ``model_meta`` goes to the state).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()

    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {"step": int(step), "train": train_state or {}}
    if optimizer is not None:
        opt_tensors, info["optimizer"] = _optimizer_to_parts(optimizer)
        tensors.update(opt_tensors)
    if scaler is not None:
        info["scaler"] = scaler.state_dict()
    tensors.update({f"extra.{k}": v.detach().cpu() for k, v in (extra or {}).items()})
    info["rng"] = []
    for rank, (rng_tensors, rng_info) in enumerate(rng_states or []):
        tensors.update({f"rng.{rank}.{k}": v for k, v in rng_tensors.items()})
        info["rng"].append(rng_info)

    meta = dict(model_meta or {})
    meta["step"] = str(step)
    if model is not None:
        with open(tmp / MODEL_FILE, "wb") as fh:
            fh.write(model_to_bytes(model, meta))
            fh.flush()
            os.fsync(fh.fileno())
    else:
        info["model_meta"] = meta  # what a conversion needs to rebuild the model
    if sharded is not None:
        os.replace(sharded, tmp / SHARDED_DIR)
    with open(tmp / STATE_FILE, "wb") as fh:
        fh.write(st_save(unique_tensors(tensors), metadata={"format": "videomask-state", "state": json.dumps(info)}))
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): move the old one aside first
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file() and ((p / MODEL_FILE).is_file() or is_sharded(p)):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def is_sharded(path: str | Path) -> bool:
    """Whether the checkpoint folder ``path`` holds FSDP shards (``sharded/.metadata``) instead of model weights."""
    return (Path(path) / SHARDED_DIR / ".metadata").is_file()


def find_latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete, readable checkpoint in ``run_dir`` (None when there is none)."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            if not is_sharded(path):
                read_weights_metadata(path / MODEL_FILE)
            read_weights_metadata(path / STATE_FILE)
            return path
        except Exception as err:  # a damaged file: fall back to the previous checkpoint
            warnings.warn(f"skipping unreadable checkpoint {path}: {err}", stacklevel=2)
    return None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints and any stale temporary folders."""
    root = Path(run_dir) / "checkpoints"
    for path in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
    if root.is_dir():
        for p in root.iterdir():
            stale = p.name.startswith(".sharded-")  # shards of a save that was killed before its state file
            if stale or p.name.startswith((".tmp-", ".old-")) and not p.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
) -> dict[str, Any]:
    """Load a checkpoint folder into the given objects; return its JSON state.

    The returned dict has ``step``, ``train`` (the saved ``train_state``), ``rng``: a list, one
    ``(tensors, info)`` pair per saved rank, for :func:`restore_rng_state`, ``scaler_restored``: False
    when an enabled ``scaler`` (fp16) met a checkpoint written without loss scaling and kept its fresh state,
    and ``extra``: the tensors saved with ``extra``.
    """
    path = Path(path)
    if not ((path / MODEL_FILE).is_file() or is_sharded(path)) or not (path / STATE_FILE).is_file():
        raise VideomaskError(f"not a complete videomask checkpoint folder: {path}")
    if model is not None and is_sharded(path):
        raise VideomaskError(
            f"{path} is a sharded (train.parallel=fsdp) checkpoint: resume it with train.parallel=fsdp, or "
            "convert it first (videomask convert)"
        )
    if model is not None:
        load_model_weights(model, path / MODEL_FILE)
    raw = (path / STATE_FILE).read_bytes()
    tensors = st_load(raw)
    with safe_open(str(path / STATE_FILE), framework="pt") as fh:
        info = json.loads((fh.metadata() or {})["state"])
    if optimizer is not None:
        if "optimizer" not in info:
            raise VideomaskError(f"checkpoint {path} has no optimizer state")
        saved = _optimizer_from_parts(tensors, info["optimizer"])
        for group, current in zip(saved["param_groups"], optimizer.param_groups):
            for key in ("fused", "foreach"):  # the kernel is the loading process's choice (device, torch version)
                if key in current:
                    group[key] = current[key]
        optimizer.load_state_dict(saved)
    # a disabled GradScaler (fp32, bf16, CPU) saves {}; an enabled one (fp16) cannot load that and starts
    # afresh instead (``scaler_restored`` False); a disabled one ignores a saved fp16 state
    scaler_restored = True
    if scaler is not None:
        if info.get("scaler"):
            scaler.load_state_dict(info["scaler"])
        else:
            scaler_restored = not scaler.is_enabled()
    rng = []
    for rank, rng_info in enumerate(info.get("rng", [])):
        prefix = f"rng.{rank}."
        rng.append(({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, rng_info))
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return {
        "step": info["step"],
        "train": info.get("train", {}),
        "rng": rng,
        "scaler_restored": scaler_restored,
        "extra": extra,
        "model_meta": info.get("model_meta", {}),
    }
