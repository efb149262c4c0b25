"""Distributed training: the resumable sampler, and a two-rank Gloo run under torchrun on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers_train import TINY_MODEL, write_videos
from videomask.train import ResumableSampler


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_splits_and_resumes(world):
    data = list(range(10))
    for epoch in (0, 1):
        parts = []
        for rank in range(world):
            s = ResumableSampler(data, num_replicas=world, rank=rank, seed=4)
            s.set_epoch(epoch)
            full = list(s)
            s.start = 2
            assert list(s) == full[2:] and len(s) == len(full) - 2  # resume mid-epoch = skip what was consumed
            parts.append(full)
        assert len({len(p) for p in parts}) == 1
        assert set().union(*parts) == set(data)  # every item on some rank (padding repeats a few)
        if world == 1:
            assert sorted(parts[0]) == data
    a, b = ResumableSampler(data, num_replicas=1, rank=0, seed=4), ResumableSampler(data, num_replicas=1, rank=0, seed=4)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)  # deterministic from (seed, epoch)
    b.set_epoch(4)
    assert list(a) != list(b)


WORKER = textwrap.dedent('''
    """Run videomask.train.train under torchrun; save this rank's final weights and the indices it saw."""
    import json, os, sys
    from safetensors.torch import save_file
    import videomask.train as T
    from videomask.config import load_config

    models, seen = [], []
    build = T.build_model_from_config
    def build_and_keep(cfg):
        model, source = build(cfg)
        models.append(model)
        return model, source
    T.build_model_from_config = build_and_keep
    next_batch = T.BatchStream.next
    def next_and_record(self):
        batch = next_batch(self)
        seen.append([self.epoch] + batch["index"].tolist())
        return batch
    T.BatchStream.next = next_and_record

    out = sys.argv[1]
    result = T.train(load_config(sys.argv[2], sys.argv[3:]))
    rank = os.environ["RANK"]
    save_file({k: v.contiguous() for k, v in models[0].state_dict().items()}, f"{out}/rank{rank}.safetensors")
    json.dump({"seen": seen, "steps": result.steps, "ok": result.ok}, open(f"{out}/rank{rank}.json", "w"))
''')


def _write_run(tmp_path: Path) -> Path:
    videos = write_videos(tmp_path / "videos")
    raw = {
        "run": {"out_dir": str(tmp_path / "run"), "seed": 0, "device": "cpu"},
        "data": {"path": str(videos), "num_frames": 4, "sampling_rate": 2, "size": 32, "batch_size": 1,
                 "num_workers": 0},
        "model": TINY_MODEL,
        "mask": {"name": "tube", "ratio": 0.75},
        "optim": {"lr": 2e-3},
        "train": {"steps": 4, "accum_steps": 2, "clip_grad": 1.0, "log_every": 2, "save_every": 2,
                  "progress": False, "tensorboard": False},
    }
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def _check_ranks(tmp_path: Path) -> None:
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks ended with different weights"
    from videomask.model import build_model

    torch.manual_seed(0)
    init = build_model("tiny", **TINY_MODEL["overrides"]).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in w0), "training did not change the weights"

    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["ok"] and r1["ok"] and r0["steps"] == r1["steps"] == 4
    # 4 steps x 2 micro-batches of 1 video per rank; each epoch (2 micro-batches per rank) splits the 4 videos
    assert len(r0["seen"]) == len(r1["seen"]) == 8
    by_epoch: dict[int, list[int]] = {}
    for epoch, index in r0["seen"] + r1["seen"]:
        by_epoch.setdefault(epoch, []).append(index)
    assert sorted(by_epoch) == [0, 1, 2, 3]
    assert all(sorted(v) == [0, 1, 2, 3] for v in by_epoch.values())
    # rank 0 alone wrote the run folder
    run = tmp_path / "run"
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_00000002", "step_00000004"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    final = load_file(str(run / "final" / "model.safetensors"))
    assert all(torch.equal(final[k], w0[k]) for k in w0)


def _rank_main(rank: int, world: int, port: int, out: str, cfg: str) -> None:
    """One rank, with torchrun's environment variables; runs the WORKER code in this forked process."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    code = 1
    try:
        sys.argv = ["worker", out, cfg]
        exec(compile(WORKER, "worker", "exec"), {"__name__": "__main__"})
        code = 0
    finally:
        os._exit(code)


def test_two_rank_gloo_run_ends_with_identical_weights(tmp_path):
    """Two CPU ranks (forked, torchrun's env vars, Gloo): identical weights, split data, rank-0 outputs."""
    import multiprocessing
    import socket

    import videomask.data, videomask.masking, videomask.model  # noqa: F401  (imported once, before forking)

    cfg = _write_run(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, str(tmp_path), str(cfg))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert codes == [0, 0], f"rank exit codes {codes}"
    _check_ranks(tmp_path)


@pytest.mark.slow
def test_two_rank_torchrun(tmp_path):
    """The same through ``torchrun --standalone --nproc_per_node 2`` (fresh interpreters)."""
    cfg = _write_run(tmp_path)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(tmp_path), str(cfg)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 2 ranks" in done.stderr  # the run knew it was distributed
    _check_ranks(tmp_path)
