"""Teachers: frozen networks whose per-token features the feature objectives predict.

A teacher maps a normalised clip ``[B, C, T, H, W]`` to targets ``[B, L, D]`` on the student's token grid,
each token's feature normalised (LayerNorm without parameters, as MaskFeat / MVD normalise their targets):

* ``cnn`` (:class:`FrameTeacher`): the shipped ImageNet MobileNetV2 trunk (stride 16, 96 channels) run on
  every frame at ``size`` pixels (shorter side), average-pooled onto the token grid per frame, and the
  ``t`` frames of a tubelet concatenated (``D = t * 96``). Its per-frame maps can be cached once per video
  (:mod:`videomask.objectives.cache`); ``cnn-random`` is the same network with random weights (a reference).
* ``checkpoint:PATH`` (:class:`TokenTeacher`): a frozen VideoMAE checkpoint's encoder tokens after block
  ``layer`` (every token visible), e.g. a larger model distilled into a smaller one.
* any callable ``fn(video) -> [B, L, D]`` with a JSON identity (:class:`TokenTeacher` around a
  :class:`~videomask.difference.CallableEmbedder`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.difference import CallableEmbedder, ModelEmbedder, mobilenet_trunk
from videomask.difference.embedders import _fingerprint
from videomask.errors import VideomaskError
from videomask.io import load_model
from videomask.patches import Tubelet, as_tubelet, grid_for

__all__ = ["FrameTeacher", "TokenTeacher", "build_teacher", "frame_tokens", "pool_boxes"]


def pool_boxes(maps: Tensor, boxes: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Average ``maps [N, C, Hf, Wf]`` over a grid of ``out_hw`` cells inside one box per map.

    ``boxes [N, 4]`` are ``(x0, y0, x1, y1)`` in feature-map cells (cell ``j`` spans ``[j, j+1)``). Each
    output cell averages bilinear samples at ``ceil(cell size)`` x ``ceil(cell size)`` evenly spaced points,
    so a box whose cells cover whole map cells gives their exact mean. -> ``[N, C, h, w]``.
    """
    # torchvision is slow to import and loads its C library: only the feature objectives need it
    from torchvision.ops import roi_align

    n = maps.shape[0]
    bin_h = float((boxes[:, 3] - boxes[:, 1]).max()) / out_hw[0]
    bin_w = float((boxes[:, 2] - boxes[:, 0]).max()) / out_hw[1]
    ratio = max(1, math.ceil(max(bin_h, bin_w) - 1e-6))
    rois = torch.cat([torch.arange(n, dtype=maps.dtype, device=maps.device)[:, None], boxes.to(maps)], dim=1)
    return roi_align(maps, rois, out_hw, spatial_scale=1.0, sampling_ratio=ratio, aligned=True)  # [N, C, h, w]


