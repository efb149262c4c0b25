"""The score cache: difference scores computed once per video, looked up for every training clip.

``build_score_cache(masker, videos, size=...)`` scores each video once; ``ScoreCache.load(path).lookup(batch,
grid, tubelet)`` gives a loader batch's token scores. How the maps are laid out and looked up: docs/difference.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from videomask.constants import IMAGENET_MEAN, IMAGENET_STD
from videomask.data import normalize, resize
from videomask.data.whole import decode_whole_videos
from videomask.errors import VideomaskError
from videomask.io import write_bytes_atomic
from videomask.patches import ClipGeometry, Grid, Tubelet, grid_for

CACHE_FORMAT = "videomask.score_cache"
CACHE_VERSION = 1

__all__ = ["ScoreCache", "build_score_cache", "stats_fingerprint"]

log = logging.getLogger("videomask.difference")


def stats_fingerprint(stats: Any, scorer: str) -> str:
    """SHA-1 over the scorer, the embedder identity and the tensors that scorer reads."""
    h = hashlib.sha1()
    h.update(scorer.encode())
    h.update(json.dumps(stats.embedder, sort_keys=True).encode())
    tensors = (
        [stats.prototypes, stats.source_quantiles]
        if scorer == "distance"
        else [stats.centroids, stats.enrichment, stats.anchors]
    )
    for t in tensors:
        if t is not None:
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ScoreCache:
    """Per-video score maps (see docs/difference.md). ``videos[id] = (first_frames [F] int64, maps [F, h, w])``."""

    def __init__(
        self, videos: dict[str, tuple[np.ndarray, Tensor, tuple[int, int]]], meta: dict, path: str | None = None
    ) -> None:
        self.videos = videos  # id -> (first frames [F], maps float [F, h, w], (src_h, src_w))
        self.meta = meta
        self.path = path

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.videos

    def __len__(self) -> int:
        return len(self.videos)

    def check(self, stats: Any, scorer: str) -> None:
        """Refuse a cache made with other statistics or another scorer, or scored at another clip size than
        the statistics were fitted at (its scores would be of pixels at the wrong scale). The run's own clip
        size is free: :meth:`lookup` maps every clip through its geometry onto the cache's maps."""
        if self.meta.get("scorer") != scorer or self.meta.get("stats") != stats_fingerprint(stats, scorer):
            raise VideomaskError(
                f"score cache {self.path or '(in memory)'} was made with other statistics or scorer "
                f"({self.meta.get('scorer')!r}); rebuild it with `videomask score-cache`"
            )
        size, fitted = self.meta.get("size"), getattr(stats, "size", None)
        if size is None or fitted is None:
            log.warning(
                "score cache %s or its statistics record no clip size: check skipped", self.path or "(in memory)"
            )
        elif int(size) != fitted:
            raise VideomaskError(
                f"score cache {self.path or '(in memory)'} was scored at {size} px, its statistics were fitted at "
                f"{fitted} px clips: rebuild it with `videomask score-cache --size {fitted}`"
            )

    # -- file ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors, index = {}, []
        for i, (vid, (frames, maps, src)) in enumerate(sorted(self.videos.items())):
            tensors[f"{i}.frames"] = torch.as_tensor(frames, dtype=torch.int64).contiguous()
            tensors[f"{i}.maps"] = maps.to(torch.float16).contiguous()
            index.append({"video": vid, "src": list(src)})
        meta = {**self.meta, "format": CACHE_FORMAT, "version": CACHE_VERSION, "index": index}
        # the shared atomic writer: a file the user shares gets a checkpoint's permissions (umask), not 0600
        write_bytes_atomic(path, st_save(tensors, metadata={"videomask": json.dumps(meta)}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ScoreCache":

        path = Path(path)
        if not path.is_file():
            raise VideomaskError(f"score cache {path} does not exist (build it with `videomask score-cache`)")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("videomask", "{}"))
                if meta.get("format") != CACHE_FORMAT:
                    raise VideomaskError(f"{path} is not a videomask score cache")
                videos = {}
                for i, entry in enumerate(meta.pop("index")):
                    frames = f.get_tensor(f"{i}.frames").numpy()
                    videos[entry["video"]] = (frames, f.get_tensor(f"{i}.maps").float(), tuple(entry["src"]))
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise VideomaskError(f"{path} is not a readable score cache ({err})") from None
        return cls(videos, meta, str(path))

    # -- lookup --------------------------------------------------------------------------------
    def lookup(self, batch: Mapping[str, Any], grid: Grid, tubelet: Tubelet) -> Tensor:
        """Token scores ``[B, L]`` (CPU, float32) of a loader batch, mapped through each clip's geometry."""
        video_ids = list(batch["video_id"])
        frames = torch.as_tensor(batch["frame_indices"]).cpu().numpy()  # [B, T]
        geometry = torch.as_tensor(batch["geometry"]).cpu().double()  # [B, 9]
        t, ph, pw = tubelet
        out = torch.empty(len(video_ids), grid.t, grid.h, grid.w)
        for b, vid in enumerate(video_ids):
            if vid not in self.videos:
                raise VideomaskError(
                    f"video {vid!r} is not in score cache {self.path or '(in memory)'}; rebuild it on this data"
                )
            starts, maps, _ = self.videos[vid]
            slot_first = frames[b, ::t][: grid.t]  # [t'] first frame of each time slot
            pos = (
                np.clip(np.searchsorted(starts, slot_first), 1, len(starts) - 1)
                if len(starts) > 1
                else np.zeros_like(slot_first)
            )
            if len(starts) > 1:
                left = starts[pos - 1]
                pos = np.where(np.abs(slot_first - left) <= np.abs(starts[pos] - slot_first), pos - 1, pos)
            src_h, src_w, y0, x0, crop_h, crop_w, out_h, out_w, flip = geometry[b].tolist()
            # patch centres in output pixels -> original pixels -> map cells (centre of cell j at j + 0.5)
            cy = (torch.arange(grid.h, dtype=torch.float64) + 0.5) * ph  # [h]
            cx = (torch.arange(grid.w, dtype=torch.float64) + 0.5) * pw  # [w]
            if flip > 0.5:
                cx = out_w - cx
            oy = y0 + cy * crop_h / out_h
            ox = x0 + cx * crop_w / out_w
            mh, mw = maps.shape[1:]
            gy = (oy / src_h) * 2 - 1  # normalised [-1, 1] with align_corners=False
            gx = (ox / src_w) * 2 - 1
            sample = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).float()  # [h, w, 2] (x, y)
            chosen = maps[torch.as_tensor(pos, dtype=torch.long)]  # [t', mh, mw]
            vals = F.grid_sample(
                chosen[:, None],
                sample[None].expand(grid.t, -1, -1, -1),
                mode="bilinear",
                padding_mode="border",
                align_corners=False,
            )  # [t', 1, h, w]
            out[b] = vals[:, 0]
        return out.reshape(len(video_ids), grid.num_tokens)  # [B, L] token order


