"""The teacher cache: a frame teacher's feature maps computed once per video, looked up for every clip.

``build_teacher_cache(teacher, videos, out)`` runs the teacher on every frame of every video (at the
teacher's size) and writes the maps in fp16 into the folder ``out``, one safetensors file per video as it
is done (:mod:`videomask.io.per_video`: memory stays flat while building and reading, an interrupted build
resumes, and ``rank``/``world_size`` split the videos between processes or machines);
``TeacherCache(path).lookup(batch, grid)`` gives a loader batch's token targets ``[B, L, t*C]`` through each
clip's geometry (frame indices, crop, resize, flip), the same way the score cache maps its scores.

The cache is read lazily: a video's maps are read when one of its clips is looked up (a few recent videos
are kept), so memory per process stays flat in the number of videos. A one-file cache of version 1 is
still read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from videomask.data import normalize
from videomask.data.whole import decode_whole_videos
from videomask.errors import VideomaskError
from videomask.io.per_video import (
    parts_done,
    rank_share,
    read_meta,
    read_parts,
    read_video_file,
    video_file,
    video_file_metadata,
    write_meta,
    write_part,
    write_video_file,
)
from videomask.objectives.teacher import FrameTeacher, frame_tokens, pool_boxes
from videomask.patches import Grid

CACHE_FORMAT = "videomask.teacher_cache"
CACHE_VERSION = 2  # a folder of per-video files (version 1: one file, still read)

__all__ = ["TeacherCache", "build_teacher_cache"]


class TeacherCache:
    """Per-video teacher maps ``[F, C, Hf, Wf]`` (fp16) with the original frame size, read lazily."""

    def __init__(self, path: str | Path, *, max_videos: int = 64) -> None:
        self.path = str(path)
        self.folder = Path(path) if Path(path).is_dir() else None
        self.index: dict[str, dict[str, Any]] = {}  # version 1 only: video id -> tensor key (a folder needs none)
        if self.folder is not None:
            full = read_meta(self.folder, "teacher cache", "`videomask teacher-cache`")
            if full.get("format") != CACHE_FORMAT:
                raise VideomaskError(f"{path} is not a teacher cache (format {full.get('format')!r})")
            if int(full.get("version", 0)) > CACHE_VERSION:
                raise VideomaskError(f"teacher cache {path} is newer than this videomask reads: upgrade or rebuild it")
            self.meta = {"teacher": full["teacher"], "version": full["version"]}
            self.count = int(full["videos"])
        else:
            try:
                with safe_open(self.path, "pt") as f:
                    meta = f.metadata() or {}
                    if meta.get("format") != CACHE_FORMAT:
                        raise VideomaskError(f"{path} is not a teacher cache (format {meta.get('format')!r})")
                    self.meta = json.loads(meta["meta"])
                    self.index = json.loads(meta["videos"])
            except (SafetensorError, OSError, KeyError, ValueError) as err:
                raise VideomaskError(f"{path} is not a readable teacher cache ({err})") from None
            self.count = len(self.index)
        self.max_videos = max_videos
        self._maps: dict[str, Tensor] = {}  # a small read-through cache of recently used videos

    @property
    def identity(self) -> dict:
        return dict(self.meta["teacher"])

    def __contains__(self, video_id: object) -> bool:
        if self.folder is not None:
            return isinstance(video_id, str) and video_file(self.folder, video_id).is_file()
        return video_id in self.index

    def __len__(self) -> int:
        return self.count

    def check(self, teacher: FrameTeacher) -> None:
        """Refuse a cache made with another teacher (weights, size or tubelet)."""
        if json.loads(json.dumps(teacher.identity)) != self.meta["teacher"]:
            raise VideomaskError(
                f"teacher cache {self.path} was built with {json.dumps(self.meta['teacher'], sort_keys=True)}, "
                f"the run's teacher is {json.dumps(teacher.identity, sort_keys=True)}; rebuild it"
            )

    def maps(self, video_id: str) -> Tensor:
        """The maps of one video ``[F, C, Hf, Wf]`` (fp16)."""
        if video_id not in self._maps:
            if video_id not in self:
                raise VideomaskError(f"video {video_id!r} is not in teacher cache {self.path}; rebuild it on this data")
            if len(self._maps) >= self.max_videos:
                self._maps.pop(next(iter(self._maps)))
            if self.folder is not None:
                self._maps[video_id] = read_video_file(self.folder, video_id, "teacher cache")[0]["maps"]
            else:
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
    rank: int = 0,
    world_size: int = 1,
    opener: Any = None,
) -> tuple[Path, list[tuple[str, str]]]:
    """Run ``teacher`` on every frame of every ``(video_id, path)`` and write the cache folder ``out``; returns
    ``(path, skipped)`` with the ``(video_id, reason)`` of videos that could not be read (not fatal).

    Each video's maps are written as they are computed; a video already in ``out`` from the same teacher is
    kept (an interrupted build resumes). ``rank``/``world_size``: this process does share ``rank`` of
    ``world_size`` (:func:`~videomask.io.per_video.rank_share`), and the share that finds every share's
    report written completes the cache (writes ``meta.json``). ``opener``: a reader of a path
    (:func:`~videomask.data.decode_whole_videos`), e.g. for videos in shards."""
    if not isinstance(teacher, FrameTeacher):
        raise VideomaskError("only a frame teacher (cnn) can be cached; token teachers run in the training step")
    out = Path(out)
    if out.is_file():
        raise VideomaskError(f"{out} is a file (a teacher cache of an older videomask?); a teacher cache is a folder")
    identity = json.loads(json.dumps(teacher.identity))
    key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    share = rank_share(videos, rank, world_size)
    todo = [(vid, path) for vid, path in share if (video_file_metadata(video_file(out, vid)) or {}).get("key") != key]
    count = len(share) - len(todo)  # kept from an interrupted build
    teacher.to(device)
    skipped: list[tuple[str, str]] = []
    for vid, video in decode_whole_videos(
        todo, skipped, backend=backend, desc="teacher features", progress=progress, opener=opener
    ):
        N, H, W = video.shape[0], video.shape[2], video.shape[3]  # video: [N, 3, H, W] uint8
        maps = [
            teacher.frame_maps(normalize(video[lo : lo + batch_frames]).to(device)).half().cpu()
            for lo in range(0, N, batch_frames)
        ]
        meta = {"src": json.dumps([H, W]), "frames": str(N), "key": key}
        write_video_file(out, vid, {"maps": torch.cat(maps)}, meta)  # [N, C, Hf, Wf]
        count += 1
    write_part(out, rank, world_size, {"teacher": identity, "videos": count, "skipped": skipped})
    if parts_done(out, world_size) == world_size:
        reports = read_parts(out, world_size, "teacher cache")
        if any(r["teacher"] != identity for r in reports):
            raise VideomaskError(f"teacher cache {out}: its shares were built with different teachers")
        all_skipped = sorted((vid, reason) for r in reports for vid, reason in r["skipped"])
        videos_done = sum(int(r["videos"]) for r in reports)
        full = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "teacher": identity, "videos": videos_done}
        write_meta(out, {**full, "skipped": all_skipped})
    return out, skipped
