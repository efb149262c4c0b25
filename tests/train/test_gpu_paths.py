"""The GPU and multi-GPU paths of the training loop that a CPU can check: device choice under torchrun,
precision choice on stubbed GPUs, resume across a precision change, non-finite gradients, host syncs,
masks from a CPU generator. The parts that need a GPU are skipped without CUDA (and run by
``benchmarks/gpu_smoke.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from helpers_train import TINY_MODEL, tiny_run
from safetensors.torch import load_file

from videomask import train as train_mod
from videomask.config import load_config
from videomask.errors import VideomaskError
from videomask.io import MODEL_FILE
from videomask.model import VideoMAE, build_model
from videomask.train import loop as train_loop
from videomask.train import step as train_step_mod
from videomask.train import train
from videomask.train.checkpoint import STATE_FILE, load_checkpoint, save_checkpoint

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def tiny_config(tmp_path: Path, videos: Path, overrides=()):
    raw = tiny_run(videos, tmp_path / "run")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, list(overrides))


# ----------------------------------------------------------------------------- item 8: device choice


@pytest.mark.parametrize(
    "name, local_rank, world, visible, expected",
    [
        ("auto", 0, 1, 4, "cuda:0"),
        ("cuda", 0, 1, 4, "cuda:0"),
        ("cuda:2", 0, 1, 4, "cuda:2"),  # one process: an explicit GPU as given
        ("auto", 3, 4, 4, "cuda:3"),  # torchrun, every GPU visible: the local rank's GPU
        ("cuda", 3, 4, 4, "cuda:3"),
        ("cuda:0", 3, 4, 4, "cuda:3"),  # an explicit index would put every rank on one GPU
        ("cuda:1", 1, 2, 1, "cuda:0"),  # one visible GPU per process (CUDA_VISIBLE_DEVICES per rank)
        ("auto", 5, 8, 1, "cuda:0"),
        ("cpu", 1, 2, 4, "cpu"),
    ],
)
def test_device_from_local_rank_and_visible_count(name, local_rank, world, visible, expected):
    assert train_mod.pick_device(name, local_rank, world, cuda_available=True, visible=visible) == torch.device(
        expected
    )


def test_device_without_cuda_and_bad_choices():
    assert train_mod.pick_device("auto", 1, 2, cuda_available=False, visible=0) == torch.device("cpu")
    with pytest.raises(VideomaskError, match="CUDA is not available"):
        train_mod.pick_device("cuda", 0, 1, cuda_available=False, visible=0)
    with pytest.raises(VideomaskError, match="only 2 GPU"):
        train_mod.pick_device("cuda:2", 0, 1, cuda_available=True, visible=2)
    with pytest.raises(VideomaskError, match="local rank 2 has no GPU"):
        train_mod.pick_device("auto", 2, 3, cuda_available=True, visible=2)
    with pytest.raises(VideomaskError, match="not a device"):
        train_mod.pick_device("gpu0", 0, 1, cuda_available=True, visible=1)


# ----------------------------------------------------------------------------- item 3: precision


@pytest.mark.parametrize(
    "capability, expected",
    [
        ((6, 1), torch.float16),  # Pascal
        ((7, 0), torch.float16),  # V100
        ((7, 5), torch.float16),  # T4
        ((8, 0), torch.bfloat16),  # A100
        ((9, 0), torch.bfloat16),  # H100
    ],
)
def test_auto_precision_needs_native_bf16(monkeypatch, capability, expected):
    """torch.cuda.is_bf16_supported() says True on V100/T4 (emulation); auto must pick fp16 there."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: True if including_emulation else capability >= (8, 0),
    )
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert train_mod.resolve_precision("auto", torch.device("cuda:0")) is expected
    assert train_mod.resolve_precision("bf16", torch.device("cuda:0")) is torch.bfloat16  # an explicit choice stays
    assert train_mod.resolve_precision("auto", torch.device("cpu")) is None


# ----------------------------------------------------------------------------- item 2: scaler state


def _tiny_state(tmp_path: Path, scaler) -> Path:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return save_checkpoint(tmp_path, 1, model, optimizer=opt, scaler=scaler)


