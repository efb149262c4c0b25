"""The skip log across processes: each process writes only its own file under ``<log>.d/``; every process
counts the videos the others skipped; the merged view lists each bad video once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from clips import make_index_clip
from torch.utils.data import DataLoader

import videomask.data.dataset as dataset_module
from videomask.data import VideoDataset, collate_clips, remove_skip_log
from videomask.data.skiplog import SkipLog, shard_dir

OPTIONS = dict(num_frames=4, sampling_rate=2, size=32, train=False)


@pytest.fixture(scope="module")
def two_bad_dir(tmp_path_factory) -> Path:
    """Sorted: a_bad, b_good, c_bad, d_good. Item 0 skips a_bad (to b_good), item 2 skips c_bad (to d_good)."""
    root = tmp_path_factory.mktemp("two_bad")
    (root / "a_bad.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    make_index_clip(root / "b_good.mp4", 12, 64, 64)
    (root / "c_bad.mp4").write_text("not a video\n" * 20)
    make_index_clip(root / "d_good.mp4", 12, 64, 64)
    return root


def _ids(path: Path) -> list[str]:
    return [line.split("\t")[0] for line in path.read_text().splitlines()]


def _files(log: Path) -> dict[str, list[str]]:
    """``{file name: video ids}`` of the per-process files of the skip log ``log``."""
    folder = shard_dir(log)
    return {p.name: _ids(p) for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def test_two_ranks_write_their_own_files_and_count_each_others_skips(two_bad_dir, tmp_path, monkeypatch):
    log = tmp_path / "skipped.tsv"
    rank0 = VideoDataset.from_folder(two_bad_dir, skip_log=log, rank=0, **OPTIONS)
    rank1 = VideoDataset.from_folder(two_bad_dir, skip_log=log, rank=1, **OPTIONS)
    assert rank0[0]["video_id"] == "b_good.mp4"
    assert rank1[2]["video_id"] == "d_good.mp4"
    assert _files(log) == {"rank0.main.tsv": ["a_bad.mp4"], "rank1.main.tsv": ["c_bad.mp4"]}
    assert not log.exists()  # the merged view is written only when asked

    # the item loop looks at the others' files (here at every item): rank 0 never opens c_bad, which rank 1
    # found bad for good, and goes straight on to d_good
    opened = []
    real_open = dataset_module.open_video
    monkeypatch.setattr(dataset_module, "open_video", lambda path, **kw: opened.append(path) or real_open(path, **kw))
    rank0._log.refresh_seconds = 0.0
    assert rank0[2]["video_id"] == "d_good.mp4"
    assert [os.path.basename(p) for p in opened] == ["d_good.mp4"]
    assert _files(log)["rank0.main.tsv"] == ["a_bad.mp4"]

    # each rank counts what the other found, and names its reasons
    assert rank0.skipped == rank1.skipped == 2
    assert dict(rank1.skipped_videos()).keys() == {"a_bad.mp4", "c_bad.mp4"}

    merged = rank1.write_skip_log()
    assert merged == log and _ids(log) == ["a_bad.mp4", "c_bad.mp4"]
    assert all(len(line.split("\t")) == 2 for line in log.read_text().splitlines())  # bad for good, with reasons


def test_a_video_both_ranks_found_is_listed_once(two_bad_dir, tmp_path):
    """Two ranks that skip the same video before seeing each other's files: two lines, one merged entry."""
    log = tmp_path / "skipped.tsv"
    rank0 = VideoDataset.from_folder(two_bad_dir, skip_log=log, rank=0, **OPTIONS)
    rank1 = VideoDataset.from_folder(two_bad_dir, skip_log=log, rank=1, **OPTIONS)
    rank1._log.refresh_seconds = 3600.0  # rank 1 looks at the others' files once only (at its first item)
    assert rank1[2]["video_id"] == "d_good.mp4"  # rank 1 has looked, and found c_bad
    assert rank0[0]["video_id"] == "b_good.mp4"  # rank 0 finds a_bad
    assert rank1[0]["video_id"] == "b_good.mp4"  # rank 1 has not looked again: it finds a_bad too
    assert _files(log) == {"rank0.main.tsv": ["a_bad.mp4"], "rank1.main.tsv": ["c_bad.mp4", "a_bad.mp4"]}
    assert rank0.write_skip_log() == log
    assert _ids(log) == ["a_bad.mp4", "c_bad.mp4"]
    assert rank0.skipped == rank1.skipped == 2  # the count forces a look: distinct videos, every file


def test_dataloader_workers_write_their_own_files(two_bad_dir, tmp_path):
    """Two DataLoader workers of rank 3: worker 0 gets item 0 (skips a_bad), worker 1 item 2 (skips c_bad)."""
    log = tmp_path / "skipped.tsv"
    ds = VideoDataset.from_folder(two_bad_dir, skip_log=log, rank=3, **OPTIONS)
    loader = DataLoader(ds, batch_size=1, sampler=[0, 2], num_workers=2, collate_fn=collate_clips)
    assert [batch["video_id"] for batch in loader] == [["b_good.mp4"], ["d_good.mp4"]]
    assert _files(log) == {"rank3.worker0.tsv": ["a_bad.mp4"], "rank3.worker1.tsv": ["c_bad.mp4"]}
    assert ds.skipped == 2  # found in the workers, counted in the main process
    ds.write_skip_log()
    assert _ids(log) == ["a_bad.mp4", "c_bad.mp4"]
    assert "rank3.main.tsv" not in _files(log)  # the main process skipped nothing itself


def test_merged_view_of_an_earlier_run_counts_and_is_not_retried(two_bad_dir, tmp_path, monkeypatch):
    """A skip log without per-process files (an earlier run, or a merged view only) still counts."""
    log = tmp_path / "skipped.tsv"
    log.write_text("a_bad.mp4\tcannot open video (an earlier run)\n")
    ds = VideoDataset.from_folder(two_bad_dir, skip_log=log, rank=0, **OPTIONS)
    assert ds.skipped == 1
    assert ds[0]["video_id"] == "b_good.mp4"
    assert _files(log) == {}  # known bad: not opened, nothing new logged
    assert dict(ds.skipped_videos()) == {"a_bad.mp4": "cannot open video (an earlier run)"}
    remove_skip_log(log)
    assert not log.exists() and not shard_dir(log).exists()


def test_other_files_are_read_incrementally(tmp_path):
    """A process reads only what the others' files gained (a line still being written waits)."""
    log = tmp_path / "skipped.tsv"
    writer, reader = SkipLog(str(log), rank=0), SkipLog(str(log), rank=1)
    writer.append("x.mp4", "bad")
    assert reader.bad() == {"x.mp4": "bad"}
    size = reader.bytes_read
    with open(writer.own_file(), "a", encoding="utf-8") as f:
        f.write("y.mp4\tbad\tcli")  # half a line
    assert reader.bad() == {"x.mp4": "bad"}
    with open(writer.own_file(), "a", encoding="utf-8") as f:
        f.write("ps\n")
    assert reader.bad() == {"x.mp4": "bad", "y.mp4": "bad"}
    assert reader.bad_for_good(force=True) == {"x.mp4"}  # y.mp4: only some clips failed
    # x.mp4's line was read once; the half line twice (it is taken only when whole)
    assert reader.bytes_read - size == len("y.mp4\tbad\tcli") + len("y.mp4\tbad\tclips\n")
    assert os.path.basename(writer.own_file()) == "rank0.main.tsv"
