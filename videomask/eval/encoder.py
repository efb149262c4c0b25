"""Checkpoints -> frozen encoders: :func:`load_encoder`."""

from __future__ import annotations

from pathlib import Path

import torch

from videomask.errors import VideomaskError
from videomask.io import load_model
from videomask.model import MODEL_SIZES, build_model


def load_encoder(spec: str, *, name: str = "tiny", overrides: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """A :class:`~videomask.model.VideoMAE` from ``spec``, in eval mode (the same rules as ``model.checkpoint``).

    ``spec`` is one of: a model size name (``tiny``, ``small``, ``base``; random init with ``seed``, the
    baseline) or ``""`` (random init of ``name``); a Hugging Face ``save_pretrained`` folder; a videomask
    checkpoint (``model.safetensors`` or a folder holding one, e.g. a run's ``final/``; its stored model
    config is used); a VideoMAE ``.pth`` (weights-only load, architecture ``name`` + ``overrides``).
    """

    overrides = dict(overrides or {})
    if not spec or spec in MODEL_SIZES:  # random init: the baseline
        torch.manual_seed(seed)
        return build_model(spec or name, **overrides).eval()
    if not Path(spec).exists():
        raise VideomaskError(
            f"checkpoint {spec!r} is neither an existing file/folder nor a model size ({', '.join(MODEL_SIZES)})"
        )
    torch.manual_seed(seed)  # layers a checkpoint does not hold start from a seeded init
    model, _ = load_model(spec, name=name, what="checkpoint", **overrides)
    return model.eval()
