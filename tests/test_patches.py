"""Tubelet patches: round trip, errors, Hugging Face VideoMAE token / pixel order, box rasteriser."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from videomask.errors import VideomaskError
from videomask.patches import (
    ClipGeometry,
    Grid,
    as_tubelet,
    boxes_to_patch_grid,
    grid_for,
    patchify,
    rasterise_boxes,
    tokens_to_tubes,
    tubes_to_tokens,
    unpatchify,
)


@pytest.mark.parametrize(
    "tubelet, size",
    [
        ((2, 16, 16), (4, 32, 48)),
        ((1, 8, 8), (3, 16, 24)),
        ((4, 4, 4), (8, 12, 8)),
        ((3, 2, 5), (6, 4, 10)),
        ((2, 7, 7), (2, 14, 21)),
    ],
)
def test_patchify_round_trip(tubelet, size):
    video = torch.randn(2, 3, *size)
    tokens = patchify(video, tubelet)
    grid = grid_for(size, tubelet)
    t, ph, pw = tubelet
    assert tokens.shape == (2, grid.num_tokens, t * ph * pw * 3)
    assert torch.equal(unpatchify(tokens, grid, tubelet), video)


def test_token_and_pixel_order_by_hand():
    """Token i_t*(h*w) + i_h*w + i_w holds pixels in (t, p, p, C) order."""
    tubelet = (2, 2, 2)
    video = torch.arange(3 * 4 * 4 * 6, dtype=torch.float32).reshape(1, 3, 4, 4, 6)  # [B, C, T, H, W]
    tokens = patchify(video, tubelet)  # grid 2 x 2 x 3
    i_t, i_h, i_w = 1, 0, 2
    token = tokens[0, i_t * 6 + i_h * 3 + i_w]
    expected = [
        video[0, c, i_t * 2 + dt, i_h * 2 + dy, i_w * 2 + dx]
        for dt in range(2)
        for dy in range(2)
        for dx in range(2)
        for c in range(3)
    ]
    assert token.tolist() == [float(v) for v in expected]


@pytest.mark.parametrize("size", [(5, 32, 32), (4, 30, 32), (4, 32, 33), (0, 32, 32)])
def test_not_divisible_is_a_clear_error(size):
    with pytest.raises(VideomaskError, match="not a positive multiple of the tubelet"):
        grid_for(size, (2, 16, 16))
    if size[0] > 0:
        with pytest.raises(VideomaskError, match="not a positive multiple"):
            patchify(torch.zeros(1, 3, *size), (2, 16, 16))


def test_bad_shapes_and_tubelets():
    with pytest.raises(VideomaskError, match=r"\[B, C, T, H, W\]"):
        patchify(torch.zeros(3, 4, 32, 32), (2, 16, 16))
    with pytest.raises(VideomaskError, match="unpatchify expects"):
        unpatchify(torch.zeros(1, 7, 1536), Grid(2, 2, 2), (2, 16, 16))
    assert as_tubelet((2, 16)) == (2, 16, 16)
    assert as_tubelet(2, patch=8) == (2, 8, 8)
    with pytest.raises(VideomaskError):
        as_tubelet((1, 2, 3, 4))
    with pytest.raises(VideomaskError):
        as_tubelet(2)


def test_tubes_tokens_round_trip():
    grid = Grid(3, 2, 2)
    tubes = torch.tensor([[True, False, False, True]])
    tokens = tubes_to_tokens(tubes, grid)
    assert tokens.tolist() == [[True, False, False, True] * 3]
    assert torch.equal(tokens_to_tubes(tokens, grid, "any"), tubes)
    values = torch.arange(12.0).view(1, 12)
    assert tokens_to_tubes(values, grid, "mean").tolist() == [[4.0, 5.0, 6.0, 7.0]]
    assert tokens_to_tubes(values, grid, "max").tolist() == [[8.0, 9.0, 10.0, 11.0]]
    with pytest.raises(VideomaskError, match="unknown time reduction"):
        tokens_to_tubes(values, grid, "median")


def _tiny_hf_config(norm_pix_loss: bool = False):
    from transformers import VideoMAEConfig

    return VideoMAEConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        norm_pix_loss=norm_pix_loss,
    )


def test_token_order_matches_hf_patch_embedding():
    """HF's Conv3d patch embedding == patchify + the same weights as a linear map, token by token."""
    from transformers.models.videomae.modeling_videomae import VideoMAEPatchEmbeddings

    torch.manual_seed(0)
    config = _tiny_hf_config()
    embed = VideoMAEPatchEmbeddings(config).eval()
    video = torch.randn(2, 3, 4, 32, 32)  # [B, C, T, H, W]
    with torch.no_grad():
        hf = embed(video.permute(0, 2, 1, 3, 4))  # HF takes [B, T, C, H, W] -> [B, L, D]
        weight = embed.projection.weight  # [D, C, t, p, p]
        linear = rearrange(weight, "d c t ph pw -> d (t ph pw c)")  # our pixel order (t, p, p, C)
        ours = patchify(video, (2, 8, 8)) @ linear.T + embed.projection.bias  # [B, L, D]
    assert hf.shape == ours.shape == (2, 2 * 4 * 4, 32)
    torch.testing.assert_close(ours, hf, rtol=1e-4, atol=1e-5)
    # a single bright tubelet lands on the token with index i_t*(h*w) + i_h*w + i_w
    spot = torch.zeros(1, 3, 4, 32, 32)
    spot[:, :, 2:4, 8:16, 24:32] = 1.0  # i_t=1, i_h=1, i_w=3
    with torch.no_grad():
        out = embed(spot.permute(0, 2, 1, 3, 4)) - embed.projection.bias
    changed = out.abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [1 * 16 + 1 * 4 + 3]


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_pixel_targets_match_hf_pretraining_labels(monkeypatch, norm_pix_loss):
    """The labels HF VideoMAEForPreTraining regresses == patchify(unnormalised video)[mask] (per-token norm
    optional)."""
    from transformers import VideoMAEForPreTraining

    torch.manual_seed(0)
    config = _tiny_hf_config(norm_pix_loss)
    model = VideoMAEForPreTraining(config).eval()
    captured = {}

    def capture(self, input, target):
        captured["labels"] = target.detach().clone()
        return torch.nn.functional.mse_loss(input, target)

    monkeypatch.setattr(torch.nn.MSELoss, "forward", capture)
    video = torch.randn(2, 3, 4, 32, 32)  # [B, C, T, H, W], normalised
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[0, [0, 5, 17, 31]] = True
    mask[1, [2, 3, 20, 30]] = True
    with torch.no_grad():
        model(video.permute(0, 2, 1, 3, 4), bool_masked_pos=mask)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
    target = patchify(video * std + mean, (2, 8, 8))  # [B, L, t*p*p*C]
    if norm_pix_loss:
        per_pixel = target.view(2, 32, 2 * 8 * 8, 3)  # channels last inside a token
        std = per_pixel.var(-2, unbiased=True, keepdim=True).sqrt()
        per_pixel = (per_pixel - per_pixel.mean(-2, keepdim=True)) / (std + 1e-6)
        target = per_pixel.view(2, 32, -1)
    expected = target[mask].view(2, 4, -1)  # masked tokens in increasing index
    torch.testing.assert_close(captured["labels"], expected, rtol=1e-5, atol=1e-5)


