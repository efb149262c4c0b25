"""videomask weights files: a model's ``state_dict`` as safetensors, written atomically.

The header carries ``format`` plus JSON-string metadata such as ``model_config`` (see :func:`model_meta`),
so a file rebuilds its own architecture. Nothing is unpickled when loading.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from videomask.errors import VideomaskError

MODEL_FILE = "model.safetensors"


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + fsync + ``os.replace``.

    The file gets a plain write's permissions (0666 less the umask), as every file videomask writes for the
    user: checkpoints, statistics, score caches (safetensors' own writer makes them 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage are copied (safetensors forbids sharing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in state.items():
        t = value.detach().to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if ident in seen:
            t = t.clone()
        seen.add(ident)
        out[key] = t
    return out


def model_meta(model: torch.nn.Module) -> dict[str, Any]:
    """Header metadata stored with the weights so a checkpoint rebuilds its own architecture."""
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config):
        return {
            "model_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
        }
    return {}


def model_to_bytes(model: torch.nn.Module, meta: dict[str, Any] | None = None) -> bytes:
    """The model's ``state_dict`` as safetensors bytes, ``meta`` stored as JSON strings in the header."""
    header = {"format": "videomask"}
    for key, value in (meta or {}).items():
        header[key] = value if isinstance(value, str) else json.dumps(value)
    return st_save(unique_tensors(model.state_dict()), metadata=header)


def save_model_weights(model: torch.nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Write ``model.state_dict()`` to a safetensors file atomically."""
    write_bytes_atomic(path, model_to_bytes(model, meta))


def read_weights_metadata(path: str | Path) -> dict[str, str]:
    """The JSON-string metadata of a safetensors file's header (no tensors are read)."""
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def load_model_weights(model: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights into ``model``; key mismatches raise a VideomaskError naming them."""
    path = Path(path)
    if not path.is_file():
        raise VideomaskError(f"weights file not found: {path}")
    state = st_load(path.read_bytes())
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):

        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        raise VideomaskError(
            f"weights {path} do not match the model: missing keys [{head(list(missing))}], "
            f"unexpected keys [{head(list(unexpected))}]"
        )
