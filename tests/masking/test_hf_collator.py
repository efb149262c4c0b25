"""``videomask.masking.MaskingCollator`` for ``transformers.Trainer`` / ``VideoMAEForPreTraining``, and the Trainer
example."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from helpers_squares import SquareDetector, write_square_clip
from transformers import VideoMAEConfig as HFConfig
from transformers import VideoMAEForPreTraining

from videomask.data import VideoDataset
from videomask.detect import BoxCache, build_cache
from videomask.errors import VideomaskError
from videomask.io import load_hf_checkpoint
from videomask.masking import MaskingCollator, available_maskers, build_masker

ROOT = Path(__file__).resolve().parents[2]
T, S = 4, 32  # clip frames and side: grid 2 x 2 x 2 = 8 tokens


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("collator")
    (root / "videos").mkdir()
    for i in range(2):
        write_square_clip(
            root / "videos" / f"sq{i}.mp4",
            num_frames=12,
            height=48,
            width=48,
            size=16,
            top=8 + 8 * i,
            left=8,
            dark=30,
            bright=230,
            crf=None,
        )
    boxes = root / "boxes.jsonl"
    build_cache(
        [(f"sq{i}.mp4", str(root / "videos" / f"sq{i}.mp4")) for i in range(2)],
        boxes,
        SquareDetector(),
        stride=1,
        progress=False,
    )
    dataset = VideoDataset.from_path(
        root / "videos", num_frames=T, sampling_rate=2, size=S, tubelet=(2, 16, 16), sampling="center"
    )
    from videomask.difference import PixelEmbedder, fit_statistics

    g = torch.Generator().manual_seed(0)
    source = [torch.randn(2, 3, T, S, S, generator=g) * 0.3]
    target = [s.clone() for s in source]
    target[0][:, :, :, :16, :16] = 2.0
    stats = fit_statistics(
        source,
        target,
        PixelEmbedder(dim=8, tubelet=(2, 16, 16)),
        num_words=2,
        num_anchors=1,
        init_tokens=8,
        progress=False,
    )
    stats.save(root / "stats.safetensors")
    return {"dataset": dataset, "boxes": boxes, "stats": root / "stats.safetensors", "root": root}


def _masker(name: str, data: dict):
    options = {"tubelet": (2, 16, 16), "ratio": 0.5}
    if name == "difference":
        options = {"stats": str(data["stats"]), "ratio": 0.5, "direction": "mask"}
    if name == "objects":
        options.update(boxes=BoxCache.load(data["boxes"]), alpha=1.0, direction="mask")
    return build_masker(name, **options)


@pytest.mark.parametrize("name", available_maskers())
def test_collator_gives_hf_layout_and_the_maskers_masks(name, data):
    items = [data["dataset"][0], data["dataset"][1]]
    masker = _masker(name, data)
    collator = MaskingCollator(masker, return_anchors=True, seed=3)
    out = collator(items)
    assert set(out) == {"pixel_values", "bool_masked_pos", "anchors"}
    video = torch.stack([i["video"] for i in items])  # [B, C, T, H, W]
    assert out["pixel_values"].shape == (2, T, 3, S, S) and torch.equal(out["pixel_values"], video.transpose(1, 2))
    mask = out["bool_masked_pos"]
    assert mask.dtype == torch.bool and mask.shape == (2, 8)
    assert (mask.sum(dim=1) == mask.sum(dim=1)[0]).all() and 0 < int(mask[0].sum()) < 8
    assert out["anchors"].dtype == torch.bool and out["anchors"].shape == (2, 8)
    if (
        name == "objects"
    ):  # the bright square is a detected object, at least a budget of tubes: alpha 1 masks only anchors
        assert out["anchors"].any() and not (mask & ~out["anchors"]).any()
        assert torch.equal(out["anchors"], masker.generate(collator.batch_of(items)).anchors)
    if name in ("random", "tube"):
        assert not out["anchors"].any()


def test_collator_is_reproducible_with_a_seed_and_varies_between_calls(data):
    items = [data["dataset"][0], data["dataset"][1]]
    a, b = (
        MaskingCollator("random", tubelet=(2, 16, 16), seed=0),
        MaskingCollator("random", tubelet=(2, 16, 16), seed=0),
    )
    first = [a(items)["bool_masked_pos"] for _ in range(6)]
    assert all(torch.equal(x, b(items)["bool_masked_pos"]) for x in first)
    assert len({tuple(m.flatten().tolist()) for m in first}) > 1
    assert "anchors" not in a(items)


def test_collator_takes_hf_pixel_values_and_bare_tensors():
    clips = torch.randn(3, 3, T, S, S)  # [B, C, T, H, W]
    collator = MaskingCollator("tube", tubelet=(2, 16, 16), ratio=0.75)
    from_tensors = collator(list(clips))
    from_hf = collator([{"pixel_values": c.transpose(0, 1)} for c in clips])  # HF items are [T, C, H, W]
    for out in (from_tensors, from_hf):
        assert torch.equal(out["pixel_values"], clips.transpose(1, 2))
        assert (
            out["bool_masked_pos"].shape == (3, 8) and int(out["bool_masked_pos"][0].sum()) == 6
        )  # 3 of 4 tubes x 2 slots


def test_collator_output_trains_hf_videomae_and_matches_videomask(tmp_path, data):
    """The batch goes straight into VideoMAEForPreTraining; its loss is videomask's on the same weights and mask."""
    torch.manual_seed(0)
    hf = VideoMAEForPreTraining(
        HFConfig(
            image_size=S,
            num_frames=T,
            patch_size=16,
            tubelet_size=2,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            decoder_hidden_size=16,
            decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2,
            decoder_intermediate_size=32,
        )
    ).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_hf_checkpoint(tmp_path / "hf").eval()
    batch = MaskingCollator(_masker("objects", data), seed=1)([data["dataset"][0], data["dataset"][1]])
    with torch.no_grad():
        hf_loss = float(hf(**batch).loss)
        our_loss = float(ours(batch["pixel_values"].transpose(1, 2), batch["bool_masked_pos"]).loss)
    assert math.isfinite(hf_loss) and hf_loss == pytest.approx(our_loss, rel=1e-4)


def test_collator_bad_items_are_videomask_errors():
    collator = MaskingCollator("tube", tubelet=(2, 16, 16))
    with pytest.raises(VideomaskError, match="remove_unused_columns=False"):
        collator([{"label": 1}])
    with pytest.raises(VideomaskError, match="empty batch"):
        collator([])
    with pytest.raises(VideomaskError, match="only taken with a masker name"):
        MaskingCollator(build_masker("tube"), ratio=0.5)


def test_trainer_example_trains_a_tiny_hf_model(tmp_path):
    """examples/hf_trainer.py: a few Trainer steps on the shipped clips with the collator (needs accelerate)."""
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (in the test extras)")
    spec = importlib.util.spec_from_file_location("hf_trainer_example", ROOT / "examples" / "hf_trainer.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--steps", "3", "--out", str(tmp_path / "out")])
    assert summary["steps"] == 3 and len(summary["losses"]) == 3 and summary["finite"]
    assert all(0.1 < v < 10 for v in summary["losses"])  # the normalised-pixel MSE of an untrained model is about 1
    assert (tmp_path / "out" / "summary.json").is_file()
