"""``load_model(path)``: rebuild a :class:`~videomask.model.VideoMAE` from any supported weights format."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videomask.errors import VideomaskError
from videomask.io.hf import load_hf_checkpoint
from videomask.io.pth import load_videomae_pth
from videomask.io.weights import MODEL_FILE, load_model_weights, read_weights_metadata
from videomask.model import VideoMAE, VideoMAEConfig, build_model
from videomask.patches import Grid, grid_for

log = logging.getLogger("videomask.io")


def _describe(grid: Grid, tubelet: tuple[int, int, int]) -> str:
    """``8x7x7 tokens (16x112x112 clips)``."""
    t, ph, pw = tubelet
    return f"{grid.t}x{grid.h}x{grid.w} tokens ({grid.t * t}x{grid.h * ph}x{grid.w * pw} clips)"


def match_positions(model: VideoMAE, clip: Sequence[int], what: str = "checkpoint") -> str | None:
    """Give clips of ``clip = (T, H, W)`` the positions ``model`` learned; returns the log line, or None.

    The model learned its sine-cosine positions on ``config.pos_grid``, or else on its configured size
    (``num_frames``, ``img_size``). When the clips' token grid differs, ``config.pos_grid`` is set to that
    grid, so the model resamples its table in 3-D to the clips' grid (a token keeps the embedding of its
    relative position; saved with the config), and one line is logged.
    """
    c = model.config
    try:
        grid = grid_for(tuple(clip), model.tubelet)
        learned = Grid(*c.pos_grid) if c.pos_grid is not None else c.grid()
    except VideomaskError:  # sizes that fit no tubelet: the dataset or the model reports them
        return None
    if learned == grid:
        return None
    c.pos_grid = (learned.t, learned.h, learned.w)
    message = (
        f"{what}: positions learned on {_describe(learned, model.tubelet)}, this run's clips give "
        f"{_describe(grid, model.tubelet)}: position table resampled in 3-D (trilinear)"
    )
    log.warning(message)
    return message


def load_model(
    path: str | Path,
    *,
    name: str | None = None,
    what: str = "checkpoint",
    clip: Sequence[int] | None = None,
    **overrides: Any,
) -> tuple[VideoMAE, str]:
    """Rebuild a :class:`~videomask.model.VideoMAE` from a checkpoint; returns ``(model, source)``.

    ``path`` (source in brackets) is a Hugging Face ``save_pretrained`` folder with ``config.json``
    (``hf``; ``overrides``: fields that keep the weights' shapes), a videomask ``.safetensors`` file or a
    folder holding ``model.safetensors`` (``videomask``; its stored ``model_config`` with ``overrides`` on
    top, or, when it stores none, the size ``name`` + ``overrides``; with no ``name`` that is an error) or an
    original VideoMAE ``.pth``/``.pt``/``.bin`` (``pth``; architecture inferred from the weight shapes,
    ``overrides`` for what shapes cannot tell). ``what`` names the path in error messages. ``clip``: the
    ``(T, H, W)`` of the clips the model will see; another token grid than the checkpoint's gets its
    position table resampled (:func:`match_positions`).
    """
    model, source = _load(Path(path), name, what, overrides)
    if clip is not None:
        match_positions(model, clip, what)
    return model, source


def _load(p: Path, name: str | None, what: str, overrides: dict[str, Any]) -> tuple[VideoMAE, str]:
    """:func:`load_model` without ``clip``."""
    path = p
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
