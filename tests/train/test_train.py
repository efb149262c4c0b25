"""The training loop on a tiny model and tiny generated clips: outputs, learning, NaN steps, loss split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers_train import tiny_run, write_clip
from safetensors.torch import load_file

from videomask import cli
from videomask import train as train_mod
from videomask.config import load_config
from videomask.errors import VideomaskError
from videomask.io import MODEL_FILE, read_weights_metadata
from videomask.train import loss_split, lr_at, peak_lr, step_seed, train
from videomask.train import step as train_step_mod
from videomask.train.checkpoint import list_checkpoints, load_checkpoint


def tiny_raw(videos: Path, out_dir: Path, **sections) -> dict:
    return tiny_run(videos, out_dir, **sections)


def tiny_config(tmp_path: Path, videos: Path, overrides=(), **sections):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_raw(videos, tmp_path / "run", **sections)))
    return load_config(path, list(overrides)), path


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- pure rules


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 20, 1.0, 4, 0.1, "cosine") for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # cosine decays monotonically
    assert lr_at(10, 20, 1.0, 4, 0.1, "constant") == 1.0


def test_base_lr_rule(tmp_path, videos):
    cfg, _ = tiny_config(
        tmp_path, videos, ["optim.lr=null", "optim.blr=2.56e-4", "data.num_sample=2", "train.accum_steps=3"]
    )
    # effective batch = batch 2 x samples 2 x accum 3 x world 4 = 48 clips
    assert peak_lr(cfg, world_size=4) == pytest.approx(2.56e-4 * 48 / 256)


def test_step_seed_is_a_pure_function():
    assert step_seed(0, 5, 0, 0) == step_seed(0, 5, 0, 0)
    assert (
        len(
            {
                step_seed(0, 5, 0, 0),
                step_seed(0, 6, 0, 0),
                step_seed(0, 5, 1, 0),
                step_seed(0, 5, 0, 1),
                step_seed(1, 5, 0, 0),
            }
        )
        == 5
    )


def test_loss_split_lines_up_with_masked_tokens():
    mask = torch.tensor([[True, False, True, True], [False, True, True, True]])
    anchors = torch.tensor([[True, True, False, False], [False, False, False, True]])
    token_loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # masked tokens in increasing index
    a_sum, a_n, o_sum, o_n = loss_split(token_loss, mask, anchors).tolist()
    assert (a_sum, a_n) == (1.0 + 6.0, 2.0)
    assert (o_sum, o_n) == (2.0 + 3.0 + 4.0 + 5.0, 4.0)
    assert loss_split(token_loss, mask, None).tolist() == [0.0, 0.0, 21.0, 6.0]


# ----------------------------------------------------------------------------- runs


def test_short_run_writes_run_folder(tmp_path, videos):
    cfg, _ = tiny_config(tmp_path, videos, ["train.tensorboard=true"])
    result = train(cfg)
    run = tmp_path / "run"
    assert result.ok and result.steps == 6 and result.skipped_steps == 0
    assert load_config(run / "config.yaml") == cfg
    records = read_metrics(run)
    assert [r["step"] for r in records] == [2, 4, 6]
    for r in records:
        assert math.isfinite(r["loss"]) and r["lr"] > 0 and r["clips_per_s"] > 0
        assert r["loss_anchor"] is None and r["anchor_share"] is None  # the tube masker has no anchors
        assert r["loss_other"] == pytest.approx(r["loss"], rel=1e-5)
    assert [p.name for p in list_checkpoints(run)] == ["step_00000003", "step_00000006"]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    # the final weights rebuild the model (architecture from the stored config) and match the checkpoint
    final = run / "final" / MODEL_FILE
    meta = read_weights_metadata(final)
    assert json.loads(meta["model_config"])["embed_dim"] == 32 and meta["step"] == "6"
    again, _ = tiny_config(tmp_path / "again", videos, ["model.checkpoint=" + str(run / "final")])
    model, source = train_mod.build_model_from_config(again)
    state = load_checkpoint(run / "checkpoints" / "step_00000006")
    assert source == "videomask" and state["step"] == 6 and state["train"]["skipped_steps"] == 0
    saved = load_file(str(run / "checkpoints" / "step_00000006" / MODEL_FILE))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_run_folder_with_checkpoints_needs_resume(tmp_path, videos):
    cfg, path = tiny_config(tmp_path, videos, ["train.steps=3"])
    train(cfg)
    with pytest.raises(VideomaskError, match="--resume"):
        train(load_config(path, ["train.steps=3"]))
    # with resume and nothing left to do, the run just re-exports
    result = train(load_config(path, ["train.steps=3", "train.resume=true"]))
    assert result.ok and result.steps == 3 and (tmp_path / "run" / "final" / MODEL_FILE).is_file()


def test_loss_decreases_on_a_repeated_batch(tmp_path, videos):
    """One video, centre clip, batch 1: the same clip every step; the loss must fall clearly."""
    one = tmp_path / "one"
    one.mkdir()
    write_clip(one / "only.mp4", seed=3)
    cfg, _ = tiny_config(
        tmp_path,
        one,
        [
            "data.batch_size=1",
            "data.sampling=center",
            "train.steps=40",
            "train.log_every=1",
            "train.save_every=0",
            "optim.lr=3e-3",
            "optim.schedule=constant",
            "optim.warmup_steps=0",
            "mask.ratio=0.5",
        ],
    )
    result = train(cfg)
    losses = [r["loss"] for r in result.history]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(f"loss first 5 steps {first:.4f} -> last 5 steps {last:.4f}")
    assert last < 0.8 * first


def test_nan_steps_are_skipped_and_last_good_checkpoint_kept(tmp_path, videos, monkeypatch, capsys):
    """NaN at step 3 (skipped, run goes on), then at steps 6-8: stop after 3 in a row, keep step 4's checkpoint."""
    calls = {"n": 0}
    real_forward = train_mod.forward_model

    def flaky_forward(model, video, mask, decoder_mask, **kwargs):
        calls["n"] += 1
        out = real_forward(model, video, mask, decoder_mask, **kwargs)
        if calls["n"] in (3, 6, 7, 8):
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(train_step_mod, "forward_model", flaky_forward)
    cfg, path = tiny_config(
        tmp_path,
        videos,
        ["train.steps=20", "train.save_every=2", "train.log_every=1", "train.max_bad_steps=3", "train.keep_last=5"],
    )
    result = train(cfg)
    run = tmp_path / "run"
    assert not result.ok and "3 consecutive non-finite losses or gradients at step 8" in result.stopped
    assert result.steps == 8 and result.skipped_steps == 4
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002", "step_00000004"]
    assert result.last_checkpoint.name == "step_00000004"
    assert not (run / "final").exists()
    records = read_metrics(run)
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 1, 1, 2, 3, 4]
    assert records[2]["loss"] is None and math.isfinite(records[3]["loss"])
    kept = load_file(str(run / "checkpoints" / "step_00000004" / MODEL_FILE))
    assert all(torch.isfinite(v).all() for v in kept.values())
    # the CLI reports the stop with exit status 1 (resuming the same folder, NaN again at once)
    calls["n"] = 5
    assert (
        cli.main(
            [
                "pretrain",
                "--config",
                str(path),
                "train.steps=20",
                "train.save_every=2",
                "train.max_bad_steps=3",
                "train.log_every=1",
                "--resume",
            ]
        )
        == 1
    )
    assert "stopped" in capsys.readouterr().err


