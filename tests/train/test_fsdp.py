"""FSDP2 (``train.parallel: fsdp``) on two CPU ranks over Gloo: training, sharded checkpoints, SIGKILL and
resume (the uninterrupted run's weights), resume on one rank, conversion to the single-file checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers_train import TINY_MODEL, fork_ranks, torchrun_env, write_videos
from safetensors.torch import load_file

WORKER = """
import json, os, sys
import videomask.train as T
from videomask.config import load_config

result = T.train(load_config(sys.argv[2], sys.argv[3:]))
with open(f"{sys.argv[1]}/rank{os.environ['RANK']}.json", "w") as fh:
    json.dump({"steps": result.steps, "ok": result.ok, "history": result.history}, fh)
"""


def _write_run(tmp_path: Path, **train: object) -> Path:
    videos = tmp_path / "videos"
    if not videos.is_dir():
        write_videos(videos)
    overrides = {**TINY_MODEL["overrides"], "depth": 2, "drop_path": 0.2}  # two encoder blocks; per-rank RNG
    raw = {
        "run": {"out_dir": str(tmp_path / "run"), "seed": 0, "device": "cpu"},
        "data": {"path": str(videos), "num_frames": 4, "sampling_rate": 2, "size": 32, "batch_size": 1},
        "model": {"name": "tiny", "overrides": overrides},
        "mask": {"name": "tube", "ratio": 0.75},
        "optim": {"lr": 2e-3},
        "train": {
            "parallel": "fsdp",
            "steps": 6,
            "accum_steps": 2,
            "clip_grad": 1.0,
            "log_every": 1,
            "save_every": 2,
            "keep_last": 5,
            "progress": False,
            "tensorboard": False,
            **train,
        },
    }
    raw["data"]["num_workers"] = 0
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def _rank_main(rank: int, world: int, port: int, out: str, cfg: str, args: list[str]) -> None:
    """One rank with torchrun's environment variables, running WORKER in this forked process."""
    torchrun_env(rank, world, port)
    torch.set_num_threads(1)
    code = 1
    try:
        sys.argv = ["worker", out, cfg, *args]
        exec(compile(WORKER, "worker", "exec"), {"__name__": "__main__"})
        code = 0
    finally:
        os._exit(code)


def _launch(out: Path, cfg: Path, args: tuple[str, ...] = (), world: int = 2, kill_when: Path | None = None) -> list:
    """Fork ``world`` ranks; SIGKILL them all once ``kill_when`` exists. Returns their exit codes."""
    return fork_ranks(_rank_main, world, (str(out), str(cfg), list(args)), kill_when)


def _max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_fsdp_two_ranks_kill_resume_and_convert(tmp_path):
    """2 ranks under FSDP2: sharded checkpoints; SIGKILLed after step 2 and resumed = the uninterrupted run;
    a sharded checkpoint converts to a plain checkpoint equal to the gathered full weights, and resumes on
    one rank."""
    from videomask.io import load_model
    from videomask.train import list_checkpoints
    from videomask.train.fsdp import convert_checkpoint

    cfg = _write_run(tmp_path)
    straight = tmp_path / "straight"
    assert _launch(tmp_path, cfg, (f"run.out_dir={straight}",)) == [0, 0]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["ok"] and r0["steps"] == 6
    assert [r["loss"] for r in r0["history"]] == [r["loss"] for r in r1["history"]]  # global means on each rank
    saved = list_checkpoints(straight)
    assert [p.name for p in saved] == ["step_00000002", "step_00000004", "step_00000006"]
    shards = sorted(p.name for p in (saved[0] / "sharded").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"] and not (saved[0] / "model.safetensors").exists()
    final = load_file(str(straight / "final" / "model.safetensors"))
    torch.manual_seed(0)
    init = load_model(str(straight / "final"))[0]  # rebuilt from the stored config: a plain model
    assert set(final) == set(init.state_dict())

    killed = tmp_path / "killed"
    codes = _launch(tmp_path, cfg, (f"run.out_dir={killed}",), kill_when=killed / "checkpoints" / "step_00000002")
    assert codes == [-9, -9], f"the ranks were not killed mid-run (exit codes {codes})"
    assert not (killed / "final").exists()
    assert _launch(tmp_path, cfg, (f"run.out_dir={killed}", "train.resume=true")) == [0, 0]
    resumed = load_file(str(killed / "final" / "model.safetensors"))
    assert _max_gap(resumed, final) == 0.0, "kill + resume under FSDP differs from the uninterrupted run"
    logged = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in logged] == [r["loss"] for r in r0["history"]]

    # the last sharded checkpoint, converted, holds the final (gathered) weights and the full optimizer
    out = convert_checkpoint(saved[-1], tmp_path / "converted", hf=True)
    converted = load_file(str(out / "model.safetensors"))
    assert _max_gap(converted, final) == 0.0
    plain = load_model(str(out))[0]
    assert _max_gap(plain.state_dict(), final) == 0.0
    assert (out / "hf" / "config.json").is_file()
    from videomask.train import load_checkpoint

    state = load_checkpoint(out, plain, optimizer=torch.optim.AdamW(plain.param_groups(0.05)))
    assert state["step"] == 6 and len(state["rng"]) == 2

    from videomask import cli

    assert cli.main(["convert", str(saved[0]), str(tmp_path / "converted2")]) == 0
    assert cli.main(["convert", str(out), str(tmp_path / "again")]) == 2  # not sharded: a one-line error
    step2 = load_file(str(tmp_path / "converted2" / "model.safetensors"))
    assert _max_gap(step2, final) > 1e-4  # training moved on after step 2


