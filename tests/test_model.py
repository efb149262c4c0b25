"""VideoMAE model: shapes, visible-only encoder, masked-only loss, q/v biases, decoder masking, any T/H/W."""

from __future__ import annotations

import pytest
import torch

from videomask.errors import VideomaskError
from videomask.model import MODEL_SIZES, VideoMAE, VideoMAEConfig, build_model, make_config
from videomask.patches import grid_for

# a small model that still has every part (2 encoder blocks, 1 decoder block)
SMALL = dict(
    img_size=32,
    num_frames=4,
    embed_dim=32,
    depth=2,
    num_heads=2,
    decoder_embed_dim=16,
    decoder_depth=1,
    decoder_num_heads=2,
)


def random_mask(batch: int, num_tokens: int, num_masked: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(batch, num_tokens, generator=g)
    mask = torch.zeros(batch, num_tokens, dtype=torch.bool)
    return mask.scatter_(1, scores.argsort(dim=1)[:, :num_masked], True)  # [B, L], num_masked per row


def record_input(module: torch.nn.Module, seen: dict, key: str) -> None:
    """Record the shape of ``module``'s first input under ``key`` (first call only)."""

    def hook(mod, args, out) -> None:
        seen.setdefault(key, tuple(args[0].shape))

    module.register_forward_hook(hook)


def make(**overrides) -> VideoMAE:
    torch.manual_seed(0)
    return build_model("tiny", **{**SMALL, **overrides}).eval()


@pytest.mark.parametrize("name", sorted(MODEL_SIZES))
def test_registry_sizes_build(name: str) -> None:
    with torch.device("meta"):  # no memory or init cost, shapes only
        model = build_model(name)
    n = sum(p.numel() for p in model.parameters())
    cfg = MODEL_SIZES[name]
    assert model.decoder_head.out_features == cfg.tubelet_size * cfg.patch_size**2 * 3
    assert n > 0 and len(model.blocks) == cfg.depth and len(model.decoder_blocks) == cfg.decoder_depth


def test_base_is_videomae_vit_b() -> None:
    cfg = MODEL_SIZES["base"]
    sizes = (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size, cfg.img_size, cfg.num_frames)
    assert sizes == (768, 12, 12, 16, 224, 16)
    assert (cfg.decoder_embed_dim, cfg.decoder_depth) == (384, 4)


def test_build_model_errors() -> None:
    with pytest.raises(VideomaskError, match="unknown model size"):
        build_model("huge-ish")
    with pytest.raises(VideomaskError, match="unknown model config field"):
        build_model("tiny", embed_dims=10)
    with pytest.raises(VideomaskError, match="divisible"):
        make_config("tiny", embed_dim=100, num_heads=3)
    with pytest.raises(VideomaskError, match="decoder_mask_type"):
        VideoMAEConfig(decoder_mask_type="checkers")


def test_forward_shapes_and_masked_order() -> None:
    model = make()
    video = torch.randn(2, 3, 4, 32, 32)  # L = 2*2*2 = 8
    mask = random_mask(2, 8, 6)
    out = model(video, mask)
    assert out.pred.shape == (2, 6, 2 * 16 * 16 * 3)
    assert out.target.shape == out.pred.shape and out.token_loss.shape == (2, 6)
    assert torch.equal(out.decoder_mask, mask)
    # the target rows are the masked tokens in increasing token index
    full = model.patchify_target(video)  # [B, L, P]
    assert torch.equal(out.target, full[mask].view(2, 6, -1))
    assert torch.allclose(out.loss, ((out.pred - full[mask].view(2, 6, -1)) ** 2).mean(), atol=1e-6)


def test_encoder_sees_only_visible_tokens() -> None:
    model = make()
    seen: dict[str, tuple[int, ...]] = {}
    record_input(model.blocks[0], seen, "enc")
    record_input(model.decoder_blocks[0], seen, "dec")
    video = torch.randn(2, 3, 4, 32, 32)
    model(video, random_mask(2, 8, 6))
    assert seen["enc"] == (2, 2, 32)  # L_vis = 8 - 6
    assert seen["dec"] == (2, 8, 16)  # visible + mask tokens
    assert model.encode(video, random_mask(2, 8, 5)).shape == (2, 3, 32)


def test_masked_pixels_never_reach_the_encoder_and_loss_is_on_masked_tokens_only() -> None:
    model = make()
    video = torch.randn(1, 3, 4, 32, 32)
    mask = torch.tensor([[True, True, False, True, True, True, False, True]])  # tokens 2 and 6 visible
    base = model(video, mask)
    # token 0 (i_t=0, i_h=0, i_w=0) is masked: changing its pixels changes the target and loss, not pred
    changed_masked = video.clone()
    changed_masked[:, :, 0:2, 0:16, 0:16] = torch.randn(1, 3, 2, 16, 16)
    out = model(changed_masked, mask)
    assert torch.equal(out.pred, base.pred)
    assert not torch.equal(out.target, base.target) and out.loss != base.loss
    # token 2 (i_t=0, i_h=1, i_w=0) is visible: changing it leaves the target untouched
    changed_visible = video.clone()
    changed_visible[:, :, 0:2, 16:32, 0:16] = torch.randn(1, 3, 2, 16, 16)
    out = model(changed_visible, mask)
    assert torch.equal(out.target, base.target)
    assert not torch.equal(out.pred, base.pred)  # the encoder did see it


def test_k_bias_stays_zero_under_training() -> None:
    model = make()
    model.train()
    names = [n for n, _ in model.named_parameters()]
    assert not any("k_bias" in n for n in names) and any(n.endswith("attn.q_bias") for n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    for _ in range(2):
        out = model(torch.randn(2, 3, 4, 32, 32), random_mask(2, 8, 6))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    for blk in list(model.blocks) + list(model.decoder_blocks):
        bias = blk.attn.qkv_bias()
        A = blk.attn.attn_dim
        assert torch.count_nonzero(bias[A : 2 * A]) == 0
        assert torch.count_nonzero(bias[:A]) > 0 and torch.count_nonzero(bias[2 * A :]) > 0
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "blocks.0.attn.q_bias" in changed and "blocks.0.attn.v_bias" in changed


@pytest.mark.parametrize("kind", ["run_cell", "random"])
def test_decoder_masking_shrinks_pred(kind: str) -> None:
    model = make(decoder_mask_ratio=0.5, decoder_mask_type=kind)
    video = torch.randn(2, 3, 4, 64, 64)  # L = 2*4*4 = 32
    mask = random_mask(2, 32, 24)
    seen = {}
    record_input(model.decoder_blocks[0], seen, "dec")
    out = model(video, mask)
    assert out.pred.shape[:2] == (2, 12) and out.token_loss.shape == (2, 12)
    assert seen["dec"][1] == 8 + 12  # visible + the reconstructed half of the masked tokens
    assert (out.decoder_mask <= mask).all() and (out.decoder_mask.sum(1) == 12).all()
    full = model.patchify_target(video)
    assert torch.equal(out.target, full[out.decoder_mask].view(2, 12, -1))


def test_run_cell_decoder_mask_follows_running_cell() -> None:
    model = make()
    grid = grid_for((4, 64, 64), model.tubelet)  # t'=2, h=w=4
    mask = torch.ones(1, grid.num_tokens, dtype=torch.bool)
    mask[0, 0] = False  # token 0 visible, 31 masked
    dec = model.make_decoder_mask(mask, grid, ratio=0.5, kind="run_cell").view(grid.t, grid.h, grid.w)
    # cells of rank 0 are kept first: at i_t=0 the (0,0) corner of each 2x2 cell, at i_t=1 the (1,1) corner
    assert dec[0, 0::2, 0::2].sum() == 3 and dec[1, 1::2, 1::2].all()  # (0,0) of slot 0 is the visible token


def test_explicit_decoder_mask_and_errors() -> None:
    model = make()
    video = torch.randn(1, 3, 4, 32, 32)
    mask = torch.tensor([[True, True, False, True, True, True, False, True]])
    dec = torch.tensor([[False, True, False, False, True, False, False, True]])
    out = model(video, mask, decoder_mask=dec)
    assert out.pred.shape[1] == 3 and torch.equal(out.decoder_mask, dec)
    with pytest.raises(VideomaskError, match="only masked tokens"):
        model(video, mask, decoder_mask=~mask)
    with pytest.raises(VideomaskError, match="same number"):
        model(torch.randn(2, 3, 4, 32, 32), torch.tensor([[True] * 6 + [False] * 2, [True] * 5 + [False] * 3]))
    with pytest.raises(VideomaskError, match="does not match"):
        model(video, mask[:, :7])
    with pytest.raises(VideomaskError, match="bool"):
        model(video, mask.long())
    with pytest.raises(VideomaskError, match="multiple"):
        model(torch.randn(1, 3, 5, 32, 32), mask)
    with pytest.raises(VideomaskError, match="channels"):
        model(torch.randn(1, 4, 3, 32, 32), mask)


@pytest.mark.parametrize("size", [(2, 32, 16), (6, 32, 48), (8, 48, 16)])
def test_any_frame_count_and_size(size: tuple[int, int, int]) -> None:
    model = make()
    grid = grid_for(size, model.tubelet)
    video = torch.randn(2, 3, *size)
    num_masked = max(1, grid.num_tokens * 3 // 4)
    out = model(video, random_mask(2, grid.num_tokens, num_masked))
    assert out.pred.shape == (2, num_masked, model.config.patch_dim) and torch.isfinite(out.loss)
    assert model.features(video).shape == (2, 32)
    assert model.embed_patches(video).shape == (2, grid.num_tokens, 32)


def test_embed_patches_equals_the_tubelet_conv() -> None:
    model = make()
    video = torch.randn(2, 3, 4, 32, 48)
    conv = model.patch_embed.proj(video).flatten(2).transpose(1, 2)  # [B, L, D] the Conv3d
    assert torch.allclose(model.embed_patches(video), conv, atol=1e-5)


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    video, mask = torch.randn(2, 3, 4, 32, 32), random_mask(2, 8, 6)
    grads = []
    for ckpt in (False, True):
        model = make(grad_checkpointing=ckpt).train()
        model(video, mask).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_features_with_mean_pooling_uses_fc_norm() -> None:
    model = make(use_mean_pooling=True)
    assert model.fc_norm is not None and isinstance(model.norm, torch.nn.Identity)
    feats = model.features(torch.randn(2, 3, 4, 32, 32))
    assert torch.allclose(feats.mean(dim=1), torch.zeros(2), atol=1e-5)  # layer-normed with unit affine


def test_bf16_autocast_on_cpu() -> None:
    model = make()
    video, mask = torch.randn(2, 3, 4, 32, 32), random_mask(2, 8, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(video, mask)
    assert out.pred.dtype == torch.bfloat16 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.blocks[0].attn.q_bias.grad is not None


def test_param_groups_split_decay() -> None:
    model = make()
    decay, no_decay = model.param_groups(0.05)
    decay_ids, no_decay_ids = {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}
    assert id(model.mask_token) in no_decay_ids and id(model.blocks[0].attn.q_bias) in no_decay_ids
    assert id(model.blocks[0].attn.qkv.weight) in decay_ids and no_decay["weight_decay"] == 0.0
    assert len(decay_ids | no_decay_ids) == len(list(model.parameters()))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "float_mask"])
def test_qv_bias_attention_matches_timm(fused: bool, case: str) -> None:
    """QVBiasAttention.forward is a marked copy of timm's Attention.forward: the same output as timm's
    with qkv bias = (q_bias, 0, v_bias), on both attention paths, with is_causal and attention masks."""
    from timm.layers import Attention

    from videomask.model import QVBiasAttention

    torch.manual_seed(0)
    ours, ref = QVBiasAttention(16, num_heads=2, qkv_bias=True).eval(), Attention(16, num_heads=2, qkv_bias=True).eval()
    with torch.no_grad():
        ours.q_bias.normal_(), ours.v_bias.normal_()
        ref.qkv.weight.copy_(ours.qkv.weight)
        ref.qkv.bias.copy_(ours.qkv_bias())
        ref.proj.load_state_dict(ours.proj.state_dict())
    ours.fused_attn = ref.fused_attn = fused
    x = torch.randn(2, 5, 16)
    kwargs: dict = {}
    if case == "causal":
        kwargs["is_causal"] = True
    elif case == "bool_mask":
        kwargs["attn_mask"] = (torch.rand(5, 5) > 0.3) | torch.eye(5, dtype=torch.bool)
    elif case == "float_mask":
        kwargs["attn_mask"] = torch.randn(2, 1, 5, 5)
    want = ref(x, **kwargs)
    torch.testing.assert_close(ours(x, **kwargs), want, rtol=1e-5, atol=1e-6)
    if case == "causal":  # the first token attends only to itself: a causal mask that was ignored would fail here
        v0 = ours(x[:, :1])
        torch.testing.assert_close(ours(x, is_causal=True)[:, :1], v0, rtol=1e-5, atol=1e-6)


def test_forward_draws_the_decoder_mask_from_the_generator() -> None:
    """With decoder_mask_ratio > 0 and no decoder mask, forward draws it (the one owner) from ``generator``:
    the same as drawing it with make_decoder_mask from an equally seeded generator."""
    model = make(decoder_mask_ratio=0.5)
    video = torch.randn(2, 3, 4, 32, 32)
    grid = model.grid_of(video)
    mask = random_mask(2, grid.num_tokens, 6)
    drawn = model(video, mask, generator=torch.Generator().manual_seed(4))
    dec = model.make_decoder_mask(mask, grid, generator=torch.Generator().manual_seed(4))
    assert torch.equal(drawn.decoder_mask, dec) and int(dec[0].sum()) == model.decoder_count(6) == 3
    assert torch.equal(drawn.loss, model(video, mask, dec).loss)
