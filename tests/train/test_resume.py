"""Checkpoints: safetensors state round trip, atomic folders, pruning, and bit-exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from clips import make_corrupt_files, make_garbled_file
from helpers_train import TINY_MODEL, tiny_run, write_videos
from safetensors.torch import load_file

from videomask.config import load_config
from videomask.errors import VideomaskError
from videomask.io import MODEL_FILE, load_model_weights, read_weights_metadata, save_model_weights
from videomask.train import train
from videomask.train.checkpoint import (
    STATE_FILE,
    capture_rng_state,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)


def small_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 2))


def test_checkpoint_round_trip_restores_everything(tmp_path):
    torch.manual_seed(0)
    model = small_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05)
    for _ in range(3):
        model(torch.randn(4, 6)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    path = save_checkpoint(
        tmp_path,
        3,
        model,
        optimizer=opt,
        scaler=scaler,
        train_state={"epoch": 2, "batches_in_epoch": 1},
        rng_states=[capture_rng_state()],
        model_meta={"model_config": {"width": 5}},
    )
    expected_draws = (torch.rand(3), np.random.rand(2), random.random())

    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    other = small_model()
    other_opt = torch.optim.AdamW(other.parameters(), lr=1.0)
    state = load_checkpoint(find_latest_checkpoint(tmp_path), other, optimizer=other_opt, scaler=scaler)
    restore_rng_state(*state["rng"][0])
    assert state["step"] == 3 and state["train"] == {"epoch": 2, "batches_in_epoch": 1}
    assert torch.equal(torch.rand(3), expected_draws[0])
    assert np.array_equal(np.random.rand(2), expected_draws[1]) and random.random() == expected_draws[2]
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict(), other_opt.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for idx in sa["state"]:
        for key in sa["state"][idx]:
            assert torch.equal(sa["state"][idx][key], sb["state"][idx][key])
    # one more step from both gives the same weights
    x = torch.randn(4, 6)
    for m, o in ((model, opt), (other, other_opt)):
        m(x).pow(2).mean().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
    assert json.loads(read_weights_metadata(path / MODEL_FILE)["model_config"]) == {"width": 5}


def test_incomplete_folders_are_ignored_and_pruned(tmp_path):
    model = small_model()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model)
    root = tmp_path / "checkpoints"
    (root / ".tmp-step_00000009-1").mkdir()  # a crash while writing: never picked
    (root / "step_00000008").mkdir()  # a folder without its files: never picked
    (root / "step_00000008" / MODEL_FILE).write_bytes(b"")
    assert find_latest_checkpoint(tmp_path).name == "step_00000004"
    prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    assert not (root / ".tmp-step_00000009-1").exists()
    # a damaged newest file falls back to the previous checkpoint
    (root / "step_00000004" / STATE_FILE).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        assert find_latest_checkpoint(tmp_path).name == "step_00000003"


def test_mismatched_weights_name_the_keys(tmp_path):
    save_model_weights(small_model(), tmp_path / "w.safetensors")
    with pytest.raises(VideomaskError, match="missing keys .*unexpected keys"):
        load_model_weights(torch.nn.Linear(6, 5), tmp_path / "w.safetensors")


def _write_run(tmp_path: Path, corrupt: bool = False) -> Path:
    videos = write_videos(tmp_path / "videos")
    if corrupt:  # files that never open, and one whose frames 18-35 cannot be decoded (some clips fail)
        make_corrupt_files(videos / "bad")
        make_garbled_file(videos / "garbled.mp4")
    raw = {
        "run": {"out_dir": "killed", "seed": 3, "device": "cpu"},
        "data": {
            "path": str(videos),
            "num_frames": 4,
            "sampling_rate": 2,
            "size": 32,
            "batch_size": 1,
            "num_workers": 0,
        },
        "model": TINY_MODEL,
        "mask": {"name": "random", "ratio": 0.75},
        "optim": {"lr": 2e-3, "warmup_steps": 4},
        # 4 videos, batch 1, accumulation 2: 2 steps per epoch; a checkpoint every 5 steps is mid-epoch
        "train": {
            "steps": 40,
            "accum_steps": 2,
            "clip_grad": 1.0,
            "log_every": 1,
            "save_every": 5,
            "keep_last": 2,
            "progress": False,
            "tensorboard": False,
        },
    }
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    return cfg_path


def _wait_and_kill(pid: int, alive, first_checkpoint: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not first_checkpoint.exists() and alive() and time.monotonic() < deadline:
        time.sleep(0.002)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _check_identical(tmp_path: Path, cfg_path: Path, killed_at: list[str]) -> None:
    """Run uninterrupted in this process (one thread, like the killed run) and compare bit for bit."""
    result = train(load_config(cfg_path, [f"run.out_dir={tmp_path / 'straight'}"]))
    assert result.ok and result.steps == 40
    resumed = load_file(str(tmp_path / "killed" / "final" / MODEL_FILE))
    straight = load_file(str(tmp_path / "straight" / "final" / MODEL_FILE))
    assert resumed.keys() == straight.keys()
    different = [k for k in straight if not torch.equal(resumed[k], straight[k])]
    assert not different, (
        f"resumed weights differ from the uninterrupted run in {different[:5]} (killed at {killed_at})"
    )
    # the metrics log holds every step exactly once (lines written after the checkpoint were replayed)
    resumed_log = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    straight_log = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed_log] == list(range(1, 41))
    assert [r["loss"] for r in resumed_log] == [r["loss"] for r in straight_log]


def _run_cli(argv: list[str]) -> None:
    from videomask import cli

    torch.set_num_threads(1)
    os._exit(cli.main(argv))


def test_resume_after_sigkill_is_bit_identical(tmp_path, monkeypatch):
    """A forked training process is SIGKILLed after a mid-epoch checkpoint; --resume ends bit-identical."""
    import multiprocessing

    from videomask.data import prepare_process

    prepare_process()  # the gc-before-fork hook, as the CLI sets it up
    from videomask import cli

    cfg_path = _write_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["pretrain", "--config", str(cfg_path)]
    proc = multiprocessing.get_context("fork").Process(target=_run_cli, args=(argv,))
    proc.start()
    _wait_and_kill(proc.pid, proc.is_alive, tmp_path / "killed" / "checkpoints" / "step_00000005")
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, f"the run was not killed mid-run (exit code {proc.exitcode})"
    killed_at = [p.name for p in list_checkpoints(tmp_path / "killed")]
    assert killed_at and not (tmp_path / "killed" / "final").exists()

    assert cli.main(argv + ["--resume"]) == 0
    _check_identical(tmp_path, cfg_path, killed_at)


@pytest.mark.slow
def test_resume_after_sigkill_fresh_interpreters(tmp_path):
    """The same with fresh ``python -m videomask`` processes for the killed and the resumed run."""
    cfg_path = _write_run(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "videomask", "pretrain", "--config", str(cfg_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_and_kill(proc.pid, lambda: proc.poll() is None, tmp_path / "killed" / "checkpoints" / "step_00000005")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (
        f"the run was not killed mid-run: rc={proc.returncode} {err.decode()[-500:]}"
    )
    killed_at = [p.name for p in list_checkpoints(tmp_path / "killed")]
    assert killed_at and not (tmp_path / "killed" / "final").exists()
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    _check_identical(tmp_path, cfg_path, killed_at)


def test_resume_at_an_epoch_end_keeps_the_drop_path_noise(tmp_path):
    """Stop at the end of an epoch and resume: with drop-path on, the weights equal an uninterrupted run's.

    The resumed run starts one more loader iterator than the uninterrupted one; that must not draw from
    the global torch RNG, which drop-path uses."""
    videos = write_videos(tmp_path / "videos")
    raw = tiny_run(
        videos,
        tmp_path / "straight",
        run={"seed": 1},
        model={"overrides": {**TINY_MODEL["overrides"], "depth": 2, "drop_path": 0.5}},
        optim={"lr": 2e-3, "warmup_steps": 0, "schedule": "constant"},  # the lr does not depend on train.steps
        train={"log_every": 1, "save_every": 0},
    )
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    assert train(load_config(cfg_path, [])).ok
    stopped = tmp_path / "stopped"  # 4 videos in batches of 2: step 3 ends epoch 1
    assert train(load_config(cfg_path, [f"run.out_dir={stopped}", "train.steps=3"])).ok
    assert train(load_config(cfg_path, [f"run.out_dir={stopped}", "train.resume=true"])).steps == 6
    a = load_file(str(tmp_path / "straight" / "final" / MODEL_FILE))
    b = load_file(str(stopped / "final" / MODEL_FILE))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_resume_with_corrupt_files_at_random_kill_points_is_bit_identical(tmp_path, monkeypatch):
    """A folder with corrupt and partly decodable files; the run is SIGKILLed twice at random points (after
    a random checkpoint, after a random delay) and resumed each time: the weights end bit-identical."""
    import multiprocessing

    from videomask.data import prepare_process

    prepare_process()  # the gc-before-fork hook, as the CLI sets it up
    from videomask import cli

    cfg_path = _write_run(tmp_path, corrupt=True)
    monkeypatch.chdir(tmp_path)
    argv = ["pretrain", "--config", str(cfg_path)]
    rng = random.Random(10)
    killed_at: list[str] = []
    first = rng.choice([5, 10])
    for k, after in enumerate([first, first + rng.choice([5, 10])]):
        proc = multiprocessing.get_context("fork").Process(target=_run_cli, args=(argv + (["--resume"] if k else []),))
        proc.start()
        checkpoint = tmp_path / "killed" / "checkpoints" / f"step_{after:08d}"
        deadline = time.monotonic() + 240
        while not checkpoint.exists() and proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the steps after that checkpoint
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL, f"the run was not killed mid-run (exit code {proc.exitcode})"
        killed_at.append(max(p.name for p in list_checkpoints(tmp_path / "killed")))
    assert not (tmp_path / "killed" / "final").exists()
    assert cli.main(argv + ["--resume"]) == 0
    _check_identical(tmp_path, cfg_path, killed_at)
