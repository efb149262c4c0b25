"""videomask.data datasets: items, repeated sampling, determinism, bad videos, DataLoader workers."""

from __future__ import annotations

import logging
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from clips import decode_index, make_corrupt_files, make_garbled_file, make_index_clip
from helpers_data import BACKEND_PARAMS, to_uint8
from torch.utils.data import DataLoader

import videomask.data.dataset as dataset_module
from videomask.data import ClipTransform, VideoDataset, VideoItem, collate_clips
from videomask.errors import VideomaskError


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_items_hold_the_sampled_frames(video_dir, backend):
    """64x64 clips at size 64 are not resampled: every output frame decodes to its frame index."""
    ds = VideoDataset.from_folder(
        video_dir,
        num_frames=6,
        sampling_rate=3,
        sampling="random",
        train=False,
        size=64,
        tubelet=(2, 16, 16),
        backend=backend,
        seed=5,
    )
    batch = collate_clips([ds[0], ds[2]])
    assert batch["video"].shape == (2, 3, 6, 64, 64) and batch["video"].dtype == torch.float32
    assert batch["frame_indices"].dtype == torch.long and batch["frame_indices"].shape == (2, 6)
    assert batch["geometry"].dtype == torch.float64 and batch["geometry"].shape == (2, 9)
    assert batch["label"].tolist() == [-1, -1] and batch["index"].tolist() == [0, 2]
    assert batch["video_id"] == ["a.mp4", "sub/b.mkv"]
    for clip, indices in zip(batch["video"], batch["frame_indices"]):
        assert [decode_index(f) for f in to_uint8(clip)] == indices.tolist()
        assert all(b - a == 3 for a, b in zip(indices.tolist(), indices.tolist()[1:]))


def test_repeated_sampling_reads_the_union_once(video_dir, monkeypatch):
    reads = []
    real_open = dataset_module.open_video

    def counting_open(path, backend="pyav"):
        reader = real_open(path, backend=backend)
        real_read = reader.read

        def read(indices, **kw):
            reads.append(list(indices))
            return real_read(indices, **kw)

        reader.read = read
        return reader

    monkeypatch.setattr(dataset_module, "open_video", counting_open)
    ds = VideoDataset.from_folder(video_dir, num_frames=4, sampling_rate=2, size=32, num_sample=3, seed=1)
    item = ds[0]
    assert isinstance(item, list) and len(item) == 3
    assert len(reads) == 1
    clips = [c["frame_indices"].tolist() for c in item]
    assert reads[0] == sorted({i for c in clips for i in c})
    assert len({tuple(c) for c in clips}) > 1  # different random starts
    batch = collate_clips([item, ds[2]])
    assert batch["video"].shape == (6, 3, 4, 32, 32)
    assert batch["index"].tolist() == [0, 0, 0, 2, 2, 2]
    assert len(collate_clips([None, ds[1], None])["video_id"]) == 3
    with pytest.raises(VideomaskError, match="empty batch"):
        collate_clips([None])


def test_determinism_seed_epoch(video_dir):
    kw = dict(num_frames=4, sampling_rate=2, train=True, size=32, seed=3)
    ds1, ds2 = VideoDataset.from_folder(video_dir, **kw), VideoDataset.from_folder(video_dir, **kw)
    torch.manual_seed(123)  # global RNG state must not matter
    x = ds1[0]
    torch.manual_seed(999)
    y = ds2[0]
    assert torch.equal(x["video"], y["video"]) and torch.equal(x["geometry"], y["geometry"])
    epochs = []
    for epoch in range(4):
        ds1.set_epoch(epoch)
        epochs.append((tuple(ds1[0]["frame_indices"].tolist()), tuple(ds1[0]["geometry"].tolist())))
    assert len(set(epochs)) > 1
    ds1.set_epoch(2)
    assert (tuple(ds1[0]["frame_indices"].tolist()), tuple(ds1[0]["geometry"].tolist())) == epochs[2]
    clone = pickle.loads(pickle.dumps(ds1))  # no open handles; the epoch travels along
    assert clone.epoch == 2 and torch.equal(clone[1]["video"], ds1[1]["video"])


BAD = {
    "bad/one_frame.mp4",
    "bad/random_bytes.mp4",
    "bad/text.mp4",
    "bad/truncated.mp4",
    "bad/unknown_codec.mkv",
    "bad/zero_byte.mp4",
}


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_corrupt_and_short_videos_are_skipped_and_counted(mixed_dir, backend, caplog):
    ds = VideoDataset.from_folder(mixed_dir, num_frames=8, sampling_rate=2, size=32, short="skip", backend=backend)
    with caplog.at_level(logging.WARNING, logger="videomask.data"):
        items = [ds[i] for i in range(len(ds))] + [ds[i] for i in range(len(ds))]  # second pass: no new warnings
    assert {item["video_id"] for item in items} == {"good1.mp4", "good2.mp4"}
    assert ds.skipped == 7
    assert {video_id for video_id, _ in ds.skipped_videos()} == BAD | {"short.mp4"}
    warned = [r.getMessage() for r in caplog.records if r.name == "videomask.data"]
    assert len(warned) == 7 and all("\n" not in w for w in warned)
    reasons = dict(ds.skipped_videos())
    assert "short='skip'" in reasons["short.mp4"] and "min_frames" in reasons["bad/one_frame.mp4"]


