"""Fixtures of the tests/data tests: folders of small index clips, good and bad."""

from __future__ import annotations

from pathlib import Path

import pytest
from clips import make_corrupt_files, make_index_clip


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    """Square 64x64 index clips (40, 25 and 9 frames), one in a sub-folder, plus a non-video and a hidden file."""
    root = tmp_path_factory.mktemp("videos")
    make_index_clip(root / "a.mp4", 40, 64, 64)
    make_index_clip(root / "sub" / "b.mkv", 25, 64, 64)
    make_index_clip(root / "short.MP4", 9, 64, 64)
    (root / "notes.txt").write_text("not a video")
    (root / ".hidden.mp4").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    make_index_clip(root / "good1.mp4", 30, 64, 64)
    make_index_clip(root / "good2.mp4", 30, 64, 64)
    make_index_clip(root / "short.mp4", 5, 64, 64)
    make_corrupt_files(root / "bad")
    return root
