"""Hugging Face VideoMAE parity (import, export) and the original VideoMAE ``.pth`` layout."""

from __future__ import annotations

import argparse
import logging
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import VideoMAEConfig as HFConfig
from transformers import VideoMAEForPreTraining, VideoMAEModel
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

from videomask.errors import VideomaskError
from videomask.io import (
    config_from_hf,
    config_to_hf,
    load_hf_checkpoint,
    load_videomae_pth,
    save_hf_checkpoint,
    to_videomae_state_dict,
)
from videomask.model import MODEL_SIZES, VideoMAE, build_model, sinusoid_table

TOL = 1e-5


class NotAllowed:
    """An arbitrary pickled object: weights-only loading must refuse it."""


def hf_config(**overrides) -> HFConfig:
    values = dict(
        image_size=32,
        num_frames=4,
        patch_size=16,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=48,
    )
    values.update(overrides)
    return HFConfig(**values)


def random_mask(batch: int, num_tokens: int, num_masked: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(batch, num_tokens, generator=g).argsort(dim=1)
    return torch.zeros(batch, num_tokens, dtype=torch.bool).scatter_(1, order[:, :num_masked], True)


def hf_checkpoint(
    tmp_path: Path, cls=VideoMAEForPreTraining, seed: int = 0, **overrides
) -> tuple[Path, torch.nn.Module]:
    """A randomly initialised Hugging Face model saved with ``save_pretrained`` (no download)."""
    torch.manual_seed(seed)
    model = cls(hf_config(**overrides)).eval()
    with torch.no_grad():  # make every bias and norm non-trivial so a mix-up shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    return folder, model


def inputs(batch: int = 2, frames: int = 4, size: int = 32, num_masked: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch, frames, 3, size, size, generator=g)  # HF layout [B, T, C, H, W]
    num_tokens = (frames // 2) * (size // 16) ** 2
    return pixel_values, random_mask(batch, num_tokens, min(num_masked, num_tokens - 1), seed)


def test_sinusoid_table_equals_hf() -> None:
    for n, d in ((8, 32), (1568, 48), (392, 96), (16, 768)):
        assert torch.equal(sinusoid_table(n, d), get_sinusoid_encoding_table(n, d)[0])


@pytest.mark.parametrize("norm_pix_loss", [True, False])
@pytest.mark.parametrize("use_mean_pooling", [False, True])
def test_import_matches_hf_loss_and_logits(tmp_path: Path, norm_pix_loss: bool, use_mean_pooling: bool) -> None:
    folder, hf = hf_checkpoint(tmp_path, image_size=64, norm_pix_loss=norm_pix_loss, use_mean_pooling=use_mean_pooling)
    model = load_hf_checkpoint(folder).eval()
    assert model.config.norm_pix_loss == norm_pix_loss and model.config.use_mean_pooling == use_mean_pooling
    pixel_values, mask = inputs(size=64, num_masked=27)  # L = 2*4*4 = 32
    with torch.no_grad():
        ref = hf(pixel_values, bool_masked_pos=mask)
        out = model(pixel_values.permute(0, 2, 1, 3, 4), mask)  # library layout [B, C, T, H, W]
        hidden = hf.videomae(pixel_values, bool_masked_pos=mask).last_hidden_state
        latent = model.encode(pixel_values.permute(0, 2, 1, 3, 4), mask)
    assert out.pred.shape == ref.logits.shape
    assert torch.allclose(out.pred, ref.logits, atol=TOL, rtol=0)
    assert abs(out.loss.item() - ref.loss.item()) <= TOL
    assert torch.allclose(latent, hidden, atol=TOL, rtol=0)


def test_import_encoder_only_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, hf = hf_checkpoint(tmp_path, cls=VideoMAEModel, use_mean_pooling=False)
    with caplog.at_level(logging.WARNING, logger="videomask.io"):
        model = load_hf_checkpoint(folder).eval()
    assert "no decoder" in caplog.text and "decoder_blocks (26 keys)" in caplog.text and "mask_token" in caplog.text
    pixel_values, _ = inputs()
    with torch.no_grad():
        ref = hf(pixel_values).last_hidden_state
        mine = model.encode(pixel_values.permute(0, 2, 1, 3, 4))
    assert torch.allclose(mine, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_export_round_trip_through_transformers(tmp_path: Path, norm_pix_loss: bool) -> None:
    folder, hf = hf_checkpoint(tmp_path, norm_pix_loss=norm_pix_loss, use_mean_pooling=False)
    model = load_hf_checkpoint(folder)
    with torch.no_grad():  # train-like change so the export is not just a copy of the input file
        model.blocks[0].attn.q_bias.add_(0.5)
        model.decoder_blocks[1].attn.v_bias.sub_(0.25)
    out_dir = save_hf_checkpoint(model, tmp_path / "export")
    keys = load_file(str(out_dir / "model.safetensors")).keys()
    assert any(k.endswith("attention.attention.q_bias") for k in keys)
    assert not any(k.endswith("key.bias") for k in keys)
    hf2 = VideoMAEForPreTraining.from_pretrained(out_dir).eval()
    pixel_values, mask = inputs()
    with torch.no_grad():
        ref = hf2(pixel_values, bool_masked_pos=mask)
        mine = model.eval()(pixel_values.permute(0, 2, 1, 3, 4), mask)
        old = hf(pixel_values, bool_masked_pos=mask)
    assert torch.allclose(ref.logits, mine.pred, atol=TOL, rtol=0)
    assert abs(ref.loss.item() - mine.loss.item()) <= TOL
    assert not torch.allclose(ref.logits, old.logits, atol=1e-3)  # the bias change made it through
    # and back into videomask, bit for bit
    again = load_hf_checkpoint(out_dir)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


@pytest.mark.parametrize("name", sorted(MODEL_SIZES))
def test_named_sizes_have_hf_parameter_counts(name: str) -> None:
    with torch.device("meta"):
        mine = build_model(name)
        # the parameter count does not depend on the clip size; a 1-token clip keeps HF's NumPy table cheap
        small_clip = replace(mine.config, img_size=mine.config.patch_size, num_frames=mine.config.tubelet_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decoder_norm_eps 1e-6 -> 1e-5 is expected here
            hf = VideoMAEForPreTraining(config_to_hf(small_clip))
    assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in hf.parameters())
    back = config_from_hf(config_to_hf(replace(mine.config, decoder_norm_eps=1e-5)))
    assert back == replace(mine.config, decoder_norm_eps=1e-5, layer_norm_eps=back.layer_norm_eps)


def _videomae_model(seed: int = 0, **overrides) -> VideoMAE:
    torch.manual_seed(seed)
    model = build_model("tiny", **{"img_size": 32, "num_frames": 4, **overrides}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


@pytest.mark.parametrize("wrap", ["model", "module", "raw"])
def test_pth_round_trip_original_layout(tmp_path: Path, wrap: str) -> None:
    # head width 64 everywhere, so the head counts are inferred from the weights
    model = _videomae_model(embed_dim=128, num_heads=2, depth=2, decoder_embed_dim=64, decoder_num_heads=1)
    state = to_videomae_state_dict(model)
    assert "encoder.blocks.0.attn.qkv.weight" in state and "encoder.blocks.0.attn.q_bias" in state
    assert "decoder.head.weight" in state and "encoder_to_decoder.weight" in state and "mask_token" in state
    path = tmp_path / "checkpoint.pth"
    payload = state if wrap == "raw" else {wrap: state, "epoch": 3, "args": argparse.Namespace(lr=1e-3)}
    torch.save(payload, path)
    loaded = load_videomae_pth(path, img_size=32, num_frames=4)
    assert (loaded.config.num_heads, loaded.config.decoder_num_heads, loaded.config.depth) == (2, 1, 2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    video, mask = torch.randn(2, 3, 4, 32, 32), random_mask(2, 8, 6)
    with torch.no_grad():
        assert torch.equal(model(video, mask).pred, loaded.eval()(video, mask).pred)


def test_pth_finetune_layout_and_head_override(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _videomae_model()  # tiny: 3 heads of 64 in the encoder, 3 of 32 in the decoder
    encoder_only = {
        k[len("encoder.") :]: v for k, v in to_videomae_state_dict(model).items() if k.startswith("encoder.")
    }
    path = tmp_path / "finetune.pth"
    torch.save({"module": encoder_only}, path)
    with caplog.at_level(logging.WARNING, logger="videomask.io"):
        loaded = load_videomae_pth(path, decoder_num_heads=3, decoder_embed_dim=96, decoder_depth=2)
    assert "freshly initialised" in caplog.text
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode(video), loaded.eval().encode(video))


def test_bad_keys_give_clear_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _videomae_model(embed_dim=128, num_heads=2, depth=2, decoder_embed_dim=64, decoder_num_heads=1)
    state = to_videomae_state_dict(model)
    extra = dict(state, **{"encoder.blocks.0.attn.k_bias": torch.zeros(128)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(VideomaskError, match=r"unknown key\(s\).*encoder\.blocks\.0\.attn\.k_bias"):
        load_videomae_pth(tmp_path / "extra.pth")
    with caplog.at_level(logging.WARNING, logger="videomask.io"):
        load_videomae_pth(tmp_path / "extra.pth", strict=False)
    assert "blocks.0.attn.k_bias" in caplog.text

    missing = {k: v for k, v in state.items() if k != "encoder.blocks.1.norm1.weight"}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(VideomaskError, match=r"missing from the checkpoint: blocks\.1\.norm1\.weight"):
        load_videomae_pth(tmp_path / "missing.pth")

    torch.save({"model": state}, tmp_path / "ok.pth")
    with pytest.raises(VideomaskError, match="shape mismatch"):
        load_videomae_pth(tmp_path / "ok.pth", config=build_model("tiny").config)

    torch.save({"model": state, "extra": NotAllowed()}, tmp_path / "pickle.pth")
    with pytest.raises(VideomaskError, match="weights-only"):
        load_videomae_pth(tmp_path / "pickle.pth")
    with pytest.raises(VideomaskError, match="no such checkpoint"):
        load_videomae_pth(tmp_path / "absent.pth")


def test_hf_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(VideomaskError, match="no config.json"):
        load_hf_checkpoint(tmp_path)
    folder, _ = hf_checkpoint(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    weights["videomae.encoder.layer.0.attention.attention.relative_position_bias"] = torch.zeros(3)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(VideomaskError, match="relative_position_bias"):
        load_hf_checkpoint(folder)
