"""``train.compile`` (each block through torch.compile) and ``train.wandb`` (an offline W&B run) on one CPU
process. The compile tests use the ``aot_eager`` backend: it traces and runs the blocks as inductor does but
needs no C compiler (inductor's step times are in benchmarks/results/compile.md)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from helpers_train import TINY_MODEL, tiny_run

from videomask.config import load_config_dict


def test_compiled_blocks_give_the_eager_loss_and_gradients():
    from videomask.masking import build_masker
    from videomask.model import build_model
    from videomask.train.fsdp import compile_blocks

    torch.manual_seed(0)
    eager = build_model("tiny", num_frames=4, img_size=32, **{**TINY_MODEL["overrides"], "depth": 2})
    compiled = build_model("tiny", num_frames=4, img_size=32, **{**TINY_MODEL["overrides"], "depth": 2})
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled, backend="aot_eager")
    assert all(b._compiled_call_impl is not None for b in [*compiled.blocks, *compiled.decoder_blocks])
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints keep their names
    video = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    masker = build_masker("tube", tubelet=tuple(eager.tubelet), ratio=0.75)
    mask = masker.generate({"video": video}, generator=torch.Generator().manual_seed(2)).mask
    losses = []
    for model in (eager, compiled):
        loss = model(video, mask, None, generator=torch.Generator().manual_seed(3)).loss
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (name, a), (_, b) in zip(eager.named_parameters(), compiled.named_parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


def test_train_compile_runs_the_loop_with_compiled_blocks(tmp_path, videos, monkeypatch):
    """``train.compile=true`` compiles the blocks before the optimizer sees them; the run logs the eager losses."""
    import videomask.train.parts as P
    from videomask.train import train
    from videomask.train.fsdp import compile_blocks

    compiled: list = []

    def compile_aot_eager(model):
        compile_blocks(model, backend="aot_eager")
        compiled.append(model)

    monkeypatch.setattr(P, "compile_blocks", compile_aot_eager)
    train_opts = {"steps": 2, "save_every": 0, "log_every": 1}
    eager = train(load_config_dict(tiny_run(videos, tmp_path / "eager", train=train_opts)))
    fast = train(load_config_dict(tiny_run(videos, tmp_path / "compiled", train={**train_opts, "compile": True})))
    assert len(compiled) == 1 and compiled[0].blocks[0]._compiled_call_impl is not None
    assert [r["loss"] for r in fast.history] == pytest.approx([r["loss"] for r in eager.history], rel=1e-5)


def _wandb_records(run_file: Path) -> list[dict]:
    """The history records of an offline ``run-*.wandb`` file (a LevelDB-style log of protobuf records:
    7-byte file header, 32 KiB blocks, each record chunk with a CRC32, length and type header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                out.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
    return out


def test_wandb_offline_logs_the_metrics_records(tmp_path, videos, monkeypatch):
    pytest.importorskip("wandb")
    from videomask.train import train

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    out = tmp_path / "run"
    opts = {"steps": 4, "save_every": 0, "log_every": 2, "wandb": {"project": "vm-test", "mode": "offline"}}
    result = train(load_config_dict(tiny_run(videos, out, train=opts)))
    assert result.ok
    run_id = (out / "wandb_id.txt").read_text().strip()
    files = list((out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, list((out / "wandb").iterdir())
    logged = [r for r in _wandb_records(files[0]) if "train/loss" in r]
    expected = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["_step"] for r in logged] == [r["step"] for r in expected] == [2, 4]
    for got, want in zip(logged, expected):
        assert got["train/loss"] == pytest.approx(want["loss"])
        assert got["train/lr"] == pytest.approx(want["lr"])
        assert got["train/skipped_steps"] == want["skipped_steps"]
