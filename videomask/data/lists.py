"""Which videos a dataset holds: a folder scan (:func:`list_videos`) or a list file
(:func:`read_video_list`: VideoMAE text, CSV or TSV; formats in docs/data.md)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from videomask.errors import VideomaskError

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
    """One video of a dataset: absolute ``path``, ``video_id`` (as written / relative posix), ``label`` (-1: none)."""

    path: str
    video_id: str
    label: int = -1


def _normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def list_videos(
    root: str | os.PathLike, extensions: Iterable[str] = VIDEO_EXTENSIONS, recursive: bool = True
) -> list[VideoItem]:
    """Video files under ``root`` (by extension, case-insensitive), sorted by relative path.

    Hidden files and folders (names starting with ``.``, e.g. macOS ``._clip.mp4``) are left out.
    """
    root = Path(root)
    if not root.exists():
        raise VideomaskError(f"no such folder: {root}")
    if not root.is_dir():
        raise VideomaskError(f"not a folder: {root}")
    exts = _normalise_extensions(extensions)
    found = root.rglob("*") if recursive else root.iterdir()
    items = []
    for path in found:
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in exts:
            items.append(VideoItem(os.path.abspath(path), rel.as_posix()))
    if not items:
        where = "under" if recursive else "directly in"
        raise VideomaskError(f"no videos ({', '.join(exts)}) {where} {root}")
    return sorted(items, key=lambda item: item.video_id)


_PATH_COLUMNS = ("path", "video_path", "video", "filename", "file_name", "file", "clip", "video_id", "name")
_LABEL_COLUMNS = ("label", "label_id", "class", "class_id", "category", "target", "labels")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _bad_line(list_path: Path, n: int, line: str, why: str) -> VideomaskError:
    return VideomaskError(f"{list_path}:{n}: {why}: {line.strip()!r}")


def _table_rows(list_path: Path, lines: list[tuple[int, str]], delimiter: str) -> list[tuple[int, str, str]]:
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


def _plain_rows(list_path: Path, lines: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
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


def read_video_list(list_path: str | os.PathLike) -> tuple[list[VideoItem], list[str] | None]:
    """Parse a video list; returns ``(items, class names or None)``.

    Formats (auto-detected from the first line that is not blank or ``#``):
      * tab in it: TSV; comma in it: CSV (quoted fields allowed). A first row naming a path column
        (``path``, ``video``, ``filename``, ...) or a label column (``label``, ``class``, ...) is a
        header; without one, column 1 is the path and column 2 (optional) the label.
        Non-integer labels are class names, numbered in sorted order (returned as the class list).
      * otherwise VideoMAE's ``path label`` (space separated; integer label optional; a path with
        spaces is fine when the label is given).
    Relative paths resolve against the list file's folder; the video id is the path as written.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise VideomaskError(f"no such list file: {list_path}")
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise VideomaskError(f"{list_path} is not a UTF-8 text list of videos") from None
    lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise VideomaskError(f"the list {list_path} has no entries")

    first = lines[0][1]
    if "\t" in first or "," in first:
        rows = _table_rows(list_path, lines, "\t" if "\t" in first else ",")
    else:
        rows = _plain_rows(list_path, lines)

    raw_labels = [label for _, _, label in rows]
    classes: list[str] | None = None
    if all(label == "" or _is_int(label) for label in raw_labels):
        labels = [int(label) if label else -1 for label in raw_labels]
    else:
        classes = sorted({label for label in raw_labels if label})
        lookup = {name: i for i, name in enumerate(classes)}
        labels = [lookup[label] if label else -1 for label in raw_labels]
    base = os.path.dirname(os.path.abspath(list_path))
    items = [
        VideoItem(os.path.abspath(os.path.join(base, os.path.expanduser(path))), path, label)
        for (_, path, _), label in zip(rows, labels)
    ]
    if not any(os.path.exists(item.path) for item in items):
        raise VideomaskError(f"none of the {len(items)} videos in {list_path} exist (first: {items[0].path})")
    return items, classes
