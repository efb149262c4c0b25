"""The ``objects`` masker: boxes cache lookup, transform-aware anchors, selection, fallback, options."""

from __future__ import annotations

import json
import time
import warnings

import pytest
import torch

from videomask.detect import BoxCache
from videomask.errors import VideomaskError
from videomask.masking import MASKERS, build_masker
from videomask.masking.objects import ObjectsMasker, rasterise_batch
from videomask.patches import ClipGeometry, grid_for, rasterise_boxes

TUBELET = (2, 8, 8)
T, H, W = 4, 32, 32  # clip: grid (2, 4, 4) = 16 tubes, 32 tokens
GRID = grid_for((T, H, W), TUBELET)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
HALF = ClipGeometry(64, 64, 0, 0, 64, 64, 32, 32, False)  # a 64x64 original resized to the 32x32 clip


def _records(
    video: str, boxes: dict[int, list[tuple[list[float], str]]], num_frames: int = 40, stride: int = 2
) -> list[dict]:
    out = [
        {"video": video, "frame": f, "box": box, "label": label, "score": 1.0}
        for f, items in boxes.items()
        for box, label in items
    ]
    return out + [
        {"video": video, "done": True, "num_frames": num_frames, "stride": stride, "detector": {"name": "test"}}
    ]


@pytest.fixture(scope="module")
def cache() -> BoxCache:
    """Video ``a``: a person in the top-left 16x16 corner of every scanned frame (patch (0, 0) of the clip);
    ``b``: a dog at the bottom-right corner; ``empty``: scanned, nothing found."""
    person = {f: [([0, 0, 16, 16], "person")] for f in range(0, 40, 2)}
    dog = {f: [([48, 48, 64, 64], "dog")] for f in range(0, 40, 2)}
    return BoxCache.from_records(_records("a", person) + _records("b", dog) + _records("empty", {}))


def _batch(
    video_ids: list[str], geometry: ClipGeometry = HALF, frames: list[int] | None = None, device: str = "cpu"
) -> dict:
    B = len(video_ids)
    g = torch.Generator().manual_seed(0)
    return {
        "video": torch.randn(B, 3, T, H, W, generator=g).to(device),
        "video_id": video_ids,
        "frame_indices": torch.tensor([frames or [4, 6, 8, 10]] * B),
        "geometry": geometry.to_tensor().expand(B, 9).clone(),
    }


def _masker(cache: BoxCache, **options) -> ObjectsMasker:
    return build_masker("objects", boxes=cache, **{"tubelet": TUBELET, "ratio": 0.5, "direction": "mask", **options})


def test_registered():
    assert MASKERS["objects"] is ObjectsMasker


def test_anchors_are_kept_visible_by_default(cache):
    """direction defaults to keep: the evidence protocol found masking the anchors at or below tube masking."""
    masker = build_masker("objects", boxes=cache, tubelet=TUBELET, ratio=0.5, alpha=1.0)
    assert masker.direction == "keep"
    result = masker.generate(_batch(["a", "b"]), torch.Generator().manual_seed(1))
    assert result.anchors.any() and not result.mask[result.anchors].any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["tube", "token"])
def test_exact_count_dtype_device_and_anchors(cache, mode, device):
    masker = _masker(cache, mode=mode)
    result = masker.generate(_batch(["a", "b", "empty", "a"], device=device), torch.Generator().manual_seed(0))
    assert result.mask.dtype == torch.bool and result.mask.shape == (4, GRID.num_tokens)
    assert result.mask.device.type == device and result.anchors.device.type == device
    expected = 8 * GRID.t if mode == "tube" else 16
    assert masker.num_masked(GRID) == expected
    assert result.mask.sum(1).tolist() == [expected] * 4
    anchors = result.anchors.cpu().view(4, GRID.t, GRID.h, GRID.w)
    want_a = torch.zeros(GRID.t, GRID.h, GRID.w, dtype=torch.bool)
    want_a[:, 0, 0] = True  # 16 px box at half scale = one 8 px patch
    want_b = torch.zeros_like(want_a)
    want_b[:, 3, 3] = True
    assert torch.equal(anchors[0], want_a) and torch.equal(anchors[1], want_b)
    assert not anchors[2].any() and torch.equal(anchors[3], want_a)


