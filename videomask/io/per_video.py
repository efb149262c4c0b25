"""Caches kept as a folder of one safetensors file per video (the score and teacher caches).

``videos/<2 hex>/<SHA-1 of the video id>.safetensors`` holds one video's tensors, so a look-up opens one
small file and needs no index in memory (memory stays flat in the number of videos); ``meta.json``,
written last (atomic, fsynced), marks the folder complete. A parallel build gives each rank every N-th
video (:func:`rank_share`); each rank leaves a report in ``parts/`` that rank 0 merges into ``meta.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.io.weights import write_bytes_atomic

META_FILE = "meta.json"  # written last: a folder without it is a build still running or interrupted
PARTS_DIR = "parts"  # one small JSON report per rank of a parallel build

__all__ = [
    "META_FILE",
    "PARTS_DIR",
    "iter_video_ids",
    "parts_done",
    "rank_share",
    "read_meta",
    "read_parts",
    "read_video_file",
    "video_file",
    "video_file_metadata",
    "write_meta",
    "write_part",
    "write_video_file",
]


def video_file(root: str | Path, video_id: str) -> Path:
    """A video's file in the cache folder ``root`` (its name is the SHA-1 of the id: no index to load)."""
    digest = hashlib.sha1(video_id.encode()).hexdigest()
    return Path(root) / "videos" / digest[:2] / f"{digest}.safetensors"


def write_video_file(root: str | Path, video_id: str, tensors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """Write one video's tensors (and string ``metadata``, plus its id) into ``root``; returns the file.

    Written to a temporary name and renamed (a reader never sees half a file); not fsynced: there is one
    file per video, and ``meta.json``, written with fsync once all are done, marks the cache complete."""
    data = st_save({k: t.contiguous() for k, t in tensors.items()}, metadata={**metadata, "video": video_id})
    path = video_file(root, video_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:  # a plain write: the umask's permissions, as every file videomask shares
        fh.write(data)
    os.replace(tmp, path)
    return path


def video_file_metadata(path: Path) -> dict[str, str] | None:
    """A video file's metadata (its header only), or None when it is missing or unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return None


def read_video_file(root: str | Path, video_id: str, what: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of one video; ``KeyError`` when it has no file, a one-line error when the
    file is unreadable or holds another video (``what`` names the cache in messages)."""
    path = video_file(root, video_id)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except FileNotFoundError:
        raise KeyError(video_id) from None
    except (SafetensorError, OSError, ValueError) as err:
        if not path.is_file():
            raise KeyError(video_id) from None
        raise VideomaskError(
            f"{what} {root}: the file of video {video_id!r} is unreadable ({err}); rebuild the cache"
        ) from None
    if meta.get("video") != video_id:  # a SHA-1 collision, or a file copied in from elsewhere
        raise VideomaskError(f"{what} {root}: {path} holds {meta.get('video')!r}, not {video_id!r}")
    return tensors, meta


def iter_video_ids(root: str | Path) -> Iterator[str]:
    """The id of every video file in ``root`` (reads every header: for tools, not for training)."""
    for path in sorted((Path(root) / "videos").glob("*/*.safetensors")):
        meta = video_file_metadata(path)
        if meta is not None and "video" in meta:
            yield meta["video"]


def write_meta(root: str | Path, meta: dict[str, Any]) -> None:
    """Write ``meta.json``, the mark of a complete cache folder (atomic, fsynced)."""
    write_bytes_atomic(Path(root) / META_FILE, json.dumps(meta, sort_keys=True, indent=1).encode())


def read_meta(root: str | Path, what: str, build: str) -> dict[str, Any]:
    """``meta.json`` of a cache folder; one line when it is missing (an interrupted build: ``build`` says
    what to run again) or unreadable."""
    path = Path(root) / META_FILE
    if not path.is_file():
        raise VideomaskError(
            f"{what} {root} is incomplete (its build was interrupted or still runs): run {build} again, "
            "it keeps the videos already done"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise VideomaskError(f"{path} is not a readable {what} ({err})") from None


def rank_share(videos: Iterable[tuple[str, str]], rank: int, world_size: int) -> list[tuple[str, str]]:
    """Rank ``rank``'s share of ``(video_id, path)`` pairs: every ``world_size``-th of them in video id order
    (deterministic, and the same on every rank whatever order the list came in)."""
    return sorted(videos)[rank::world_size]


def _part_file(root: Path, rank: int, world_size: int) -> Path:
    return root / PARTS_DIR / f"rank-{rank:05d}-of-{world_size:05d}.json"


def write_part(root: str | Path, rank: int, world_size: int, report: dict[str, Any]) -> None:
    """Rank ``rank``'s report of its share of a parallel build."""
    write_bytes_atomic(_part_file(Path(root), rank, world_size), json.dumps(report).encode())


def parts_done(root: str | Path, world_size: int) -> int:
    """How many of the ``world_size`` ranks' reports are in ``root``."""
    return sum(_part_file(Path(root), r, world_size).is_file() for r in range(world_size))


def read_parts(root: str | Path, world_size: int, what: str) -> list[dict[str, Any]]:
    """The ``world_size`` ranks' reports; a missing one (a rank that did not finish, or a folder that is not
    shared between the nodes) is a one-line error."""
    reports = []
    for rank in range(world_size):
        part = _part_file(Path(root), rank, world_size)
        try:
            reports.append(json.loads(part.read_text()))
        except (OSError, ValueError):
            raise VideomaskError(
                f"{what} {root}: rank {rank} of {world_size} left no report ({part}); every rank must write "
                "to the same folder (a run folder shared by all nodes)"
            ) from None
    return reports