def test_fp16_scaler_resumes_from_a_checkpoint_without_one(tmp_path):
    """fp32/bf16/CPU runs save the disabled scaler's {}; an enabled scaler (fp16) starts afresh from it."""
    path = _tiny_state(tmp_path / "a", torch.amp.GradScaler("cpu", enabled=False))
    enabled = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    model = torch.nn.Linear(3, 2)
    state = load_checkpoint(path, model, optimizer=torch.optim.AdamW(model.parameters()), scaler=enabled)
    assert state["scaler_restored"] is False and enabled.get_scale() == 1024.0
    # an fp16 checkpoint restores its scale into an fp16 run, and a disabled scaler ignores it
    saver = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0)
    path = _tiny_state(tmp_path / "b", saver)
    again = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    model = torch.nn.Linear(3, 2)
    state = load_checkpoint(path, model, optimizer=torch.optim.AdamW(model.parameters()), scaler=again)
    assert state["scaler_restored"] is True and again.get_scale() == 8.0
    off = torch.amp.GradScaler("cpu", enabled=False)
    assert load_checkpoint(path, model, scaler=off)["scaler_restored"] is True and not off.is_enabled()


@needs_cuda
def test_resume_fp32_run_in_fp16_on_cuda(tmp_path, videos):
    """A CPU fp32 run's checkpoint resumed on CUDA with precision=fp16 (and back to bf16)."""
    cfg = tiny_config(tmp_path, videos, ["train.steps=3", "train.save_every=3"])
    assert train(cfg).ok
    for steps, precision in ((5, "fp16"), (7, "bf16")):
        cfg = tiny_config(
            tmp_path,
            videos,
            [
                f"train.steps={steps}",
                "train.save_every=1",
                "run.device=cuda",
                f"train.precision={precision}",
                "train.resume=true",
            ],
        )
        result = train(cfg)
        assert result.ok and result.steps == steps


# ----------------------------------------------------------------------------- item 7: non-finite gradient


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_non_finite_gradient_with_finite_loss_is_skipped(tmp_path, videos, monkeypatch, precision):
    """A NaN gradient behind a finite loss at step 3 of 4: no update, counted as skipped, step 4 trains on."""
    calls = {"n": 0}
    armed = {"on": False}
    losses: list[float] = []
    real_forward = train_mod.forward_model

    def poison(grad):
        if armed["on"]:
            armed["on"] = False
            return grad * float("nan")
        return grad

    def poisoned_forward(model, video, mask, decoder_mask, **kwargs):
        calls["n"] += 1
        out = real_forward(model, video, mask, decoder_mask, **kwargs)
        if calls["n"] == 1:
            next(p for p in model.parameters() if p.ndim > 1).register_hook(poison)
        armed["on"] = calls["n"] == 3
        losses.append(float(out.loss.detach()))
        return out

    monkeypatch.setattr(train_step_mod, "forward_model", poisoned_forward)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    real_save = save_checkpoint

    def save_and_keep(run_dir, step, model, **kw):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return real_save(run_dir, step, model, **kw)

    monkeypatch.setattr(train_loop, "save_checkpoint", save_and_keep)
    # clip_grad 0: the check must not depend on clipping
    cfg = tiny_config(
        tmp_path,
        videos,
        [
            "train.steps=4",
            "train.save_every=1",
            "train.log_every=1",
            "train.clip_grad=0",
            f"train.precision={precision}",
        ],
    )
    result = train(cfg)
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses), "the losses must stay finite"
    assert result.ok and result.steps == 4 and result.skipped_steps == 1
    assert [r["skipped_steps"] for r in result.history] == [0, 0, 1, 1]
    assert result.history[2]["loss"] is None and result.history[2]["grad_norm"] is None
    assert all(math.isfinite(result.history[i]["grad_norm"]) for i in (0, 1, 3))
    assert all(torch.isfinite(v).all() for snap in snapshots.values() for v in snap.values())
    assert sorted(snapshots) == [1, 2, 4]  # no checkpoint right after a skipped step
    assert any(not torch.equal(snapshots[2][k], snapshots[4][k]) for k in snapshots[2])  # step 4 trained
    # three optimizer updates in four steps: step 3 did not touch the weights or the moments
    state = load_file(str(result.last_checkpoint / STATE_FILE))
    assert {float(v) for k, v in state.items() if k.startswith("optimizer.") and k.endswith(".step")} == {3.0}


