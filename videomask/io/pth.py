"""Original (MCG-NJU) VideoMAE checkpoints <-> :class:`videomask.model.VideoMAE`.

:func:`load_videomae_pth` reads ``checkpoint['model']`` (pretraining keys such as
``encoder.blocks.0.attn.qkv.weight`` and ``decoder.head.weight``, or the fine-tune layout without the
``encoder.`` prefix) with ``torch.load(weights_only=True)``; :func:`to_videomae_state_dict` writes that layout.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.io.state import load_into
from videomask.model import VideoMAE, VideoMAEConfig


def _from_videomae_key(key: str) -> str:
    """Original VideoMAE key -> videomask key (pretrain ``encoder.``/``decoder.`` layout or fine-tune layout)."""
    key = key[len("module.") :] if key.startswith("module.") else key
    if key.startswith("encoder.") and not key.startswith("encoder_to_decoder"):
        return key[len("encoder.") :]
    for src, dst in (
        ("decoder.blocks.", "decoder_blocks."),
        ("decoder.norm.", "decoder_norm."),
        ("decoder.head.", "decoder_head."),
    ):
        if key.startswith(src):
            return dst + key[len(src) :]
    return key


def _to_videomae_key(key: str) -> str:
    """videomask key -> original VideoMAE pretraining key (inverse of :func:`_from_videomae_key`)."""
    for src, dst in (
        ("decoder_blocks.", "decoder.blocks."),
        ("decoder_norm.", "decoder.norm."),
        ("decoder_head.", "decoder.head."),
    ):
        if key.startswith(src):
            return dst + key[len(src) :]
    if key.startswith(("patch_embed.", "blocks.", "norm.", "fc_norm.")):
        return "encoder." + key
    return key


def to_videomae_state_dict(model: VideoMAE) -> dict[str, Tensor]:
    """The model's weights in the original VideoMAE pretraining layout (``encoder.``/``decoder.`` keys)."""
    return {_to_videomae_key(k): v.detach().clone() for k, v in model.state_dict().items()}


def _infer_config(state: dict[str, Tensor], overrides: dict[str, Any]) -> VideoMAEConfig:
    """Sizes from weight shapes; head counts default to width // 64 (all VideoMAE sizes but ViT-H/g)."""
    if "patch_embed.proj.weight" not in state:
        raise VideomaskError(
            "checkpoint has no patch embedding (encoder.patch_embed.proj.weight): not a VideoMAE layout"
        )
    D, C, t, p, _ = state["patch_embed.proj.weight"].shape

    def count(prefix: str) -> int:
        return len({k.split(".")[1] for k in state if k.startswith(prefix + ".")})

    def ratio(prefix: str, width: int, default: float) -> float:
        key = f"{prefix}.0.mlp.fc1.weight"
        return state[key].shape[0] / width if key in state else default

    values: dict[str, Any] = dict(
        in_chans=C,
        tubelet_size=t,
        patch_size=p,
        embed_dim=D,
        depth=count("blocks"),
        num_heads=max(1, D // 64),
        mlp_ratio=ratio("blocks", D, 4.0),
        qkv_bias="blocks.0.attn.q_bias" in state,
        use_mean_pooling="norm.weight" not in state,
    )
    if "encoder_to_decoder.weight" in state:
        Dd = state["encoder_to_decoder.weight"].shape[0]
        values.update(
            decoder_embed_dim=Dd,
            decoder_depth=count("decoder_blocks"),
            decoder_num_heads=max(1, Dd // 64),
            decoder_mlp_ratio=ratio("decoder_blocks", Dd, 4.0),
        )
    values.update(overrides)
    return VideoMAEConfig(**values)


def load_videomae_pth(
    path: str | Path, *, strict: bool = True, config: VideoMAEConfig | None = None, **overrides: Any
) -> VideoMAE:
    """Load an original VideoMAE checkpoint (``torch.load(weights_only=True)``; ``checkpoint['model']``).

    The config is inferred from the weight shapes unless given; pass ``num_heads=`` / ``decoder_num_heads=``
    when the head width is not 64 (ViT-H: 80), and sizes such as ``img_size`` as ``overrides``.
    """
    path = Path(path)
    if not path.is_file():
        raise VideomaskError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with arbitrary objects, or not a torch file at all
        raise VideomaskError(
            f"{path}: cannot be read with weights-only loading ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    raw = ckpt
    if isinstance(ckpt, dict):
        for key in ("model", "module", "state_dict"):
            if isinstance(ckpt.get(key), dict):
                raw = ckpt[key]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise VideomaskError(
            f"{path}: no state dict of tensors (looked at 'model', 'module', 'state_dict' and the top level)"
        )
    renamed = {k: _from_videomae_key(k) for k in raw}  # checkpoint key -> videomask key
    state = {renamed[k]: v for k, v in raw.items()}
    if config is not None and overrides:
        config = replace(config, **overrides)
    model = VideoMAE(config or _infer_config(state, overrides))
    expected = model.state_dict()
    unknown = [k for k, ours in renamed.items() if ours not in expected]
    return load_into(model, {k: v for k, v in state.items() if k in expected}, unknown, str(path), strict)