def _cache_size(height: int, width: int, size: int, patch: tuple[int, int]) -> tuple[int, int]:
    """Frame size for the cache: shorter side ``size``, each side rounded to a multiple of the patch."""
    scale = size / min(height, width)
    return (
        max(patch[0], int(round(height * scale / patch[0])) * patch[0]),
        max(patch[1], int(round(width * scale / patch[1])) * patch[1]),
    )


def _windows(num_video_frames: int, num_frames: int, sampling_rate: int, t: int) -> list[list[int]]:
    """Frame index windows covering every tubelet ``(f, f + sr, ...)`` with ``f`` a multiple of ``sr``:
    windows of ``num_frames`` frames at stride ``sr`` from offsets ``0, sr, ..., (t-1)*sr``, cut short at the end."""
    out = []
    span = num_frames * sampling_rate
    for offset in range(0, t * sampling_rate, sampling_rate):
        start = offset
        while start + (t - 1) * sampling_rate < num_video_frames:
            n = min(num_frames, (num_video_frames - 1 - start) // sampling_rate + 1)
            n -= n % t
            if n < t:
                break
            out.append([start + k * sampling_rate for k in range(n)])
            start += span
    return out


@torch.no_grad()
def build_score_cache(
    masker: Any,
    videos: Iterable[tuple[str, str]],
    *,
    size: int,
    num_frames: int = 16,
    sampling_rate: int = 4,
    backend: str = "pyav",
    device: str | torch.device = "cpu",
    progress: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[ScoreCache, list[tuple[str, str]]]:
    """Score every ``(video_id, path)`` once with ``masker`` (a ``DifferenceMasker``); returns the cache and
    the ``(video_id, reason)`` of videos that could not be read (skipped, not fatal). ``mean``/``std``: the
    training clips' normalisation (default ImageNet's), so cached and in-step scores see the same pixels."""

    # the embeddings are only comparable with the statistics at the fitted scale (the lookup maps any run size)
    masker.stats.check_clip((num_frames, size, size), size_key="--size", frames_key="--num-frames")
    t, ph, pw = masker.tubelet
    masker.to(device)
    entries: dict[str, tuple[np.ndarray, Tensor, tuple[int, int]]] = {}
    skipped: list[tuple[str, str]] = []
    for vid, video in decode_whole_videos(videos, skipped, backend=backend, desc="score videos", progress=progress):
        N, H, W = video.shape[0], video.shape[2], video.shape[3]  # video: [N, 3, H, W] uint8
        rh, rw = _cache_size(H, W, size, (ph, pw))
        video, _ = resize(video, ClipGeometry.identity(H, W), rh, rw)
        video = normalize(video, mean or IMAGENET_MEAN, std or IMAGENET_STD)  # [N, C, rh, rw] float
        starts, maps = [], []
        for window in _windows(N, num_frames, sampling_rate, t):
            clip = video[window].permute(1, 0, 2, 3)[None].to(device)  # [1, C, T', rh, rw]
            grid = grid_for(clip.shape[2:], masker.tubelet)
            scores, _ = masker.scores_from_embeddings(masker.embed(clip, grid))  # [1, L]
            maps.append(scores.view(grid.t, grid.h, grid.w).float().cpu())
            starts.extend(window[::t][: grid.t])
        if not maps:
            skipped.append((vid, f"only {N} frames, fewer than one tubelet at sampling rate {sampling_rate}"))
            continue
        order = np.argsort(np.asarray(starts), kind="stable")
        entries[vid] = (np.asarray(starts, dtype=np.int64)[order], torch.cat(maps)[torch.as_tensor(order)], (H, W))
    meta = {
        "scorer": masker.scorer,
        "stats": stats_fingerprint(masker.stats, masker.scorer),
        "size": size,
        "num_frames": num_frames,
        "sampling_rate": sampling_rate,
        "tubelet": list(masker.tubelet),
        "embedder": masker.stats.embedder,
    }
    return ScoreCache(entries, meta), skipped
