"""Decoding evaluation clips: centre square crop, resize, kept as uint8 until the model needs them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from videomask.errors import VideomaskError
from videomask.eval.tasks import ProbeSample
from videomask.patches import ClipGeometry
from videomask.video import open_video


def centre_square(frames: np.ndarray, size: int) -> tuple[Tensor, ClipGeometry]:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[3, T, size, size]`` (centre square crop, bilinear resize) + geometry."""
    T, H, W, _ = frames.shape
    side = min(H, W)
    y0, x0 = (H - side) // 2, (W - side) // 2
    clip = torch.from_numpy(np.ascontiguousarray(frames[:, y0 : y0 + side, x0 : x0 + side]))  # [T, s, s, 3]
    clip = clip.permute(0, 3, 1, 2).float()  # [T, 3, s, s]
    if side != size:
        clip = F.interpolate(clip, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    clip = clip.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3).contiguous()  # [3, T, size, size]
    return clip, ClipGeometry(
        float(H), float(W), float(y0), float(x0), float(side), float(side), float(size), float(size)
    )


@dataclass
class ClipSet:
    """Decoded evaluation clips, kept as uint8 so many fit in memory."""

    clips: Tensor  # uint8 [N, 3, T, S, S]
    labels: Tensor  # long [N]
    is_train: Tensor  # bool [N]
    windows: Tensor  # long [N], the window each clip came from
    video_ids: list[str]
    indices: list[tuple[int, ...]]
    geometry: list[ClipGeometry]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.numel())


def decode_samples(
    samples: Sequence[ProbeSample], size: int, *, backend: str = "pyav", progress: bool = False
) -> ClipSet:
    """Decode every sample (one open per video, one read per window) into a :class:`ClipSet`."""

    if not samples:
        raise VideomaskError("no evaluation windows: the videos are too short for the clip length and split")
    order: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        order.setdefault(s.video, []).append(i)
    clips: list[Tensor | None] = [None] * len(samples)
    geoms: list[ClipGeometry | None] = [None] * len(samples)
    items = order.items()
    if progress:
        items = tqdm(items, desc="decode", unit="video")
    for path, ids in items:
        wanted = sorted({f for i in ids for f in samples[i].indices})
        with open_video(path, backend=backend) as reader:
            frames = reader.read(wanted)  # uint8 [F, H, W, 3]
        where = {f: k for k, f in enumerate(wanted)}
        for i in ids:
            sel = frames[[where[f] for f in samples[i].indices]]  # [T, H, W, 3] in the sample's order
            clips[i], geoms[i] = centre_square(sel, size)
    return ClipSet(
        clips=torch.stack(clips),  # type: ignore[arg-type]
        labels=torch.tensor([s.label for s in samples], dtype=torch.long),
        is_train=torch.tensor([s.split == "train" for s in samples], dtype=torch.bool),
        windows=torch.tensor([s.window for s in samples], dtype=torch.long),
        video_ids=[s.video_id for s in samples],
        indices=[s.indices for s in samples],
        geometry=geoms,  # type: ignore[arg-type]
    )
