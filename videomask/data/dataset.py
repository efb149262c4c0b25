"""The video dataset: :class:`VideoDataset` (decode, sample, transform; skips bad videos and logs them).

Determinism, skipping and repeated sampling are described in docs/data.md.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from multiprocessing.context import get_spawning_popen
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from videomask.data.lists import VIDEO_EXTENSIONS, VideoItem, list_videos, read_video_list
from videomask.data.process import keep_mmap_threshold, prepare_process
from videomask.data.sampling import VideoTooShortError, clip_span, plan_reads, sample_indices
from videomask.data.shards import ShardSource, is_shard_folder
from videomask.data.skiplog import SkipLog, shard_dir
from videomask.data.transforms import ClipTransform
from videomask.errors import VideoDecodeError, VideomaskError
from videomask.patches import Tubelet, as_tubelet, grid_for
from videomask.seeding import item_generator
from videomask.video import BACKENDS, VideoReader, available_backends, call_with_timeout, open_video, storage

log = logging.getLogger("videomask.data")


class ClipDecodeError(VideoDecodeError):
    """A video opened, but the frames of this clip (these random draws) could not be decoded; other clips
    of the same video may decode (a damaged stretch), so the video is not skipped for good."""


def _remove_file(path: str, owner_pid: int) -> None:
    """Remove a temporary skip log (the merged view and the per-process files) in the process that named it."""
    if os.getpid() == owner_pid:
        try:
            os.unlink(path)
        except OSError:
            pass
        shutil.rmtree(shard_dir(path), ignore_errors=True)


class VideoDataset(Dataset):
    """Clips of videos for training or evaluation; see docs/data.md for determinism and skipping.

    ``dataset[i]`` is a dict (``num_sample == 1``) or a list of ``num_sample`` dicts, each::

        video [C, T, H, W] float, video_id str, frame_indices long [T], geometry float64 [9],
        label int (-1: none), index int

    Batch them with :func:`collate_clips`. Options: ``num_frames`` at stride ``sampling_rate``;
    ``sampling`` (``random`` / ``center`` / ``uniform``) and ``short`` (``loop`` / ``pad`` / ``skip``)
    as :func:`sample_indices`; videos with fewer than ``min_frames`` frames are always skipped;
    ``num_sample`` clips per video from one decode; ``transform`` (default:
    ``ClipTransform(size=size, train=train)``, ``size`` 224; a given transform brings its own size and
    augmentation, so passing ``size``, or a ``train`` that disagrees with it, is an error; ``train``
    defaults to ``sampling == "random"`` and ``sampling`` to ``"center"`` when ``train=False``, else
    ``"random"``); ``tubelet`` checks that
    clips fit the token grid (and is the patch the default transform checks);
    ``backend`` for :func:`videomask.video.open_video`; ``seed``; ``timeout`` seconds per video;
    ``skip_log`` file (default: a temporary file, removed at exit and so never named in a message; each
    process writes its own file in ``<skip_log>.d/``, see :mod:`videomask.data.skiplog`); ``rank`` names
    this process's skip-log files (default: the process group's rank, else ``RANK``);
    ``storage_options`` for the fsspec filesystem of videos given as URLs (``s3://...``: ``endpoint_url``,
    ``anon``, ``key``, ...; default: fsspec's, e.g. the AWS environment variables).
    ``in_memory``: each process decodes a video whole the first time it is used and keeps its frames, so
    later items slice memory instead of decoding (for small sets read many times, e.g. benchmarks; the
    memory is every frame of every video, per DataLoader worker; a video with any undecodable frame is
    skipped whole).
    ``shards``: read the videos from these shards (:class:`~videomask.data.shards.ShardSource`; ``items`` are its
    items), see :meth:`from_shards`.
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        *,
        num_frames: int = 16,
        sampling_rate: int = 4,
        sampling: str | None = None,
        short: str = "loop",
        min_frames: int = 2,
        num_sample: int = 1,
        transform: ClipTransform | None = None,
        size: int | Sequence[int] | None = None,
        train: bool | None = None,
        tubelet: int | Sequence[int] | None = None,
        backend: str = "pyav",
        seed: int = 0,
        timeout: float | None = 60.0,
        skip_log: str | os.PathLike | None = None,
        classes: Sequence[str] | None = None,
        rank: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        in_memory: bool = False,
        shards: ShardSource | None = None,
    ) -> None:
        self.items = list(items)
        self.shards = shards
        if shards is not None and backend not in ("pyav", "auto"):
            raise VideomaskError(f"shards are decoded by PyAV from their bytes: use backend pyav, not {backend}")
        self.in_memory = bool(in_memory)
        self._frames: dict[int, tuple[Any, np.ndarray]] = {}  # in_memory: index -> (meta, frames [N, H, W, 3])
        if not self.items:
            raise VideomaskError("the dataset has no videos")
        prepare_process()  # fork hook, FFmpeg log capture (see process.py)
        self.storage_options = dict(storage_options or {})
        remote = [item.path for item in self.items if storage.is_remote(item.path)]
        if remote:
            if backend not in ("pyav", "auto"):
                raise VideomaskError(
                    f"the {backend} backend reads local files only and {remote[0]} is a URL: use backend pyav"
                )
            storage.set_storage_options(remote, self.storage_options)
            storage.filesystem(remote[0])  # a missing fsspec package is one line now, not a skip per video
        if num_frames <= 0 or sampling_rate <= 0 or num_sample <= 0 or min_frames <= 0:
            raise VideomaskError(
                f"num_frames, sampling_rate, num_sample and min_frames must be positive, "
                f"got {num_frames}, {sampling_rate}, {num_sample}, {min_frames}"
            )
        if transform is not None and (size is not None or (train is not None and train != transform.train)):
            raise VideomaskError(
                "VideoDataset: a transform sets the clip size and augmentation; pass size/train to "
                "ClipTransform instead of the dataset"
            )
        if sampling is None:
            sampling = "center" if train is False else "random"
        if train is None:
            train = sampling == "random"
        sample_indices(
            clip_span(num_frames, sampling_rate), num_frames, sampling_rate, sampling, short
        )  # validates names
        self.num_frames, self.sampling_rate, self.sampling, self.short = num_frames, sampling_rate, sampling, short
        self.min_frames, self.num_sample = min_frames, num_sample
        self.tubelet: Tubelet | None = as_tubelet(tubelet) if tubelet is not None else None
        if transform is None:
            patch = self.tubelet[1:] if self.tubelet is not None else None
            transform = ClipTransform(size=224 if size is None else size, train=train, patch=patch)  # type: ignore[arg-type]
        self.transform = transform
        if self.tubelet is not None:
            grid_for((num_frames, *self.transform.size), self.tubelet)  # clear error when not divisible
        if backend != "auto" and backend not in available_backends():
            known = ", ".join(available_backends())
            why = "is not installed" if backend in BACKENDS else "is unknown"
            raise VideomaskError(f"video backend {backend!r} {why} (available: {known}, auto)")
        self.backend, self.seed = backend, int(seed)
        self.timeout = float(timeout) if timeout is not None and timeout > 0 else None
        self.classes = list(classes) if classes is not None else None
        self._epoch = multiprocessing.RawValue("q", 0)  # shared with worker processes (also persistent ones)
        self._temporary_log = skip_log is None
        if skip_log is None:  # named now (so every worker shares it), created at the first skip
            path = os.path.join(tempfile.gettempdir(), f"videomask-skipped-{os.getpid()}-{uuid.uuid4().hex[:12]}.tsv")
            weakref.finalize(self, _remove_file, path, os.getpid())
            self.skip_log = path
        else:
            self.skip_log = str(skip_log)
            Path(self.skip_log).parent.mkdir(parents=True, exist_ok=True)
        self._log = SkipLog(self.skip_log, rank)

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        extensions: Iterable[str] = VIDEO_EXTENSIONS,
        recursive: bool = True,
        **options: Any,
    ) -> "VideoDataset":
        """All videos under ``root`` (see :func:`list_videos`; a URL too); ids are paths relative to ``root``."""
        return cls(list_videos(root, extensions, recursive, options.get("storage_options")), **options)

    @classmethod
    def from_list(cls, path: str | os.PathLike, **options: Any) -> "VideoDataset":
        """Videos named in a list file (see :func:`read_video_list`; a URL too)."""
        items, classes = read_video_list(path, options.get("storage_options"))
        return cls(items, classes=classes, **options)

    @classmethod
    def from_shards(cls, url: str | os.PathLike, *, shard_cache: str | None = None, **options: Any) -> "VideoDataset":
        """The videos of a shard folder written by ``videomask shard`` (a local folder or a URL); ``shard_cache``:
        where chunks fetched from a URL are kept (default: a folder under the temporary directory)."""
        source = ShardSource(url, options.get("storage_options"), shard_cache)
        options.setdefault("classes", source.classes)
        return cls(source.items, shards=source, **options)

    @classmethod
    def from_path(cls, path: str | os.PathLike, **options: Any) -> "VideoDataset":
        """A folder (:meth:`from_folder`), a shard folder (:meth:`from_shards`), a single video file (by
        extension) or a list file (:meth:`from_list`); ``path`` may be a URL (``s3://bucket/prefix``, any fsspec
        protocol)."""
        if storage.is_remote(os.fspath(path)):
            return cls._from_url(os.fspath(path).rstrip("/"), **options)
        p = Path(storage.local_path(path))
        if not p.exists():
            raise VideomaskError(f"no such file or folder: {path}")
        if p.is_dir() and is_shard_folder(p):
            return cls.from_shards(p, **options)
        if p.is_dir():
            return cls.from_folder(p, **options)
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            return cls([VideoItem(os.path.abspath(p), p.name)], **options)
        return cls.from_list(p, **options)

    @classmethod
    def _from_url(cls, url: str, **options: Any) -> "VideoDataset":
        """:meth:`from_path` of a URL: a key prefix is a folder, an object a video (by extension) or a list."""
        storage.set_storage_options([url], options.get("storage_options"))
        kind = storage.path_kind(url)
        if kind is None:
            raise VideomaskError(f"no such file or folder: {url}")
        if kind == "directory" and is_shard_folder(url):
            return cls.from_shards(url, **options)
        if kind == "directory":
            return cls.from_folder(url, **options)
        if os.path.splitext(url)[1].lower() in VIDEO_EXTENSIONS:
            return cls([VideoItem(url, url.rsplit("/", 1)[-1])], **options)
        return cls.from_list(url, **options)

    # -- epoch and pickling ------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws items use (seen by all DataLoader workers)."""
        self._epoch.value = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frames"] = {}  # in_memory: each process decodes its own copy once
        if get_spawning_popen() is None:  # a plain pickle (not a worker start): keep the value only
            state["_epoch"] = int(self._epoch.value)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        prepare_process()  # a spawned worker process
        if isinstance(state["_epoch"], int):
            value = multiprocessing.RawValue("q", state["_epoch"])
            state["_epoch"] = value
        self.__dict__.update(state)
        remote = [item.path for item in self.items if storage.is_remote(item.path)]
        storage.set_storage_options(remote, self.storage_options)  # this process reads the same store

    # -- skipped videos ----------------------------------------------------------------------------

    def _bad(self) -> dict[str, str]:
        """``{video_id: reason}`` of every video skipped so far (for good or for some clips), by any process."""
        return self._log.bad(force=True)

    def mark_skipped(self, index: int, reason: str, *, for_good: bool = True) -> None:
        """Record video ``index`` as bad: one warning line and one skip-log line (once per video and process).

        ``for_good=False``: only some clips of it failed (later items still try it, see ``__getitem__``).
        """
        video_id = self.items[index].video_id
        known_for_good = self._log.bad_for_good()
        bad = self._log.bad(force=False)
        if video_id in known_for_good or (video_id in bad and not for_good):
            return
        reason = " ".join(str(reason).split()) or "unknown error"
        reason = reason.removeprefix(f"{self.items[index].path}: ")  # the id already names the video
        if video_id not in bad:
            log.warning("videomask: skipping %s %s: %s", "video" if for_good else "a clip of video", video_id, reason)
        self._log.append(video_id, reason, for_good=for_good)

    def skipped_videos(self) -> list[tuple[str, str]]:
        """``(video_id, reason)`` of every video skipped so far, by any process using this skip log."""
        return list(self._bad().items())

    @property
    def skipped(self) -> int:
        """How many distinct videos were skipped so far (all worker processes and ranks)."""
        return len(self._bad())

    @property
    def skip_log_stats(self) -> tuple[int, int]:
        """``(file reads, bytes read)`` of this process's skip-log look-ups (for tests and benchmarks)."""
        return self._log.reads, self._log.bytes_read

    def write_skip_log(self) -> Path:
        """Write the merged, de-duplicated skip log (every process's skips) to ``skip_log``; returns its path.

        A run does this on rank 0 at checkpoints and at its end; each process writes only its own file.
        """
        return self._log.write_merged()

    def unreadable(self) -> list[tuple[str, str]]:
        """``(video_id, reason)`` of every video that does not open or is shorter than ``min_frames``.

        Opens each video (a demux, no decoding): meant for the few videos of a dataset smaller than a batch,
        so a message counts unreadable files as unreadable; a large dataset finds its bad videos as it loads.
        """
        bad = []
        for index, item in enumerate(self.items):

            def frame_count(index: int = index) -> int:
                with self.open(index) as reader:
                    return int(reader.meta.num_frames)

            try:
                n = call_with_timeout(frame_count, self.timeout, "open")
            except Exception as err:  # as in __getitem__: a backend bug on one odd file makes it unreadable
                reason = str(err) if isinstance(err, VideomaskError) else f"{type(err).__name__}: {err}"
                bad.append((item.video_id, " ".join(reason.split()).removeprefix(f"{item.path}: ")))
                continue
            if n < self.min_frames:
                bad.append((item.video_id, f"video has {n} frame(s), fewer than min_frames={self.min_frames}"))
        return bad

    # -- loading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def opener(self) -> Callable[[str], VideoReader] | None:
        """A reader of an item's path when it is not a file or object (videos in shards), else None."""
        return self.shards.opener() if self.shards is not None else None

    def open(self, index: int) -> VideoReader:
        """A reader of video ``index``: its file or object, or its bytes in the shards."""
        if self.shards is not None:
            return self.shards.open(index)
        return open_video(self.items[index].path, backend=self.backend)

    def _decode(
        self, index: int, draw_index: int, epoch: int
    ) -> tuple[Any, list[list[int]], np.ndarray, list[list[int]], list[torch.Generator]]:
        """Open, sample and read (run under the time-out): (meta, clip indices, frames, positions, generators)."""
        if self.in_memory:
            meta, whole = self._whole_video(index)
            clips, unique, positions, generators = self._draw(int(meta.num_frames), draw_index, epoch)
            frames = whole[unique]  # the frames a read of ``unique`` gives (decoding is frame-exact)
        else:
            with self.open(index) as reader:
                meta = reader.meta
                clips, unique, positions, generators = self._draw(int(meta.num_frames), draw_index, epoch)
                try:
                    frames = np.asarray(reader.read(unique))
                except VideoDecodeError as err:  # depends on which frames were drawn
                    raise ClipDecodeError(str(err)) from None
        if frames.ndim != 4 or frames.shape[0] != len(unique) or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ClipDecodeError(
                f"decoded {tuple(frames.shape)} {frames.dtype} frames, expected {len(unique)} uint8 RGB frames"
            )
        return meta, clips, frames, positions, generators

    def _draw(
        self, n: int, draw_index: int, epoch: int
    ) -> tuple[list[list[int]], list[int], list[list[int]], list[torch.Generator]]:
        """The clips of a video of ``n`` frames for this draw: (clip indices, unique frames, positions, generators)."""
        if n < self.min_frames:
            raise VideoTooShortError(f"video has {n} frame(s), fewer than min_frames={self.min_frames}")
        generators = [item_generator(self.seed, epoch, draw_index, s) for s in range(self.num_sample)]
        clips = [
            sample_indices(n, self.num_frames, self.sampling_rate, self.sampling, self.short, g) for g in generators
        ]
        unique, positions = plan_reads(clips)
        return clips, unique, positions, generators

    def _whole_video(self, index: int) -> tuple[Any, np.ndarray]:
        """``in_memory``: (meta, every frame [N, H, W, 3] uint8) of video ``index``, decoded once per process."""
        if index not in self._frames:
            with self.open(index) as reader:
                meta = reader.meta
                frames = np.asarray(reader.read_all())  # [N, H, W, 3] uint8
            self._frames[index] = (meta, frames)
        return self._frames[index]

    def load_clips(
        self, index: int, draw_index: int | None = None, epoch: int | None = None
    ) -> tuple[Any, list[dict[str, Any]]]:
        """Strictly load video ``index``: ``(VideoMeta, num_sample clip dicts)``; raises on a bad video.

        Random draws use ``draw_index`` (default ``index``) and ``epoch`` (default: the current epoch).
        """
        item = self.items[index]
        draw_index = index if draw_index is None else draw_index
        epoch = self.epoch if epoch is None else epoch
        meta, clips, frames, positions, generators = call_with_timeout(
            lambda: self._decode(index, draw_index, epoch), self.timeout, "decode"
        )
        out = []
        for clip, pos, generator in zip(clips, positions, generators):
            video, geometry = self.transform(frames[pos], generator)  # [C, T, H, W]
            out.append(
                {
                    "video": video,
                    "video_id": item.video_id,
                    "frame_indices": torch.tensor(clip, dtype=torch.long),  # [T]
                    "geometry": geometry.to_tensor(),  # [9] float64
                    "label": item.label,
                    "index": index,
                }
            )
        return meta, out

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | list[dict[str, Any]]:
        """The clip(s) of video ``key``, or of ``key = (epoch, index)`` with that epoch's draws.

        A bad video is skipped (logged once) and the next one in the list is tried.
        """
        epoch, index = key if isinstance(key, tuple) else (None, key)
        n = len(self.items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} videos")
        index %= n
        keep_mmap_threshold()  # this process decodes: a flat peak RSS over many videos (see process.py)
        for step in range(n):
            j = (index + step) % n
            if self.items[j].video_id in self._log.bad_for_good():
                continue
            try:
                _, clips = self.load_clips(j, draw_index=index, epoch=epoch)
            except ClipDecodeError as err:
                self.mark_skipped(j, str(err), for_good=False)
                continue
            except VideomaskError as err:
                self.mark_skipped(j, str(err))
                continue
            except Exception as err:  # a backend bug on one odd file must not stop the run
                self.mark_skipped(j, f"{type(err).__name__}: {err}")
                continue
            return clips[0] if self.num_sample == 1 else clips
        first_id, first_reason = next(iter(self._bad().items()), ("?", "unknown"))
        # a temporary skip log is removed at exit: only a kept one is worth naming (and written out)
        where = "" if self._temporary_log else f"; all reasons in {self.write_skip_log()}"
        raise VideomaskError(
            f"every video failed to decode ({n} video{'' if n == 1 else 's'}; first: {first_id}: {first_reason}{where})"
        )
