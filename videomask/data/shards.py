"""Videos in streaming shards (LitData chunks): :func:`write_shards` converts videos once, :class:`ShardSource`
reads one video's bytes and frame index by position, locally or from object storage (``s3://...``).

A shard folder holds LitData's ``index.json`` and ``chunk-*.bin`` files, :data:`SHARD_INFO` (every video's id
and label in order, the class names) and :data:`REJECTS` (the videos left out at conversion, with why). Each
sample is the encoded video, its id, its label and its meta and frame index as JSON
(:func:`~videomask.video.index_to_json`), so reading a clip neither lists a folder nor demuxes a video.
See docs/data.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videomask.data.lists import VideoItem
from videomask.errors import VideoDecodeError, VideomaskError
from videomask.video import (
    VideoReader,
    call_with_timeout,
    index_from_json,
    index_to_json,
    open_bytes,
    open_probe,
    storage,
)

SHARD_INFO = "videomask-shards.json"  # beside LitData's index.json: what makes a folder videomask shards
REJECTS = "rejects.tsv"  # video id <TAB> reason of every video left out at conversion
INDEX = "index.json"  # LitData's index of chunks
FORMAT = "videomask-shards/1"
CHUNK_BYTES = "64MB"  # LitData's chunk size: large objects for a store, small enough to fetch one per item


@dataclass
class ShardReport:
    """What :func:`write_shards` wrote: ``videos`` kept, ``rejected`` ``(video_id, reason)``, ``chunks``."""

    out: str
    videos: int
    rejected: list[tuple[str, str]]
    chunks: int
    bytes: int


def _litdata() -> Any:
    """The ``litdata`` package, or a one-line error naming the extra to install."""
    try:
        # optional dependency: only sharding and reading shards need litdata
        import litdata
        import litdata.streaming.writer  # noqa: F401 - BinaryWriter
    except ImportError:
        raise VideomaskError("shards need litdata: pip install 'videomask[shards]'") from None
    return litdata


def _join(base: str, name: str) -> str:
    return storage.join_url(base, name) if storage.is_remote(base) else os.path.join(base, name)


def is_shard_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` (a local folder or a URL, with its storage options registered) holds videomask shards."""
    return storage.exists(_join(storage.local_path(os.fspath(path)).rstrip("/"), SHARD_INFO))


def _read_bytes(path: str) -> bytes:
    """A video file's or object's bytes (one read; the object store's own errors as one line)."""
    if not storage.is_remote(path):
        try:
            return Path(storage.local_path(path)).read_bytes()
        except OSError as err:
            raise VideoDecodeError(f"{path}: cannot read file: {err.strerror or err}") from None
    try:
        return storage.filesystem(path).cat_file(path)
    except Exception as err:  # noqa: BLE001 - missing, refused, the network: the video is unreadable
        raise storage.open_error(path, err) from None


def _convert_one(job: tuple[VideoItem, int, float | None, dict[str, Any]]) -> tuple[bytes, str] | str:
    """Read and probe one video: ``(its bytes, meta and frame index as JSON)``, else why it is rejected."""
    item, min_frames, timeout, options = job
    storage.set_storage_options([item.path], options)  # a worker process reads the same store

    def probe() -> tuple[bytes, str]:
        data = _read_bytes(item.path)
        found = open_probe(item.path, 0, data)  # the demux pass, once, on the very bytes the shards keep
        found.container.close()
        if found.meta.num_frames < min_frames:
            raise VideoDecodeError(f"video has {found.meta.num_frames} frame(s), fewer than min_frames={min_frames}")
        return data, index_to_json(found.meta, found.index)

    try:
        return call_with_timeout(probe, timeout, "open")
    except Exception as err:  # noqa: BLE001 - as at training time: a backend bug on one odd file rejects it
        reason = str(err) if isinstance(err, VideomaskError) else f"{type(err).__name__}: {err}"
        return " ".join(reason.split()).removeprefix(f"{item.path}: ") or "unknown error"


def _probed(jobs: list[Any], workers: int) -> Iterator[tuple[bytes, str] | str]:
    """:func:`_convert_one` of every job, in order (``workers`` processes when more than one)."""
    if workers <= 1:
        yield from map(_convert_one, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_convert_one, jobs, chunksize=4)


