"""The objectives: each one learns on a generated clip, the teacher and the clean branch get no gradient, the
contrastive clean branch sees every token, distillation moves a student toward its teacher, the heads."""

from __future__ import annotations

import pytest
import torch

from videomask.errors import VideomaskError
from videomask.model import build_model
from videomask.objectives import OBJECTIVES, FrameTeacher, Objective, build_teacher, info_nce

TINY = dict(img_size=32, num_frames=4, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2)


@pytest.fixture(scope="module")
def teacher() -> FrameTeacher:
    return build_teacher("cnn", tubelet=(2, 16, 16), size=64)


def _clip(seed: int = 0) -> torch.Tensor:
    """A normalised clip ``[2, 3, 4, 32, 32]``: a bright square moving over a gradient."""
    g = torch.Generator().manual_seed(seed)
    video = torch.linspace(-1, 1, 32).view(1, 1, 1, 1, 32).expand(2, 3, 4, 32, 32).clone()
    for t in range(4):
        video[:, :, t, 4 + 3 * t : 14 + 3 * t, 6:16] = 2.0
    return video + 0.05 * torch.randn(video.shape, generator=g)


def _mask(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(2, 8, generator=g).argsort(dim=1)
    return order < 6  # [2, 8], 6 of the 8 tokens masked per row


def _objective(name: str, teacher: FrameTeacher | None, **kwargs) -> Objective:
    torch.manual_seed(0)
    model = build_model("tiny", **TINY)
    use = teacher if name != "pixels" else None
    return Objective(model, name, teacher=use, teacher_dim=use.dim if use else 0, **kwargs)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_each_objective_learns_on_a_generated_clip(name, teacher):
    obj = _objective(name, teacher)
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=2e-3)
    video, mask = _clip(), _mask()
    losses = []
    for _ in range(25):
        out = obj(video, mask)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        obj.update_ema()
        losses.append(float(out.loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], f"{name}: {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert out.token_loss.shape[0] == 2 and out.decoder_mask.shape == (2, 8)


@pytest.mark.parametrize("name", ["teacher", "contrastive", "distill"])
def test_teacher_gets_no_gradient_and_unused_heads_are_frozen(name, teacher):
    obj = _objective(name, teacher)
    obj(_clip(), _mask()).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.net.parameters())
    m = obj.model
    assert not m.decoder_head.weight.requires_grad and m.decoder_head.weight.grad is None  # pixels head unused
    assert m.distill_head.weight.grad is not None and m.distill_head.weight.grad.abs().sum() > 0
    assert m.patch_embed.proj.weight.grad.abs().sum() > 0  # the encoder learns
    if name == "distill":
        assert m.feature_head.weight.grad is None and not m.encoder_to_decoder.weight.requires_grad
    else:
        assert m.feature_head.weight.grad.abs().sum() > 0


def test_pixels_objective_is_the_models_own_loss():
    obj = _objective("pixels", None)
    video, mask = _clip(), _mask()
    assert torch.equal(obj(video, mask).loss, obj.model(video, mask).loss)
    assert obj.model.feature_head is None and obj.model.contrast_head is None


@pytest.mark.parametrize("clean", ["stopgrad", "ema"])
def test_contrastive_clean_branch_sees_every_token_without_gradient(clean, teacher, monkeypatch):
    """The masked anchors are in the clean branch's input (the whole clip, no mask) and the clean pass
    records no gradient; with ``ema`` it is the EMA copy that runs, and the EMA moves after a step."""
    obj = _objective("contrastive", teacher, clean=clean)
    encoder = obj.ema if clean == "ema" else obj.model
    calls = []
    real = type(encoder).encode

    def spy(self, video, mask=None):
        if self is encoder and mask is None and video.shape[0] == 2:
            calls.append((video.clone(), torch.is_grad_enabled()))
        return real(self, video, mask)

    monkeypatch.setattr(type(encoder), "encode", spy)
    video, mask = _clip(), _mask()
    out = obj(video, mask)
    assert len(calls) == 1, "one clean pass"
    seen, grad_on = calls[0]
    assert torch.equal(seen, video) and not grad_on  # every token, masked anchors included; no gradient
    out.loss.backward()
    assert "contrastive" in out.terms and out.terms["contrastive"] > 0
    if clean == "ema":
        before = [p.clone() for p in obj.ema.parameters()]
        assert all(p.grad is None for p in obj.ema.parameters())
        with torch.no_grad():
            for p in obj.model.parameters():
                p.add_(0.1)
        obj.update_ema()
        assert any(not torch.equal(a, b) for a, b in zip(before, obj.ema.parameters()))


