"""Hugging Face VideoMAE checkpoints <-> :class:`videomask.model.VideoMAE`.

:func:`load_hf_checkpoint` reads a ``save_pretrained`` folder of ``VideoMAEForPreTraining`` or
``VideoMAEModel``; :func:`save_hf_checkpoint` writes one that ``transformers`` loads. Key layouts and
the loading rules are described in docs/training.md.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.io.state import load_into
from videomask.io.weights import write_bytes_atomic
from videomask.model import IMAGENET_MEAN, IMAGENET_STD, OBJECTIVE_HEADS, VideoMAE, VideoMAEConfig
from videomask.patches import Grid

# videomask block-internal key -> Hugging Face VideoMAELayer key (qkv.weight is handled apart)
_HF_BLOCK = {
    "norm1.weight": "layernorm_before.weight",
    "norm1.bias": "layernorm_before.bias",
    "norm2.weight": "layernorm_after.weight",
    "norm2.bias": "layernorm_after.bias",
    "attn.q_bias": "attention.attention.query.bias",
    "attn.v_bias": "attention.attention.value.bias",
    "attn.proj.weight": "attention.output.dense.weight",
    "attn.proj.bias": "attention.output.dense.bias",
    "mlp.fc1.weight": "intermediate.dense.weight",
    "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight",
    "mlp.fc2.bias": "output.dense.bias",
}
_QKV_HF = ("attention.attention.query.weight", "attention.attention.key.weight", "attention.attention.value.weight")
_DISK_TO_MODULE = {
    "attention.attention.q_bias": "attention.attention.query.bias",
    "attention.attention.v_bias": "attention.attention.value.bias",
}
_MODULE_TO_DISK = {v: k for k, v in _DISK_TO_MODULE.items()}
_DISK_BIAS_RE = re.compile(r"attention\.attention\.[qv]_bias$")


# ---------------------------------------------------------------------------- configs
def config_from_hf(hf_config: Any, **overrides: Any) -> VideoMAEConfig:
    """A ``transformers.VideoMAEConfig`` (or its ``config.json`` dict) -> :class:`VideoMAEConfig`."""
    c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    if c.get("model_type", "videomae") != "videomae":
        raise VideomaskError(f"not a VideoMAE config (model_type={c.get('model_type')!r})")
    if c.get("hidden_act", "gelu") != "gelu":
        raise VideomaskError(f"unsupported hidden_act {c.get('hidden_act')!r} (videomask blocks use exact GELU)")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if float(c.get(key, 0.0)) != 0.0:
            warnings.warn(f"Hugging Face config {key}={c[key]} is not used by videomask (no dropout)", stacklevel=2)

    def square(value: Any, name: str) -> int:
        if isinstance(value, (list, tuple)):
            if len(set(value)) != 1:
                raise VideomaskError(f"non-square {name}={value} is not supported")
            value = value[0]
        return int(value)

    hidden, dec_hidden = int(c.get("hidden_size", 768)), int(c.get("decoder_hidden_size", 384))
    inter, dec_inter = int(c.get("intermediate_size", 3072)), int(c.get("decoder_intermediate_size", 1536))
    for name, width, size in (
        ("intermediate_size", hidden, inter),
        ("decoder_intermediate_size", dec_hidden, dec_inter),
    ):
        if int(width * (size / width)) != size:
            raise VideomaskError(f"{name}={size} is not representable as int(width * mlp_ratio) for width {width}")
    values = dict(
        img_size=square(c.get("image_size", 224), "image_size"),
        num_frames=int(c.get("num_frames", 16)),
        tubelet_size=int(c.get("tubelet_size", 2)),
        patch_size=square(c.get("patch_size", 16), "patch_size"),
        in_chans=int(c.get("num_channels", 3)),
        embed_dim=hidden,
        depth=int(c.get("num_hidden_layers", 12)),
        num_heads=int(c.get("num_attention_heads", 12)),
        mlp_ratio=inter / hidden,
        qkv_bias=bool(c.get("qv_bias", c.get("qkv_bias", True))),
        layer_norm_eps=float(c.get("layer_norm_eps", 1e-12)),
        use_mean_pooling=bool(c.get("use_mean_pooling", True)),
        decoder_embed_dim=dec_hidden,
        decoder_depth=int(c.get("decoder_num_hidden_layers", 4)),
        decoder_num_heads=int(c.get("decoder_num_attention_heads", 6)),
        decoder_mlp_ratio=dec_inter / dec_hidden,
        decoder_norm_eps=1e-5,  # HF's decoder norm is a default nn.LayerNorm
        norm_pix_loss=bool(c.get("norm_pix_loss", True)),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    values.update(overrides)
    return VideoMAEConfig(**values)


def config_to_hf(config: VideoMAEConfig) -> Any:
    """:class:`VideoMAEConfig` -> ``transformers.VideoMAEConfig`` (warns where Hugging Face differs)."""
    from transformers import VideoMAEConfig as HFConfig  # slow to import; only needed to export

    if config.decoder_norm_eps != 1e-5:
        warnings.warn(
            f"decoder_norm_eps={config.decoder_norm_eps} becomes 1e-5 in Hugging Face (its decoder norm is fixed)",
            stacklevel=2,
        )
    if tuple(config.mean) != IMAGENET_MEAN or tuple(config.std) != IMAGENET_STD:
        warnings.warn("Hugging Face VideoMAE always unnormalises the target with ImageNet mean/std", stacklevel=2)
    if config.pos_grid is not None and Grid(*config.pos_grid) != config.grid():
        warnings.warn(
            f"pos_grid={config.pos_grid} is lost in Hugging Face (its positions are over image_size and num_frames)",
            stacklevel=2,
        )
    return HFConfig(
        image_size=config.img_size,
        patch_size=config.patch_size,
        num_channels=config.in_chans,
        num_frames=config.num_frames,
        tubelet_size=config.tubelet_size,
        hidden_size=config.embed_dim,
        num_hidden_layers=config.depth,
        num_attention_heads=config.num_heads,
        intermediate_size=int(config.embed_dim * config.mlp_ratio),
        hidden_act="gelu",
        layer_norm_eps=config.layer_norm_eps,
        qv_bias=config.qkv_bias,
        use_mean_pooling=config.use_mean_pooling,
        decoder_num_attention_heads=config.decoder_num_heads,
        decoder_hidden_size=config.decoder_embed_dim,
        decoder_num_hidden_layers=config.decoder_depth,
        decoder_intermediate_size=int(config.decoder_embed_dim * config.decoder_mlp_ratio),
        norm_pix_loss=config.norm_pix_loss,
        architectures=["VideoMAEForPreTraining"],
    )


# ---------------------------------------------------------------------------- key maps
def _hf_names(key: str, prefix: str) -> list[str] | None:
    """The Hugging Face key(s) holding videomask ``key`` (3 keys for a fused qkv weight); None if no home."""
    if key.startswith("patch_embed.proj."):
        return [f"{prefix}embeddings.patch_embeddings.projection.{key.rsplit('.', 1)[1]}"]
    if key.startswith("norm."):
        return [f"{prefix}layernorm.{key.split('.', 1)[1]}"]
    if key.startswith("fc_norm.") or key in ("encoder_to_decoder.weight", "mask_token"):
        return [key]
    if key.startswith("decoder_norm."):
        return [f"decoder.norm.{key.split('.', 1)[1]}"]
    if key.startswith("decoder_head."):
        return [f"decoder.head.{key.split('.', 1)[1]}"]
    m = re.fullmatch(r"(blocks|decoder_blocks)\.(\d+)\.(.+)", key)
    if m is None:
        return None
    base = f"{prefix}encoder.layer.{m[2]}." if m[1] == "blocks" else f"decoder.decoder_layers.{m[2]}."
    if m[3] == "attn.qkv.weight":
        return [base + name for name in _QKV_HF]
    return [base + _HF_BLOCK[m[3]]] if m[3] in _HF_BLOCK else None


# ---------------------------------------------------------------------------- Hugging Face
def _read_hf_weights(folder: Path) -> dict[str, Tensor]:
    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_file(str(folder / shard)))
        return state
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise VideomaskError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def hf_state_to_videomask(hf_state: dict[str, Tensor], model: VideoMAE) -> tuple[dict[str, Tensor], list[str]]:
    """Hugging Face state dict -> (videomask state dict, unknown HF keys). Handles the ``videomae.`` prefix or none."""
    prefix = "videomae." if any(k.startswith("videomae.") for k in hf_state) else ""
    # the files on disk (Hub checkpoints, transformers 4.x and 5.x save_pretrained) name the biases
    # attention.attention.q_bias / v_bias; transformers 5 renames them to query.bias / value.bias on load
    hf_state = {_DISK_BIAS_RE.sub(lambda m: _DISK_TO_MODULE[m[0]], k): v for k, v in hf_state.items()}
    state: dict[str, Tensor] = {}
    used: set[str] = set()
    for key in model.state_dict():
        names = _hf_names(key, prefix)
        if not names or not all(n in hf_state for n in names):
            continue
        used.update(names)
        state[key] = torch.cat([hf_state[n] for n in names], dim=0) if len(names) > 1 else hf_state[names[0]]
    unknown = sorted(k for k in hf_state if k not in used)
    return state, unknown


def videomask_state_to_hf(model: VideoMAE, prefix: str = "videomae.") -> dict[str, Tensor]:
    """videomask model -> Hugging Face ``VideoMAEForPreTraining`` state dict as stored on disk.

    The fused qkv weight is split into query/key/value (no k bias); the biases take the on-disk names
    ``attention.attention.q_bias`` / ``v_bias`` that Hub checkpoints and ``save_pretrained`` use.
    """
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if key.split(".", 1)[0] in OBJECTIVE_HEADS:
            continue  # a teacher / contrastive head: the HF pretraining model predicts pixels only
        names = _hf_names(key, prefix)
        if names is None:
            raise VideomaskError(f"model key {key!r} has no Hugging Face counterpart")
        if key == "fc_norm.weight" or key == "fc_norm.bias":
            continue  # fc_norm lives in VideoMAEForVideoClassification, not in the pretraining model
        parts = value.chunk(len(names), dim=0) if len(names) > 1 else (value,)
        for name, part in zip(names, parts):
            for module_name, disk_name in _MODULE_TO_DISK.items():
                if name.endswith(module_name):
                    name = name[: -len(module_name)] + disk_name
            out[name] = part.detach().contiguous().clone()
    return out


def load_hf_checkpoint(folder: str | Path, *, strict: bool = True, **overrides: Any) -> VideoMAE:
    """Load a Hugging Face ``save_pretrained`` folder of ``VideoMAEForPreTraining`` / ``VideoMAEModel``.

    ``overrides`` change config fields that do not touch the weights (e.g. ``decoder_mask_ratio``).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise VideomaskError(f"{folder}: not a Hugging Face checkpoint folder (no config.json)")
    config = config_from_hf(json.loads((folder / "config.json").read_text()), **overrides)
    model = VideoMAE(config)
    state, unknown = hf_state_to_videomask(_read_hf_weights(folder), model)
    load_into(model, state, unknown, str(folder), strict)
    return model


def save_hf_checkpoint(model: VideoMAE, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` loadable by ``VideoMAEForPreTraining.from_pretrained``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_to_hf(model.config).save_pretrained(folder)
    # the shared atomic writer: the file gets the run's other checkpoints' permissions (umask), not 0600
    write_bytes_atomic(folder / "model.safetensors", st_save(videomask_state_to_hf(model), metadata={"format": "pt"}))
    return folder
