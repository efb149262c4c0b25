"""Reconstruction pictures: ``reconstruct`` arithmetic on known answers, ``videomask show-recon`` for every
masker and checkpoint kind, and the TensorBoard pictures written during training (``train.recon_every``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_squares import square_inputs
from helpers_train import tiny_run, write_videos
from PIL import Image

from videomask.cli import main
from videomask.io import save_model_weights
from videomask.masking import available_maskers
from videomask.model import VideoMAE, VideoMAEConfig
from videomask.patches import grid_for, patchify
from videomask.viz import MASK_GREY, NOT_RECONSTRUCTED, draw_recon, reconstruct

NUM_FRAMES, SIZE = 8, 64


def tiny_config(**overrides) -> VideoMAEConfig:
    values = dict(
        img_size=SIZE,
        num_frames=NUM_FRAMES,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    values.update(overrides)
    return VideoMAEConfig(**values)


class FixedPrediction(VideoMAE):
    """A VideoMAE whose decoder output is replaced: ``oracle`` = the loss target itself, ``zeros`` = 0."""

    def __init__(self, config: VideoMAEConfig, kind: str) -> None:
        super().__init__(config)
        self.kind = kind

    def forward(self, video, mask, decoder_mask=None):
        out = super().forward(video, mask, decoder_mask)
        out.pred = out.target.clone() if self.kind == "oracle" else torch.zeros_like(out.target)
        out.token_loss = (out.pred - out.target).pow(2).mean(dim=-1)
        out.loss = out.token_loss.mean()
        return out


def random_mask(num_tokens: int, num_masked: int, seed: int = 0) -> torch.Tensor:
    order = torch.rand(num_tokens, generator=torch.Generator().manual_seed(seed)).argsort()
    return torch.zeros(1, num_tokens, dtype=torch.bool).scatter_(1, order[None, :num_masked], True)


def clip_video(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised clip ``[1, 3, T, H, W]`` and its pixels in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, 3, NUM_FRAMES, SIZE, SIZE, generator=g)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1, 1)
    return (pixels - mean) / std, pixels


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_a_perfect_prediction_reconstructs_the_original(norm_pix_loss):
    """The un-normalisation is the exact inverse of the loss's target, and every patch lands in its place."""
    model = FixedPrediction(tiny_config(norm_pix_loss=norm_pix_loss), "oracle")
    video, pixels = clip_video()
    L = grid_for((NUM_FRAMES, SIZE, SIZE), model.tubelet).num_tokens
    mask = random_mask(L, int(0.75 * L))
    rec = reconstruct(model, video, mask)
    assert rec.norm_pix_loss is norm_pix_loss
    assert torch.allclose(rec.pixels, pixels[0], atol=1e-5)
    assert rec.loss == pytest.approx(0.0, abs=1e-10)
    assert torch.isnan(rec.token_error[~mask[0]]).all() and (rec.token_error[mask[0]] == 0).all()


