"""Which videos a dataset holds: a folder scan (:func:`list_videos`) or a list file
(:func:`read_video_list`: VideoMAE text, CSV or TSV; formats in docs/data.md); folders, lists and entries
may be URLs (``s3://bucket/prefix``, any fsspec protocol: :mod:`videomask.video.storage`)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videomask.errors import VideomaskError
from videomask.video import storage

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ts",
    ".3gp",
    ".ogv",
)


@dataclass(frozen=True)
class VideoItem:
    """One video of a dataset: absolute ``path`` (or URL), ``video_id`` (as written / relative posix), ``label``
    (-1: none)."""

    path: str
    video_id: str
    label: int = -1


def _normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def _is_video(rel_parts: Iterable[str], suffix: str, exts: tuple[str, ...]) -> bool:
    return not any(part.startswith(".") for part in rel_parts) and suffix.lower() in exts


def _no_videos(exts: tuple[str, ...], recursive: bool, root: object) -> VideomaskError:
    where = "under" if recursive else "directly in"
    return VideomaskError(f"no videos ({', '.join(exts)}) {where} {root}")


def _list_remote(root: str, exts: tuple[str, ...], recursive: bool) -> list[VideoItem]:
    """:func:`list_videos` of a folder URL (a key prefix of a bucket) through fsspec."""
    kind = storage.path_kind(root)
    if kind is None:
        raise VideomaskError(f"no such folder: {root}")
    if kind != "directory":
        raise VideomaskError(f"not a folder: {root}")
    items = [
        VideoItem(url, rel)
        for url, rel in storage.list_objects(root, recursive)
        if _is_video(rel.split("/"), os.path.splitext(rel)[1], exts)
    ]
    if not items:
        raise _no_videos(exts, recursive, root)
    return sorted(items, key=lambda item: item.video_id)


def list_videos(
    root: str | os.PathLike,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    recursive: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> list[VideoItem]:
    """Video files under ``root`` (by extension, case-insensitive), sorted by relative path.

    Hidden files and folders (names starting with ``.``, e.g. macOS ``._clip.mp4``) are left out. ``root`` may
    be a URL (``s3://bucket/prefix``): its objects are listed through fsspec with ``storage_options``.
    """
    exts = _normalise_extensions(extensions)
    if storage.is_remote(os.fspath(root)):
        storage.set_storage_options([os.fspath(root)], storage_options)
        return _list_remote(os.fspath(root).rstrip("/"), exts, recursive)
    root = Path(storage.local_path(root))
    if not root.exists():
        raise VideomaskError(f"no such folder: {root}")
    if not root.is_dir():
        raise VideomaskError(f"not a folder: {root}")
    found = root.rglob("*") if recursive else root.iterdir()
    items = []
    for path in found:
        rel = path.relative_to(root)
        if path.is_file() and _is_video(rel.parts, path.suffix, exts):
            items.append(VideoItem(os.path.abspath(path), rel.as_posix()))
    if not items:
        raise _no_videos(exts, recursive, root)
    return sorted(items, key=lambda item: item.video_id)


_PATH_COLUMNS = ("path", "video_path", "video", "filename", "file_name", "file", "clip", "video_id", "name")
_LABEL_COLUMNS = ("label", "label_id", "class", "class_id", "category", "target", "labels")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _bad_line(list_path: str | Path, n: int, line: str, why: str) -> VideomaskError:
    return VideomaskError(f"{list_path}:{n}: {why}: {line.strip()!r}")


def _table_rows(list_path: str | Path, lines: list[tuple[int, str]], delimiter: str) -> list[tuple[int, str, str]]:
    """CSV / TSV lines -> ``(line number, path, raw label or "")``; an optional header names the columns."""
    parsed = [(n, line, [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]) for n, line in lines]
    header = [c.lower() for c in parsed[0][2]]
    width = len(header)  # every row must have as many columns as the first one
    path_col: int | None = 0
    label_col = 1 if width > 1 else None
    if any(c in _PATH_COLUMNS or c in _LABEL_COLUMNS for c in header):
        label_col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
        path_col = next((header.index(c) for c in _PATH_COLUMNS if c in header), None)
        if path_col is None:
            path_col = next((i for i in range(width) if i != label_col), None)
        if path_col is None:
            raise _bad_line(list_path, lines[0][0], lines[0][1], "the header names no path column")
        parsed = parsed[1:]
        if not parsed:
            raise VideomaskError(f"the list {list_path} has a header but no entries")
    kind = "tab" if delimiter == "\t" else "comma"
    rows = []
    for n, line, cells in parsed:
        if len(cells) != width:
            raise _bad_line(list_path, n, line, f"expected {width} {kind}-separated columns, got {len(cells)}")
        if not cells[path_col]:
            raise _bad_line(list_path, n, line, "empty video path")
        rows.append((n, cells[path_col], cells[label_col] if label_col is not None else ""))
    return rows


def _plain_rows(list_path: str | Path, lines: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """VideoMAE's ``path [integer label]`` lines -> ``(line number, path, raw label or "")``."""
    rows = []
    for n, line in lines:
        parts = line.split()
        if len(parts) == 1:
            rows.append((n, parts[0], ""))
        elif _is_int(parts[-1]):
            rows.append((n, line.strip().rsplit(None, 1)[0].strip(), parts[-1]))
        else:
            why = "expected 'path [label]' with an integer label (use CSV/TSV for other layouts)"
            raise _bad_line(list_path, n, line, why)
    return rows


def _read_list_text(list_path: str | os.PathLike) -> tuple[str | Path, str]:
    """``(the list's name for messages, its text)``: a local file or a URL's object."""
    if storage.is_remote(os.fspath(list_path)):
        url = os.fspath(list_path)
        if storage.path_kind(url) != "file":
            raise VideomaskError(f"no such list file: {url}")
        try:
            return url, storage.read_text(url)
        except UnicodeDecodeError:
            raise VideomaskError(f"{url} is not a UTF-8 text list of videos") from None
        except Exception as err:  # noqa: BLE001 - the store's own errors (credentials, network): one line
            raise VideomaskError(f"cannot read {url}: {storage.one_line_text(err)}") from None
    path = Path(storage.local_path(list_path))
    if not path.is_file():
        raise VideomaskError(f"no such list file: {path}")
    try:
        return path, path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise VideomaskError(f"{path} is not a UTF-8 text list of videos") from None


def _entry_path(base: str, entry: str) -> str:
    """A list entry as a path or URL: URLs kept (``file://`` made local), relative paths resolved against
    ``base`` (the list's folder, a path or a URL)."""
    if storage.is_url(entry):
        return storage.local_path(entry)
    if storage.is_remote(base):
        return entry if os.path.isabs(entry) else storage.join_url(base, entry)
    return os.path.abspath(os.path.join(base, os.path.expanduser(entry)))


def read_video_list(
    list_path: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> tuple[list[VideoItem], list[str] | None]:
    """Parse a video list; returns ``(items, class names or None)``.

    Formats (auto-detected from the first line that is not blank or ``#``):
      * tab in it: TSV; comma in it: CSV (quoted fields allowed). A first row naming a path column
        (``path``, ``video``, ``filename``, ...) or a label column (``label``, ``class``, ...) is a
        header; without one, column 1 is the path and column 2 (optional) the label.
        Non-integer labels are class names, numbered in sorted order (returned as the class list).
      * otherwise VideoMAE's ``path label`` (space separated; integer label optional; a path with
        spaces is fine when the label is given).
    Relative paths resolve against the list file's folder; the video id is the path as written. The list
    and its entries may be URLs (``s3://...``), read through fsspec with ``storage_options``.
    """
    storage.set_storage_options([os.fspath(list_path)], storage_options)
    list_name, text = _read_list_text(list_path)
    lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise VideomaskError(f"the list {list_name} has no entries")

    first = lines[0][1]
    if "\t" in first or "," in first:
        rows = _table_rows(list_name, lines, "\t" if "\t" in first else ",")
    else:
        rows = _plain_rows(list_name, lines)

    raw_labels = [label for _, _, label in rows]
    classes: list[str] | None = None
    if all(label == "" or _is_int(label) for label in raw_labels):
        labels = [int(label) if label else -1 for label in raw_labels]
    else:
        classes = sorted({label for label in raw_labels if label})
        lookup = {name: i for i, name in enumerate(classes)}
        labels = [lookup[label] if label else -1 for label in raw_labels]
    if isinstance(list_name, str):
        base = storage.url_parent(list_name)
    else:
        base = os.path.dirname(os.path.abspath(list_name))
    items = [VideoItem(_entry_path(base, path), path, label) for (_, path, _), label in zip(rows, labels)]
    storage.set_storage_options([item.path for item in items], storage_options)
    if not any(storage.exists(item.path) for item in items):
        raise VideomaskError(f"none of the {len(items)} videos in {list_name} exist (first: {items[0].path})")
    return items, classes
