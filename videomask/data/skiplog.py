"""The skip log: which videos a dataset skipped and why, one file per process and the merged view users read.

Each (rank, DataLoader worker) process appends only to its own file, ``<log>.d/rank{r}.worker{w}.tsv``
(``rank{r}.main.tsv`` for the rank's own process), so no two processes write one file. Each process reads the
others' files only when they changed (size, inode) and only their new lines, at most every
:data:`REFRESH_SECONDS` while loading items, and always when asked for the count. ``<log>`` itself is the
merged, de-duplicated view (:meth:`SkipLog.write_merged`, written by rank 0 at checkpoints and at the end of a
run); it is read too, so a log from before the per-process files still counts. Format of every file: one line
per skip, ``video_id<TAB>reason``, plus ``<TAB>clips`` when only some clips of the video failed.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch.distributed as dist
from torch.utils.data import get_worker_info

SHARD_SUFFIX = ".d"  # the folder of the per-process files: skipped.tsv -> skipped.tsv.d/
REFRESH_SECONDS = 1.0  # while loading items, the other processes' files are looked at this often at most
CLIPS = "clips"  # third column: only some clips of the video failed


def shard_dir(log_path: str | os.PathLike) -> Path:
    """The folder of the per-process files of the skip log ``log_path``."""
    return Path(os.fspath(log_path) + SHARD_SUFFIX)


def current_rank() -> int:
    """This process's rank: the process group's when one is started, else torchrun's ``RANK`` (0 alone)."""
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return int(os.environ.get("RANK", "0") or 0)


def process_file_name(rank: int) -> str:
    """``rank{r}.worker{w}.tsv`` in a DataLoader worker, ``rank{r}.main.tsv`` in the rank's own process."""
    info = get_worker_info()
    return f"rank{rank}.{'main' if info is None else f'worker{info.id}'}.tsv"


def remove_skip_log(log_path: str | os.PathLike) -> None:
    """Delete the skip log ``log_path``: the merged view and every per-process file (a fresh run)."""
    Path(log_path).unlink(missing_ok=True)
    shutil.rmtree(shard_dir(log_path), ignore_errors=True)


@dataclass
class _Tail:
    """How far one file was read: its identity and the offset after the last complete line."""

    ident: tuple[int, int] = (-1, -1)  # (device, inode)
    offset: int = 0


@dataclass
class SkipLog:
    """The skip log at ``path`` (the merged view) and its per-process files; see the module docstring.

    ``rank``: whose files this process writes (default: :func:`current_rank` when first written).
    ``reads`` / ``bytes_read`` count the file reads (for tests and benchmarks).
    """

    path: str
    rank: int | None = None
    refresh_seconds: float = REFRESH_SECONDS
    reads: int = 0
    bytes_read: int = 0
    _bad: dict[str, str] = field(default_factory=dict)  # video_id -> first reason seen
    _for_good: set[str] = field(default_factory=set)
    _tails: dict[str, _Tail] = field(default_factory=dict)
    _looked_at: float = float("-inf")  # time.monotonic() of the last look at the other files
    _own: tuple[int, str] | None = None  # (pid, this process's file)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_own"] = None  # a worker process names its own file
        state["_looked_at"] = float("-inf")  # and looks at the files at its first item
        return state

    # -- reading ----------------------------------------------------------------------------------

    def files(self) -> list[str]:
        """The merged view and the per-process files that exist now (sorted, so merging is deterministic)."""
        found = [self.path] if os.path.isfile(self.path) else []
        folder = shard_dir(self.path)
        try:
            names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".tsv") and e.is_file())
        except OSError:
            names = []
        return found + [str(folder / name) for name in names]

    def refresh(self, force: bool = True) -> None:
        """Read what the files gained since the last look (only new complete lines); ``force=False`` looks at
        most every ``refresh_seconds``."""
        now = time.monotonic()
        if not force and now - self._looked_at < self.refresh_seconds:
            return
        self._looked_at = now
        for name in self.files():
            self._read_new(name)

    def _read_new(self, name: str) -> None:
        try:
            st = os.stat(name)
        except OSError:
            return
        tail = self._tails.setdefault(name, _Tail())
        ident = (st.st_dev, st.st_ino)
        if ident != tail.ident or st.st_size < tail.offset:  # replaced (the merged view) or cut: from the start
            tail.ident, tail.offset = ident, 0
        if st.st_size == tail.offset:
            return
        with open(name, "rb") as f:
            f.seek(tail.offset)
            data = f.read(st.st_size - tail.offset)
        self.reads += 1
        self.bytes_read += len(data)
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        tail.offset += end
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            self._add_line(line)

    def _add_line(self, line: str) -> None:
        video_id, _, rest = line.partition("\t")
        if not video_id:
            return
        reason, _, kind = rest.partition("\t")
        self._add(video_id, reason, for_good=kind != CLIPS)

    def _add(self, video_id: str, reason: str, *, for_good: bool) -> None:
        if for_good and video_id not in self._for_good:
            self._for_good.add(video_id)
            self._bad[video_id] = reason  # the reason it was skipped for good wins
        else:
            self._bad.setdefault(video_id, reason)

    def bad(self, *, force: bool = True) -> dict[str, str]:
        """``{video_id: reason}`` of every video skipped so far by any process (for good or for some clips)."""
        self.refresh(force)
        return self._bad

    def bad_for_good(self, *, force: bool = False) -> set[str]:
        """Ids of the videos skipped for good; by default the others' files are looked at every
        ``refresh_seconds`` only (the item loop calls this per video)."""
        self.refresh(force)
        return self._for_good

    # -- writing ----------------------------------------------------------------------------------

    def own_file(self) -> str:
        """This process's file (named at its first use in each process)."""
        pid = os.getpid()
        if self._own is None or self._own[0] != pid:
            rank = current_rank() if self.rank is None else self.rank
            self._own = (pid, str(shard_dir(self.path) / process_file_name(rank)))
        return self._own[1]

    def append(self, video_id: str, reason: str, *, for_good: bool = True) -> None:
        """Log one skip in this process's file (one short line: one ``write`` call)."""
        video_id = " ".join(video_id.split("\t"))
        line = f"{video_id}\t{reason}{'' if for_good else chr(9) + CLIPS}\n"
        own = self.own_file()
        Path(own).parent.mkdir(parents=True, exist_ok=True)
        with open(own, "a", encoding="utf-8") as f:
            f.write(line)
        self._add(video_id, reason, for_good=for_good)

    def write_merged(self) -> Path:
        """Write the merged, de-duplicated view to ``path`` (atomically; sorted by video id) and return it."""
        self.refresh(force=True)
        lines = [
            f"{video_id}\t{reason}{'' if video_id in self._for_good else chr(9) + CLIPS}\n"
            for video_id, reason in sorted(self._bad.items())
        ]
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        text = "".join(lines).encode("utf-8")
        tmp.write_bytes(text)
        os.replace(tmp, path)
        st = os.stat(path)  # what it holds is known here: not read back
        self._tails[self.path] = _Tail((st.st_dev, st.st_ino), len(text))
        return path
