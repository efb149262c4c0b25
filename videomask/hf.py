"""Hugging Face VideoMAE and original VideoMAE ``.pth`` checkpoints <-> :class:`videomask.model.VideoMAE`.

* :func:`load_hf_checkpoint` reads a ``save_pretrained`` folder (``config.json`` + ``model.safetensors``,
  sharded safetensors, or ``pytorch_model.bin`` read weights-only) of ``VideoMAEForPreTraining`` or
  ``VideoMAEModel`` (an encoder only: the decoder is then freshly initialised, and the log says so).
* :func:`save_hf_checkpoint` writes a folder that ``transformers.VideoMAEForPreTraining.from_pretrained`` loads.
* :func:`load_videomae_pth` reads the original MCG-NJU VideoMAE layout (``checkpoint['model']``, keys such as
  ``encoder.blocks.0.attn.qkv.weight``, ``q_bias``, ``v_bias``, ``decoder.head.weight``; or the fine-tune
  layout without the ``encoder.`` prefix) with ``torch.load(weights_only=True)``;
  :func:`to_videomae_state_dict` writes that layout.

Key layouts: Hugging Face splits attention into ``query``/``key``/``value`` (the key has no bias);
videomask keeps timm's fused ``attn.qkv.weight`` plus ``attn.q_bias`` / ``attn.v_bias`` like the original.
Unknown checkpoint keys raise :class:`VideomaskError` (or, with ``strict=False``, are logged and skipped);
missing decoder keys are logged (fresh decoder), other missing keys raise.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.model import IMAGENET_MEAN, IMAGENET_STD, VideoMAE, VideoMAEConfig

log = logging.getLogger("videomask.hf")

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
_DECODER_PREFIXES = ("encoder_to_decoder.", "mask_token", "decoder_blocks.", "decoder_norm.", "decoder_head.")


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
    from transformers import VideoMAEConfig as HFConfig

    if config.decoder_norm_eps != 1e-5:
        warnings.warn(
            f"decoder_norm_eps={config.decoder_norm_eps} becomes 1e-5 in Hugging Face (its decoder norm is fixed)",
            stacklevel=2,
        )
    if tuple(config.mean) != IMAGENET_MEAN or tuple(config.std) != IMAGENET_STD:
        warnings.warn("Hugging Face VideoMAE always unnormalises the target with ImageNet mean/std", stacklevel=2)
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


def _list_keys(keys: list[str], limit: int = 12) -> str:
    """``a, b, c ... and N more`` (every key when there are at most ``limit``)."""
    head = ", ".join(keys[:limit])
    return head + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def _group_keys(keys: list[str]) -> str:
    """Keys grouped by their top module: ``decoder_blocks (30 keys), mask_token``."""
    groups: dict[str, int] = {}
    for key in keys:
        top = key.split(".", 1)[0]
        groups[top] = groups.get(top, 0) + 1
    return ", ".join(f"{top} ({n} keys)" if n > 1 else top for top, n in groups.items())


def _load_into(model: VideoMAE, state: dict[str, Tensor], unknown: list[str], source: str, strict: bool) -> VideoMAE:
    """Copy ``state`` (videomask keys) into ``model``; report unknown and missing keys (see module docstring).

    ``unknown`` lists the checkpoint keys (in the checkpoint's own names) that map to no model key.
    """
    expected = model.state_dict()
    unknown = sorted(set(unknown) | {k for k in state if k not in expected})
    missing = sorted(k for k in expected if k not in state)
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if shape_errors:
        raise VideomaskError(
            f"{source}: shape mismatch for {len(shape_errors)} key(s): {'; '.join(shape_errors[:5])}"
            " (a different model size? pass the matching config or size overrides)"
        )
    if unknown:
        msg = f"{source}: {len(unknown)} unknown key(s) not used by the model: {_list_keys(unknown)}"
        if strict:
            raise VideomaskError(msg + " (pass strict=False to skip them)")
        log.warning(msg + " (skipped)")
    fresh_decoder = [k for k in missing if k.startswith(_DECODER_PREFIXES)]
    fresh_fc = [k for k in missing if k.startswith("fc_norm.")]  # only classification checkpoints carry fc_norm
    hard = [k for k in missing if k not in fresh_decoder and k not in fresh_fc]
    if hard:
        msg = f"{source}: {len(hard)} model key(s) missing from the checkpoint: {_list_keys(hard)}"
        if strict:
            raise VideomaskError(msg + " (pass strict=False to keep them freshly initialised)")
        log.warning(msg + " (left at their fresh initialisation)")
    if fresh_fc:
        log.info("%s: no fc_norm in the checkpoint; features() uses a fresh (identity-affine) fc_norm", source)
    if fresh_decoder:
        log.warning(
            "%s: the checkpoint has no decoder; %d decoder key(s) freshly initialised: %s",
            source,
            len(fresh_decoder),
            _group_keys(fresh_decoder),
        )
    result = model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return model


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
    _load_into(model, state, unknown, str(folder), strict)
    return model


def save_hf_checkpoint(model: VideoMAE, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` loadable by ``VideoMAEForPreTraining.from_pretrained``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_to_hf(model.config).save_pretrained(folder)
    save_file(videomask_state_to_hf(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


# ---------------------------------------------------------------------------- original VideoMAE .pth
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
    return _load_into(model, {k: v for k, v in state.items() if k in expected}, unknown, str(path), strict)


# ---------------------------------------------------------------------------- transformers.Trainer
class MaskingCollator:
    """A ``data_collator`` for ``transformers.Trainer`` + ``VideoMAEForPreTraining``: clips -> masked batch.

    ``collator(items)`` returns ``{"pixel_values": float [B, T, C, H, W], "bool_masked_pos": bool [B, L]}``
    (plus ``"anchors": bool [B, L]`` with ``return_anchors=True``; all False for maskers without anchors).
    Items may be :class:`~videomask.data.VideoDataset` items (dicts with ``video [C, T, H, W]``, or lists
    of them when ``num_sample > 1``; the metadata the ``objects`` masker needs comes along), dicts with a
    Hugging Face ``pixel_values [T, C, H, W]``, or bare ``[C, T, H, W]`` tensors. Every registered masker
    works (``masker``: a :class:`~videomask.masking.Masker` or a registered name).

    With ``Trainer`` pass ``TrainingArguments(remove_unused_columns=False)`` (else Trainer strips the
    ``video`` key before the collator sees it). ``anchors`` is not an argument of
    ``VideoMAEForPreTraining.forward``: ask for it only in a ``compute_loss`` that pops it.
    Masks are drawn from a generator seeded from ``(seed, DataLoader worker id, call number)`` when
    ``seed`` is given (reproducible, different in every worker), else from torch's global RNG.
    """

    def __init__(
        self, masker: Any, *, return_anchors: bool = False, seed: int | None = None, **masker_options: Any
    ) -> None:
        if isinstance(masker, str):
            from videomask.masking import build_masker

            masker = build_masker(masker, **masker_options)
        elif masker_options:
            raise VideomaskError(
                "masker options are only taken with a masker name, e.g. MaskingCollator('tube', ratio=0.9)"
            )
        self.masker, self.return_anchors, self.seed = masker, bool(return_anchors), seed
        self.calls = 0

    def _generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        from torch.utils.data import get_worker_info

        from videomask.seeding import step_seed

        worker = get_worker_info()
        seed = step_seed(int(self.seed), self.calls, worker.id if worker is not None else 0, 0)
        return torch.Generator().manual_seed(seed)

    @staticmethod
    def batch_of(items: Any) -> dict[str, Any]:
        """The items as a videomask batch dict (``video [B, C, T, H, W]`` and whatever metadata they carry)."""
        from videomask.data import collate_clips

        items = list(items)
        if not items:
            raise VideomaskError("MaskingCollator got an empty batch")
        first = items[0][0] if isinstance(items[0], (list, tuple)) and items[0] else items[0]
        if isinstance(first, Tensor):
            return {"video": torch.stack(items).float()}  # [B, C, T, H, W]
        if not isinstance(first, dict):
            raise VideomaskError(f"MaskingCollator takes dicts or [C, T, H, W] tensors, got {type(first).__name__}")
        if "video" in first:
            if all(k in first for k in ("video_id", "frame_indices", "geometry", "label", "index")):
                return collate_clips(items)
            return {"video": torch.stack([i["video"] for i in items]).float()}  # [B, C, T, H, W]
        if "pixel_values" in first:
            return {
                "video": torch.stack([i["pixel_values"] for i in items]).float().transpose(1, 2)
            }  # [B, T, C, H, W] -> [B, C, T, H, W]
        raise VideomaskError(
            f"MaskingCollator items need a 'video' or 'pixel_values' key, got keys {sorted(first)}"
            " (with transformers.Trainer set remove_unused_columns=False)"
        )

    def __call__(self, items: Any) -> dict[str, Tensor]:
        batch = self.batch_of(items)
        video = batch["video"]  # [B, C, T, H, W]
        if video.dim() != 5:
            raise VideomaskError(
                f"MaskingCollator: clips must be [C, T, H, W], got a batch of shape {tuple(video.shape)}"
            )
        with torch.no_grad():
            result = self.masker.generate(batch, generator=self._generator())
        self.calls += 1
        out = {
            "pixel_values": video.transpose(1, 2).contiguous(),  # [B, T, C, H, W] (Hugging Face)
            "bool_masked_pos": result.mask.bool(),
        }  # [B, L]
        if self.return_anchors:
            out["anchors"] = (
                result.anchors.bool() if result.anchors is not None else torch.zeros_like(out["bool_masked_pos"])
            )
        return out


__all__ = [
    "MaskingCollator",
    "config_from_hf",
    "config_to_hf",
    "hf_state_to_videomask",
    "load_hf_checkpoint",
    "load_videomae_pth",
    "save_hf_checkpoint",
    "to_videomae_state_dict",
    "videomask_state_to_hf",
]
