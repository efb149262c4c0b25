"""videomask.data lists: folder scans and list files (text, CSV, TSV; malformed lines)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers_data import write_list

from videomask.data import VideoDataset, read_video_list
from videomask.errors import VideomaskError


def test_from_folder_recursive_extensions_and_hidden(video_dir):
    ds = VideoDataset.from_folder(video_dir, num_frames=4, sampling_rate=2, size=32)
    assert [item.video_id for item in ds.items] == ["a.mp4", "short.MP4", "sub/b.mkv"]
    assert all(item.label == -1 and Path(item.path).is_absolute() for item in ds.items)
    flat = VideoDataset.from_folder(video_dir, extensions=["mp4"], recursive=False, num_frames=4, size=32)
    assert [item.video_id for item in flat.items] == ["a.mp4", "short.MP4"]
    with pytest.raises(VideomaskError, match="no videos"):
        VideoDataset.from_folder(video_dir / "sub", extensions=[".avi"])
    with pytest.raises(VideomaskError, match="no such folder"):
        VideoDataset.from_folder(video_dir / "missing")


def test_list_formats_with_relative_paths(video_dir, tmp_path):
    b = (video_dir / "sub/b.mkv").as_posix()  # an absolute path
    local = tmp_path / "lists" / "clips"
    local.mkdir(parents=True)
    shutil.copy(video_dir / "a.mp4", local / "a.mp4")  # "clips/a.mp4" is relative to the list's folder
    cases = {
        "space.txt": ("clips/a.mp4 3\n\n# comment\n" + b + " 5\n", [3, 5], None),
        "nolabel.txt": ("clips/a.mp4\n" + b + "\n", [-1, -1], None),
        "head.csv": ("label,path\n1,clips/a.mp4\n0," + b + "\n", [1, 0], None),
        "plain.csv": ("clips/a.mp4,2\n" + b + ",7\n", [2, 7], None),
        "names.tsv": ("video\tclass\nclips/a.mp4\tdog\n" + b + "\tcat\n", [1, 0], ["cat", "dog"]),
        "one_col.tsv": ("clips/a.mp4\t\n" + b + "\t4\n", [-1, 4], None),
    }
    for name, (text, labels, classes) in cases.items():
        ds = VideoDataset.from_list(write_list(tmp_path / "lists" / name, text), num_frames=4, size=32)
        assert [item.video_id for item in ds.items] == ["clips/a.mp4", b], name
        assert [item.path for item in ds.items] == [str(local / "a.mp4"), b], name
        assert [item.label for item in ds.items] == labels, name
        assert ds.classes == classes, name
        assert ds[0]["label"] == labels[0] and ds[0]["video_id"] == "clips/a.mp4"


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.mp4 1\nb.mp4 dog\n", r":2: expected 'path \[label\]'"),
        ("a.mp4,1\nb.mp4,2,3\n", r":2: expected 2 comma-separated columns, got 3"),
        ("path\tlabel\na.mp4\t1\n\t2\n", r":3: empty video path"),
        ("# only a comment\n\n", "has no entries"),
    ],
)
def test_malformed_list_names_the_line(tmp_path, text, message):
    path = write_list(tmp_path / "list.txt", text)
    with pytest.raises(VideomaskError, match=message):
        read_video_list(path)


def test_list_where_no_video_exists(tmp_path):
    path = write_list(tmp_path / "list.csv", "x.mp4,1\ny.mp4,2\n")
    with pytest.raises(VideomaskError, match="none of the 2 videos"):
        VideoDataset.from_list(path)
    with pytest.raises(VideomaskError, match="no such list file"):
        VideoDataset.from_list(tmp_path / "nope.csv")