def test_zero_prediction_in_norm_pix_space_is_each_patch_mean():
    """With norm_pix_loss a prediction of 0 means 'the patch's mean': each masked patch becomes its own mean colour."""
    model = FixedPrediction(tiny_config(norm_pix_loss=True), "zeros")
    video, pixels = clip_video(1)
    L = grid_for((NUM_FRAMES, SIZE, SIZE), model.tubelet).num_tokens
    mask = random_mask(L, L // 2, seed=1)
    rec = reconstruct(model, video, mask)
    want = patchify(pixels, model.tubelet)[0].unflatten(-1, (-1, 3))  # [L, t*p*p, 3]
    got = patchify(rec.pixels[None], model.tubelet)[0].unflatten(-1, (-1, 3))
    m = mask[0]
    assert torch.allclose(got[m], want[m].mean(dim=1, keepdim=True).expand_as(want[m]), atol=1e-5)
    assert torch.allclose(got[~m], want[~m], atol=1e-6)  # visible patches as given


def test_error_map_is_the_models_per_token_loss():
    torch.manual_seed(0)
    model = VideoMAE(tiny_config())
    video, _ = clip_video(2)
    L = grid_for((NUM_FRAMES, SIZE, SIZE), model.tubelet).num_tokens
    mask = random_mask(L, int(0.9 * L), seed=2)
    rec = reconstruct(model, video, mask)
    with torch.no_grad():
        out = model.eval()(video, mask)
    assert torch.allclose(rec.token_error[mask[0]], out.token_loss[0], atol=1e-6)
    assert rec.loss == pytest.approx(float(out.loss), rel=1e-6)
    assert model.training is False  # reconstruct restores the mode it found (eval here)


def test_draw_recon_panels():
    """Masked input: masked patches fully grey; heat map: visible patches light grey, the worst patch bright."""
    torch.manual_seed(0)
    model = VideoMAE(tiny_config())
    video, pixels = clip_video(3)
    frames = (pixels[0] * 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    from videomask.patches import ClipGeometry
    from videomask.viz import Clip

    clip = Clip("x", frames, video, list(range(NUM_FRAMES)), ClipGeometry.identity(SIZE, SIZE), frames)
    L = grid_for((NUM_FRAMES, SIZE, SIZE), model.tubelet).num_tokens
    mask = random_mask(L, L - 4, seed=3)
    rec = reconstruct(model, video, mask)
    pic = draw_recon(clip, rec, model.tubelet, scale=1, title="t")
    T, H, W = NUM_FRAMES, SIZE, SIZE
    assert pic.frames.shape[0] == T and pic.frames.shape[2] == 4 * W + 3 * 4
    # below the caption and the panel labels (their height depends on how the caption wraps): the first
    # panel is the clip's frame as it is at scale 1
    top = next(y for y in range(pic.frames.shape[1] - H + 1) if np.array_equal(pic.frames[0, y : y + H, :W], frames[0]))
    body = pic.frames[0, top : top + H]
    masked_panel, heat = body[:, W + 4 : 2 * W + 4], body[:, 3 * (W + 4) :]
    first = int(torch.nonzero(mask[0, :16])[0])  # a masked token of the first time slot
    i, j = divmod(first, W // 16)
    assert np.array_equal(masked_panel[i * 16 + 8, j * 16 + 8], MASK_GREY.astype(np.uint8))
    vis = int(torch.nonzero(~mask[0, :16])[0]) if bool((~mask[0, :16]).any()) else None
    if vis is not None:
        vi, vj = divmod(vis, W // 16)
        assert np.array_equal(heat[vi * 16 + 8, vj * 16 + 8], NOT_RECONSTRUCTED)
        assert np.array_equal(masked_panel[vi * 16 + 8, vj * 16 + 8], frames[0, vi * 16 + 8, vj * 16 + 8])
    worst = int(torch.nan_to_num(rec.token_error[:16], nan=-1).argmax())
    wi, wj = divmod(worst, W // 16)
    assert heat[wi * 16 + 8, wj * 16 + 8].sum() > 500  # inferno's top end is a light yellow
    assert pic.grid.shape[1] > 4 * 16  # four rows of a column per slot, with row names


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recon")
    files = square_inputs(root, NUM_FRAMES, SIZE)
    torch.manual_seed(0)
    model = VideoMAE(
        tiny_config(embed_dim=64, num_heads=1, decoder_embed_dim=64, decoder_num_heads=1)
    )  # a .pth infers 64-wide heads
    from videomask.train import model_meta

    save_model_weights(model, root / "run" / "final" / "model.safetensors", model_meta(model))
    from videomask.io import save_hf_checkpoint, to_videomae_state_dict

    save_hf_checkpoint(model, root / "hf")
    torch.save({"model": to_videomae_state_dict(model)}, root / "videomae.pth")
    return {
        **files,
        "videomask": root / "run" / "final",
        "hf": root / "hf",
        "pth": root / "videomae.pth",
    }


def _options(name: str, inputs: dict[str, Path]) -> list[str]:
    if name == "difference":
        return ["--stats", str(inputs["stats"])]
    if name == "objects":
        return ["--boxes", str(inputs["boxes"]), "--alpha", "1"]
    return []


def _printed_loss(text: str) -> float:
    return float(re.search(r"loss ([\d.]+)", text).group(1))


@pytest.mark.parametrize("name", available_maskers())
def test_show_recon_writes_gif_and_png_for_every_masker(name, inputs, tmp_path, capsys):
    out = tmp_path / f"{name}.gif"
    argv = [
        "show-recon",
        str(inputs["video"]),
        "--checkpoint",
        str(inputs["videomask"]),
        "--masker",
        name,
        "-o",
        str(out),
        "--sampling-rate",
        "2",
        "--scale",
        "1",
        *_options(name, inputs),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    masked = float(re.search(r"masked ([\d.]+)% of tokens", text).group(1))
    assert masked == pytest.approx(90.0, abs=3.0)
    assert _printed_loss(text) > 0 and "norm_pix_loss" in text
    with Image.open(out) as gif:
        assert gif.n_frames == NUM_FRAMES
    with Image.open(out.with_suffix(".png")) as png:
        assert png.size[1] > 4 * SIZE  # four rows of panels
    if name == "objects":  # the square is the anchor object: the loss is split into anchor / other patches
        assert re.search(r"anchor patches [\d.]+, other masked [\d.]+", text)


@pytest.mark.parametrize("kind", ["videomask", "hf", "pth"])
def test_show_recon_reads_every_checkpoint_kind_to_the_same_picture(kind, inputs, tmp_path, capsys):
    """One model saved three ways: the same mask and weights give the same loss."""
    out = tmp_path / "r.gif"
    argv = [
        "show-recon",
        str(inputs["video"]),
        "--checkpoint",
        str(inputs[kind]),
        "-o",
        str(out),
        "--scale",
        "1",
        "--num-frames",
        str(NUM_FRAMES),
        "--size",
        str(SIZE),
    ]  # a .pth does not record the clip size
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.split(":")[1].strip().startswith(f"{kind} model")
    reference = inputs["root"] / "reference_loss.txt"
    if kind == "videomask":
        reference.write_text(str(_printed_loss(text)))
    elif reference.exists():
        assert _printed_loss(text) == pytest.approx(float(reference.read_text()), abs=2e-4)


def test_show_recon_without_norm_pix_says_so(inputs, tmp_path, capsys):
    torch.manual_seed(0)
    model = VideoMAE(tiny_config(norm_pix_loss=False))
    from videomask.train import model_meta

    weights = tmp_path / "model.safetensors"
    save_model_weights(model, weights, model_meta(model))
    assert main(["show-recon", str(inputs["video"]), "--checkpoint", str(weights), "-o", str(tmp_path / "r.gif")]) == 0
    assert "norm_pix_loss" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show-recon", "missing.mp4", "--checkpoint", "{ckpt}", "-o", "x.gif"], "no such video file"),
        (["show-recon", "{video}", "--checkpoint", "{root}/nope", "-o", "x.gif"], "does not exist"),
        (["show-recon", "{video}", "--checkpoint", "{ckpt}", "--masker", "nope", "-o", "x.gif"], "unknown masker"),
        (["show-recon", "{video}", "--checkpoint", "{ckpt}", "--masker", "difference", "-o", "x.gif"], "needs --stats"),
        (
            ["show-recon", "{video}", "--checkpoint", "{ckpt}", "--tubelet", "2", "8", "-o", "x.gif"],
            "differs from the model",
        ),
        (["show-recon", "{video}", "--checkpoint", "{ckpt}", "--size", "60", "-o", "x.gif"], "not divisible"),
    ],
)
def test_show_recon_bad_input_is_one_line_and_exit_2(argv, message, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(video=inputs["video"], root=inputs["root"], ckpt=inputs["videomask"]) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.gif").exists()


# ----------------------------------------------------------------------------- during training


def test_training_writes_reconstruction_pictures_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from videomask.config import config_from_dict, validate_config
    from videomask.train import train

    data = write_videos(tmp_path / "videos", count=2)
    cfg = validate_config(
        config_from_dict(
            tiny_run(
                data,
                tmp_path / "run",
                mask={"ratio": 0.9},
                optim={"lr": None, "warmup_steps": 0},  # the config defaults (the blr rule)
                train={"steps": 4, "save_every": 0, "recon_every": 2, "tensorboard": True},
            )
        )
    )
    result = train(cfg)
    assert result.ok
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "recon" in events.Tags()["images"]
    images = events.Images("recon")
    assert [im.step for im in images] == [2, 4]
    first, last = (np.array(Image.open(__import__("io").BytesIO(im.encoded_image_string))) for im in images)
    assert first.shape == last.shape and first.shape[0] > 4 * 32
    assert not np.array_equal(first, last)  # the model changed between the two pictures (same clip, same mask)


def test_recon_every_zero_writes_no_picture(tmp_path):
    from videomask.config import config_from_dict, validate_config
    from videomask.errors import VideomaskError
    from videomask.viz import ReconLogger

    cfg = validate_config(config_from_dict({"train": {"steps": 1, "recon_every": 0}}))
    assert ReconLogger.for_run(cfg, None, None, writer=object()) is None
    with pytest.raises(VideomaskError, match="recon_every"):
        validate_config(config_from_dict({"train": {"steps": 1, "recon_every": -1}}))
