"""The score cache: difference scores computed once per video, looked up for every training clip.

``build_score_cache(masker, videos, size=...)`` scores each video once; ``ScoreCache.load(path).lookup(batch,
grid, tubelet)`` gives a loader batch's token scores. How the maps are laid out and looked up: docs/difference.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor

from videomask.constants import IMAGENET_MEAN, IMAGENET_STD
from videomask.data import normalize, resize
from videomask.data.whole import decode_whole_videos
from videomask.errors import VideomaskError
from videomask.io.per_video import (
    iter_video_ids,
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
from videomask.patches import ClipGeometry, Grid, Tubelet, grid_for

CACHE_FORMAT = "videomask.score_cache"
CACHE_VERSION = 2  # a folder: meta.json plus one safetensors file per video (version 1, one file, is still read)

__all__ = [
    "ScoreCache",
    "build_score_cache",
    "build_score_cache_part",
    "finish_score_cache",
    "rank_share",
    "stats_fingerprint",
    "write_video_scores",
]

log = logging.getLogger("videomask.difference")

Entry = tuple[np.ndarray, Tensor, tuple[int, int]]  # first frames [F] int64, maps [F, h, w], (src_h, src_w)


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


def _meta_key(meta: Mapping[str, Any]) -> str:
    """A short digest of what a cache was made with (scorer, statistics, sizes): each video file records it,
    so a resumed build keeps only the files made the same way."""
    ident = {k: v for k, v in meta.items() if k not in ("format", "version", "videos", "skipped")}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def write_video_scores(root: str | Path, video_id: str, entry: Entry, key: str = "") -> Path:
    """Write one video's entry (maps stored as float16) into the cache folder ``root``; returns its file."""
    frames, maps, src = entry
    tensors = {
        "frames": torch.as_tensor(frames, dtype=torch.int64),  # [F]
        "maps": maps.to(torch.float16),  # [F, h, w]
    }
    return write_video_file(root, video_id, tensors, {"src": json.dumps(list(src)), "key": key})


class _FolderVideos(Mapping):
    """The videos of a cache folder, read one file per look-up (float16, nothing kept): memory stays flat in
    the number of videos."""

    def __init__(self, root: Path, count: int) -> None:
        self.root, self.count = root, count

    def __contains__(self, video_id: object) -> bool:
        return isinstance(video_id, str) and video_file(self.root, video_id).is_file()

    def __getitem__(self, video_id: str) -> Entry:
        tensors, meta = read_video_file(self.root, video_id, "score cache")
        return tensors["frames"].numpy(), tensors["maps"], tuple(json.loads(meta["src"]))

    def __iter__(self) -> Iterator[str]:
        return iter_video_ids(self.root)

    def __len__(self) -> int:
        return self.count


class _SingleFileVideos(Mapping):
    """The videos of a version-1 cache (one safetensors file), read lazily through one open handle; only the
    index (video id -> tensor number) is held in memory."""

    def __init__(self, path: Path, index: list[dict[str, Any]]) -> None:
        self.path = path
        self.index = {entry["video"]: (i, tuple(entry["src"])) for i, entry in enumerate(index)}
        self._file = safe_open(str(path), framework="pt")

    def __getitem__(self, video_id: str) -> Entry:
        i, src = self.index[video_id]
        return self._file.get_tensor(f"{i}.frames").numpy(), self._file.get_tensor(f"{i}.maps"), src

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