def test_geometry_tensor_round_trip_and_clamp():
    g = ClipGeometry(120.0, 160.0, 10.0, 20.0, 100.0, 80.0, 50.0, 40.0, True)
    t = g.to_tensor()
    assert t.dtype == torch.float64 and t.shape == (9,)
    assert ClipGeometry.from_tensor(t) == g
    # box partly outside the crop region is clamped onto the output clip
    out = ClipGeometry(100, 100, 0, 0, 50, 50, 50, 50).map_boxes(torch.tensor([[40.0, -5.0, 70.0, 20.0]]))
    assert out.tolist() == [[40.0, 0.0, 50.0, 20.0]]


def test_map_boxes_crop_scale_flip_by_hand():
    # region x 20..100, y 10..110 of a 120x160 frame -> 40 wide x 50 high output (scale 0.5), mirrored
    g = ClipGeometry(120, 160, 10, 20, 100, 80, 50, 40, True)
    box = torch.tensor([[30.0, 30.0, 50.0, 70.0]])  # original pixels
    # unflipped: x (30-20)*0.5=5 .. (50-20)*0.5=15, y (30-10)*0.5=10 .. 30; mirrored in a 40-wide clip: 25..35
    assert g.map_boxes(box).tolist() == [[25.0, 10.0, 35.0, 30.0]]