def test_anchor_and_other_loss_logged_with_difference_masker(tmp_path, videos):
    """A masker that returns anchors (difference, pixel-embedding statistics) gives the two losses."""
    from videomask.data import ClipTransform, VideoDataset
    from videomask.difference import PixelEmbedder, fit_statistics

    ds = VideoDataset.from_folder(
        videos, num_frames=4, sampling_rate=2, sampling="center", transform=ClipTransform(size=(32, 32))
    )
    stats = fit_statistics(
        ds, ds, PixelEmbedder(dim=8, tubelet=(2, 16, 16)), num_words=4, num_anchors=2, batch_size=2, progress=False
    )
    stats.save(tmp_path / "stats.safetensors")
    cfg, _ = tiny_config(
        tmp_path,
        videos,
        [
            "mask.name=difference",
            f"mask.options.stats={tmp_path / 'stats.safetensors'}",
            "mask.options.alpha=0.5",
            "train.steps=4",
        ],
    )
    result = train(cfg)
    assert result.ok
    for r in result.history:
        assert r["anchor_share"] is not None and 0.0 <= r["anchor_share"] <= 1.0
        if 0.0 < r["anchor_share"] < 1.0:
            assert math.isfinite(r["loss_anchor"]) and math.isfinite(r["loss_other"])
            mix = r["anchor_share"] * r["loss_anchor"] + (1 - r["anchor_share"]) * r["loss_other"]
            assert mix == pytest.approx(r["loss"], rel=1e-4)
    assert any(r["loss_anchor"] is not None for r in result.history)


