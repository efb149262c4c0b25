"""Training on streaming shards with Gloo ranks: a 2-rank run killed and resumed ends with the weights of an
uninterrupted one, and a 1-rank run resumes from a 2-rank checkpoint (what is kept: docs/data.md)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from test_distributed import _launch, _weights, _write_run

from videomask.cli import main
from videomask.config import load_config
from videomask.train import train


def _shard(tmp_path: Path) -> Path:
    """The 4 videos of the run config, sharded (one chunk per video or so); returns the shard folder."""
    out = tmp_path / "shards"
    assert main(["shard", str(tmp_path / "videos"), str(out), "--chunk-bytes", "4kB"]) == 0
    return out


def test_two_rank_kill_and_resume_on_shards_gives_the_uninterrupted_weights(tmp_path):
    cfg = _write_run(tmp_path, train={"steps": 12, "save_every": 4, "log_every": 1, "keep_last": 2})
    shards = f"data.path={_shard(tmp_path)}"
    killed = tmp_path / "killed"
    codes = _launch(
        tmp_path, cfg, (shards, f"run.out_dir={killed}"), kill_when=killed / "checkpoints" / "step_00000004"
    )
    assert codes == [-9, -9], f"the ranks were not killed mid-run (exit codes {codes})"
    codes = _launch(tmp_path, cfg, (shards, f"run.out_dir={killed}", "train.resume=true"))
    assert codes == [0, 0], f"resumed rank exit codes {codes}"
    straight = tmp_path / "straight"
    (tmp_path / "s").mkdir()
    codes = _launch(tmp_path / "s", cfg, (shards, f"run.out_dir={straight}"))
    assert codes == [0, 0], f"uninterrupted rank exit codes {codes}"
    a, b = _weights(killed / "final" / "model.safetensors"), _weights(straight / "final" / "model.safetensors")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    log_a = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_a] == list(range(1, 13))
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]


def test_one_rank_resumes_a_two_rank_run_on_shards(tmp_path, capsys):
    """Weights, optimizer, step and epoch come from the 2-rank checkpoint; the epoch goes on after the videos the
    two ranks consumed (tests/train/test_elastic_resume.py checks the order) and rank 0's RNG state is used."""
    cfg = _write_run(tmp_path, train={"steps": 4, "save_every": 2, "log_every": 1})
    shards = f"data.path={_shard(tmp_path)}"
    run = tmp_path / "run"
    assert _launch(tmp_path, cfg, (shards,)) == [0, 0]
    two_rank = _weights(run / "final" / "model.safetensors")
    capsys.readouterr()
    torch.set_num_threads(1)
    result = train(load_config(str(cfg), [shards, "train.resume=true", "train.steps=6"]))
    err = capsys.readouterr().err
    assert result.ok and result.steps == 6
    assert "written by 2 rank(s) x batch" in err and "resuming from" in err and "(step 4," in err
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    one_rank = _weights(run / "final" / "model.safetensors")
    assert any(not torch.equal(one_rank[k], two_rank[k]) for k in one_rank)  # it trained on from there