def test_sharded_checkpoints_change_rank_count_and_parallel_mode(tmp_path):
    """Shards of 2 ranks resume on 1 (the weights loaded are those saved); one process under fsdp writes one
    shard, which 2 ranks resume; shards resume a 2-rank DDP run (each rank loads the whole model)."""
    from videomask.train.fsdp import convert_checkpoint

    cfg = _write_run(tmp_path, steps=2)
    run = tmp_path / "run"
    assert _launch(tmp_path, cfg) == [0, 0]
    step2 = load_file(
        str(convert_checkpoint(run / "checkpoints" / "step_00000002", tmp_path / "c2") / "model.safetensors")
    )
    shutil.rmtree(run / "final")
    assert _launch(tmp_path, cfg, ("train.resume=true",), world=1) == [0]  # nothing left to train: final = loaded
    assert _max_gap(load_file(str(run / "final" / "model.safetensors")), step2) == 0.0
    assert _launch(tmp_path, cfg, ("train.resume=true", "train.steps=3"), world=1) == [0]
    assert sorted(p.name for p in (run / "checkpoints" / "step_00000003" / "sharded").iterdir()) == [
        ".metadata",
        "__0_0.distcp",
    ]
    assert _launch(tmp_path, cfg, ("train.resume=true", "train.steps=4")) == [0, 0]
    assert (run / "checkpoints" / "step_00000004" / "sharded" / "__1_0.distcp").is_file()
    assert _launch(tmp_path, cfg, ("train.resume=true", "train.steps=5", "train.parallel=ddp")) == [0, 0]
    assert (run / "checkpoints" / "step_00000005" / "model.safetensors").is_file()
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5]


def test_whole_checkpoint_cannot_resume_a_sharded_run(tmp_path):
    """A ddp (whole-model) checkpoint met by an fsdp run on 2 ranks: a one-line error, no traceback."""
    from videomask.config import load_config
    from videomask.train import train

    cfg = _write_run(tmp_path, parallel="ddp", steps=2)
    assert train(load_config(cfg)).ok  # one process
    assert (tmp_path / "run" / "checkpoints" / "step_00000002" / "model.safetensors").is_file()
    codes = _launch(tmp_path, cfg, ("train.parallel=fsdp", "train.resume=true", "train.steps=4"))
    assert codes == [1, 1]


@pytest.mark.parametrize("bad", ["train.parallel=zero", "train.wandb.mode=online"])
def test_config_mistakes(tmp_path, bad):
    from videomask.config import load_config
    from videomask.errors import VideomaskError

    with pytest.raises(VideomaskError):
        load_config(_write_run(tmp_path), [bad])


def test_fsdp_contrastive_ema_stops_and_resumes_like_one_run(tmp_path):
    """The contrastive objective's EMA encoder is sharded with the objective and saved in the shards: a run of
    2 steps continued to 4 ends with the weights of one 4-step run (constant lr, so the length does not matter)."""
    objective = {"name": "contrastive", "clean": "ema", "ema_decay": 0.5}
    cfg = _write_run(tmp_path, steps=4)
    raw = yaml.safe_load(cfg.read_text())
    raw["objective"] = objective
    raw["optim"] = {"lr": 2e-3, "schedule": "constant"}
    cfg.write_text(yaml.safe_dump(raw))
    assert _launch(tmp_path, cfg, (f"run.out_dir={tmp_path / 'one'}",)) == [0, 0]
    assert _launch(tmp_path, cfg, (f"run.out_dir={tmp_path / 'two'}", "train.steps=2")) == [0, 0]
    assert _launch(tmp_path, cfg, (f"run.out_dir={tmp_path / 'two'}", "train.resume=true")) == [0, 0]
    shards = tmp_path / "two" / "checkpoints" / "step_00000004" / "sharded"
    from videomask.train.fsdp import convert_checkpoint

    out = convert_checkpoint(shards.parent, tmp_path / "converted")
    from videomask.train import load_checkpoint

    ema = load_checkpoint(out)["extra"]
    assert ema and all(k.startswith("ema.") for k in ema)
    one = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert _max_gap(one, two) == 0.0
    model = load_file(str(out / "model.safetensors"))
    assert _max_gap(model, two) == 0.0
    assert max(float((ema[f"ema.{k}"] - model[k]).abs().max()) for k in model if f"ema.{k}" in ema) > 0