# ----------------------------------------------------------------------------- item 9: host syncs


def test_mask_checks_only_on_first_and_logged_steps(tmp_path, videos, monkeypatch):
    """The model's mask checks (one host sync each) run on the first, logged and last steps only; in
    between the masker's count is passed on, and the run ends with the same weights."""
    calls = {"n": 0}
    real_check = VideoMAE._check_mask

    def counting_check(self, mask, batch, num_tokens):
        calls["n"] += 1
        return real_check(self, mask, batch, num_tokens)

    finals = []
    for log_every in (1, 4):
        calls["n"] = 0
        monkeypatch.setattr(VideoMAE, "_check_mask", counting_check)
        cfg = tiny_config(
            tmp_path / f"log{log_every}",
            videos,
            [
                "train.steps=9",
                "train.save_every=0",
                f"train.log_every={log_every}",
                "model.overrides.decoder_mask_ratio=0.5",
            ],
        )
        result = train(cfg)
        assert result.ok
        finals.append(load_file(str(result.final_dir / MODEL_FILE)))
        # one check (the mask; the model draws the decoder mask itself) per checked step: all 9 steps, or 1, 4, 8, 9
        assert calls["n"] == (9 if log_every == 1 else 4)
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def test_trusted_counts_give_the_same_output():
    torch.manual_seed(0)
    model = build_model("tiny", **TINY_MODEL["overrides"], img_size=32, num_frames=4, decoder_mask_ratio=0.5).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    grid = model.grid_of(video)
    mask = torch.zeros(2, grid.num_tokens, dtype=torch.bool)
    mask[0, :6], mask[1, 2:8] = True, True
    dec = model.make_decoder_mask(mask, grid, generator=torch.Generator().manual_seed(1))
    assert torch.equal(
        dec, model.make_decoder_mask(mask, grid, generator=torch.Generator().manual_seed(1), num_masked=6)
    )
    checked = model(video, mask, dec)
    trusted = model(video, mask, dec, num_masked=6, num_decoded=model.decoder_count(6))
    assert torch.equal(checked.loss, trusted.loss) and torch.equal(checked.decoder_mask, trusted.decoder_mask)
    with pytest.raises(VideomaskError, match="bool"):  # the cheap checks still run
        model(video, mask.float(), num_masked=6)


# ----------------------------------------------------------------------------- items 10, 11: CPU generator


@needs_cuda
def test_decoder_mask_from_a_cpu_generator_on_cuda():
    model = build_model("tiny", **TINY_MODEL["overrides"], img_size=32, num_frames=4, decoder_mask_ratio=0.5)
    grid = model.config.grid((4, 32, 32))
    mask = torch.zeros(2, grid.num_tokens, dtype=torch.bool)
    mask[:, :8] = True
    cpu = model.make_decoder_mask(mask, grid, generator=torch.Generator().manual_seed(3))
    gpu = model.make_decoder_mask(mask.cuda(), grid, generator=torch.Generator().manual_seed(3))
    assert gpu.is_cuda and torch.equal(cpu, gpu.cpu())


@needs_cuda
@pytest.mark.parametrize("name", ["random", "tube", "objects"])
def test_masks_from_a_cpu_generator_match_across_devices(name):
    from videomask.masking import build_masker

    options = {"tubelet": (2, 8, 8), "ratio": 0.5}
    masker = build_masker(name, **options)
    video = torch.randn(3, 3, 4, 32, 32)
    batch = {"video": video}
    if name == "objects":
        anchors = torch.zeros(3, 32, dtype=torch.bool)
        anchors[:, :5] = True
        batch["anchors"] = anchors
    cpu = masker.generate(batch, generator=torch.Generator().manual_seed(5)).mask
    gpu = masker.generate({**batch, "video": video.cuda()}, generator=torch.Generator().manual_seed(5)).mask
    assert gpu.is_cuda and torch.equal(cpu, gpu.cpu())
