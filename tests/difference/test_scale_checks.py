"""Statistics and score caches hold at the clip size they were made at: another scale is refused in one line,
except a score cache looked up by a run at another clip size, which maps every clip onto the cache's scale."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videomask.cli import main as cli_main
from videomask.data import ClipTransform, VideoDataset
from videomask.difference import DifferenceStats, ModelEmbedder, PixelEmbedder, build_score_cache, fit_statistics
from videomask.errors import VideomaskError
from videomask.masking import DifferenceMasker
from videomask.model import build_model

TUBELET = (2, 16, 16)


def _write_video(path: Path, frames: np.ndarray) -> Path:
    """uint8 ``[N, H, W, 3]`` -> a near-lossless H.264 file."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Three wide videos (64 x 128, 12 frames, a moving square) and pixel statistics fitted on 64 px clips."""
    root = tmp_path_factory.mktemp("scale")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:128]
    for i in range(3):
        base = 128 + 80 * np.sin(0.15 * xx + 0.1 * yy * (i + 1))[None, :, :, None] * np.ones((12, 1, 1, 3))
        base = base + rng.normal(0, 4, base.shape)
        base[:, 8:40, 40 + 8 * i : 72 + 8 * i] = [230, 30, 200]
        _write_video(root / f"v{i}.mp4", np.clip(base, 0, 255).astype(np.uint8))

    def dataset(size: int) -> VideoDataset:
        return VideoDataset.from_folder(
            root, num_frames=4, sampling_rate=2, sampling="center", transform=ClipTransform.for_eval(size), seed=0
        )

    ds = dataset(64)
    stats = fit_statistics(
        ds, ds, PixelEmbedder(dim=16, tubelet=TUBELET), num_words=4, num_anchors=1, num_prototypes=8, progress=False
    )
    items = [(p.name, str(p)) for p in sorted(root.glob("*.mp4"))]
    return {"root": root, "stats": stats, "items": items, "path": stats.save(root / "stats.safetensors")}


def _clips(items: list[tuple[str, str]], frames: list[int], size: int) -> dict:
    """A loader-like batch of the centre ``size`` px crops of ``frames`` of every video."""
    from videomask.video import open_video

    videos, geometries = [], []
    for _, path in items:
        with open_video(path) as reader:
            video, geometry = ClipTransform.for_eval(size)(reader.read(frames))
        videos.append(video)
        geometries.append(geometry.to_tensor())
    return {
        "video": torch.stack(videos),  # [B, C, T, H, W]
        "video_id": [vid for vid, _ in items],
        "frame_indices": torch.tensor([frames] * len(items)),  # [B, T]
        "geometry": torch.stack(geometries),  # [B, 9]
    }


def test_statistics_refuse_clips_at_another_size(wide, caplog):
    stats = DifferenceStats.load(wide["path"])
    assert stats.clip_size == (4, 64, 64) and stats.size == 64
    stats.check_clip((4, 64, 64), size_key="data.size")  # the fitted size: accepted
    stats.check_clip((16, 64, 64), size_key="data.size")  # the pixel embedder sees one tubelet: frames are free
    with pytest.raises(VideomaskError) as err:
        stats.check_clip((4, 32, 32), size_key="data.size", frames_key="data.num_frames")
    assert str(err.value) == (
        "statistics fitted at 64 px clips, this run uses data.size=32: refit with `videomask fit --size 32` "
        "or set data.size=64"
    )
    with pytest.raises(VideomaskError, match=r"--size 32: .* or pass --size 64$"):
        stats.check_clip((4, 32, 32), size_key="--size")

    # the masker computing scores in the step refuses another scale before it embeds anything
    masker = DifferenceMasker(stats=stats, ratio=0.5)
    masker.generate(_clips(wide["items"], [0, 2, 4, 6], 64))
    with pytest.raises(VideomaskError, match="clips of 32x32 px, statistics fitted at 64 px clips"):
        masker.generate(_clips(wide["items"], [0, 2, 4, 6], 32))

    # a file that records no clip size (an older videomask) still loads and works; the check says so once
    stats.settings.pop("clip_size")
    old = DifferenceStats.load(stats.save(wide["root"] / "old.safetensors"))
    assert old.clip_size is None
    with caplog.at_level(logging.WARNING, logger="videomask.difference"):
        old.check_clip((4, 32, 32), size_key="data.size")
    assert [r.getMessage() for r in caplog.records] == [
        "these statistics record no clip size (an older videomask wrote them): size check skipped"
    ]
    DifferenceMasker(stats=old, ratio=0.5).generate(_clips(wide["items"], [0, 2, 4, 6], 32))


