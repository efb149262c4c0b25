"""Videos in object storage: folders, list files and videos as ``s3://`` URLs, read from a real S3 server
(SeaweedFS on 127.0.0.1, the session fixture ``s3_server`` of tests/conftest.py)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from clips import decode_index
from helpers_data import to_uint8
from helpers_train import tiny_run, write_videos
from torch.utils.data import DataLoader

from videomask.cli import main
from videomask.data import VIDEO_EXTENSIONS, VideoDataset, collate_clips, list_videos, read_video_list
from videomask.errors import VideomaskError
from videomask.video import open_video, storage

CLIP_OPTIONS = dict(num_frames=4, sampling_rate=2, sampling="random", train=False, size=64, tubelet=(2, 16, 16), seed=5)


@pytest.fixture(scope="module")
def bucket(s3_server, video_dir, mixed_dir) -> str:
    """A fresh bucket holding ``videos/`` (the ``video_dir`` clips, with its text and hidden files), ``mixed/``
    (good, short and corrupt videos) and ``lists/`` (list files with relative paths); returns its name."""
    name = f"videomask-{uuid.uuid4().hex[:8]}"
    fs = s3_server.filesystem()
    fs.mkdir(name)
    fs.put(f"{video_dir}/", f"{name}/videos/", recursive=True)
    fs.put(f"{mixed_dir}/", f"{name}/mixed/", recursive=True)
    fs.pipe(f"{name}/lists/train.csv", b"path,label\n../videos/a.mp4,cat\n../videos/sub/b.mkv,dog\n")
    fs.pipe(f"{name}/lists/some_missing.txt", b"../videos/a.mp4\n../videos/gone.mp4\n")
    fs.pipe(f"{name}/videos2/sub/b.mkv", (video_dir / "sub" / "b.mkv").read_bytes())
    fs.invalidate_cache()
    return name


@pytest.fixture
def opts(s3_server) -> dict:
    return dict(s3_server.storage_options)


def test_folder_url_lists_the_videos_of_the_uploaded_folder(bucket, video_dir, opts):
    local = list_videos(video_dir)
    for url in (f"s3://{bucket}/videos", f"s3://{bucket}/videos/"):
        remote = list_videos(url, storage_options=opts)
        assert [i.video_id for i in remote] == [i.video_id for i in local] == ["a.mp4", "short.MP4", "sub/b.mkv"]
        assert [i.path for i in remote] == [f"s3://{bucket}/videos/{i.video_id}" for i in local]
    top = list_videos(f"s3://{bucket}/videos", recursive=False, storage_options=opts)
    assert [i.video_id for i in top] == ["a.mp4", "short.MP4"]


def test_clips_from_s3_equal_the_local_clips(bucket, video_dir, opts):
    """Same ids, same draws, the same pixels; and every frame is the frame it should be."""
    local = VideoDataset.from_path(video_dir, **CLIP_OPTIONS)
    remote = VideoDataset.from_path(f"s3://{bucket}/videos", storage_options=opts, **CLIP_OPTIONS)
    assert len(remote) == len(local) == 3
    for i in range(len(local)):
        a, b = local[i], remote[i]
        assert a["video_id"] == b["video_id"]
        assert torch.equal(a["frame_indices"], b["frame_indices"])
        assert torch.equal(a["video"], b["video"]), f"item {i}: pixels differ"
        assert [decode_index(f) for f in to_uint8(b["video"])] == b["frame_indices"].tolist()
    assert remote.skipped == 0


@pytest.mark.parametrize("whole", [True, False], ids=["in-memory", "block-cache"])
def test_reader_on_a_url_reads_the_frames_asked_for(bucket, video_dir, opts, monkeypatch, whole):
    """The reader, both ways an object is read: fetched whole, or (a large one) in cached blocks."""
    if not whole:
        monkeypatch.setattr(storage, "WHOLE_OBJECT_BYTES", 0)
        monkeypatch.setattr(storage, "BLOCK_BYTES", 4096)  # many blocks, some reads across a block edge
    storage.set_storage_options([f"s3://{bucket}"], opts)
    wanted = [0, 1, 7, 20, 39, 3]
    with open_video(f"s3://{bucket}/videos/a.mp4") as remote, open_video(video_dir / "a.mp4") as local:
        assert remote.meta.num_frames == local.meta.num_frames == 40
        frames = remote.read(wanted)
        assert np.array_equal(frames, local.read(wanted))
    assert [decode_index(f) for f in frames] == wanted
    if not whole:  # the block-cached file really was used, not a copy in memory
        with storage.open_object(f"s3://{bucket}/videos/a.mp4") as f:
            assert not isinstance(f, io.BytesIO)


def test_list_file_in_the_bucket_with_relative_paths(bucket, opts):
    items, classes = read_video_list(f"s3://{bucket}/lists/train.csv", storage_options=opts)
    assert classes == ["cat", "dog"]
    assert [(i.path, i.video_id, i.label) for i in items] == [
        (f"s3://{bucket}/videos/a.mp4", "../videos/a.mp4", 0),
        (f"s3://{bucket}/videos/sub/b.mkv", "../videos/sub/b.mkv", 1),
    ]
    ds = VideoDataset.from_path(f"s3://{bucket}/lists/train.csv", storage_options=opts, **CLIP_OPTIONS)
    got = [ds[i] for i in range(len(ds))]
    assert [(g["video_id"], g["label"]) for g in got] == [("../videos/a.mp4", 0), ("../videos/sub/b.mkv", 1)]
    for g in got:
        assert [decode_index(f) for f in to_uint8(g["video"])] == g["frame_indices"].tolist()


def test_local_list_of_urls(bucket, opts, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text(f"s3://{bucket}/videos/a.mp4 4\ns3://{bucket}/videos2/sub/b.mkv 2\n")
    ds = VideoDataset.from_path(listed, storage_options=opts, **CLIP_OPTIONS)
    assert [i.path for i in ds.items] == [f"s3://{bucket}/videos/a.mp4", f"s3://{bucket}/videos2/sub/b.mkv"]
    assert [ds[i]["label"] for i in range(2)] == [4, 2] and ds.skipped == 0


def test_corrupt_objects_are_skipped_and_counted(bucket, opts, tmp_path):
    ds = VideoDataset.from_path(
        f"s3://{bucket}/mixed",
        storage_options=opts,
        num_frames=8,
        sampling_rate=2,
        size=32,
        short="skip",
        skip_log=tmp_path / "skipped.tsv",
    )
    assert len(ds) == 9
    items = [ds[i] for i in range(len(ds))]
    assert {item["video_id"] for item in items} == {"good1.mp4", "good2.mp4"}
    assert ds.skipped == 7  # 6 broken files and the short one
    reasons = dict(ds.skipped_videos())
    assert reasons["bad/zero_byte.mp4"] == "empty object (0 bytes)"
    assert "min_frames" in reasons["bad/one_frame.mp4"] and "short='skip'" in reasons["short.mp4"]
    assert all("\n" not in r for r in reasons.values())
    ds.write_skip_log()
    assert len((tmp_path / "skipped.tsv").read_text().splitlines()) == 7


def test_missing_bucket_prefix_or_list_is_one_line_error(bucket, opts):
    cases = {
        "s3://no-such-bucket-videomask/videos": "no such file or folder: s3://no-such-bucket-videomask/videos",
        f"s3://{bucket}/no-such-prefix": f"no such file or folder: s3://{bucket}/no-such-prefix",
        f"s3://{bucket}/lists/nope.csv": f"no such file or folder: s3://{bucket}/lists/nope.csv",
        f"s3://{bucket}/lists": f"no videos (.mp4, {VIDEO_EXTENSIONS[1]}",  # a prefix without videos
    }
    for url, message in cases.items():
        with pytest.raises(VideomaskError) as err:
            VideoDataset.from_path(url, storage_options=opts, num_frames=4, size=32)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert str(err.value).endswith(f" under s3://{bucket}/lists")
    with pytest.raises(VideomaskError, match="^no such folder: s3://no-such-bucket-videomask$"):
        list_videos("s3://no-such-bucket-videomask", storage_options=opts)


def test_missing_object_named_in_a_list_is_skipped(bucket, opts):
    ds = VideoDataset.from_path(f"s3://{bucket}/lists/some_missing.txt", storage_options=opts, **CLIP_OPTIONS)
    assert ds[1]["video_id"] == "../videos/a.mp4"  # the missing one is replaced by the next (wrapping round)
    assert ds.skipped_videos() == [("../videos/gone.mp4", "no such object")]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_worker_reads_from_s3(bucket, video_dir, opts, context):
    """A worker process reads the store with the dataset's storage options (a spawned worker starts with none
    registered: they travel with the dataset)."""
    remote = VideoDataset.from_path(f"s3://{bucket}/videos", storage_options=opts, **CLIP_OPTIONS)
    local = VideoDataset.from_path(video_dir, **CLIP_OPTIONS)
    loader = DataLoader(remote, batch_size=3, num_workers=1, collate_fn=collate_clips, multiprocessing_context=context)
    (batch,) = list(loader)
    expected = collate_clips([local[i] for i in range(3)])
    assert batch["video_id"] == expected["video_id"] == ["a.mp4", "short.MP4", "sub/b.mkv"]
    assert torch.equal(batch["video"], expected["video"])
    assert remote.skipped == 0  # no worker skipped a video it could not reach


def test_pretrain_on_an_s3_prefix(s3_server, tmp_path, opts, capsys):
    """`videomask pretrain` with data.path s3://bucket/prefix and data.storage_options (one DataLoader worker):
    trains and exits 0."""
    fs = s3_server.filesystem()
    name = f"videomask-train-{uuid.uuid4().hex[:8]}"
    fs.mkdir(name)
    fs.put(f"{write_videos(tmp_path / 'videos')}/", f"{name}/clips/", recursive=True)
    raw = tiny_run(
        Path("unused"),
        tmp_path / "run",
        data={"path": f"s3://{name}/clips", "storage_options": opts, "batch_size": 2, "num_workers": 1},
        train={"steps": 2, "log_every": 1, "save_every": 2},
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", "--config", str(cfg)]) == 0, capsys.readouterr().err[-3000:]
    run = tmp_path / "run"
    assert (run / "final" / "model.safetensors").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["path"] == f"s3://{name}/clips"  # a URL is not made a local path
    assert saved["data"]["storage_options"] == opts
    assert (run / "skipped.tsv").read_text() == ""  # the merged list, written at the end: nothing skipped