def test_cnn_difference_masker_reads_a_score_cache_built_once(tmp_path, videos):
    """With an expensive embedder (cnn) the run scores its videos once into the scores folder and the masker
    looks them up; cache=none computes them in the step instead. Both train."""
    from videomask.data import ClipTransform, VideoDataset
    from videomask.difference import CNNEmbedder, fit_statistics
    from videomask.train import build_masker_from_config, prepare_score_cache

    ds = VideoDataset.from_folder(
        videos, num_frames=4, sampling_rate=2, sampling="center", transform=ClipTransform(size=(32, 32))
    )
    stats = fit_statistics(
        ds,
        ds,
        CNNEmbedder(tubelet=(2, 16, 16)),
        num_words=4,
        num_anchors=2,
        num_prototypes=16,
        batch_size=2,
        progress=False,
    )
    stats.save(tmp_path / "stats.safetensors")
    opts = ["mask.name=difference", f"mask.options.stats={tmp_path / 'stats.safetensors'}", "train.steps=2"]
    cfg, _ = tiny_config(tmp_path, videos, opts)
    result = train(cfg)
    assert result.ok and (result.out_dir / "scores" / "meta.json").is_file()
    from videomask.train import DistInfo

    info = DistInfo(rank=0, world_size=1, local_rank=0)
    path = prepare_score_cache(cfg, ds, info, torch.device("cpu"))
    assert path == str(result.out_dir / "scores")
    from videomask.train import build_model_from_config

    model, _ = build_model_from_config(cfg)
    assert build_masker_from_config(cfg, model, torch.device("cpu"), path).cache is not None
    cfg2, _ = tiny_config(tmp_path / "b", videos, opts + ["mask.options.cache=none"])
    assert prepare_score_cache(cfg2, ds, info, torch.device("cpu")) is None
    result2 = train(cfg2)
    assert result2.ok and not (result2.out_dir / "scores").exists()


@pytest.mark.parametrize("name", ["random", "tube"])
def test_model_free_maskers_train(tmp_path, videos, name):
    cfg, _ = tiny_config(
        tmp_path,
        videos,
        [
            f"mask.name={name}",
            "train.steps=2",
            "train.accum_steps=2",
            "train.clip_grad=1.0",
            "train.grad_checkpointing=true",
        ],
    )
    result = train(cfg)
    assert result.ok and result.steps == 2
    assert result.history[-1]["grad_norm"] is not None and math.isfinite(result.history[-1]["loss"])


def test_fp16_on_cpu_is_a_user_error(tmp_path, videos):
    cfg, _ = tiny_config(tmp_path, videos, ["train.precision=fp16"])
    with pytest.raises(VideomaskError, match="fp16 needs CUDA"):
        train(cfg)


def test_bf16_autocast_runs_on_cpu(tmp_path, videos):
    cfg, _ = tiny_config(tmp_path, videos, ["train.precision=bf16", "train.steps=2"])
    result = train(cfg)
    assert result.ok and math.isfinite(result.history[-1]["loss"])


def test_hugging_face_checkpoint_in_and_out(tmp_path, videos):
    """Start from a save_pretrained folder; final/hf loads back in transformers with the trained weights."""
    from transformers import VideoMAEConfig as HFConfig
    from transformers import VideoMAEForPreTraining

    torch.manual_seed(0)
    hf_cfg = HFConfig(
        image_size=32,
        num_frames=4,
        tubelet_size=2,
        patch_size=16,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        norm_pix_loss=True,
    )
    start = VideoMAEForPreTraining(hf_cfg)
    start.save_pretrained(tmp_path / "hf_start")
    cfg, _ = tiny_config(
        tmp_path, videos, [f"model.checkpoint={tmp_path / 'hf_start'}", "train.steps=2", "model.overrides={}"]
    )
    result = train(cfg)
    assert result.ok and (result.final_dir / "hf" / "config.json").is_file()
    back = VideoMAEForPreTraining.from_pretrained(result.final_dir / "hf")
    before, after = start.state_dict(), back.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    # the exported weights are the run's final weights
    model, source = train_mod.build_model_from_config(
        load_config(None, ["train.steps=1", f"model.checkpoint={result.final_dir / 'hf'}"])
    )
    final = load_file(str(result.final_dir / MODEL_FILE))
    assert source == "hf" and all(torch.equal(v, final[k]) for k, v in model.state_dict().items())


def test_loader_workers_do_not_change_the_result(tmp_path, videos):
    """Per-item randomness comes from (seed, epoch, index): 0 or 2 persistent workers, same weights over epochs."""
    finals = []
    for workers in (0, 2):
        cfg, _ = tiny_config(
            tmp_path / f"w{workers}", videos, [f"data.num_workers={workers}", "train.steps=5", "train.save_every=0"]
        )
        result = train(cfg)
        assert result.ok and result.history[-1]["epoch"] >= 2  # crossed epoch boundaries
        finals.append(load_file(str(result.final_dir / MODEL_FILE)))
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