def test_short_video_kept_under_loop_and_pad(mixed_dir):
    for short, expected in (("loop", [0, 2, 4, 1, 3, 0, 2, 4]), ("pad", [0, 2, 4, 4, 4, 4, 4, 4])):
        ds = VideoDataset(
            [VideoItem(str(mixed_dir / "short.mp4"), "short.mp4")],
            num_frames=8,
            sampling_rate=2,
            sampling="center",
            short=short,
            size=64,
        )
        item = ds[0]
        assert item["frame_indices"].tolist() == expected
        assert [decode_index(f) for f in to_uint8(item["video"])] == expected
        assert ds.skipped == 0


def test_every_video_bad_is_one_line_error(mixed_dir):
    ds = VideoDataset.from_folder(mixed_dir / "bad", num_frames=4, size=32)
    with pytest.raises(VideomaskError, match="every video failed to decode") as err:
        ds[0]
    assert "\n" not in str(err.value)
    assert ds.skipped == 6


def test_hanging_decode_is_cut_by_the_timeout(video_dir, monkeypatch):
    real_open = dataset_module.open_video

    def slow_open(path, backend="pyav"):
        if path.endswith("a.mp4"):
            time.sleep(3)
        return real_open(path, backend=backend)

    monkeypatch.setattr(dataset_module, "open_video", slow_open)
    ds = VideoDataset.from_folder(video_dir, num_frames=4, size=32, timeout=0.3)
    start = time.monotonic()
    item = ds[0]
    assert time.monotonic() - start < 2.5
    assert item["video_id"] == "short.MP4"  # replaced by the next video
    assert ds.skipped_videos() == [("a.mp4", "decode timed out after 0.3 s")]


def test_dataloader_workers_give_the_same_batches_and_count_skips(mixed_dir):
    def run(workers: int, epoch: int) -> tuple[list, int]:
        ds = VideoDataset.from_folder(mixed_dir, num_frames=4, sampling_rate=2, size=32, train=True, seed=11)
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate_clips)
        out = [(b["video_id"], b["frame_indices"], b["geometry"], b["video"]) for b in loader]
        return out, ds.skipped

    serial, skipped_serial = run(0, 1)
    parallel, skipped_parallel = run(2, 1)
    assert skipped_serial == skipped_parallel == 6  # counted in the worker processes, seen by the parent
    assert len(serial) == len(parallel) == 5  # 9 videos, batches of 2
    for (ids_a, fi_a, g_a, v_a), (ids_b, fi_b, g_b, v_b) in zip(serial, parallel):
        assert ids_a == ids_b
        assert torch.equal(fi_a, fi_b) and torch.equal(g_a, g_b) and torch.equal(v_a, v_b)


def test_set_epoch_reaches_persistent_workers(video_dir):
    ds = VideoDataset.from_folder(video_dir, num_frames=4, sampling_rate=2, size=32, train=True, seed=2)
    loader = DataLoader(ds, batch_size=3, num_workers=1, persistent_workers=True, collate_fn=collate_clips)
    seen = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen.append(next(iter(loader))["geometry"])
    reference = VideoDataset.from_folder(video_dir, num_frames=4, sampling_rate=2, size=32, train=True, seed=2)
    for epoch in range(2):
        reference.set_epoch(epoch)
        assert torch.equal(seen[epoch], collate_clips([reference[i] for i in range(3)])["geometry"])
    assert not torch.equal(seen[0], seen[1])


def test_dataset_options_validated(video_dir):
    with pytest.raises(VideomaskError, match="not a positive multiple"):
        VideoDataset.from_folder(video_dir, num_frames=5, tubelet=(2, 16, 16), size=32)
    with pytest.raises(VideomaskError, match="not divisible by the patch"):
        VideoDataset.from_folder(video_dir, num_frames=4, tubelet=(2, 16, 16), size=40)
    with pytest.raises(VideomaskError, match="backend 'ffmpeg' is unknown"):
        VideoDataset.from_folder(video_dir, backend="ffmpeg")
    with pytest.raises(VideomaskError, match="must be positive"):
        VideoDataset.from_folder(video_dir, num_sample=0)


@pytest.fixture(scope="module")
def partly_bad_dir(tmp_path_factory) -> Path:
    """Good clips, files that never open, and one that opens but whose frames 18-35 cannot be decoded."""
    root = tmp_path_factory.mktemp("partly_bad")
    for k in range(3):
        make_index_clip(root / f"good{k}.mp4", 30, 64, 64)
    make_corrupt_files(root / "bad")
    make_garbled_file(root / "garbled.mp4")  # 60 frames; a clip there fails or not depending on its start
    return root