def test_lookup_under_crop_and_flip(cache):
    """A crop of the right half mirrored: the box (40, 8)-(48, 16) lands on patch row 1, column 2."""
    records = _records("c", {f: [([40, 8, 48, 16], "person"), ([0, 40, 10, 50], "person")] for f in range(0, 40, 2)})
    crop_flip = ClipGeometry(64, 64, 0, 32, 32, 32, 32, 32, True)  # x in [32, 64) -> 32 px, mirrored
    masker = _masker(BoxCache.from_records(records))
    anchors = masker.generate(_batch(["c"], crop_flip), torch.Generator().manual_seed(0)).anchors
    grid = anchors.view(GRID.t, GRID.h, GRID.w)
    want = torch.zeros_like(grid)
    want[:, 1, 2] = True  # crop: x 8..16 -> flip: 16..24 -> column 2; y 8..16 -> row 1; the left box is cropped away
    assert torch.equal(grid, want)
    # the vectorised rasteriser agrees with the per-clip reference on the same boxes
    boxes = BoxCache.from_records(records).boxes("c", [4, 6, 8, 10])
    assert torch.equal(anchors[0], rasterise_boxes(boxes, crop_flip, TUBELET))


def test_nearest_scanned_frame_within_stride():
    records = _records("v", {4: [([0, 0, 8, 8], "person")], 8: [([8, 8, 16, 16], "person")]}, num_frames=12, stride=2)
    cache = BoxCache.from_records(records)
    got = cache.boxes("v", [3, 4, 5, 8, 9, 30])
    # 3: tie between 2 and 4 -> the earlier (2, nothing); 5 -> 4; 9 -> 8; 30: past the video, too far from 10
    assert [len(b) for b in got] == [0, 1, 1, 1, 1, 0]
    assert got[1].tolist() == [[0, 0, 8, 8]] and got[3].tolist() == [[8, 8, 16, 16]]
    # a foreign file without done lines: scanned frames = frames with boxes, stride = gcd of their gaps
    foreign = BoxCache.from_records([r for r in records if not r.get("done")])
    assert foreign.videos["v"].stride == 4 and [len(b) for b in foreign.boxes("v", [6, 7, 13])] == [1, 1, 0]
    with pytest.raises(VideomaskError, match="not in boxes cache"):
        cache.boxes("nope", [0])


def test_vectorised_rasteriser_matches_reference():
    g = torch.Generator().manual_seed(3)
    geometries = [
        ClipGeometry(90, 120, 5.0, 17.5, 60.0, 80.0, 32, 32, False),
        ClipGeometry(90, 120, 0.0, 0.0, 90.0, 120.0, 32, 32, True),
        ClipGeometry(90, 120, 30.0, 3.0, 45.0, 45.0, 32, 32, True),
    ]
    frame_boxes, all_boxes, clips, pos = [], [], [], []
    for b in range(len(geometries)):
        per_frame = []
        for k in range(T):
            n = int(torch.randint(0, 3, (1,), generator=g))
            xy = torch.rand(n, 2, generator=g) * torch.tensor([120.0, 90.0])
            wh = torch.rand(n, 2, generator=g) * 40
            boxes = torch.cat([xy, xy + wh], dim=1)
            per_frame.append(boxes)
            all_boxes.append(boxes)
            clips += [b] * n
            pos += [k] * n
        frame_boxes.append(per_frame)
    got = rasterise_batch(
        torch.cat(all_boxes),
        torch.tensor(clips),
        torch.tensor(pos),
        torch.stack([geo.to_tensor() for geo in geometries]),
        (T, H, W),
        TUBELET,
    )
    want = torch.stack([rasterise_boxes(fb, geo, TUBELET) for fb, geo in zip(frame_boxes, geometries)])
    assert got.any() and torch.equal(got, want)


@pytest.mark.parametrize("mode", ["tube", "token"])
def test_alpha_one_masks_every_anchor_and_keep_keeps_them(cache, mode):
    batch = _batch(["a", "b", "a", "b"])
    result = _masker(cache, mode=mode, alpha=1.0).generate(batch, torch.Generator().manual_seed(1))
    assert result.anchors.any(dim=1).all()
    assert result.mask[result.anchors].all()
    keep = _masker(cache, mode=mode, alpha=1.0, direction="keep").generate(batch, torch.Generator().manual_seed(1))
    assert not keep.mask[keep.anchors].any()
    assert keep.mask.sum(1).tolist() == result.mask.sum(1).tolist()


