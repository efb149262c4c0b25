"""Masks from every registered masker drop into ``transformers.VideoMAEForPreTraining(bool_masked_pos=...)``."""

from __future__ import annotations

import pytest
import torch

from videomask.difference import PixelEmbedder, fit_statistics
from videomask.masking import MASKERS, ScoredMasker, available_maskers, build_masker
from videomask.patches import ClipGeometry, grid_for

transformers = pytest.importorskip("transformers")

B, C, T, H, W = 2, 3, 4, 64, 64
TUBELET = (2, 16, 16)
GRID = grid_for((T, H, W), TUBELET)  # 2 x 4 x 4 = 32 tokens


def _video(n: int, seed: int, with_object: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(n, C, T, H, W, generator=g) * 0.3  # [n, C, T, H, W]
    if with_object:
        video[:, 0, :, :32, :32] = 2.0
    return video


def _batch(video: torch.Tensor) -> dict:
    n = video.shape[0]
    return {
        "video": video,
        "video_id": [f"v{i}" for i in range(n)],
        "frame_indices": torch.arange(T).expand(n, T),
        "geometry": ClipGeometry.identity(H, W).to_tensor().expand(n, 9),
    }


def _options(name: str, direction: str) -> dict:
    options = {"tubelet": TUBELET, "ratio": 0.75}
    if name in ("random", "tube"):
        return options
    options["direction"] = direction
    if name == "difference":
        options["stats"] = fit_statistics(
            [_video(4, s, False) for s in range(2)],
            [_video(4, 10 + s) for s in range(2)],
            PixelEmbedder(dim=16, tubelet=TUBELET),
            num_words=6,
            num_anchors=1,
            init_tokens=64,
            progress=False,
        )
    if name == "objects":
        from videomask.detect import BoxCache

        records = [
            {"video": f"v{i}", "frame": f, "box": [0, 0, 32, 32], "label": "person", "score": 1.0}
            for i in range(B)
            for f in range(T)
        ]
        options["boxes"] = BoxCache.from_records(records)
    return options


@pytest.fixture(scope="module")
def hf_model():
    config = transformers.VideoMAEConfig(
        image_size=H,
        patch_size=TUBELET[1],
        num_channels=C,
        num_frames=T,
        tubelet_size=TUBELET[0],
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        norm_pix_loss=True,
    )
    torch.manual_seed(0)
    return transformers.VideoMAEForPreTraining(config).eval()


CASES = [
    (name, d)
    for name in available_maskers()
    for d in (("mask", "keep") if issubclass(MASKERS[name], ScoredMasker) else ("mask",))
]


@pytest.mark.parametrize("name,direction", CASES)
def test_masks_feed_hf_videomae_pretraining(name, direction, hf_model):
    masker = build_masker(name, **_options(name, direction))
    video = _video(B, 0)
    mask = masker(_batch(video), torch.Generator().manual_seed(0))  # [B, L] bool
    assert mask.shape == (B, GRID.num_tokens) and mask.dtype == torch.bool
    pixel_values = video.permute(0, 2, 1, 3, 4)  # [B, T, C, H, W] at the HF boundary
    with torch.no_grad():
        out = hf_model(pixel_values=pixel_values, bool_masked_pos=mask)
    n_masked = int(mask[0].sum())
    assert out.logits.shape == (B, n_masked, TUBELET[0] * TUBELET[1] * TUBELET[2] * C)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
