"""videomask.data transforms: clip shape, normalisation, crop parameters and the geometry they carry."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from helpers_data import bright_box_frames, bright_extent, gen

from videomask.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipTransform,
    VideoDataset,
    VideoItem,
    center_crop,
    crop,
    hflip,
    multiscale_crop_params,
    random_resized_crop_params,
    resize_short_side,
)
from videomask.errors import VideomaskError
from videomask.patches import ClipGeometry


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
