"""A run's set-up matches what it loads to its clips: a fresh model records the run's clip size, a checkpoint of
another token grid gets its positions resampled (one log line), statistics of another size are refused before
the data, and the automatic score cache is scored at the statistics' size."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml
from helpers_train import tiny_run

from videomask.config import load_config
from videomask.data import ClipTransform, VideoDataset
from videomask.difference import CNNEmbedder, PixelEmbedder, fit_statistics
from videomask.errors import VideomaskError
from videomask.io import model_meta, save_model_weights
from videomask.model import build_model
from videomask.patches import Grid
from videomask.train import DistInfo, build_model_from_config, build_parts

SMALL = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def _config(tmp_path: Path, videos: Path, overrides: list[str]):
    """The tiny run (4 frames, 32 px) with ``overrides``."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_run(videos, tmp_path / "run")))
    return load_config(path, overrides)


def _stats(videos: Path, path: Path, embedder, size: int) -> Path:
    ds = VideoDataset.from_folder(
        videos, num_frames=4, sampling_rate=2, sampling="center", transform=ClipTransform.for_eval(size)
    )
    stats = fit_statistics(ds, ds, embedder, num_words=4, num_anchors=1, num_prototypes=8, progress=False)
    return stats.save(path)


def test_a_fresh_model_is_configured_at_the_run_clip(tmp_path, videos, caplog):
    with caplog.at_level(logging.WARNING, logger="videomask.io"):
        model, source = build_model_from_config(_config(tmp_path, videos, []))
    c = model.config
    assert source == "init" and (c.num_frames, c.img_size, c.pos_grid) == (4, 32, None) and not caplog.records
    # so its saved weights continue on the same clips with the same positions, and say so to other tools
    save_model_weights(model, tmp_path / "m.safetensors", model_meta(model))
    again, _ = build_model_from_config(_config(tmp_path, videos, [f"model.checkpoint={tmp_path / 'm.safetensors'}"]))
    assert again.config.pos_grid is None and not caplog.records


def test_a_checkpoint_of_another_grid_is_resampled_in_the_run(tmp_path, videos, caplog):
    torch.manual_seed(0)
    start = build_model("tiny", img_size=112, num_frames=16, **SMALL)  # 8 x 7 x 7 tokens
    save_model_weights(start, tmp_path / "start.safetensors", model_meta(start))
    cfg = _config(tmp_path, videos, [f"model.checkpoint={tmp_path / 'start.safetensors'}"])  # 4 x 32 px: 2x2x2
    with caplog.at_level(logging.WARNING, logger="videomask.io"):
        model, source = build_model_from_config(cfg)
    assert source == "videomask" and model.config.pos_grid == (8, 7, 7)
    assert [r.getMessage() for r in caplog.records] == [
        "model.checkpoint: positions learned on 8x7x7 tokens (16x112x112 clips), this run's clips give "
        "2x2x2 tokens (4x32x32 clips): position table resampled in 3-D (trilinear)"
    ]
    table = model.pos_table(8, 32, torch.device("cpu"), Grid(2, 2, 2))
    assert not torch.allclose(table, model.pos_table(8, 32, torch.device("cpu")))  # not the 1-D table of 8 tokens


def test_statistics_of_another_size_are_refused_before_the_data(tmp_path, videos, monkeypatch):
    stats = _stats(videos, tmp_path / "stats.safetensors", PixelEmbedder(dim=8, tubelet=(2, 16, 16)), 64)
    cfg = _config(tmp_path, videos, ["mask.name=difference", f"mask.options.stats={stats}"])  # data.size=32

    def no_data(*args, **kwargs):
        raise AssertionError("the data was opened before the check")

    monkeypatch.setattr("videomask.train.parts.build_dataset", no_data)
    with pytest.raises(VideomaskError) as err:
        build_parts(cfg, DistInfo(), torch.device("cpu"))
    assert str(err.value) == (
        "statistics fitted at 64 px clips, this run uses data.size=32: refit with `videomask fit --size 32` "
        "or set data.size=64"
    )


def test_the_automatic_score_cache_is_scored_at_the_statistics_size(tmp_path, videos):
    """A 32 px run with CNN statistics fitted at 64 px: the cache holds 64 px scores, looked up for 32 px clips."""
    stats = _stats(videos, tmp_path / "stats.safetensors", CNNEmbedder(tubelet=(2, 16, 16)), 64)
    cfg = _config(tmp_path, videos, ["mask.name=difference", f"mask.options.stats={stats}"])
    parts = build_parts(cfg, DistInfo(), torch.device("cpu"))
    assert parts.masker.cache is not None and parts.masker.cache.meta["size"] == 64
    batch = parts.stream.next()
    assert tuple(batch["video"].shape[-2:]) == (32, 32)
    assert parts.masker.generate(batch).scores.shape == (batch["video"].shape[0], 8)
    parts.stream.close()
