"""Embedders: ``video [B, C, T, H, W] -> [B, L, D]``, one vector per tubelet token.

:class:`PixelEmbedder` (model-free), :class:`ModelEmbedder` (a VideoMAE encoder's first blocks),
:class:`CNNEmbedder` (ImageNet MobileNetV2) and :class:`CallableEmbedder` (any function);
:func:`build_embedder` makes one from a CLI spec or a stored identity, :func:`check_identity` compares two.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.difference.mobilenet import mobilenet_trunk
from videomask.errors import VideomaskError
from videomask.io import load_model
from videomask.model import resample_pos_table, sinusoid_table
from videomask.patches import Grid, Tubelet, as_tubelet, grid_for

__all__ = [
    "Embedder",
    "PixelEmbedder",
    "ModelEmbedder",
    "CNNEmbedder",
    "CallableEmbedder",
    "build_embedder",
    "check_identity",
]


@runtime_checkable
class Embedder(Protocol):
    """``__call__(video [B, C, T, H, W]) -> [B, L, D]`` (one vector per tubelet token, token order)."""

    identity: dict

    def __call__(self, video: Tensor) -> Tensor: ...

    def to(self, device: torch.device | str) -> "Embedder": ...


def _full_fp32(tensor: Tensor):
    """A context that turns cuDNN's TF32 off for convolutions on a CUDA tensor (a no-op on the CPU)."""

    if not tensor.is_cuda:
        return contextlib.nullcontext()
    b = torch.backends.cudnn
    return b.flags(enabled=b.enabled, benchmark=b.benchmark, deterministic=b.deterministic, allow_tf32=False)