def _clip_keys(ds: VideoDataset, order: list[tuple[int, int]]) -> list[tuple]:
    out = []
    for epoch, index in order:
        ds.set_epoch(epoch)
        item = ds[index]
        out.append((epoch, index, item["video_id"], tuple(item["frame_indices"].tolist())))
    return out


def test_replacement_clip_does_not_depend_on_what_was_read_before(partly_bad_dir, tmp_path):
    """Resuming mid-run (a fresh dataset, or the same skip log as the killed run) gives the same clips."""
    options = dict(num_frames=4, sampling_rate=2, size=32, train=True, seed=5)
    ds = VideoDataset.from_folder(partly_bad_dir, skip_log=tmp_path / "straight.tsv", **options)
    n = len(ds)
    order = [(epoch, int(i)) for epoch in range(6) for i in np.random.default_rng(epoch).permutation(n)]
    straight = _clip_keys(ds, order)
    used = any(key[2] == "garbled.mp4" for key in straight)  # the partly decodable file is used ...
    reasons = dict(ds.skipped_videos())
    assert "garbled.mp4" in reasons  # ... and also skipped for some draws
    for cut in (7, len(order) // 2, len(order) - 5):
        fresh = VideoDataset.from_folder(partly_bad_dir, skip_log=tmp_path / f"fresh{cut}.tsv", **options)
        assert _clip_keys(fresh, order[cut:]) == straight[cut:], f"fresh dataset from item {cut}"
        # the killed run's skip log (its per-process files) already names videos found bad after the resume point
        shutil.copytree(tmp_path / "straight.tsv.d", tmp_path / f"seen{cut}.tsv.d")
        seen = VideoDataset.from_folder(partly_bad_dir, skip_log=tmp_path / f"seen{cut}.tsv", **options)
        assert _clip_keys(seen, order[cut:]) == straight[cut:], f"dataset with the full skip log from item {cut}"
    assert used  # the partly decodable file was used (after the fix: for the draws that decode)


def test_dataset_refuses_size_or_train_next_to_a_transform(tmp_path):
    """A transform brings its own size and augmentation: a size, or a train flag that disagrees, is an error."""
    items = [VideoItem(str(tmp_path / "a.mp4"), "a.mp4")]
    transform = ClipTransform.for_eval(32)
    with pytest.raises(VideomaskError, match="transform sets the clip size"):
        VideoDataset(items, num_frames=4, transform=transform, size=64)
    with pytest.raises(VideomaskError, match="transform sets the clip size"):
        VideoDataset(items, num_frames=4, transform=transform, train=True)
    ds = VideoDataset(items, num_frames=4, transform=transform, train=False)  # agrees: fine
    assert ds.transform is transform and ds.sampling == "center"
    assert VideoDataset(items, num_frames=4).transform.size == (224, 224)  # the default size without a transform


def test_in_memory_gives_the_decoded_clips_and_decodes_each_video_once(video_dir, mixed_dir, monkeypatch):
    """in_memory=True: the same clips as decoding each item (frames that encode their index, random crops,
    two epochs), each video opened once per process, and bad videos still skipped and counted."""
    kw = dict(num_frames=4, sampling_rate=2, train=True, size=32, seed=3, num_sample=2)
    plain = VideoDataset.from_folder(video_dir, **kw)
    order = [(epoch, i) for epoch in (0, 1) for i in range(len(plain))]
    want = [plain[key] for key in order]
    opened = []
    real_open = dataset_module.open_video

    def counting_open(path, backend="pyav"):
        opened.append(path)
        return real_open(path, backend=backend)

    monkeypatch.setattr(dataset_module, "open_video", counting_open)
    memory = VideoDataset.from_folder(video_dir, in_memory=True, **kw)
    for key, a in zip(order, want):
        for x, y in zip(a, memory[key]):
            assert torch.equal(x["video"], y["video"]) and torch.equal(x["frame_indices"], y["frame_indices"])
            assert torch.equal(x["geometry"], y["geometry"])
    assert sorted(opened) == sorted(item.path for item in memory.items)  # once each, over two epochs
    assert pickle.loads(pickle.dumps(memory))._frames == {}  # a worker decodes its own copy
    monkeypatch.setattr(dataset_module, "open_video", real_open)
    skipped = []
    for in_memory in (False, True):
        ds = VideoDataset.from_folder(mixed_dir, in_memory=in_memory, num_frames=4, sampling_rate=2, size=32)
        for i in range(len(ds)):
            ds[i]
        skipped.append(sorted(vid for vid, _ in ds.skipped_videos()))
    assert skipped[0] and skipped[1] == skipped[0]