def test_alpha_share_of_the_budget(cache):
    """Many anchors: alpha=0.5 takes round(0.5*k) anchor tubes, the rest uniformly from all tubes."""
    big = BoxCache.from_records(_records("big", {f: [([0, 0, 64, 32], "person")] for f in range(0, 40, 2)}))  # top half
    masker = _masker(big, alpha=0.5, ratio=0.5)  # k = 8 tubes, 8 anchor tubes
    result = masker.generate(_batch(["big"] * 64), torch.Generator().manual_seed(0))
    tube_mask = result.mask.view(64, GRID.t, -1)[:, 0]
    tube_anchor = result.anchors.view(64, GRID.t, -1).any(1)
    from_anchors = (tube_mask & tube_anchor).sum(1).float()
    assert (from_anchors >= 4).all()  # 4 picked from the anchors, then 4 uniform over the 12 tubes left
    assert 4.0 + 4 * 4 / 12 - 0.5 < from_anchors.mean() < 4.0 + 4 * 4 / 12 + 0.5


def test_seed_reproducible_and_varies(cache):
    masker = _masker(cache)
    batch = _batch(["a", "b", "empty", "a"])
    a = masker(batch, torch.Generator().manual_seed(5))
    b = masker(batch, torch.Generator().manual_seed(5))
    c = masker(batch, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fallback_without_anchor(cache):
    """A clip without anchor objects: tube masking (default in tube mode) or random token masking."""
    batch = _batch(["empty"] * 64)
    tube = _masker(cache).generate(batch, torch.Generator().manual_seed(0))
    assert not tube.anchors.any()
    slots = tube.mask.view(64, GRID.t, -1)
    assert torch.equal(slots, slots[:, :1].expand_as(slots))  # same spatial mask at every time step
    freq = slots[:, 0].float().mean(0)
    assert (freq - 0.5).abs().max() < 0.25
    rnd = _masker(cache, fallback="random").generate(batch, torch.Generator().manual_seed(0))
    assert rnd.mask.sum(1).tolist() == [8 * GRID.t] * 64
    rnd_slots = rnd.mask.view(64, GRID.t, -1)
    assert not torch.equal(rnd_slots[:, 0], rnd_slots[:, 1])  # token masking: slots differ
    # token mode with tube fallback: whole tubes plus single tokens up to int(ratio * L)
    tok_masker = _masker(cache, mode="token", ratio=0.6, fallback="tube")
    tok = tok_masker.generate(_batch(["empty", "a"]), torch.Generator().manual_seed(0))
    assert tok.mask.sum(1).tolist() == [int(0.6 * GRID.num_tokens)] * 2
    assert tok.mask[0].view(GRID.t, -1).all(0).sum() == int(0.6 * GRID.num_tokens) // GRID.t
    with pytest.raises(VideomaskError, match="fallback"):
        _masker(cache, fallback="zeros")


def test_missing_video_and_bad_inputs(cache):
    masker = _masker(cache)
    with pytest.raises(VideomaskError, match="not in boxes cache"):
        masker(_batch(["unknown"]))
    lenient = _masker(cache, on_missing="fallback")
    with pytest.warns(UserWarning, match="'unknown' is not in boxes cache"):
        mask = lenient(_batch(["unknown", "a"]), torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [8 * GRID.t] * 2 and lenient.missing == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same video again: counted, not warned about twice
        lenient(_batch(["unknown"]), torch.Generator().manual_seed(0))
    assert lenient.missing == 2 and lenient.missing_videos == {"unknown"}
    assert "missing=2 clips of 1 videos" in repr(lenient) and "missing" not in repr(masker)
    with pytest.raises(VideomaskError, match="batch dict"):
        masker(torch.zeros(1, 3, T, H, W))
    no_geometry = _batch(["a"])
    del no_geometry["geometry"]
    with pytest.raises(VideomaskError, match="geometry"):
        masker(no_geometry)
    with pytest.raises(VideomaskError, match="none of the anchor labels"):
        _masker(cache, labels=["cat"])


def test_precomputed_anchors_in_batch():
    masker = build_masker("objects", tubelet=TUBELET, ratio=0.5, alpha=1.0, direction="mask")  # no cache at all
    batch = _batch(["x", "y"])
    anchors = torch.zeros(2, GRID.num_tokens, dtype=torch.bool)
    anchors[0, [5, 6]] = True
    batch["anchors"] = anchors
    result = masker.generate(batch, torch.Generator().manual_seed(0))
    assert torch.equal(result.anchors, anchors)
    tube_mask = result.mask.view(2, GRID.t, -1)[0, 0]
    assert tube_mask[5] and tube_mask[6]
    batch["anchors"] = anchors[:, :5]
    with pytest.raises(VideomaskError, match="anchors"):
        masker(batch)


def test_labels_filter_cache_file_and_tficf(cache, tmp_path):
    path = tmp_path / "boxes.jsonl"
    records = _records("a", {f: [([0, 0, 16, 16], "person"), ([48, 48, 64, 64], "dog")] for f in range(0, 40, 2)})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    dog = build_masker("objects", boxes=str(path), labels="dog", tubelet=TUBELET, ratio=0.5)
    anchors = dog.generate(_batch(["a"]), torch.Generator().manual_seed(0)).anchors.view(GRID.t, GRID.h, GRID.w)
    assert anchors[:, 3, 3].all() and anchors.sum() == GRID.t
    both = build_masker("objects", boxes=str(path), tubelet=TUBELET, ratio=0.5)
    assert both.generate(_batch(["a"])).anchors.sum() == 2 * GRID.t
    source = tmp_path / "source.jsonl"
    src = _records("s", {f: [([0, 0, 16, 16], "person")] for f in range(0, 40, 2)})
    source.write_text("".join(json.dumps(r) + "\n" for r in src))
    chosen = build_masker("objects", boxes=str(path), labels="tficf", source_boxes=str(source), tubelet=TUBELET)
    assert chosen.labels == ["dog"]  # in every target frame, never in the source


def test_cache_lookup_is_cheap():
    """One batch reading (B=8 clips of 16 frames at 224 px, 1000 videos cached) takes well under a millisecond or so."""
    records = []
    for v in range(1000):
        for f in range(0, 300, 4):
            records.append(
                {
                    "video": f"v{v}",
                    "frame": f,
                    "box": [10.0 + f % 50, 20.0, 80.0 + f % 50, 200.0],
                    "label": "person",
                    "score": 1.0,
                }
            )
        records.append({"video": f"v{v}", "done": True, "num_frames": 300, "stride": 4, "detector": {"name": "t"}})
    cache = BoxCache.from_records(records)
    masker = build_masker("objects", boxes=cache, tubelet=(2, 16, 16))
    geometry = ClipGeometry(240, 320, 8.0, 48.0, 224.0, 224.0, 224, 224, True).to_tensor()
    batch = {
        "video_id": [f"v{7 * b}" for b in range(8)],
        "frame_indices": torch.arange(0, 64, 4).expand(8, 16) + 17,
        "geometry": geometry.expand(8, 9).clone(),
    }
    grid = grid_for((16, 224, 224), (2, 16, 16))
    masker.anchors_from_cache(batch, grid, (16, 224, 224))  # warm-up
    times = []
    for _ in range(20):
        start = time.perf_counter()
        anchors = masker.anchors_from_cache(batch, grid, (16, 224, 224))
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    print(f"objects cache reading, B=8 T=16 224px: median {median * 1e3:.3f} ms")
    assert anchors.shape == (8, grid.num_tokens) and anchors.any(1).all()
    geo = ClipGeometry.from_tensor(geometry)
    for b in range(8):  # the batched lookup equals the per-clip lookup + the reference rasteriser
        per_clip = cache.boxes(batch["video_id"][b], batch["frame_indices"][b])
        assert torch.equal(anchors[b], rasterise_boxes(per_clip, geo, (2, 16, 16)))
    assert median < 0.02  # generous bound for a shared CPU; typical is well below
