"""Streaming shards: ``videomask shard`` (rejects list), clips from shards equal to clips from the files, shards in
a real S3 bucket (SeaweedFS, the session fixture ``s3_server``), and ``videomask pretrain`` on shards."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from clips import decode_index, make_corrupt_files, make_garbled_file, make_index_clip
from helpers_data import to_uint8
from helpers_train import tiny_run
from torch.utils.data import DataLoader

import videomask.video.meta as video_meta
from videomask.cli import main
from videomask.data import VideoDataset, collate_clips, read_rejects, write_shards
from videomask.data.shards import INDEX, REJECTS, SHARD_INFO, ShardSource
from videomask.video import open_video

CLIPS = dict(num_frames=4, sampling_rate=3, sampling="random", train=True, size=48, tubelet=(2, 16, 16), seed=7)
GOOD = ["a.mp4", "c.mp4", "sub/b.mkv"]


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory) -> Path:
    """Three index clips (40, 9 and 25 frames), one in a sub-folder."""
    root = tmp_path_factory.mktemp("good")
    make_index_clip(root / "a.mp4", 40, 64, 64)
    make_index_clip(root / "c.mp4", 9, 64, 64)
    make_index_clip(root / "sub" / "b.mkv", 25, 64, 64)
    return root


@pytest.fixture(scope="module")
def with_bad(tmp_path_factory, good_dir) -> Path:
    """The good clips plus every corrupt file of ``make_corrupt_files`` under ``bad/``."""
    root = tmp_path_factory.mktemp("with_bad")
    shutil.copytree(good_dir, root, dirs_exist_ok=True)
    make_corrupt_files(root / "bad")
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory, with_bad) -> Path:
    out = tmp_path_factory.mktemp("shards") / "out"
    assert main(["shard", str(with_bad), str(out)]) == 0
    return out


def test_shard_command_drops_corrupt_videos_into_the_rejects_list(with_bad, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["shard", str(with_bad), str(out), "--workers", "2", "--chunk-bytes", "3kB"]) == 0
    printed = capsys.readouterr().out
    bad = sorted(p.relative_to(with_bad).as_posix() for p in (with_bad / "bad").iterdir())
    assert len(bad) == 6
    assert f"rejected {len(bad)} video(s)" in printed and "wrote 3 videos" in printed
    rejects = read_rejects(out)
    assert sorted(v for v, _ in rejects) == bad and all(reason for _, reason in rejects)
    assert "fewer than min_frames=2" in dict(rejects)["bad/one_frame.mp4"]
    info = json.loads((out / SHARD_INFO).read_text())
    assert [v for v, _ in info["videos"]] == GOOD  # the source's order, the rejects left out
    assert (out / INDEX).is_file() and len(list(out.glob("chunk-*.bin"))) >= 2  # 3 kB chunks: several
    assert not list(out.glob("*.index.json"))  # the writer's partial index is merged and gone
    # a second conversion into the same folder is a one-line error, not an overwrite
    assert main(["shard", str(with_bad), str(out)]) == 2
    assert "already holds shards" in capsys.readouterr().err


def test_clips_from_shards_equal_clips_from_the_files(shards, good_dir):
    """Same ids and labels, the same draws, the same pixels (two epochs, two clips per video); each frame
    is the frame it should be."""
    from_shards = VideoDataset.from_path(shards, num_sample=2, **CLIPS)
    from_files = VideoDataset.from_path(good_dir, num_sample=2, **CLIPS)
    assert from_shards.shards is not None and from_files.shards is None
    assert [i.video_id for i in from_shards.items] == [i.video_id for i in from_files.items] == GOOD
    for epoch in (0, 1):
        for index in range(len(from_files)):
            for a, b in zip(from_shards[(epoch, index)], from_files[(epoch, index)]):
                assert a["video_id"] == b["video_id"]
                assert torch.equal(a["frame_indices"], b["frame_indices"])
                assert torch.equal(a["geometry"], b["geometry"])
                assert torch.equal(a["video"], b["video"])
    # the readers themselves: every frame of every video, frame-exact against the file
    for index, item in enumerate(from_files.items):
        with from_shards.open(index) as shard_reader, open_video(item.path) as file_reader:
            n = file_reader.meta.num_frames
            assert shard_reader.meta == file_reader.meta
            order = [n - 1, 0, n // 2, 1]
            frames = shard_reader.read(order)
            assert np.array_equal(frames, file_reader.read(order))
            assert [decode_index(f) for f in frames] == order


def test_reading_shards_demuxes_nothing(shards, monkeypatch):
    """The frame index comes from the shard: a clip is read without a demux pass over the video."""
    dataset = VideoDataset.from_path(shards, train=False, size=32, num_frames=4, sampling_rate=2)

    def no_demux(*args, **kwargs):
        raise AssertionError("demuxed a video read from shards")

    monkeypatch.setattr(video_meta, "_demux_index", no_demux)
    clip = dataset[0]
    assert [decode_index(f) for f in to_uint8(clip["video"])] == clip["frame_indices"].tolist()
    assert dataset.skipped == 0


def test_dataloader_workers_read_shards(shards):
    """Each worker process opens its own LitData reader (the source pickles without one)."""
    dataset = VideoDataset.from_path(shards, **CLIPS)
    dataset.shards.sample(0)  # the main process has a reader now: the workers must not reuse it
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_clips)
    batch = next(iter(loader))
    assert batch["video"].shape == (3, 3, 4, 48, 48)
    assert batch["video_id"] == GOOD


def test_a_damaged_stretch_is_skipped_at_read_time(tmp_path):
    """A video that opens at conversion but has undecodable frames is kept, and skipped as today when a clip
    cannot be decoded (the next video is tried)."""
    src = tmp_path / "src"
    make_index_clip(src / "good.mp4", 30, 64, 96)
    make_garbled_file(src / "damaged.mp4", 60)
    report = write_shards(VideoDataset.from_path(src, size=32, train=False).items, tmp_path / "out")
    assert report.videos == 2 and report.rejected == []
    options = dict(num_frames=8, sampling_rate=7, sampling="uniform", size=32)
    from_shards = VideoDataset.from_path(tmp_path / "out", **options)
    from_files = VideoDataset.from_path(src, **options)
    for index in range(2):
        a, b = from_shards[(0, index)], from_files[(0, index)]
        assert a["video_id"] == b["video_id"] == "good.mp4" and torch.equal(a["video"], b["video"])
    assert from_shards.skipped_videos() == from_files.skipped_videos()
    assert [v for v, _ in from_shards.skipped_videos()] == ["damaged.mp4"]


def test_missing_or_foreign_shard_folder_is_one_line_error(tmp_path, shards):
    from videomask.errors import VideomaskError

    (tmp_path / "other").mkdir()
    shutil.copy(shards / INDEX, tmp_path / "other" / INDEX)
    (tmp_path / "other" / SHARD_INFO).write_text(json.dumps({"format": "something-else/9", "videos": []}))
    with pytest.raises(VideomaskError, match="unknown shard format"):
        ShardSource(tmp_path / "other")
    with pytest.raises(VideomaskError, match="backend pyav"):
        VideoDataset.from_path(shards, backend="opencv", size=32)


def test_shards_in_an_s3_bucket(s3_server, with_bad, good_dir, tmp_path, capsys):
    """Videos in a bucket (one object corrupt) sharded into the bucket with the command; training reads the
    shards back from the bucket, in DataLoader workers too, with the clips of the local files."""
    fs = s3_server.filesystem()
    bucket = f"videomask-shards-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    fs.put(f"{good_dir}/", f"{bucket}/videos/", recursive=True)
    fs.pipe(f"{bucket}/videos/broken.mp4", (with_bad / "bad" / "truncated.mp4").read_bytes())
    fs.invalidate_cache()
    options = [f"--storage-option=endpoint_url={s3_server.endpoint}", "-o", "anon=true"]
    url = f"s3://{bucket}/shards"
    assert main(["shard", f"s3://{bucket}/videos", url, "--chunk-bytes", "3kB", *options]) == 0
    assert "rejected 1 video(s)" in capsys.readouterr().out
    opts = dict(s3_server.storage_options)
    assert read_rejects(url)[0][0] == "broken.mp4"
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/shards"))
    assert SHARD_INFO in names and INDEX in names and REJECTS in names and any(n.startswith("chunk-") for n in names)

    from_s3 = VideoDataset.from_path(url, storage_options=opts, shard_cache=str(tmp_path / "cache"), **CLIPS)
    from_files = VideoDataset.from_path(good_dir, **CLIPS)
    assert [i.video_id for i in from_s3.items] == GOOD
    for index in range(len(from_files)):
        assert torch.equal(from_s3[(1, index)]["video"], from_files[(1, index)]["video"])
    assert list((tmp_path / "cache").rglob(INDEX))  # LitData's index fetched into the given cache
    loader = DataLoader(from_s3, batch_size=3, num_workers=1, collate_fn=collate_clips)
    assert next(iter(loader))["video_id"] == GOOD


def test_pretrain_on_shards(shards, tmp_path, capsys):
    """`videomask pretrain` with data.path a shard folder (two DataLoader workers): trains and exits 0."""
    raw = tiny_run(shards, tmp_path / "run", data={"num_workers": 2}, train={"steps": 3, "log_every": 1})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", "--config", str(cfg)]) == 0, capsys.readouterr().err[-3000:]
    run = tmp_path / "run"
    assert (run / "final" / "model.safetensors").is_file()
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (run / "skipped.tsv").read_text() == ""  # the rejects never reach training
