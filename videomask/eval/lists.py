"""The user's own labelled list files for ``videomask probe --data list.csv``: rows, split rule, samples."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videomask.data import read_video_list, sample_indices
from videomask.errors import VideomaskError
from videomask.eval.tasks import ProbeSample
from videomask.video import open_video


@dataclass(frozen=True)
class ListRow:
    path: str  # resolved path to open
    video_id: str  # the path as written in the list
    label: int
    split: str | None


def read_labelled_list(path: str | Path, split_column: str | None = None) -> tuple[list[ListRow], list[str]]:
    """Rows of a labelled list file (any format :func:`videomask.data.read_video_list` reads) and the class names.

    ``split_column`` names a header column of a CSV / TSV list holding ``train`` or ``test`` (``val`` counts
    as test) for each row. Every row needs a label.
    """

    items, classes = read_video_list(path)
    if any(item.label < 0 for item in items):
        missing = next(item.video_id for item in items if item.label < 0)
        raise VideomaskError(f"every row of {path} needs a label for probing (first without one: {missing})")
    names = classes or [str(c) for c in range(max(item.label for item in items) + 1)]
    splits: list[str | None] = [None] * len(items)
    if split_column:
        text = Path(path).read_text(encoding="utf-8-sig")
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        delimiter = "\t" if "\t" in lines[0] else ","
        rows = list(csv.reader(lines, delimiter=delimiter))
        header = [c.strip().lower() for c in rows[0]]
        if split_column.lower() not in header:
            raise VideomaskError(
                f"split column {split_column!r} is not in the header of {path} (columns: {', '.join(header)})"
            )
        col = header.index(split_column.lower())
        body = rows[1:]
        if len(body) != len(items):
            raise VideomaskError(f"{path}: cannot line up the split column with the rows")
        for k, row in enumerate(body):
            value = row[col].strip().lower()
            value = "test" if value in ("val", "valid", "validation") else value
            if value not in ("train", "test"):
                raise VideomaskError(f"{path}: row {k + 1}: split must be train or test (or val), got {row[col]!r}")
            splits[k] = value
    return [ListRow(it.path, it.video_id, it.label, sp) for it, sp in zip(items, splits)], names


def stratified_split(labels: Sequence[int], train_share: float = 0.7, seed: int = 0) -> list[str]:
    """The default split rule: within each class, a seeded shuffle; the first ``ceil(train_share * n)``
    rows are train, the rest test (a class with >= 2 rows always has one of each)."""
    gen = np.random.default_rng(seed)
    split = ["train"] * len(labels)
    for c in sorted(set(labels)):
        rows = [i for i, y in enumerate(labels) if y == c]
        gen.shuffle(rows)
        n_train = min(len(rows) - 1, math.ceil(train_share * len(rows))) if len(rows) > 1 else 1
        for i in rows[n_train:]:
            split[i] = "test"
    return split


def list_samples(
    rows: Sequence[ListRow],
    *,
    num_frames: int,
    sampling_rate: int,
    train_share: float = 0.7,
    seed: int = 0,
    backend: str = "pyav",
) -> list[ProbeSample]:
    """One centre clip per row (short videos loop); the split from the list, or :func:`stratified_split`."""

    labels = [r.label for r in rows]
    given = [r.split for r in rows]
    splits = list(given) if all(s is not None for s in given) else stratified_split(labels, train_share, seed)
    samples = []
    for k, (row, split) in enumerate(zip(rows, splits)):
        with open_video(row.path, backend=backend) as reader:
            n = int(reader.meta.num_frames)
        indices = sample_indices(n, num_frames, sampling_rate, mode="center", short="loop")
        samples.append(ProbeSample(row.path, row.video_id, tuple(indices), row.label, split, k))
    return samples