def test_info_nce_prefers_the_matching_row():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(16, 8, generator=g)
    good = info_nce(target + 0.01 * torch.randn(16, 8, generator=g), target, 0.1)
    shuffled = info_nce(target[torch.randperm(16, generator=g)], target, 0.1)
    assert good.shape == (16,) and float(good.mean()) < 0.1 < float(shuffled.mean())
    # groups cap the negatives: every row still finds its positive
    assert torch.allclose(info_nce(target, target, 0.1, group=4).mean(), info_nce(target, target, 0.1, group=4).mean())
    assert float(info_nce(target, target, 0.1, group=4).mean()) < float(info_nce(target, target, 0.1).mean()) + 1e-4


def test_distillation_moves_a_student_toward_a_fixed_teacher(teacher):
    """Feature distillation on generated clips: the student's tokens through its head approach the teacher's
    features on held-out clips, far below where they started and below the trivial all-zero prediction."""
    obj = _objective("distill", teacher)
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=3e-3)
    held = _clip(seed=99)
    target = teacher(held)

    def error() -> float:
        with torch.no_grad():
            return float((obj.model.distill_head(obj.model.encode(held)) - target).pow(2).mean())

    start = error()
    for step in range(60):
        out = obj(_clip(seed=step), _mask(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    end = error()
    zero = float(target.pow(2).mean())  # LayerNorm targets: about 1
    assert end < 0.5 * start and end < 0.5 * zero, (start, end, zero)


def test_heads_are_added_to_a_pixel_checkpoint_and_kept_in_its_state(teacher):
    model = build_model("tiny", **TINY)
    assert model.feature_head is None
    obj = Objective(model, "contrastive", teacher=teacher, teacher_dim=teacher.dim)
    assert sorted(obj.added) == ["contrast_head", "distill_head", "feature_head"]
    assert model.config.feature_dim == teacher.dim == 192 and model.config.contrast_dim == 32
    rebuilt = build_model("tiny", **TINY, feature_dim=192, contrast_dim=32)
    rebuilt.load_state_dict(model.state_dict())  # strict: the config rebuilds every head
    with pytest.raises(VideomaskError, match="feature_dim is 192"):
        model.add_heads(feature_dim=96)


def test_objective_mistakes_are_one_line_errors(teacher):
    model = build_model("tiny", **TINY)
    with pytest.raises(VideomaskError, match="needs a teacher"):
        Objective(model, "teacher")
    with pytest.raises(VideomaskError, match="objective must be one of"):
        Objective(model, "pixel")
    with pytest.raises(VideomaskError, match="clean must be one of"):
        Objective(model, "contrastive", clean="momentum")
    with pytest.raises(VideomaskError, match="unknown teacher"):
        build_teacher("resnet")


def test_hugging_face_export_leaves_the_objective_heads_out(teacher, tmp_path):
    """A teacher / contrastive model exports to a Hugging Face folder (the pixel model there) that loads back
    with the same encoder and decoder; its objective heads stay in videomask's own weights only."""
    pytest.importorskip("transformers")
    from videomask.io import load_hf_checkpoint, save_hf_checkpoint

    model = build_model("tiny", **TINY)
    Objective(model, "contrastive", teacher=teacher, teacher_dim=teacher.dim)
    save_hf_checkpoint(model, tmp_path / "hf")
    back = load_hf_checkpoint(tmp_path / "hf")
    assert back.feature_head is None and back.contrast_head is None
    mine = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith(("feature_head", "distill_head", "contrast_head", "fc_norm"))
    }
    theirs = back.state_dict()
    assert sorted(mine) == sorted(k for k in theirs if not k.startswith("fc_norm"))
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
