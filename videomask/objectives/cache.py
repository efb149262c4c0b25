"""The teacher cache: a frame teacher's feature maps computed once per video, looked up for every clip.

``build_teacher_cache(teacher, videos, out)`` runs the teacher on every frame of every video (at the
teacher's size) and writes the maps in fp16, one tensor per video, to a safetensors file;
``TeacherCache(path).lookup(batch, grid)`` gives a loader batch's token targets ``[B, L, t*C]`` through each
clip's geometry (frame indices, crop, resize, flip), the same way the score cache maps its scores.

The file is read lazily: a video's maps are read when one of its clips is looked up, so memory per
process grows with the videos a run touches, not with the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from videomask.data import normalize
from videomask.data.whole import decode_whole_videos
from videomask.errors import VideomaskError
from videomask.io import write_bytes_atomic
from videomask.objectives.teacher import FrameTeacher, frame_tokens, pool_boxes
from videomask.patches import Grid

CACHE_FORMAT = "videomask.teacher_cache"
CACHE_VERSION = 1

__all__ = ["TeacherCache", "build_teacher_cache"]


class TeacherCache:
    """Per-video teacher maps ``[F, C, Hf, Wf]`` (fp16) with the original frame size, read lazily."""

    def __init__(self, path: str | Path, *, max_videos: int = 64) -> None:
        self.path = str(path)
        try:
            with safe_open(self.path, "pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != CACHE_FORMAT:
                    raise VideomaskError(f"{path} is not a teacher cache (format {meta.get('format')!r})")
                self.meta = json.loads(meta["meta"])
                self.index: dict[str, dict[str, Any]] = json.loads(meta["videos"])
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise VideomaskError(f"{path} is not a readable teacher cache ({err})") from None
        self.max_videos = max_videos
        self._maps: dict[str, Tensor] = {}  # a small read-through cache of recently used videos

    @property
    def identity(self) -> dict:
        return dict(self.meta["teacher"])

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.index

    def __len__(self) -> int:
        return len(self.index)

    def check(self, teacher: FrameTeacher) -> None:
        """Refuse a cache made with another teacher (weights, size or tubelet)."""
        if json.loads(json.dumps(teacher.identity)) != self.meta["teacher"]:
            raise VideomaskError(
                f"teacher cache {self.path} was built with {json.dumps(self.meta['teacher'], sort_keys=True)}, "
                f"the run's teacher is {json.dumps(teacher.identity, sort_keys=True)}; rebuild it"
            )

    def maps(self, video_id: str) -> Tensor:
        """The maps of one video ``[F, C, Hf, Wf]`` (fp16)."""
        if video_id not in self.index:
            raise VideomaskError(f"video {video_id!r} is not in teacher cache {self.path}; rebuild it on this data")
        if video_id not in self._maps:
            if len(self._maps) >= self.max_videos:
                self._maps.pop(next(iter(self._maps)))
            with safe_open(self.path, "pt") as f:
                self._maps[video_id] = f.get_tensor(self.index[video_id]["key"])
        return self._maps[video_id]

    def lookup(self, batch: Mapping[str, Any], grid: Grid) -> Tensor:
        """Token targets ``[B, L, t*C]`` (CPU, float32) of a loader batch (``video_id``, ``frame_indices``,
        ``geometry``), each token the mean of the map cells under its patch in every frame of its tubelet."""
        t = int(self.meta["teacher"]["tubelet"][0])
        frames = torch.as_tensor(batch["frame_indices"]).cpu()  # [B, T]
        geometry = torch.as_tensor(batch["geometry"]).cpu().double()  # [B, 9]
        out = []
        for b, vid in enumerate(batch["video_id"]):
            maps = self.maps(vid)
            idx = frames[b].clamp(0, maps.shape[0] - 1)
            chosen = maps[idx].float()  # [T, C, Hf, Wf]
            src_h, src_w, y0, x0, crop_h, crop_w, _, _, flip = geometry[b].tolist()
            sy, sx = chosen.shape[-2] / src_h, chosen.shape[-1] / src_w
            box = torch.tensor([[x0 * sx, y0 * sy, (x0 + crop_w) * sx, (y0 + crop_h) * sy]])
            pooled = pool_boxes(chosen, box.expand(len(idx), 4), (grid.h, grid.w))  # [T, C, h, w]
            if flip > 0.5:
                pooled = pooled.flip(-1)
            out.append(pooled)
        return frame_tokens(torch.stack(out), t)  # [B, L, t*C]


@torch.no_grad()
def build_teacher_cache(
    teacher: FrameTeacher,
    videos: Iterable[tuple[str, str]],
    out: str | Path,
    *,
    backend: str = "pyav",
    device: str | torch.device = "cpu",
    batch_frames: int = 32,
    progress: bool = True,
) -> tuple[Path, list[tuple[str, str]]]:
    """Run ``teacher`` on every frame of every ``(video_id, path)`` and write the cache to ``out``; returns
    ``(path, skipped)`` with the ``(video_id, reason)`` of videos that could not be read (not fatal)."""
    if not isinstance(teacher, FrameTeacher):
        raise VideomaskError("only a frame teacher (cnn) can be cached; token teachers run in the training step")
    teacher.to(device)
    tensors: dict[str, Tensor] = {}
    index: dict[str, dict[str, Any]] = {}
    skipped: list[tuple[str, str]] = []
    for vid, video in decode_whole_videos(videos, skipped, backend=backend, desc="teacher features", progress=progress):
        N, H, W = video.shape[0], video.shape[2], video.shape[3]  # video: [N, 3, H, W] uint8
        maps = [
            teacher.frame_maps(normalize(video[lo : lo + batch_frames]).to(device)).half().cpu()
            for lo in range(0, N, batch_frames)
        ]
        key = f"v{len(tensors)}"
        tensors[key] = torch.cat(maps).contiguous()  # [N, C, Hf, Wf]
        index[vid] = {"key": key, "src": [H, W], "frames": N}
    meta = {"teacher": teacher.identity, "version": CACHE_VERSION}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": CACHE_FORMAT, "meta": json.dumps(meta), "videos": json.dumps(index)}
    write_bytes_atomic(out, st_save(tensors, metadata=header))
    return out, skipped