def test_block_embedder_statistics_refuse_another_frame_count():
    """Encoder blocks add positions over the token grid, so their statistics also hold at one frame count."""
    torch.manual_seed(0)
    model = build_model("tiny", img_size=32, num_frames=4, embed_dim=32, depth=1, num_heads=2, decoder_depth=0)
    clips = [torch.randn(2, 3, 4, 32, 32)]
    stats = fit_statistics(
        clips,
        clips,
        ModelEmbedder(model, layer="block:1"),
        num_words=2,
        num_anchors=1,
        num_prototypes=4,
        progress=False,
    )
    assert stats.frames_matter and stats.clip_size == (4, 32, 32)
    stats.check_clip((4, 32, 32))
    with pytest.raises(VideomaskError, match=r"data.num_frames=8: refit with `videomask fit --num-frames 8` or set"):
        stats.check_clip((8, 32, 32), size_key="data.size", frames_key="data.num_frames")


def test_score_cache_is_scored_at_the_statistics_size_and_looked_up_at_any(wide, tmp_path, caplog):
    """The cache must be scored at the statistics' scale (else refused); a run at another clip size looks every
    token up at its region in the original frame: a 32 px token covers 2 x 2 tokens of the 64 px clip, and its
    cached score is their mean (the bilinear value at their common corner)."""
    stats, items = wide["stats"], wide["items"]
    masker = DifferenceMasker(stats=stats, ratio=0.5)
    with pytest.raises(VideomaskError, match=r"fitted at 64 px clips, this run uses --size 32: .* pass --size 64"):
        build_score_cache(masker, items, size=32, num_frames=4, sampling_rate=2, progress=False)
    cache, skipped = build_score_cache(masker, items, size=64, num_frames=4, sampling_rate=2, progress=False)
    assert not skipped and cache.meta["size"] == 64 and cache.meta["tubelet"] == list(TUBELET)

    # a cache scored at another size than its statistics (an older videomask let that through) is refused
    cache.meta["size"] = 32
    with pytest.raises(VideomaskError, match=r"scored at 32 px, .* `videomask score-cache --size 64`$"):
        DifferenceMasker(stats=stats, cache=cache)
    cache.meta.pop("size")  # older caches that record no size: loaded, with one log line
    with caplog.at_level(logging.WARNING, logger="videomask.difference"):
        DifferenceMasker(stats=stats, cache=cache)
    assert "record no clip size" in caplog.text
    cache.meta["size"] = 64
    cached = DifferenceMasker(stats=stats, ratio=0.5, cache=cache.save(tmp_path / "scores.safetensors"))

    at64, at32 = _clips(items, [0, 2, 4, 6], 64), _clips(items, [0, 2, 4, 6], 32)
    fine = masker.generate(at64).scores.view(3, 2, 4, 4)  # in-step scores at the fitted scale [B, t', h, w]
    want = F.avg_pool2d(fine, 2).reshape(3, -1)  # [B, t'*2*2]: each 32 px token's 2 x 2 fine tokens
    got = cached.generate(at32).scores  # the run at 32 px reads the cache
    assert got.shape == (3, 8)
    assert (got - want).abs().max() <= 2e-3  # float16 storage
    with pytest.raises(VideomaskError, match="statistics fitted at 64 px"):  # computed in the step: refused
        masker.generate(at32)


def test_show_masks_refuses_another_size(wide, tmp_path, capsys):
    video = wide["items"][0][1]
    argv = ["show-masks", video, "--masker", "difference", "--stats", str(wide["path"]), "-o", str(tmp_path / "m.gif")]
    assert cli_main([*argv, "--num-frames", "4", "--sampling-rate", "2", "--size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "statistics fitted at 64 px clips, this run uses --size 32: refit with `videomask fit --size 32` "
        "or pass --size 64"
    )
    assert "\n" not in err
    assert cli_main([*argv, "--num-frames", "4", "--sampling-rate", "2", "--size", "64"]) == 0
