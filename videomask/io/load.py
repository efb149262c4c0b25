"""``load_model(path)``: rebuild a :class:`~videomask.model.VideoMAE` from any supported weights format."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from videomask.errors import VideomaskError
from videomask.io.hf import load_hf_checkpoint
from videomask.io.pth import load_videomae_pth
from videomask.io.weights import MODEL_FILE, load_model_weights, read_weights_metadata
from videomask.model import VideoMAE, VideoMAEConfig, build_model


def load_model(
    path: str | Path, *, name: str | None = None, what: str = "checkpoint", **overrides: Any
) -> tuple[VideoMAE, str]:
    """Rebuild a :class:`~videomask.model.VideoMAE` from a checkpoint; returns ``(model, source)``.

    ``path`` (source in brackets) is a Hugging Face ``save_pretrained`` folder with ``config.json``
    (``hf``; ``overrides``: fields that keep the weights' shapes), a videomask ``.safetensors`` file or a
    folder holding ``model.safetensors`` (``videomask``; its stored ``model_config`` with ``overrides`` on
    top, or, when it stores none, the size ``name`` + ``overrides``; with no ``name`` that is an error) or an
    original VideoMAE ``.pth``/``.pt``/``.bin`` (``pth``; architecture inferred from the weight shapes,
    ``overrides`` for what shapes cannot tell). ``what`` names the path in error messages.
    """
    p = Path(path)
    if not p.exists():
        raise VideomaskError(f"{what} {path} does not exist")
    if p.is_dir() and (p / "config.json").is_file():
        return load_hf_checkpoint(p, **overrides), "hf"
    if p.is_dir() and (p / MODEL_FILE).is_file():
        p = p / MODEL_FILE
    if p.is_file() and p.suffix == ".safetensors":
        meta = read_weights_metadata(p)
        if "model_config" in meta:
            known = {f.name for f in dataclasses.fields(VideoMAEConfig)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise VideomaskError(
                    f"unknown model.overrides {', '.join(unknown)} (known: {', '.join(sorted(known))})"
                )
            stored = {k: v for k, v in json.loads(meta["model_config"]).items() if k in known}
            model = VideoMAE(
                dataclasses.replace(VideoMAEConfig(**stored), **overrides)
            )  # lists -> tuples in __post_init__
        elif name is not None:
            model = build_model(name, **overrides)
        else:
            raise VideomaskError(f"{p} holds no model_config; cannot rebuild the model it was saved from")
        load_model_weights(model, p)
        return model, "videomask"
    if p.is_file() and p.suffix in (".pth", ".pt", ".bin"):
        return load_videomae_pth(p, **overrides), "pth"
    raise VideomaskError(
        f"{what} {path} is not a Hugging Face folder (config.json), a videomask .safetensors checkpoint "
        f"(or a folder with {MODEL_FILE}) or a VideoMAE .pth"
    )