class PixelEmbedder:
    """Model-free embedder: per-token normalised tubelet pixels through a fixed Gaussian projection.

    The clip is first average-pooled by ``pool`` x ``pool`` pixels in space (default 2: a 16 x 16
    patch becomes 8 x 8 values per frame and channel; ``pool=1`` keeps every pixel), which keeps
    colour and texture down to 2-px detail and makes the embedder about ``pool**2`` times cheaper. A token's
    ``t * (p/pool)**2 * C`` values are standardised (zero mean, unit variance over the token, so
    brightness and contrast drop out while texture and relative colour stay), then projected to
    ``dim`` with a matrix of ``N(0, 1/P)`` entries drawn from ``torch.Generator().manual_seed(seed)``.
    Deterministic from ``(seed, dim, tubelet, pool)``, which is its identity.
    """

    def __init__(
        self, *, dim: int = 64, seed: int = 0, tubelet: int | Sequence[int] = (2, 16, 16), pool: int = 2
    ) -> None:
        if dim <= 0:
            raise VideomaskError(f"pixel embedder dim must be > 0, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)
        self.tubelet: Tubelet = as_tubelet(tubelet)
        self.pool = int(pool)
        if self.pool < 1 or self.tubelet[1] % self.pool or self.tubelet[2] % self.pool:
            raise VideomaskError(f"pixel embedder pool={pool} must divide the patch size {self.tubelet[1:]}")
        self.device = torch.device("cpu")
        self._projections: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}  # (C, device) -> conv kernels

    @property
    def identity(self) -> dict:
        return {"kind": "pixel", "seed": self.seed, "dim": self.dim, "tubelet": list(self.tubelet), "pool": self.pool}

    @property
    def _pooled_tubelet(self) -> Tubelet:
        t, ph, pw = self.tubelet
        return (t, ph // self.pool, pw // self.pool)

    def projection(self, in_features: int) -> Tensor:
        """The fixed ``[P, D]`` projection for ``P = in_features`` (drawn on CPU from the seed)."""
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(in_features, self.dim, generator=g) / math.sqrt(in_features)  # [P, D]

    def _kernels(self, channels: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Cached conv kernels for the *summed* (not averaged) pooled clip: projection + mean
        ``[D+1, C, t, p, p]`` and mean ``[1, C, t, p, p]``, both scaled by ``1 / pool**2`` (the mean of a
        pooling window is its sum over ``pool**2``; the mean-square kernel by ``1 / pool**4``), and ``1ᵀP [D]``.

        Scaling a kernel by a power of two is exact in floating point, so for ``pool`` = 1, 2, 4 the
        convolutions give the same numbers as on the average-pooled clip (only the order of the
        pooling window's additions differs).
        """
        key = (channels, device)
        if key not in self._projections:
            t, ph, pw = self._pooled_tubelet
            n = t * ph * pw * channels
            scale = 1.0 / (self.pool * self.pool)
            proj = self.projection(n)  # [P, D], rows in patchify order (t, p, p, C)
            weight = proj.T.reshape(self.dim, t, ph, pw, channels).permute(0, 4, 1, 2, 3)  # [D, C, t, p, p]
            mean = torch.full((1, channels, t, ph, pw), 1.0 / n)
            self._projections[key] = (
                (torch.cat([weight, mean]) * scale).contiguous().to(device),
                (mean * (scale * scale)).to(device),
                proj.sum(dim=0).to(device),
            )
        return self._projections[key]

    def _pool_sum(self, video: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` -> ``[B, C, T, H/pool, W/pool]``: the *sum* over each ``pool x pool`` window.

        Two passes of plain additions of strided views (rows, then column pairs): cheaper on the CPU
        than ``avg_pool3d``.
        """
        p = self.pool
        rows = video.unflatten(3, (video.shape[3] // p, p))  # [B, C, T, H/p, p, W]
        acc = rows[:, :, :, :, 0] + rows[:, :, :, :, 1]  # (only called with pool >= 2)
        for i in range(2, p):
            acc += rows[:, :, :, :, i]
        cols = acc.unflatten(4, (acc.shape[4] // p, p))  # [B, C, T, H/p, W/p, p]
        out = cols[..., 0] + cols[..., 1]
        for i in range(2, p):
            out += cols[..., i]
        return out  # [B, C, T, H/p, W/p]

    @torch.no_grad()
    def __call__(self, video: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` -> ``[B, L, D]``: ``standardise(patchify(pooled video)) @ projection``.

        Computed without materialising the patches: strided ``conv3d`` kernels give each token's
        projection and mean (one conv) and its mean square (a second), using
        ``((x - m) / s) @ P = (x @ P - m * 1ᵀP) / s`` (``s``: unbiased standard deviation, as ``torch.std``).
        The pooling's ``1 / pool**2`` is folded into the kernels (see :meth:`_kernels`).
        """
        video = video.float()
        grid_for(video.shape[2:], self.tubelet)
        # standardising a token is unchanged by one constant added to all its values, so subtract each
        # clip's mean first: E[x^2] - E[x]^2 below then does not cancel away a low-contrast token's variance
        video = video - video.mean(dim=(1, 2, 3, 4), keepdim=True)
        if self.pool > 1:
            video = self._pool_sum(video)  # [B, C, T, H/pool, W/pool], window sums
        B, C = video.shape[:2]
        tubelet = self._pooled_tubelet
        n = tubelet[0] * tubelet[1] * tubelet[2] * C  # values per token
        weight, mean_kernel, proj_sum = self._kernels(C, video.device)
        with _full_fp32(video):  # no TF32 on Ampere+: GPU scores must match statistics fitted on a CPU
            out = F.conv3d(video, weight, stride=tubelet).flatten(2)  # [B, D+1, L]
            sq = F.conv3d(video.square(), mean_kernel, stride=tubelet).flatten(2)  # [B, 1, L]
        xp, mean = out[:, :-1], out[:, -1:]  # [B, D, L], [B, 1, L]
        std = ((sq - mean * mean).clamp_min(0) * (n / (n - 1))).sqrt()
        # the [B, D, L] layout keeps these element-wise ops contiguous; one transposing copy at the end
        emb = (xp - mean * proj_sum[:, None]) / (std + 1e-6)  # [B, D, L]
        return emb.transpose(1, 2).contiguous()  # [B, L, D]

    def to(self, device: torch.device | str) -> "PixelEmbedder":
        self.device = torch.device(device)  # kernels are built per (channels, device) on first use
        return self


def _fingerprint(module: torch.nn.Module) -> str:
    """SHA-1 of a module's state dict (names, shapes, values): a weight-level identity."""
    h = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _model_tubelet(model: torch.nn.Module) -> Tubelet | None:
    """The model's tubelet ``(t, p, p)`` when it exposes one (``tubelet`` or ``config.tubelet`` / HF names)."""
    for owner in (model, getattr(model, "config", None)):
        if owner is None:
            continue
        value = getattr(owner, "tubelet", None)
        if value is not None:
            return as_tubelet(value)
        t, p = getattr(owner, "tubelet_size", None), getattr(owner, "patch_size", None)
        if isinstance(t, int) and p is not None:
            return as_tubelet((t, *p) if isinstance(p, (tuple, list)) else (t, int(p)))
    return None


class _EncoderTrunk(torch.nn.Module):
    """The first ``depth`` encoder blocks of a VideoMAE (patch embedding, position table, blocks), frozen.

    Only these parts are copied from the model (no decoder, no later blocks), so the embedder costs
    the memory of what it runs. ``depth = 0`` is the tubelet embedding alone (no position).
    """

    def __init__(self, model: torch.nn.Module, depth: int) -> None:
        super().__init__()
        self.tubelet = _model_tubelet(model)
        self.patch_embed = copy.deepcopy(model.patch_embed)
        self.blocks = torch.nn.ModuleList(copy.deepcopy(model.blocks[i]) for i in range(depth))
        # the encoder's final norm only after its last block (as the model's own output)
        self.norm = copy.deepcopy(model.norm) if depth == len(model.blocks) and depth > 0 else torch.nn.Identity()
        self.embed_dim = int(model.patch_embed.proj.weight.shape[0])
        pos_grid = getattr(getattr(model, "config", None), "pos_grid", None)  # the grid its positions mean
        self.pos_grid = None if pos_grid is None else Grid(*pos_grid)

    def forward(self, video: Tensor) -> Tensor:

        x = self.patch_embed.proj(video.to(self.patch_embed.proj.weight.dtype))  # [B, D, t', h, w]
        grid = Grid(*x.shape[2:])
        x = x.flatten(2).transpose(1, 2)  # [B, L, D] in token order
        if len(self.blocks):
            if self.pos_grid is None or self.pos_grid == grid:
                pos = sinusoid_table(x.shape[1], self.embed_dim)  # [L, D]
            else:  # as the model does for a clip of another grid than its positions were learned on
                pos = resample_pos_table(sinusoid_table(self.pos_grid.num_tokens, self.embed_dim), self.pos_grid, grid)
            x = x + pos.to(x.device, x.dtype)[None]  # [B, L, D]
            for blk in self.blocks:
                x = blk(x)
        return self.norm(x)  # [B, L, D]


class _PatchContract(torch.nn.Module):
    """A frozen copy of a user model with ``embed_patches(video) -> [B, L, D]``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, video: Tensor) -> Tensor:
        dtype = next(self.inner.parameters()).dtype
        return self.inner.embed_patches(video.to(dtype))


def _parse_layer(layer: str, depth: int) -> int:
    """``"patch"`` -> 0 blocks; ``"block:N"`` -> N (1 <= N <= depth)."""
    if layer == "patch":
        return 0
    if layer.startswith("block:") and layer[6:].isdigit() and 1 <= int(layer[6:]) <= depth:
        return int(layer[6:])
    raise VideomaskError(f"model embedder layer must be 'patch' or 'block:N' with 1 <= N <= {depth}, got {layer!r}")


class ModelEmbedder:
    """Embeds with a frozen copy of a VideoMAE encoder's first blocks: ``[B, C, T, H, W]`` -> ``[B, L, D]``.

    ``layer="patch"``: the tubelet embedding (one linear map per token, cheap); ``layer="block:N"``: the
    tokens after encoder block ``N`` with every token visible (no mask), which sees context and motion.
    Only the patch embedding and the first ``N`` blocks are copied and frozen, so training the model
    afterwards leaves the embedding space fixed and no second full model is held. The identity holds a
    SHA-1 fingerprint of the copied weights, so statistics fitted with one checkpoint refuse another;
    ``source`` (e.g. the checkpoint path) is recorded so :func:`build_embedder` can rebuild it.
    """

    def __init__(self, model: torch.nn.Module, *, layer: str = "patch", source: str | None = None) -> None:
        self.layer = layer
        if hasattr(model, "patch_embed") and hasattr(model, "blocks"):  # a videomask VideoMAE: copy what runs
            self.depth = _parse_layer(layer, len(model.blocks))
            self.model: torch.nn.Module = _EncoderTrunk(model, self.depth)
            self.tubelet = self.model.tubelet
            weights = self.model.patch_embed if self.depth == 0 else self.model
        elif hasattr(model, "embed_patches") and layer == "patch":  # any model with the embed_patches contract
            self.depth = 0
            self.model = _PatchContract(copy.deepcopy(model))
            self.tubelet = _model_tubelet(model)
            weights = self.model
        else:
            raise VideomaskError(
                f"model {type(model).__name__} needs patch_embed and blocks (a videomask VideoMAE), or "
                "embed_patches(video) -> [B, L, D] for layer 'patch'"
            )
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.source = source
        self._fingerprint = _fingerprint(weights)
        self._name = type(model).__name__

    @property
    def identity(self) -> dict:
        ident = {"kind": "model", "layer": self.layer, "model": self._name, "fingerprint": self._fingerprint}
        if self.source is not None:
            ident["source"] = self.source
        return ident

    @torch.no_grad()
    def __call__(self, video: Tensor) -> Tensor:
        return self.model(video).float()  # [B, L, D]

    def to(self, device: torch.device | str) -> "ModelEmbedder":
        self.model.to(device)
        return self


class CNNEmbedder:
    """A frozen ImageNet MobileNetV2 (stride-16 block, 96 channels) per frame, pooled onto the token grid.

    ``[B, C, T, H, W]`` (ImageNet-normalised RGB, as the data pipeline gives) -> ``[B, L, 96]``: every
    frame goes through the trunk, the ``[96, H/16, W/16]`` map is average-pooled to the patch grid
    ``(H/p, W/p)`` (the identity for ``p = 16``) and the ``t`` frames of a tubelet are averaged.
    """

    def __init__(self, *, tubelet: int | Sequence[int] = (2, 16, 16), weights: str | Path | None = None) -> None:
        self.tubelet: Tubelet = as_tubelet(tubelet)
        self.weights = None if weights is None else str(weights)
        self.model = mobilenet_trunk(weights)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._fingerprint = _fingerprint(self.model)

    @property
    def identity(self) -> dict:
        return {
            "kind": "cnn",
            "model": "mobilenet_v2_s16",
            "fingerprint": self._fingerprint,
            "tubelet": list(self.tubelet),
        }

    @torch.no_grad()
    def __call__(self, video: Tensor) -> Tensor:
        grid = grid_for(video.shape[2:], self.tubelet)
        B, C, T, H, W = video.shape
        frames = video.transpose(1, 2).reshape(B * T, C, H, W).to(next(self.model.parameters()).dtype)  # [B*T, C, H, W]
        feats = self.model(frames)  # [B*T, 96, ~H/16, ~W/16]
        if feats.shape[-2:] != (grid.h, grid.w):
            feats = F.adaptive_avg_pool2d(feats, (grid.h, grid.w))  # [B*T, 96, h, w]
        t = self.tubelet[0]
        feats = feats.float().view(B, grid.t, t, feats.shape[1], grid.h, grid.w).mean(dim=2)  # [B, t', 96, h, w]
        return feats.permute(0, 1, 3, 4, 2).reshape(B, grid.num_tokens, -1)  # [B, L, 96]

    def to(self, device: torch.device | str) -> "CNNEmbedder":
        self.model.to(device)
        return self


class CallableEmbedder:
    """Wraps any ``fn(video [B, C, T, H, W]) -> [B, L, D]`` with a user-given JSON-able identity."""

    def __init__(self, fn: Callable[[Tensor], Tensor], identity: Mapping[str, Any]) -> None:
        try:
            json.dumps(dict(identity))
        except TypeError as err:
            raise VideomaskError(f"a callable embedder's identity must be JSON-able: {err}") from None
        self.fn = fn
        self._identity = {"kind": "callable", **dict(identity)}

    @property
    def identity(self) -> dict:
        return dict(self._identity)

    @torch.no_grad()
    def __call__(self, video: Tensor) -> Tensor:
        return self.fn(video)

    def to(self, device: torch.device | str) -> "CallableEmbedder":
        if hasattr(self.fn, "to"):
            self.fn.to(device)  # type: ignore[union-attr]
        return self


def _load_checkpoint_model(path: str) -> torch.nn.Module:
    """A videomask ``VideoMAE`` from a Hugging Face folder (``config.json``), a videomask checkpoint
    (``.safetensors`` file with its stored ``model_config``, or a folder holding ``model.safetensors``)
    or an original VideoMAE ``.pth`` (see :func:`videomask.io.load_model`)."""

    return load_model(path)[0]


def build_embedder(
    spec: str | Mapping[str, Any],
    *,
    tubelet: int | Sequence[int] = (2, 16, 16),
    dim: int = 64,
    seed: int = 0,
    pool: int = 2,
    layer: str = "patch",
) -> Any:
    """An embedder from a CLI spec or from a stored identity dict.

    Specs: ``"pixel"`` (model-free), ``"cnn"`` (the shipped ImageNet MobileNetV2; ``"cnn:PATH"`` for other
    weights of the same network), ``"checkpoint:PATH"`` (a VideoMAE checkpoint's encoder; ``layer`` is
    ``"patch"`` or ``"block:N"``).
    """
    if isinstance(spec, Mapping):
        kind = spec.get("kind")
        if kind == "pixel":
            return PixelEmbedder(
                dim=int(spec["dim"]), seed=int(spec["seed"]), tubelet=spec["tubelet"], pool=int(spec.get("pool", 1))
            )
        if kind == "cnn":
            embedder = CNNEmbedder(tubelet=spec["tubelet"], weights=spec.get("weights"))
            check_identity(spec, embedder.identity)
            return embedder
        if kind == "model" and spec.get("source"):
            embedder = ModelEmbedder(
                _load_checkpoint_model(str(spec["source"])),
                layer=str(spec.get("layer", "patch")),
                source=str(spec["source"]),
            )
            check_identity(spec, embedder.identity)
            return embedder
        raise VideomaskError(
            f"statistics were fitted with a {kind!r} embedder that cannot be rebuilt from the file; "
            "pass the same embedder (embedder=...)"
        )
    if spec == "pixel":
        return PixelEmbedder(dim=dim, seed=seed, tubelet=tubelet, pool=pool)
    if spec == "cnn" or spec.startswith("cnn:"):
        return CNNEmbedder(tubelet=tubelet, weights=spec.split(":", 1)[1] if ":" in spec else None)
    if spec.startswith("checkpoint:"):
        source = spec.split(":", 1)[1]
        return ModelEmbedder(_load_checkpoint_model(source), layer=layer, source=source)
    raise VideomaskError(f"unknown embedder {spec!r} (use 'pixel', 'cnn' or 'checkpoint:PATH')")


def check_identity(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    """Raise when an embedder is not the one the statistics were fitted with (``source`` may differ)."""
    a = {k: v for k, v in dict(expected).items() if k != "source"}
    b = {k: v for k, v in dict(actual).items() if k != "source"}
    if json.loads(json.dumps(a)) != json.loads(json.dumps(b)):
        raise VideomaskError(
            f"embedder mismatch: the statistics were fitted with {json.dumps(a, sort_keys=True)}, "
            f"got {json.dumps(b, sort_keys=True)}"
        )
