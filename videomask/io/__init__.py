"""Weight formats: videomask safetensors files, Hugging Face folders, original VideoMAE ``.pth``.

``load_model(path)`` rebuilds a :class:`~videomask.model.VideoMAE` from any of them.
"""

from __future__ import annotations

from videomask.io.hf import (
    config_from_hf,
    config_to_hf,
    hf_state_to_videomask,
    load_hf_checkpoint,
    save_hf_checkpoint,
    videomask_state_to_hf,
)
from videomask.io.load import load_model, match_positions
from videomask.io.pth import load_videomae_pth, to_videomae_state_dict
from videomask.io.weights import (
    MODEL_FILE,
    load_model_weights,
    model_meta,
    model_to_bytes,
    read_weights_metadata,
    save_model_weights,
    write_bytes_atomic,
)

__all__ = [
    "MODEL_FILE",
    "config_from_hf",
    "config_to_hf",
    "hf_state_to_videomask",
    "load_hf_checkpoint",
    "load_model",
    "load_model_weights",
    "load_videomae_pth",
    "match_positions",
    "model_meta",
    "model_to_bytes",
    "read_weights_metadata",
    "save_hf_checkpoint",
    "save_model_weights",
    "to_videomae_state_dict",
    "videomask_state_to_hf",
    "write_bytes_atomic",
]