def write_shards(
    items: Sequence[VideoItem],
    out: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    chunk_bytes: str | int = CHUNK_BYTES,
    min_frames: int = 2,
    timeout: float | None = 60.0,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ShardReport:
    """Convert ``items`` (in their order) into LitData shards in ``out`` (a local folder or a URL).

    Every video is read once and probed (a demux pass, no decoding); one that does not open or has fewer than
    ``min_frames`` frames is left out and listed in ``out/rejects.tsv``. A URL ``out`` is written through a
    local staging folder, one chunk at a time (each chunk is uploaded and removed as soon as it is complete).
    ``progress(n)`` is called after each video. ``workers`` processes read and probe videos (order kept).
    """
    out = storage.local_path(os.fspath(out)).rstrip("/")
    remote = storage.is_remote(out)
    options = dict(storage_options or {})
    storage.set_storage_options([out, *(i.path for i in items)], options)
    if storage.exists(_join(out, INDEX)) or storage.exists(_join(out, SHARD_INFO)):
        raise VideomaskError(f"{out} already holds shards: remove it or choose another output folder")
    if not remote and os.path.isfile(out):
        raise VideomaskError(f"{out} is a file, not a folder")
    BinaryWriter = _litdata().streaming.writer.BinaryWriter

    stage = tempfile.mkdtemp(prefix="videomask-shards-") if remote else out
    fs = storage.filesystem(out) if remote else None
    try:
        writer = BinaryWriter(stage, chunk_bytes=chunk_bytes)
        kept: list[tuple[str, int]] = []
        rejected: list[tuple[str, str]] = []
        written: list[str] = []
        size = 0

        def publish(paths: Sequence[str | None]) -> None:
            for path in paths:
                if path and fs is not None:
                    fs.put_file(path, _join(out, os.path.basename(path)))
                    os.unlink(path)
                if path:
                    written.append(path)

        jobs = [(item, min_frames, timeout, options) for item in items]
        for n, (item, got) in enumerate(zip(items, _probed(jobs, workers)), start=1):
            if isinstance(got, str):
                rejected.append((item.video_id, got))
            else:
                data, facts = got
                sample = {"video": data, "video_id": item.video_id, "label": int(item.label), "index": facts}
                publish([writer.add_item(len(kept), sample)])
                kept.append((item.video_id, int(item.label)))
                size += len(data)
            if progress is not None:
                progress(n)
        if not kept:
            first = f" (first: {rejected[0][0]}: {rejected[0][1]})" if rejected else ""
            raise VideomaskError(f"no video could be read, no shards written{first}")
        publish(writer.done())
        writer.merge(num_workers=1)
        info = {"format": FORMAT, "videos": kept, "classes": list(classes) if classes is not None else None}
        rejects = "".join(f"{video_id}\t{reason}\n" for video_id, reason in rejected)
        _write_text(out, fs, stage, INDEX, None)
        _write_text(out, fs, stage, REJECTS, "video_id\treason\n" + rejects)
        _write_text(out, fs, stage, SHARD_INFO, json.dumps(info))  # last: its presence marks complete shards
        for leftover in Path(stage).glob("*.index.json"):  # the writer's own partial index, merged into index.json
            leftover.unlink()
    finally:
        if remote:
            shutil.rmtree(stage, ignore_errors=True)
    return ShardReport(out, len(kept), rejected, len(written), size)


def _write_text(out: str, fs: Any, stage: str, name: str, text: str | None) -> None:
    """Write ``text`` as ``out/name`` (``None``: the staged file of that name), through ``fs`` for a URL."""
    staged = os.path.join(stage, name)
    if text is not None:
        Path(staged).write_text(text, encoding="utf-8")
    if fs is not None:
        fs.put_file(staged, _join(out, name))


def litdata_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """fsspec's S3 options (``endpoint_url``, ``key``, ``secret``, ``token``, ``anon``, ``client_kwargs``) as the
    boto3 client options LitData's S3 reader takes."""
    out: dict[str, Any] = {}
    names = {"key": "aws_access_key_id", "secret": "aws_secret_access_key", "token": "aws_session_token"}
    for key, value in options.items():
        if key in names:
            out[names[key]] = value
        elif key == "client_kwargs":
            out.update(value)
        elif key == "anon":
            if value:
                # optional dependency: botocore comes with s3fs / litdata
                import botocore
                from botocore.config import Config

                out["config"] = Config(signature_version=botocore.UNSIGNED)
        else:
            out[key] = value
    return out


class ShardSource:
    """Random access to the videos of a shard folder (local or a URL): ``items`` and :meth:`open`.

    LitData's ``StreamingDataset`` reads a sample by its global position (a local folder in place; from a URL only
    the sample's bytes, its index kept in ``cache_dir``); its ``len`` is this rank's share under torchrun,
    which videomask's sampler does not use, and each sample's id is checked against the list. It is made lazily
    in each process, so a source pickles to DataLoader workers.
    """

    def __init__(
        self, url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, cache_dir: str | None = None
    ) -> None:
        self.url = storage.local_path(os.fspath(url)).rstrip("/")
        self.storage_options = dict(storage_options or {})
        storage.set_storage_options([self.url], self.storage_options)
        info_path = _join(self.url, SHARD_INFO)
        try:
            if storage.is_remote(self.url):
                text = storage.read_text(info_path)
            else:
                text = Path(info_path).read_text(encoding="utf-8")
            info = json.loads(text)
        except (OSError, ValueError) as err:
            raise VideomaskError(f"{self.url} holds no readable videomask shards ({SHARD_INFO}: {err})") from None
        if info.get("format") != FORMAT:
            raise VideomaskError(f"{info_path}: unknown shard format {info.get('format')!r} (expected {FORMAT})")
        self.items = [VideoItem(f"{self.url}#{video_id}", video_id, label) for video_id, label in info["videos"]]
        self.classes: list[str] | None = info.get("classes")
        if cache_dir is None:
            name = "".join(c if c.isalnum() else "_" for c in self.url)[-120:]
            cache_dir = os.path.join(tempfile.gettempdir(), "videomask-shard-cache", name)
        self.cache_dir = cache_dir
        self._dataset: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_dataset"], state["_pid"] = None, -1  # each process opens its own (file handles, clients)
        return state

    def __len__(self) -> int:
        return len(self.items)

    def _streaming(self) -> Any:
        """This process's LitData ``StreamingDataset`` of the shards."""
        if self._dataset is None or self._pid != os.getpid():
            StreamingDataset = _litdata().StreamingDataset
            remote = storage.is_remote(self.url)
            options = litdata_options(self.storage_options) if remote else None
            try:
                dataset = StreamingDataset(
                    self.url, cache_dir=self.cache_dir if remote else None, storage_options=options
                )
            except Exception as err:  # noqa: BLE001 - the store's own errors (credentials, network): one line
                raise VideomaskError(f"cannot open the shards {self.url}: {storage.one_line_text(err)}") from None
            self._dataset, self._pid = dataset, os.getpid()
        return self._dataset

    def sample(self, index: int) -> dict[str, Any]:
        """Sample ``index``: ``video`` (bytes), ``video_id``, ``label``, ``index`` (meta and frame index, JSON)."""
        try:
            sample = self._streaming()[index]
        except VideomaskError:
            raise
        except Exception as err:  # noqa: BLE001 - a chunk that cannot be fetched or read: this video is unreadable
            raise VideoDecodeError(f"{self.items[index].path}: cannot read shard sample: {err}") from None
        if sample["video_id"] != self.items[index].video_id:
            raise VideoDecodeError(f"{self.items[index].path}: the shard holds {sample['video_id']!r} at this position")
        return sample

    def opener(self) -> Callable[[str], VideoReader]:
        """A reader of an item's ``path`` (``URL#video_id``), for code that takes paths (the caches' decode loop)."""
        where = {item.path: i for i, item in enumerate(self.items)}
        return lambda path: self.open(where[path])

    def open(self, index: int) -> VideoReader:
        """A PyAV reader of video ``index`` on its bytes, with the frame index found at conversion (no demux)."""
        sample = self.sample(index)
        return open_bytes(self.items[index].path, bytes(sample["video"]), index_from_json(sample["index"]))


def read_rejects(url: str | os.PathLike) -> list[tuple[str, str]]:
    """``(video_id, reason)`` of the videos left out when the shards at ``url`` were written."""
    path = _join(storage.local_path(os.fspath(url)).rstrip("/"), REJECTS)
    text = storage.read_text(path) if storage.is_remote(path) else Path(path).read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines()[1:] if line]
    return [(row[0], row[1] if len(row) > 1 else "") for row in rows]
