"""videomask.data: frame sampling, transforms + geometry, datasets, workers, bad videos, ``videomask info``."""

from __future__ import annotations

import logging
import pickle
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import decode_index, make_corrupt_files, make_garbled_file, make_index_clip
from torch.utils.data import DataLoader

import videomask.data as data
from videomask.cli import main as cli_main
from videomask.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipTransform,
    VideoDataset,
    VideoItem,
    VideoTooShortError,
    center_crop,
    collate_clips,
    crop,
    hflip,
    multiscale_crop_params,
    plan_reads,
    random_resized_crop_params,
    read_video_list,
    resize_short_side,
    sample_indices,
)
from videomask.errors import VideoDecodeError, VideomaskError
from videomask.patches import ClipGeometry
from videomask.seeding import item_seed
from videomask.video import BACKENDS, available_backends

BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in available_backends(), reason=f"{name} not installed"))
    for name in BACKENDS
]
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Normalised ``[C, T, H, W]`` -> uint8 ``[T, H, W, C]``."""
    return ((video * STD + MEAN) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()


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


# ---------------------------------------------------------------------------------------- sampling


def test_random_sampling_stride_and_bounds():
    starts = set()
    for seed in range(300):
        idx = sample_indices(50, 8, 4, "random", generator=gen(seed))
        assert len(idx) == 8
        assert all(b - a == 4 for a, b in zip(idx, idx[1:]))
        assert 0 <= idx[0] and idx[-1] <= 49
        starts.add(idx[0])
    assert starts == set(range(50 - 29 + 1))  # every legal start (span 29) is reachable, none beyond


def test_center_and_uniform_sampling():
    assert sample_indices(50, 4, 3, "center") == [20, 23, 26, 29]  # span 10, start (50-10)//2
    assert sample_indices(10, 4, 3, "center") == [0, 3, 6, 9]  # exactly the span
    assert sample_indices(100, 4, 7, "uniform") == [12, 37, 62, 87]  # centres of 4 segments of 25
    assert sample_indices(8, 8, 1, "uniform") == list(range(8))


def test_short_video_policies():
    assert sample_indices(10, 6, 3, "center", short="pad") == [0, 3, 6, 9, 9, 9]
    assert sample_indices(10, 6, 3, "center", short="loop") == [0, 3, 6, 9, 2, 5]
    assert sample_indices(3, 5, 1, "uniform", short="pad") == [0, 1, 2, 2, 2]
    assert sample_indices(3, 5, 1, "uniform", short="loop") == [0, 1, 2, 0, 1]
    looped = sample_indices(10, 6, 3, "random", short="loop", generator=gen(3))
    assert all(0 <= i < 10 for i in looped)
    assert all((b - a) % 10 == 3 for a, b in zip(looped, looped[1:]))
    with pytest.raises(VideoTooShortError, match="short='skip'"):
        sample_indices(10, 6, 3, "random", short="skip", generator=gen(0))
    assert sample_indices(16, 6, 3, "random", short="skip", generator=gen(0))  # span 16 fits


def test_sampling_reproducible_and_validated():
    a = [sample_indices(1000, 16, 4, "random", generator=gen(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert len({tuple(sample_indices(1000, 16, 4, "random", generator=gen(s))) for s in range(10)}) > 1
    with pytest.raises(VideomaskError, match="unknown sampling mode"):
        sample_indices(10, 4, 1, "middle")
    with pytest.raises(VideomaskError, match="unknown short-video policy"):
        sample_indices(10, 4, 1, "center", short="wrap")
    with pytest.raises(VideoDecodeError, match="no frames"):
        sample_indices(0, 4, 1, "center")
    with pytest.raises(VideomaskError, match="positive"):
        sample_indices(10, 0, 1, "center")


def test_plan_reads_and_item_seed():
    unique, positions = plan_reads([[5, 1, 5], [9, 1]])
    assert unique == [1, 5, 9]
    assert positions == [[1, 0, 1], [2, 0]]
    assert item_seed(0, 1, 2, 3) == item_seed(0, 1, 2, 3)
    assert len({item_seed(0, e, i, s) for e in range(3) for i in range(3) for s in range(3)}) == 27


# -------------------------------------------------------------------------------------- transforms


def test_eval_transform_shape_and_normalisation():
    frames = np.zeros((4, 48, 80, 3), dtype=np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 128, 0
    video, geometry = ClipTransform.for_eval(32, patch=16)(frames)
    assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32
    expected = (torch.tensor([255, 128, 0]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(video.mean(dim=(1, 2, 3)), expected.float(), rtol=0, atol=1e-5)
    # shorter side 48 -> 32 (scale 2/3) then the centre 32x32 = the centre 48x48 of the original, resized
    assert geometry == ClipGeometry(48, 80, 0, 16, 48, 48, 32, 32, False)
    wide = ClipTransform.for_eval((32, 48), patch=16, short_side=64)(frames)[1]  # scale 4/3: region 24x36
    assert wide == ClipGeometry(48, 80, 12, 22, 24, 36, 32, 48, False)
    custom = ClipTransform.for_eval(32, patch=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(frames)[0]
    assert torch.allclose(custom[0], torch.ones(4, 32, 32))


@pytest.mark.parametrize("size, patch", [(30, 16), ((32, 40), 16), (64, (16, 24))])
def test_size_not_divisible_by_patch(size, patch):
    with pytest.raises(VideomaskError, match="not divisible by the patch"):
        ClipTransform(size=size, patch=patch)


def test_transform_options_validated():
    with pytest.raises(VideomaskError, match="unknown crop"):
        ClipTransform(crop="random")
    with pytest.raises(VideomaskError, match="flip_prob"):
        ClipTransform(flip_prob=2.0)
    with pytest.raises(VideomaskError, match="short_side"):
        ClipTransform(size=224, short_side=200)


def bright_box_frames(height: int, width: int, box: tuple[int, int, int, int], frames: int = 2) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.full((frames, height, width, 3), 20, dtype=np.uint8)
    out[:, y0:y1, x0:x1] = 240
    return out


def bright_extent(video: torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of pixels brighter than mid-gray in frame 0 of ``[C, T, H, W]``."""
    gray = to_uint8(video)[0].astype(np.float32).mean(-1)
    ys, xs = np.nonzero(gray > 130)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("crop_mode", ["resized", "multiscale"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_geometry_maps_a_bright_box_after_crop_and_flip(crop_mode, seed):
    box = (50, 30, 90, 70)  # x0, y0, x1, y1 in a 100x160 frame
    frames = bright_box_frames(100, 160, box)
    transform = ClipTransform.for_training(64, crop=crop_mode, area=(0.5, 1.0), flip_prob=0.5, patch=16)
    video, geometry = transform(frames, gen(seed))
    assert video.shape == (3, 2, 64, 64)
    mapped = geometry.map_boxes(torch.tensor([box], dtype=torch.float64))[0].tolist()
    if mapped[2] - mapped[0] < 4 or mapped[3] - mapped[1] < 4:
        pytest.skip("this crop leaves the box out")
    extent = bright_extent(video)
    assert all(abs(e - m) <= 1.5 for e, m in zip(extent, mapped)), (extent, mapped, geometry)


def test_bright_box_in_a_decoded_clip_lands_where_geometry_says(tmp_path):
    """A PyAV-written clip with a bright box, through the dataset with crop + flip: map_boxes finds it."""
    box = (40, 24, 88, 72)  # x0, y0, x1, y1 in 96x128 frames
    path = tmp_path / "box.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv444p"
        stream.codec_context.options = {"crf": "0", "preset": "ultrafast"}
        for frame in bright_box_frames(96, 128, box, frames=12):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    transform = ClipTransform.for_training(48, crop="resized", area=(0.6, 1.0), flip_prob=1.0, patch=16)
    ds = VideoDataset([VideoItem(str(path), "box.mp4")], num_frames=4, sampling_rate=2, transform=transform, seed=4)
    checked = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[0]
        geometry = ClipGeometry.from_tensor(item["geometry"])
        assert geometry.flip
        mapped = geometry.map_boxes(torch.tensor([box], dtype=torch.float64))[0].tolist()
        if mapped[2] - mapped[0] < 4 or mapped[3] - mapped[1] < 4:
            continue
        extent = bright_extent(item["video"])
        assert all(abs(e - m) <= 1.5 for e, m in zip(extent, mapped)), (extent, mapped, geometry)
        checked += 1
    assert checked >= 2


def test_geometry_composes_resize_flip_crop_in_any_order():
    box = (10, 20, 30, 60)
    frames = torch.from_numpy(bright_box_frames(80, 120, box)).permute(0, 3, 1, 2)  # [T, 3, H, W]
    g = ClipGeometry.identity(80, 120)
    video, g = resize_short_side(frames, g, 40)  # 40 x 60
    video, g = hflip(video, g)
    video, g = crop(video, g, 4, 30, 32, 24)  # right part of the mirrored frame = left part of the original
    video, g = hflip(video, g)
    video, g = center_crop(video, g, 16, 16)
    assert g.flip is False and (g.out_h, g.out_w) == (16, 16)
    clip = video.float().permute(1, 0, 2, 3)  # [C, T, H, W] in 0..255
    gray = clip[:, 0].mean(0).numpy()
    ys, xs = np.nonzero(gray > 130)
    mapped = g.map_boxes(torch.tensor([box], dtype=torch.float64))[0].tolist()
    extent = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    assert all(abs(e - m) <= 1.0 for e, m in zip(extent, mapped)), (extent, mapped, g)
    with pytest.raises(VideomaskError, match="does not fit"):
        crop(video, g, 10, 10, 10, 10)


def test_crop_parameters_stay_in_bounds():
    sizes_seen = set()
    for seed in range(200):
        top, left, h, w = random_resized_crop_params(90, 160, (0.08, 1.0), (3 / 4, 4 / 3), gen(seed))
        assert 0 <= top and top + h <= 90 and 0 <= left and left + w <= 160 and h > 0 and w > 0
        top, left, h, w = multiscale_crop_params(90, 160, (64, 64), (1.0, 0.875, 0.75, 0.66), 1, gen(seed))
        assert 0 <= top and top + h <= 90 and 0 <= left and left + w <= 160
        sizes_seen.add((h, w))
    assert sizes_seen <= {(a, b) for a in (90, 78, 67, 59) for b in (90, 78, 67, 59)}
    assert (90, 59) not in sizes_seen and (90, 78) in sizes_seen  # scales at most max_distort=1 apart


# ----------------------------------------------------------------------------------------- lists


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


def write_list(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


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


# ------------------------------------------------------------------------------------------ items


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
    real_open = data.open_video

    def counting_open(path, backend="pyav"):
        reader = real_open(path, backend=backend)
        real_read = reader.read

        def read(indices, **kw):
            reads.append(list(indices))
            return real_read(indices, **kw)

        reader.read = read
        return reader

    monkeypatch.setattr(data, "open_video", counting_open)
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


# -------------------------------------------------------------------------------------- bad videos


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    make_index_clip(root / "good1.mp4", 30, 64, 64)
    make_index_clip(root / "good2.mp4", 30, 64, 64)
    make_index_clip(root / "short.mp4", 5, 64, 64)
    make_corrupt_files(root / "bad")
    return root


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
    real_open = data.open_video

    def slow_open(path, backend="pyav"):
        if path.endswith("a.mp4"):
            time.sleep(3)
        return real_open(path, backend=backend)

    monkeypatch.setattr(data, "open_video", slow_open)
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


# ---------------------------------------------------------------------------------------- the CLI


def test_info_reports_videos_grid_and_skips(mixed_dir, capsys):
    code = cli_main(
        ["info", str(mixed_dir), "--num-frames", "4", "--sampling-rate", "2", "--size", "32", "--tubelet", "2", "16"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "token grid 2x2x2 = 8 tokens (4 tubes)" in out
    assert "good1.mp4: 30 frames, 25.000 fps, 1.20 s, 64x64" in out
    assert "[C,T,H,W] 3x4x32x32" in out
    assert "decoded 3 of 9 video(s); skipped 6" in out


def test_info_on_a_single_video_and_a_list(mixed_dir, tmp_path, capsys):
    assert cli_main(["info", str(mixed_dir / "good1.mp4"), "--size", "32", "--num-frames", "4"]) == 0
    assert "decoded 1 of 1 video(s); skipped 0" in capsys.readouterr().out
    listing = write_list(tmp_path / "l.csv", f"path,label\n{mixed_dir / 'good2.mp4'},1\n")
    assert cli_main(["info", str(listing), "--size", "32", "--num-frames", "4"]) == 0
    assert "good2.mp4: 30 frames" in capsys.readouterr().out


def test_info_errors_are_one_line_exit_2(tmp_path, mixed_dir, capsys):
    assert cli_main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such file or folder" in err
    assert cli_main(["info", str(mixed_dir / "bad"), "--size", "32", "--num-frames", "4"]) == 2
    assert "none of the 6 video(s)" in capsys.readouterr().err
    assert cli_main(["info", str(mixed_dir), "--size", "40"]) == 2
    assert "not divisible by the patch" in capsys.readouterr().err


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
        # the killed run's skip log already names videos found bad after the resume point
        shutil.copy(tmp_path / "straight.tsv", tmp_path / f"seen{cut}.tsv")
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
