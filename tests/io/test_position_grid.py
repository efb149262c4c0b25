"""A checkpoint loaded for clips of another token grid keeps the meaning of its positions: the sine-cosine
table of the grid it learned on, resampled in 3-D to the clips' grid (one log line); the same grid is unchanged."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from videomask.io import load_model, match_positions, model_meta, save_hf_checkpoint, save_model_weights
from videomask.model import VideoMAE, build_model, resample_pos_table, sinusoid_table
from videomask.patches import Grid

SMALL = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def _saved(tmp_path, img_size: int, num_frames: int) -> tuple[VideoMAE, str]:
    torch.manual_seed(0)
    model = build_model("tiny", img_size=img_size, num_frames=num_frames, **SMALL).eval()
    path = tmp_path / "model.safetensors"
    save_model_weights(model, path, model_meta(model))
    return model, str(path)


def _interpolated(src: Grid, dst: Grid, dim: int) -> torch.Tensor:
    """The reference: the [t', h, w, D] table interpolated trilinearly, flattened i_t*(h*w) + i_h*w + i_w."""
    table = sinusoid_table(src.num_tokens, dim).view(src.t, src.h, src.w, dim)  # [t', h, w, D]
    out = F.interpolate(table.permute(3, 0, 1, 2)[None], size=(dst.t, dst.h, dst.w), mode="trilinear")
    return out[0].permute(1, 2, 3, 0).reshape(-1, dim)  # [L', D]


def test_a_16x112_checkpoint_on_8x64_clips_gets_its_table_resampled(tmp_path, caplog):
    _, path = _saved(tmp_path, 112, 16)  # token grid 8 x 7 x 7
    with caplog.at_level(logging.WARNING, logger="videomask.io"):
        model, source = load_model(path, what="model.checkpoint", clip=(8, 64, 64))  # 4 x 4 x 4
    assert source == "videomask" and model.config.pos_grid == (8, 7, 7)
    assert [r.getMessage() for r in caplog.records] == [
        "model.checkpoint: positions learned on 8x7x7 tokens (16x112x112 clips), this run's clips give "
        "4x4x4 tokens (8x64x64 clips): position table resampled in 3-D (trilinear)"
    ]
    for dim in (32, 16):  # the encoder's and the decoder's tables
        table = model.pos_table(64, dim, torch.device("cpu"), Grid(4, 4, 4))
        assert torch.allclose(table, _interpolated(Grid(8, 7, 7), Grid(4, 4, 4), dim), atol=1e-6)

    # the encoder adds that table to the tubelet embeddings (the whole forward pass uses it)
    video = torch.randn(1, 3, 8, 64, 64)
    x = model.embed_patches(video) + _interpolated(Grid(8, 7, 7), Grid(4, 4, 4), 32)[None]
    assert torch.allclose(model.encode(video), model.norm(model.blocks[0](x)), atol=1e-5)  # depth 1
    assert model(video, torch.rand(1, 64).argsort(dim=1) < 48).loss.isfinite()

    # the saved config carries the grid, so the continued model keeps these positions wherever it is loaded
    save_model_weights(model, tmp_path / "continued.safetensors", model_meta(model))
    again, _ = load_model(tmp_path / "continued.safetensors")
    assert again.config.pos_grid == (8, 7, 7)
    assert torch.equal(again.encode(video), model.encode(video))


def test_a_token_keeps_the_embedding_of_its_relative_position(tmp_path):
    """Grid 2x2x2 -> 6x6x6: token (3i+1, 3j+1, 3k+1) sits at the relative position of token (i, j, k)."""
    _, path = _saved(tmp_path, 32, 4)
    model, _ = load_model(path, clip=(12, 96, 96))
    table = model.pos_table(216, 32, torch.device("cpu"), Grid(6, 6, 6)).view(6, 6, 6, 32)
    learned = sinusoid_table(8, 32).view(2, 2, 2, 32)
    assert torch.allclose(table[1::3, 1::3, 1::3], learned, atol=1e-6)
    assert torch.allclose(resample_pos_table(sinusoid_table(8, 32), Grid(2, 2, 2), Grid(6, 6, 6)), table.view(216, 32))
    # without the resampling the same index means another place: token 1 of the 6x6x6 grid
    assert not torch.allclose(sinusoid_table(216, 32).view(6, 6, 6, 32)[1::3, 1::3, 1::3], learned, atol=1e-2)


def test_the_same_grid_loads_unchanged(tmp_path, caplog):
    original, path = _saved(tmp_path, 64, 8)
    with caplog.at_level(logging.WARNING, logger="videomask.io"):
        model, _ = load_model(path, clip=(8, 64, 64))
    assert model.config.pos_grid is None and not caplog.records
    video = torch.randn(1, 3, 8, 64, 64)
    assert torch.equal(model.encode(video), original.encode(video))
    assert torch.equal(model.pos_table(64, 32, torch.device("cpu"), Grid(4, 4, 4)), sinusoid_table(64, 32))
    assert match_positions(model, (8, 64, 64)) is None


def test_hugging_face_folder_takes_its_grid_from_config_json(tmp_path, caplog):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    save_hf_checkpoint(build_model("tiny", img_size=224, num_frames=16, **SMALL), tmp_path / "hf")
    with caplog.at_level(logging.WARNING, logger="videomask.io"):
        model, source = load_model(tmp_path / "hf", what="model.checkpoint", clip=(16, 112, 112))
    assert source == "hf" and model.config.pos_grid == (8, 14, 14)
    assert "8x14x14 tokens (16x224x224 clips), this run's clips give 8x7x7 tokens (16x112x112 clips)" in caplog.text
    table = model.pos_table(392, 32, torch.device("cpu"), Grid(8, 7, 7))
    assert torch.allclose(table, _interpolated(Grid(8, 14, 14), Grid(8, 7, 7), 32), atol=1e-6)


def test_an_encoder_block_embedder_uses_the_resampled_positions(tmp_path):
    """Statistics fitted with a continued model's blocks see the positions the model itself uses."""
    from videomask.difference import ModelEmbedder

    _, path = _saved(tmp_path, 112, 16)
    model, _ = load_model(path, clip=(8, 64, 64))
    video = torch.randn(2, 3, 8, 64, 64)
    embedded = ModelEmbedder(model, layer="block:1")(video)  # every block: the encoder's output
    assert torch.allclose(embedded, model.encode(video), atol=1e-5)