def test_boxes_to_patch_grid_overlap_rule():
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [15.0, 15.0, 17.0, 17.0]])
    grid = boxes_to_patch_grid(boxes, 32, 32, (8, 8))
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 0] = True  # first box fills patch (0, 0) exactly, touches nothing else
    expected[1:3, 1:3] = True  # second box straddles the corner of 4 patches
    assert torch.equal(grid, expected)
    # with min_overlap = 0.5 only the fully covered patch stays
    assert boxes_to_patch_grid(boxes, 32, 32, (8, 8), min_overlap=0.5).nonzero().tolist() == [[0, 0]]
    assert not boxes_to_patch_grid(torch.zeros(0, 4), 32, 32, (8, 8)).any()


def _tokens(t: int, cells: list[tuple[int, int]], w: int = 4, h: int = 4) -> list[int]:
    return sorted(t * h * w + i_h * w + i_w for i_h, i_w in cells)


def test_rasterise_boxes_under_crop_and_flip():
    """A 64x64 frame, crop (y 16..48, x 16..48) resized 32 -> 32, patches 8x8, tubelet 2 frames, T = 4."""
    tubelet = (2, 8, 8)
    plain = ClipGeometry(64, 64, 16, 16, 32, 32, 32, 32, False)
    flipped = ClipGeometry(64, 64, 16, 16, 32, 32, 32, 32, True)
    empty = torch.zeros(0, 4)
    box = torch.tensor([[16.0, 16.0, 24.0, 24.0]])  # -> output (0, 0, 8, 8): patch row 0, col 0
    frames = [box, empty, empty, empty]  # only frame 0 -> temporal slot 0
    mask = rasterise_boxes(frames, plain, tubelet)
    assert mask.shape == (2 * 4 * 4,)
    assert mask.nonzero().flatten().tolist() == _tokens(0, [(0, 0)])
    # mirrored: output x 24..32 -> column 3
    assert rasterise_boxes(frames, flipped, tubelet).nonzero().flatten().tolist() == _tokens(0, [(0, 3)])
    # a box in frame 3 (slot 1) spanning x 30..42, y 36..50 original -> out x 14..26, y 20..32 (clamped)
    box2 = torch.tensor([[30.0, 36.0, 42.0, 50.0]])
    frames2 = [empty, empty, empty, box2]
    expected = _tokens(1, [(2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3)])
    assert rasterise_boxes(frames2, plain, tubelet).nonzero().flatten().tolist() == expected
    # flipped: x 32-26=6 .. 32-14=18 -> columns 0, 1, 2
    expected_flip = _tokens(1, [(2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)])
    assert rasterise_boxes(frames2, flipped, tubelet).nonzero().flatten().tolist() == expected_flip
    # a box entirely outside the crop covers nothing
    outside = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])] + [empty] * 3
    assert not rasterise_boxes(outside, plain, tubelet).any()


def test_rasterise_boxes_with_resize():
    """Crop region 32x32 at (0, 0) of a 64x128 frame, scaled x2 to 64x64, patch 16, tubelet 1."""
    g = ClipGeometry(64, 128, 0, 0, 32, 32, 64, 64, False)
    box = torch.tensor([[8.0, 0.0, 16.0, 8.0]])  # -> out x 16..32, y 0..16: row 0, col 1
    mask = rasterise_boxes([box], g, (1, 16, 16))
    assert mask.nonzero().flatten().tolist() == [1]
    with pytest.raises(VideomaskError, match="not a positive multiple"):
        rasterise_boxes([box] * 3, g, (2, 16, 16))
