"""The boxes cache read and indexed in memory (:class:`BoxCache`), and a boxes file used as a detector.

The file format is described in the :mod:`videomask.detect` docstring.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from videomask.detect.detectors import Detection
from videomask.errors import VideomaskError

if TYPE_CHECKING:  # torch is imported lazily: detection worker processes start without it
    from torch import Tensor

__all__ = ["BoxCache", "PrecomputedDetector", "read_cache"]


def read_cache(path: str | Path) -> tuple[list[dict], int, int]:
    """Parse a boxes cache: ``(records, bad_lines, complete_bytes)``.

    A trailing line without its newline (an interrupted write) is ignored, and so are lines that do
    not parse as JSON objects (counted in ``bad_lines``). ``complete_bytes`` is the length of the
    file up to its last complete line.
    """
    data = Path(path).read_bytes()
    end = data.rfind(b"\n") + 1  # 0 when there is no complete line
    records: list[dict] = []
    bad = 0
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(rec, dict) or "video" not in rec:
            bad += 1
            continue
        records.append(rec)
    return records, bad, end


_KEY = np.int64(1) << np.int64(32)  # flat index key = video number * 2**32 + frame index


@dataclass
class _VideoBoxes:
    """In-memory index of one video: scanned frames (sorted), per-frame offsets into its boxes."""

    frames: np.ndarray  # [F] int64, sorted scanned frame indices
    offsets: np.ndarray  # [F + 1] int64, boxes of frames[i] are boxes[offsets[i]:offsets[i+1]]
    boxes: np.ndarray  # [M, 4] float32, original pixels
    labels: np.ndarray  # [M] int32 ids into BoxCache.labels
    scores: np.ndarray  # [M] float32
    stride: int
    num_frames: int | None
    done: bool


class BoxCache:
    """A boxes cache indexed in memory for cheap lookups (file format: see :mod:`videomask.detect`).

    ``boxes(video_id, frame_indices, labels)`` returns, for each asked frame, the boxes ``[N_k, 4]``
    (original pixels) of the nearest scanned frame, when that frame is at most ``stride`` away.
    Videos with a ``done`` line were scanned at ``0, stride, ... < num_frames``; videos without one
    (an interrupted run, or a foreign boxes file) use the frames that have boxes, with ``stride`` given
    to :meth:`load` or, by default, the greatest common divisor of their frame indices' gaps.
    """

    def __init__(
        self, videos: dict[str, _VideoBoxes], labels: list[str], path: str | None = None, detector: dict | None = None
    ) -> None:
        self.videos = videos
        self.labels = labels
        self.label_ids = {name: i for i, name in enumerate(labels)}
        self.path = path
        self.detector = detector
        self._build_index()

    def _build_index(self) -> None:
        """One flat index over all videos for batched lookups: key = video number * 2**32 + frame."""
        order = sorted(self.videos)
        self._number = {vid: i for i, vid in enumerate(order)}
        vids = [self.videos[vid] for vid in order]
        frames = [v.frames for v in vids]
        self._keys = (
            np.concatenate([np.int64(i) * _KEY + f for i, f in enumerate(frames)]) if vids else np.zeros(0, np.int64)
        )
        starts = np.cumsum([0] + [len(v.boxes) for v in vids])
        self._offsets = np.concatenate([v.offsets[:-1] + s for v, s in zip(vids, starts)] + [starts[-1:]]).astype(
            np.int64
        )
        self._boxes = np.concatenate([v.boxes for v in vids]) if vids else np.zeros((0, 4), np.float32)
        self._labels = np.concatenate([v.labels for v in vids]) if vids else np.zeros(0, np.int32)
        self._scores = np.concatenate([v.scores for v in vids]) if vids else np.zeros(0, np.float32)
        self._strides = np.array([v.stride for v in vids], dtype=np.int64)

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, stride: int | None = None) -> "BoxCache":
        """Read and index a cache file (a missing or empty file is a user error)."""
        path = Path(path)
        if not path.is_file():
            raise VideomaskError(f"boxes cache {str(path)!r} does not exist (build it with `videomask detect`)")
        records, _, _ = read_cache(path)
        if not records:
            raise VideomaskError(f"boxes cache {str(path)!r} holds no records")
        return cls.from_records(records, stride=stride, path=str(path))

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], *, stride: int | None = None, path: str | None = None
    ) -> "BoxCache":
        """Index records (dicts in the cache's line format)."""
        boxes: dict[str, list[tuple[int, list[float], str, float]]] = {}
        done: dict[str, Mapping[str, Any]] = {}
        for rec in records:
            vid = str(rec["video"])
            if rec.get("done"):
                done[vid] = rec
                boxes.setdefault(vid, [])
            elif "box" in rec:
                boxes.setdefault(vid, []).append(
                    (int(rec["frame"]), rec["box"], str(rec.get("label", "object")), float(rec.get("score", 1.0)))
                )
        labels = sorted({label for items in boxes.values() for _, _, label, _ in items})
        label_ids = {name: i for i, name in enumerate(labels)}
        videos: dict[str, _VideoBoxes] = {}
        detector = None
        for vid, items in boxes.items():
            items.sort(key=lambda it: it[0])
            box_frames = np.array([it[0] for it in items], dtype=np.int64)
            rec = done.get(vid)
            if rec is not None:
                s = max(1, int(rec.get("stride", 1)))
                n = int(rec.get("num_frames", int(box_frames.max()) + 1 if box_frames.size else 0))
                frames = np.arange(0, n, s, dtype=np.int64)
                detector = detector or rec.get("detector")
                extra = np.setdiff1d(box_frames, frames)  # boxes off the stride grid (foreign files)
                if extra.size:
                    frames = np.union1d(frames, extra)
            else:
                frames = np.unique(box_frames)
                if stride is not None:
                    s = int(stride)
                else:
                    gaps = np.diff(frames)
                    s = int(np.gcd.reduce(gaps)) if gaps.size else 1
                n = None
            slot = np.searchsorted(frames, box_frames)  # [M] scanned-frame slot of each box
            counts = np.bincount(slot, minlength=len(frames))
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            videos[vid] = _VideoBoxes(
                frames=frames,
                offsets=offsets,
                boxes=np.array([it[1] for it in items], dtype=np.float32).reshape(-1, 4),
                labels=np.array([label_ids[it[2]] for it in items], dtype=np.int32),
                scores=np.array([it[3] for it in items], dtype=np.float32),
                stride=max(1, s),
                num_frames=n,
                done=rec is not None,
            )
        return cls(videos, labels, path, detector)

    @classmethod
    def from_detections(
        cls,
        video_id: str,
        frame_indices: Sequence[int],
        detections: Sequence[Sequence[Detection]],
        *,
        num_frames: int | None = None,
    ) -> "BoxCache":
        """An in-memory cache of one video from detections on the given frames (e.g. ``show-masks --detector``)."""
        records: list[dict] = []
        for frame, found in zip(frame_indices, detections):
            for d in found:
                records.append(
                    {"video": video_id, "frame": int(frame), "box": list(d.box), "label": d.label, "score": d.score}
                )
        cache = cls.from_records(records)
        frames = np.unique(np.asarray(list(frame_indices), dtype=np.int64))
        if video_id in cache.videos:  # every asked frame was scanned, also those without boxes
            old = cache.videos[video_id]
            slot = np.searchsorted(frames, np.repeat(old.frames, np.diff(old.offsets)))
            old.offsets = np.concatenate([[0], np.cumsum(np.bincount(slot, minlength=len(frames)))]).astype(np.int64)
            old.frames = frames
            old.done = True
        else:
            cache.videos[video_id] = _VideoBoxes(
                frames,
                np.zeros(len(frames) + 1, np.int64),
                np.zeros((0, 4), np.float32),
                np.zeros(0, np.int32),
                np.zeros(0, np.float32),
                1,
                num_frames,
                True,
            )
        gaps = np.diff(frames)
        cache.videos[video_id].stride = int(gaps.max()) if gaps.size else 1
        cache._build_index()
        return cache

    # -- queries -------------------------------------------------------------------------------
    def __contains__(self, video_id: object) -> bool:
        return video_id in self.videos

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def video_ids(self) -> list[str]:
        return sorted(self.videos)

    def resolve_video_id(self, path_or_id: str) -> str | None:
        """The cache's id for a video path: the id itself, or the one id that the path ends with."""
        if path_or_id in self.videos:
            return path_or_id
        posix = Path(path_or_id).as_posix()
        matches = [vid for vid in self.videos if posix == vid or posix.endswith("/" + vid)]
        return matches[0] if len(matches) == 1 else None

    def label_mask(self, labels: Sequence[str] | str | None) -> np.ndarray:
        """Bool ``[num_labels]``: which label ids are kept (``None`` keeps every label)."""
        if labels is None:
            return np.ones(len(self.labels), dtype=bool)
        if isinstance(labels, str):
            labels = [labels]
        keep = np.zeros(len(self.labels), dtype=bool)
        for name in labels:
            if name in self.label_ids:
                keep[self.label_ids[name]] = True
        return keep

    def _check(self, video_id: str) -> None:
        if video_id not in self.videos:
            raise VideomaskError(
                f"video {video_id!r} is not in boxes cache {self.path or '(in memory)'} "
                "(run `videomask detect` on this data)"
            )

    def _lookup(
        self, video_ids: Sequence[str | None], frame_indices: np.ndarray, keep: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of the flat box table answering a batch of clips: ``(rows [N], clip [N], frame_pos [N])``.

        Each asked frame takes the boxes of the nearest scanned frame of its video (the earlier one on
        a tie) when it is at most the video's stride away. One ``searchsorted`` for the whole batch.
        """
        frame_indices = np.asarray(frame_indices, dtype=np.int64)  # [B, T]
        T = frame_indices.shape[1]
        present = [b for b, vid in enumerate(video_ids) if vid is not None]
        none = np.zeros(0, np.int64)
        if not present or self._keys.size == 0:
            return none, none, none
        for b in present:
            self._check(video_ids[b])  # type: ignore[arg-type]
        number = np.array([self._number[video_ids[b]] for b in present], dtype=np.int64)  # [B']
        query = (number[:, None] * _KEY + frame_indices[present]).reshape(-1)  # [B'*T]
        owner = np.repeat(number, T)  # [B'*T] video number of each query
        pos = np.searchsorted(self._keys, query)  # first scanned key >= query
        left = np.clip(pos - 1, 0, len(self._keys) - 1)
        right = np.clip(pos, 0, len(self._keys) - 1)
        far = np.iinfo(np.int64).max
        d_left = np.where(self._keys[left] // _KEY == owner, np.abs(self._keys[left] - query), far)
        d_right = np.where(self._keys[right] // _KEY == owner, np.abs(self._keys[right] - query), far)
        slot = np.where(d_right < d_left, right, left)  # [B'*T] nearest scanned frame of the same video
        valid = np.minimum(d_left, d_right) <= self._strides[owner]
        starts = self._offsets[slot]
        counts = np.where(valid, self._offsets[slot + 1] - starts, 0)  # [B'*T] boxes per query
        total = int(counts.sum())
        if total == 0:
            return none, none, none
        query_of = np.repeat(np.arange(len(query)), counts)  # [N] which query each box answers
        first = np.cumsum(counts) - counts
        rows = np.repeat(starts - first, counts) + np.arange(total)  # [N] rows of the flat box table
        ok = np.ones(total, bool) if keep is None else keep[self._labels[rows]]
        clip = np.asarray(present, dtype=np.int64)[query_of // T]
        return rows[ok], clip[ok], (query_of % T)[ok]

    def gather_batch(
        self, video_ids: Sequence[str | None], frame_indices: np.ndarray, keep: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat lookup for a batch of clips in one pass: ``(boxes [N, 4] float32, clip [N], frame_pos [N])``.

        ``frame_indices [B, T]``; ``video_ids[b] = None`` skips clip ``b``; other ids must be in the
        cache. ``keep``: bool ``[num_labels]`` from :meth:`label_mask` (None keeps every label).
        """
        rows, clip, pos = self._lookup(video_ids, frame_indices, keep)
        return self._boxes[rows], clip, pos

    def boxes(
        self,
        video_id: str,
        frame_indices: Sequence[int] | np.ndarray | Tensor,
        labels: Sequence[str] | str | None = None,
    ) -> list[Tensor]:
        """Boxes ``[N_k, 4]`` (float32, original pixels) for each asked frame; ``labels`` filters (None = all)."""
        # torch loads lazily: detection worker processes start without it
        import torch

        if isinstance(frame_indices, torch.Tensor):
            frame_indices = frame_indices.cpu().numpy()
        self._check(video_id)
        asked = np.asarray(frame_indices, dtype=np.int64).reshape(1, -1)  # [1, T]
        rows, _, pos = self._lookup([video_id], asked, self.label_mask(labels))
        split = np.searchsorted(pos, np.arange(1, asked.shape[1]))  # pos is sorted
        return [torch.from_numpy(np.ascontiguousarray(b)) for b in np.split(self._boxes[rows], split)]

    def detections(
        self, video_id: str, frame_indices: Sequence[int], labels: Sequence[str] | str | None = None
    ) -> list[list[Detection]]:
        """Like :meth:`boxes` but as :class:`Detection` lists (with labels and scores), for drawing."""
        self._check(video_id)
        asked = np.asarray(frame_indices, dtype=np.int64).reshape(1, -1)  # [1, T]
        rows, _, pos = self._lookup([video_id], asked, self.label_mask(labels))
        out: list[list[Detection]] = [[] for _ in range(asked.shape[1])]
        for r, k in zip(rows, pos):
            box = tuple(float(v) for v in self._boxes[r])
            out[k].append(Detection(box, self.labels[self._labels[r]], float(self._scores[r])))  # type: ignore[arg-type]
        return out

    def label_counts(self, video_ids: Iterable[str] | None = None) -> dict[str, int]:
        """Number of detections per label."""
        counts = np.zeros(len(self.labels), np.int64)
        for vid in self.videos if video_ids is None else video_ids:
            counts += np.bincount(self.videos[vid].labels, minlength=len(self.labels))
        return {name: int(c) for name, c in zip(self.labels, counts)}

    def frame_counts(self) -> tuple[dict[str, int], int]:
        """``({label: scanned frames with at least one detection of it}, scanned frames in all)``."""
        counts = np.zeros(len(self.labels), np.int64)
        scanned = 0
        for video in self.videos.values():
            scanned += len(video.frames)
            if video.labels.size:
                slot = np.repeat(np.arange(len(video.frames)), np.diff(video.offsets))
                pairs = np.unique(slot.astype(np.int64) * max(1, len(self.labels)) + video.labels)
                counts += np.bincount(pairs % max(1, len(self.labels)), minlength=len(self.labels))
        return {name: int(c) for name, c in zip(self.labels, counts)}, scanned

    def summary(self) -> str:
        """A short report: videos, scanned frames, detections and frames per label."""
        per_frame, scanned = self.frame_counts()
        det = self.label_counts()
        lines = [f"{len(self.videos)} videos, {scanned} scanned frames, {sum(det.values())} detections"]
        for name in self.labels:
            lines.append(
                f"  {name:16s} {det[name]:8d} boxes  in {per_frame[name]:7d} frames "
                f"({per_frame[name] / max(scanned, 1):.1%})"
            )
        return "\n".join(lines)


class PrecomputedDetector:
    """A boxes file (the cache's line format) used as a detector: looks boxes up by video id and frame index."""

    wants_context = True

    def __init__(self, boxes: str | Path | BoxCache) -> None:
        self.cache = boxes if isinstance(boxes, BoxCache) else BoxCache.load(boxes)

    @property
    def identity(self) -> dict:
        return {"name": "precomputed", "path": self.cache.path}

    def __call__(
        self, frames: np.ndarray, *, video_id: str | None = None, frame_indices: Sequence[int] | None = None
    ) -> list[list[Detection]]:
        if video_id is None or frame_indices is None:
            raise VideomaskError("a precomputed boxes file needs the video id and frame indices of the frames")
        vid = self.cache.resolve_video_id(video_id)
        if vid is None:
            raise VideomaskError(f"video {video_id!r} is not in boxes file {self.cache.path}")
        return self.cache.detections(vid, list(frame_indices))