def frame_tokens(pooled: Tensor, tubelet_t: int) -> Tensor:
    """Per-frame pooled features ``[B, T, C, h, w]`` -> normalised token targets ``[B, L, t*C]``.

    Each frame's cell feature is normalised over its channels, then the ``t`` frames of a tubelet are
    concatenated in time order (token order ``i_t*(h*w) + i_h*w + i_w``).
    """
    B, T, C, h, w = pooled.shape
    x = pooled.permute(0, 1, 3, 4, 2).float()  # [B, T, h, w, C]
    x = F.layer_norm(x, (C,))
    x = x.reshape(B, T // tubelet_t, tubelet_t, h, w, C).permute(0, 1, 3, 4, 2, 5)  # [B, t', h, w, t, C]
    return x.reshape(B, (T // tubelet_t) * h * w, tubelet_t * C)  # [B, L, t*C]


class FrameTeacher:
    """A frozen image network on every frame, pooled onto the token grid (see the module docstring).

    ``size``: the shorter side, in pixels, the frames are resized to before the network (0 = as given);
    ``random``: random weights (seeded) instead of the ImageNet ones.
    """

    stride = 16  # the trunk's output stride

    def __init__(
        self,
        *,
        tubelet: int | tuple[int, ...] = (2, 16, 16),
        size: int = 0,
        weights: str | Path | None = None,
        random: bool = False,
        seed: int = 0,
    ) -> None:
        self.tubelet: Tubelet = as_tubelet(tubelet)
        self.size = int(size)
        self.random = bool(random)
        self.weights = None if weights is None else str(weights)
        self.net = mobilenet_trunk(weights)
        if random:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for m in self.net.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.channels = 96
        self.dim = self.tubelet[0] * self.channels
        self._fingerprint = _fingerprint(self.net)

    @property
    def identity(self) -> dict:
        return {
            "kind": "frames",
            "model": "mobilenet_v2_s16" + ("_random" if self.random else ""),
            "fingerprint": self._fingerprint,
            "size": self.size,
            "tubelet": list(self.tubelet),
        }

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        """The frame size the network runs at for frames of ``height x width``."""
        if not self.size:
            return height, width
        scale = self.size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    @torch.no_grad()
    def frame_maps(self, frames: Tensor) -> Tensor:
        """Normalised frames ``[N, 3, H, W]`` -> feature maps ``[N, 96, ~h/16, ~w/16]`` at :meth:`frame_size`."""
        size = self.frame_size(*frames.shape[-2:])
        if size != tuple(frames.shape[-2:]):
            frames = F.interpolate(frames.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        dtype = next(self.net.parameters()).dtype
        return self.net(frames.to(dtype))  # [N, 96, h', w']

    @torch.no_grad()
    def __call__(self, video: Tensor) -> Tensor:
        """In-loop targets: normalised ``[B, C, T, H, W]`` -> ``[B, L, t*96]``."""
        grid = grid_for(video.shape[2:], self.tubelet)
        B, C, T, H, W = video.shape
        maps = self.frame_maps(video.transpose(1, 2).reshape(B * T, C, H, W))  # [B*T, 96, h', w']
        hf, wf = maps.shape[-2:]
        boxes = torch.tensor([[0.0, 0.0, float(wf), float(hf)]], device=maps.device).expand(B * T, 4)
        pooled = pool_boxes(maps.float(), boxes, (grid.h, grid.w))  # [B*T, 96, h, w]
        return frame_tokens(pooled.view(B, T, -1, grid.h, grid.w), self.tubelet[0])  # [B, L, t*96]

    def to(self, device: torch.device | str) -> "FrameTeacher":
        self.net.to(device)
        return self


class TokenTeacher:
    """A teacher that gives tokens directly: an embedder ``[B, C, T, H, W] -> [B, L, D]`` (a frozen
    checkpoint's blocks, or a callable), its tokens normalised over ``D``."""

    def __init__(self, embedder: Any, dim: int) -> None:
        self.embedder = embedder
        self.dim = int(dim)

    @property
    def identity(self) -> dict:
        return {"kind": "tokens", **self.embedder.identity}

    @torch.no_grad()
    def __call__(self, video: Tensor) -> Tensor:
        tokens = self.embedder(video).float()  # [B, L, D]
        if tokens.shape[-1] != self.dim:
            raise VideomaskError(f"teacher gave {tokens.shape[-1]}-d tokens, expected {self.dim}")
        return F.layer_norm(tokens, (self.dim,))

    def to(self, device: torch.device | str) -> "TokenTeacher":
        self.embedder.to(device)
        return self


def build_teacher(
    spec: str | Callable[[Tensor], Tensor],
    *,
    tubelet: int | tuple[int, ...] = (2, 16, 16),
    size: int = 0,
    layer: str = "last",
    identity: Mapping[str, Any] | None = None,
    dim: int | None = None,
) -> FrameTeacher | TokenTeacher:
    """A teacher from a config spec: ``cnn`` / ``cnn:PATH`` (MobileNetV2 weights) / ``cnn-random`` /
    ``checkpoint:PATH`` (``layer``: ``last`` or ``block:N``), or a callable with ``identity`` and ``dim``."""
    if callable(spec):
        if identity is None or dim is None:
            raise VideomaskError("a callable teacher needs an identity dict and its feature width dim")
        return TokenTeacher(CallableEmbedder(spec, identity), dim)
    if spec == "cnn" or spec.startswith("cnn:"):
        return FrameTeacher(tubelet=tubelet, size=size, weights=spec.split(":", 1)[1] if ":" in spec else None)
    if spec == "cnn-random":
        return FrameTeacher(tubelet=tubelet, size=size, random=True)
    if spec.startswith("checkpoint:"):
        path = spec.split(":", 1)[1]
        model, _ = load_model(path, what="objective.teacher")
        depth = len(model.blocks)
        emb = ModelEmbedder(model, layer=f"block:{depth}" if layer == "last" else layer, source=path)
        if tuple(emb.tubelet) != tuple(as_tubelet(tubelet)):
            raise VideomaskError(f"teacher {path} has tubelet {tuple(emb.tubelet)}, the student {tuple(tubelet)}")
        return TokenTeacher(emb, model.config.embed_dim)
    raise VideomaskError(f"unknown teacher {spec!r} (use 'cnn', 'cnn:PATH', 'cnn-random' or 'checkpoint:PATH')")