class ScoreCache:
    """Per-video score maps (see docs/difference.md). ``videos[id] = (first_frames [F] int64, maps [F, h, w],
    (src_h, src_w))``: a dict in memory (a fresh build), or a lazy reader of a cache on disk (:meth:`load`)."""

    def __init__(self, videos: Mapping[str, Entry], meta: dict, path: str | None = None) -> None:
        self.videos = videos
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

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the cache as a folder (one float16 file per video, then ``meta.json``); returns the folder."""

        path = Path(path)
        if path.is_file():
            raise VideomaskError(f"{path} is a file; a score cache is a folder: give another path")
        key = _meta_key(self.meta)
        for vid, entry in self.videos.items():
            write_video_scores(path, vid, entry, key)
        _write_meta(path, self.meta, len(self.videos), [])
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ScoreCache":
        """Open a cache folder (or a version-1 file) for lazy look-ups: nothing per video is read here."""

        path = Path(path)
        if path.is_dir():
            meta = read_meta(path, "score cache", "`videomask score-cache` (or the run)")
            _check_format(meta, path)
            return cls(_FolderVideos(path, int(meta.pop("videos", 0))), meta, str(path))
        if not path.is_file():
            raise VideomaskError(f"score cache {path} does not exist (build it with `videomask score-cache`)")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("videomask", "{}"))
            _check_format(meta, path)
            return cls(_SingleFileVideos(path, meta.pop("index")), meta, str(path))
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise VideomaskError(f"{path} is not a readable score cache ({err})") from None

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
            chosen = maps[torch.as_tensor(pos, dtype=torch.long)].float()  # [t', mh, mw]
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


def _check_format(meta: Mapping[str, Any], path: Path) -> None:
    """Refuse what is not a score cache, or one from a newer videomask."""
    if meta.get("format") != CACHE_FORMAT:
        raise VideomaskError(f"{path} is not a videomask score cache")
    if int(meta.get("version", 1)) > CACHE_VERSION:
        raise VideomaskError(
            f"score cache {path} has version {meta.get('version')}, newer than this videomask reads "
            f"({CACHE_VERSION}): upgrade videomask or rebuild it with `videomask score-cache`"
        )


def _write_meta(root: Path, meta: Mapping[str, Any], count: int, skipped: list[tuple[str, str]]) -> None:
    """Write ``meta.json``, the mark of a complete cache folder."""
    write_meta(root, {**meta, "format": CACHE_FORMAT, "version": CACHE_VERSION, "videos": count, "skipped": skipped})


def _cache_meta(
    masker: Any, size: int, num_frames: int, sampling_rate: int, mean: Sequence[float], std: Sequence[float]
) -> dict[str, Any]:
    return {
        "scorer": masker.scorer,
        "stats": stats_fingerprint(masker.stats, masker.scorer),
        "size": size,
        "num_frames": num_frames,
        "sampling_rate": sampling_rate,
        "tubelet": list(masker.tubelet),
        "embedder": masker.stats.embedder,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }


@torch.no_grad()
def _score_videos(
    masker: Any,
    videos: Iterable[tuple[str, str]],
    skipped: list[tuple[str, str]],
    *,
    size: int,
    num_frames: int,
    sampling_rate: int,
    backend: str,
    device: str | torch.device,
    progress: bool,
    mean: Sequence[float],
    std: Sequence[float],
    opener: Any = None,
) -> Iterator[tuple[str, Entry]]:
    """``(video_id, entry)`` of every video that decodes and is long enough; the others go to ``skipped``."""
    t, ph, pw = masker.tubelet
    masker.to(device)
    decoded = decode_whole_videos(
        videos, skipped, backend=backend, desc="score videos", progress=progress, opener=opener
    )
    for vid, video in decoded:
        N, H, W = video.shape[0], video.shape[2], video.shape[3]  # video: [N, 3, H, W] uint8
        rh, rw = _cache_size(H, W, size, (ph, pw))
        video, _ = resize(video, ClipGeometry.identity(H, W), rh, rw)
        video = normalize(video, mean, std)  # [N, C, rh, rw] float
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
        yield vid, (np.asarray(starts, dtype=np.int64)[order], torch.cat(maps)[torch.as_tensor(order)], (H, W))


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
    out: str | Path | None = None,
    opener: Any = None,
) -> tuple[ScoreCache, list[tuple[str, str]]]:
    """Score every ``(video_id, path)`` once with ``masker`` (a ``DifferenceMasker``); returns the cache and
    the ``(video_id, reason)`` of videos that could not be read (skipped, not fatal). ``mean``/``std``: the
    training clips' normalisation (default ImageNet's), so cached and in-step scores see the same pixels.

    ``out``: a cache folder written video by video (memory stays flat; an interrupted build resumes, keeping
    the videos already scored) and returned opened for lazy look-ups; without it the cache is kept in memory.
    ``opener``: a reader of a path (:func:`~videomask.data.decode_whole_videos`), e.g. for videos in shards.
    """
    if out is not None:
        options = dict(num_frames=num_frames, sampling_rate=sampling_rate, backend=backend, device=device)
        _, skipped = build_score_cache_part(
            masker, videos, out, size=size, progress=progress, mean=mean, std=std, opener=opener, **options
        )
        return finish_score_cache(out, 1), skipped
    mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    # the embeddings are only comparable with the statistics at the fitted scale (the lookup maps any run size)
    masker.stats.check_clip((num_frames, size, size), size_key="--size", frames_key="--num-frames")
    skipped: list[tuple[str, str]] = []
    entries = dict(
        _score_videos(
            masker,
            videos,
            skipped,
            size=size,
            num_frames=num_frames,
            sampling_rate=sampling_rate,
            backend=backend,
            device=device,
            progress=progress,
            mean=mean,
            std=std,
            opener=opener,
        )
    )
    return ScoreCache(entries, _cache_meta(masker, size, num_frames, sampling_rate, mean, std)), skipped


def build_score_cache_part(
    masker: Any,
    videos: Iterable[tuple[str, str]],
    out: str | Path,
    *,
    rank: int = 0,
    world_size: int = 1,
    size: int,
    num_frames: int = 16,
    sampling_rate: int = 4,
    backend: str = "pyav",
    device: str | torch.device = "cpu",
    progress: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    opener: Any = None,
) -> tuple[int, list[tuple[str, str]]]:
    """One rank's share of a parallel build (:func:`rank_share` of ``videos``) into the cache folder ``out``:
    each video written as it is scored (a video already there from the same statistics and sizes is kept,
    so a killed build resumes), then ``parts/rank-R-of-W.json``. Returns ``(videos in the share's cache,
    skipped)``. Rank 0 then calls :func:`finish_score_cache` once every rank is done."""
    mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    masker.stats.check_clip((num_frames, size, size), size_key="--size", frames_key="--num-frames")
    out = Path(out)
    if out.is_file():
        raise VideomaskError(f"{out} is a file (a score cache of an older videomask?); a score cache is a folder")
    meta = _cache_meta(masker, size, num_frames, sampling_rate, mean, std)
    key = _meta_key(meta)
    share = rank_share(videos, rank, world_size)
    todo = [(vid, path) for vid, path in share if (video_file_metadata(video_file(out, vid)) or {}).get("key") != key]
    skipped: list[tuple[str, str]] = []
    count = len(share) - len(todo)  # kept from an interrupted build
    options = dict(num_frames=num_frames, sampling_rate=sampling_rate, backend=backend, device=device, opener=opener)
    for vid, entry in _score_videos(masker, todo, skipped, size=size, progress=progress, mean=mean, std=std, **options):
        write_video_scores(out, vid, entry, key)
        count += 1
    report = {"meta": meta, "videos": count, "skipped": skipped}
    write_part(out, rank, world_size, report)
    return count, skipped


def finish_score_cache(out: str | Path, world_size: int) -> ScoreCache:
    """Merge the ``world_size`` ranks' reports of a parallel build into ``meta.json`` (reads only those small
    files: seconds) and open the cache. A missing report (a rank that did not finish, or a run folder that is
    not shared between the nodes) is a one-line error."""
    out = Path(out)
    reports = read_parts(out, world_size, "score cache")
    meta = reports[0]["meta"]
    if any(r["meta"] != meta for r in reports):
        raise VideomaskError(f"score cache {out}: the ranks scored with different statistics or sizes")
    skipped = sorted((vid, reason) for r in reports for vid, reason in r["skipped"])
    _write_meta(out, meta, sum(int(r["videos"]) for r in reports), skipped)
    return ScoreCache.load(out)
