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
from helpers_train import TINY_MODEL, fork_ranks, torchrun_env, write_videos
from safetensors.torch import load_file

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
    a, b = (
        ResumableSampler(data, num_replicas=1, rank=0, seed=4),
        ResumableSampler(data, num_replicas=1, rank=0, seed=4),
    )
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)  # deterministic from (seed, epoch)
    b.set_epoch(4)
    assert list(a) != list(b)


WORKER = textwrap.dedent('''
    """Run videomask.train.train under torchrun; save this rank's final weights, the indices it saw, its
    logged history and its drop-path decisions (one bool per sample and DropPath call)."""
    import json, os, sys
    from safetensors.torch import save_file
    import videomask.train as T
    import videomask.train.parts as P
    from videomask.config import load_config

    models, seen, drops = [], [], []
    build = T.build_model_from_config
    def record_drop(module, inputs, output):
        drops.append((output.detach().flatten(1).abs().sum(1) == 0).tolist())  # a dropped sample is all zero
    def build_and_keep(cfg):
        model, source = build(cfg)
        models.append(model)
        for m in model.modules():
            if type(m).__name__ == "DropPath" and m.drop_prob > 0:
                m.register_forward_hook(record_drop)
        return model, source
    P.build_model_from_config = build_and_keep
    next_batch = T.BatchStream.next
    def next_and_record(self):
        batch = next_batch(self)
        seen.append([self.epoch] + batch["index"].tolist())
        return batch
    T.BatchStream.next = next_and_record
    if globals().get("MASKER") is not None:  # a masker class handed in by the forking test
        P.build_masker_from_config = lambda cfg, model, device, *rest: MASKER(
            tubelet=tuple(model.tubelet), ratio=cfg.mask.ratio
        )

    out = sys.argv[1]
    result = T.train(load_config(sys.argv[2], sys.argv[3:]))
    rank = os.environ["RANK"]
    save_file({k: v.contiguous() for k, v in models[0].state_dict().items()}, f"{out}/rank{rank}.safetensors")
    json.dump({"seen": seen, "steps": result.steps, "ok": result.ok, "history": result.history, "drops": drops},
              open(f"{out}/rank{rank}.json", "w"))
''')


def _write_run(tmp_path: Path, **sections: dict) -> Path:
    videos = tmp_path / "videos"
    if not videos.is_dir():
        write_videos(videos)
    raw = {
        "run": {"out_dir": str(tmp_path / "run"), "seed": 0, "device": "cpu"},
        "data": {
            "path": str(videos),
            "num_frames": 4,
            "sampling_rate": 2,
            "size": 32,
            "batch_size": 1,
            "num_workers": 0,
        },
        "model": TINY_MODEL,
        "mask": {"name": "tube", "ratio": 0.75},
        "optim": {"lr": 2e-3},
        "train": {
            "steps": 4,
            "accum_steps": 2,
            "clip_grad": 1.0,
            "log_every": 2,
            "save_every": 2,
            "progress": False,
            "tensorboard": False,
        },
    }
    for name, values in sections.items():
        raw[name] = {**raw[name], **values}
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


def _rank_main(rank: int, world: int, port: int, out: str, cfg: str, args: list[str], masker: type | None) -> None:
    """One rank, with torchrun's environment variables; runs the WORKER code in this forked process."""
    torchrun_env(rank, world, port)
    torch.set_num_threads(1)
    code = 1
    try:
        sys.argv = ["worker", out, cfg, *args]
        exec(compile(WORKER, "worker", "exec"), {"__name__": "__main__", "MASKER": masker})
        code = 0
    finally:
        os._exit(code)


def _launch(
    out: Path,
    cfg: Path,
    args: tuple[str, ...] = (),
    world: int = 2,
    masker: type | None = None,
    kill_when: Path | None = None,
    timeout: float = 180,
) -> list[int | None]:
    """Fork ``world`` ranks of the WORKER; SIGKILL them all once ``kill_when`` exists. Returns exit codes."""
    return fork_ranks(_rank_main, world, (str(out), str(cfg), list(args), masker), kill_when, timeout)


def test_two_rank_gloo_run_ends_with_identical_weights(tmp_path):
    """Two CPU ranks (forked, torchrun's env vars, Gloo): identical weights, split data, rank-0 outputs."""
    cfg = _write_run(tmp_path)
    codes = _launch(tmp_path, cfg)
    assert codes == [0, 0], f"rank exit codes {codes}"
    _check_ranks(tmp_path)


@pytest.mark.slow
def test_two_rank_torchrun(tmp_path):
    """The same through ``torchrun --standalone --nproc_per_node 2`` (fresh interpreters)."""
    cfg = _write_run(tmp_path)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(worker),
        str(tmp_path),
        str(cfg),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 2 ranks" in done.stderr  # the run knew it was distributed
    _check_ranks(tmp_path)


# ----------------------------------------------------------------------------- GPU / multi-GPU paths, on Gloo


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _ranks(out: Path) -> tuple[dict, dict]:
    return tuple(json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))  # type: ignore[return-value]


def test_two_ranks_with_fc_norm_and_per_rank_drop_path(tmp_path):
    """``use_mean_pooling=True`` gives an ``fc_norm`` the pretraining forward never uses: DDP must be told,
    or step 2 fails ("Expected to have finished reduction"). With ``drop_path > 0`` every rank must draw
    its own drop-path decisions (all ranks used to share one seed)."""
    overrides = {**TINY_MODEL["overrides"], "use_mean_pooling": True, "depth": 2, "drop_path": 0.5}
    cfg = _write_run(tmp_path, model={"overrides": overrides})
    codes = _launch(tmp_path, cfg)
    assert codes == [0, 0], f"rank exit codes {codes}"
    w0, w1 = _weights(tmp_path / "rank0.safetensors"), _weights(tmp_path / "rank1.safetensors")
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks ended with different weights"
    assert torch.equal(w0["fc_norm.weight"], torch.ones(32)) and torch.equal(w0["fc_norm.bias"], torch.zeros(32))
    r0, r1 = _ranks(tmp_path)
    assert r0["ok"] and r1["ok"] and r0["steps"] == 4
    # 4 steps x 2 micro-batches x 2 DropPath modules (block 2: drop rate 0.5) = 16 decisions per rank
    d0, d1 = sum(r0["drops"], []), sum(r1["drops"], [])
    assert len(d0) == len(d1) == 16 and 0 < sum(d0) < 16
    assert d0 != d1, "both ranks dropped the same samples: the drop-path RNG is not seeded per rank"


class IndexMasker:
    """A tube masker whose mask depends only on the clip's dataset index (not on step, micro-batch or rank),
    so differently batched runs over the same clips see the same masks."""

    def __init__(self, *, tubelet, ratio):
        from videomask.masking import build_masker

        self.inner = build_masker("tube", tubelet=tubelet, ratio=ratio)

    def to(self, device):
        return self

    def generate(self, batch, generator=None):
        from videomask.masking.base import MaskResult

        video = batch["video"]
        rows = [
            self.inner.generate(video[b : b + 1], torch.Generator().manual_seed(int(i))).mask
            for b, i in enumerate(batch["index"].tolist())
        ]
        return MaskResult(mask=torch.cat(rows))  # [B, L]


def test_two_rank_accumulation_equals_one_big_batch(tmp_path):
    """2 ranks x 2 accumulated micro-batches of 1 clip = 1 process with batches of 4 (same clips, same masks):
    DDP's averaging and ``no_sync`` accumulation give the big-batch gradient."""
    cfg = _write_run(tmp_path, train={"steps": 3, "save_every": 0, "log_every": 1})
    codes = _launch(tmp_path, cfg, masker=IndexMasker)
    assert codes == [0, 0], f"rank exit codes {codes}"
    import videomask.train as T
    import videomask.train.parts as P
    from videomask.config import load_config

    real = P.build_masker_from_config
    P.build_masker_from_config = lambda cfg, model, device, *rest: IndexMasker(
        tubelet=tuple(model.tubelet), ratio=cfg.mask.ratio
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = T.train(
            load_config(cfg, [f"run.out_dir={tmp_path / 'single'}", "data.batch_size=4", "train.accum_steps=1"])
        )
    finally:
        P.build_masker_from_config = real
        torch.set_num_threads(threads)
    assert single.ok and single.steps == 3
    ddp = _weights(tmp_path / "rank0.safetensors")
    big = _weights(single.final_dir / "model.safetensors")
    torch.manual_seed(0)
    from videomask.model import build_model

    init = build_model("tiny", **TINY_MODEL["overrides"]).state_dict()
    moved = max(float((big[k] - init[k]).abs().max()) for k in big)
    gap = max(float((big[k] - ddp[k]).abs().max()) for k in big)
    assert moved > 1e-3 and gap < 1e-5 * (moved / 1e-3), (
        f"DDP+accumulation differs from the big batch by {gap} (moved {moved})"
    )
    r0, _ = _ranks(tmp_path)
    ddp_loss = [r["loss"] for r in r0["history"]]
    assert ddp_loss == pytest.approx([r["loss"] for r in single.history], rel=1e-5)


def _fit_difference_stats(videos: Path, out: Path) -> Path:
    from videomask.data import ClipTransform, VideoDataset
    from videomask.difference import PixelEmbedder, fit_statistics

    ds = VideoDataset.from_folder(
        videos, num_frames=4, sampling_rate=2, sampling="center", transform=ClipTransform(size=(32, 32))
    )
    stats = fit_statistics(
        ds, ds, PixelEmbedder(dim=8, tubelet=(2, 16, 16)), num_words=4, num_anchors=2, batch_size=2, progress=False
    )
    stats.save(out)
    return out


def _write_boxes(videos: Path, out: Path) -> Path:
    """A boxes cache: a "person" over the top-left 20x20 pixels of every frame of every video."""
    lines = []
    for path in sorted(videos.glob("*.mp4")):
        lines += [
            {"video": path.name, "frame": f, "box": [0, 0, 20, 20], "label": "person", "score": 1.0} for f in range(12)
        ]
        lines.append({"video": path.name, "done": True, "num_frames": 12, "stride": 1, "detector": {"name": "test"}})
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


@pytest.mark.parametrize("name", ["difference", "objects"])
def test_two_rank_difference_and_objects_maskers(tmp_path, name):
    """The anchor maskers under 2 ranks: masks built per rank, identical weights, anchor losses logged."""
    videos = write_videos(tmp_path / "videos")
    if name == "difference":
        options = {"stats": str(_fit_difference_stats(videos, tmp_path / "stats.safetensors")), "alpha": 0.5}
    else:
        options = {"boxes": str(_write_boxes(videos, tmp_path / "boxes.jsonl")), "alpha": 1.0}
    cfg = _write_run(
        tmp_path,
        mask={"name": name, "ratio": 0.75, "options": options},
        train={"steps": 2, "save_every": 0, "log_every": 1},
    )
    codes = _launch(tmp_path, cfg)
    assert codes == [0, 0], f"rank exit codes {codes}"
    w0, w1 = _weights(tmp_path / "rank0.safetensors"), _weights(tmp_path / "rank1.safetensors")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    r0, r1 = _ranks(tmp_path)
    assert r0["ok"] and r1["ok"] and r0["steps"] == r1["steps"] == 2
    assert [r["loss"] for r in r0["history"]] == [r["loss"] for r in r1["history"]]  # global means on every rank
    for record in r0["history"]:
        assert record["anchor_share"] is not None and record["anchor_share"] > 0
    if name == "objects":  # alpha 1: the anchor tubes (under the person box) are masked first, so their loss is logged
        assert all(r["loss_anchor"] is not None for r in r0["history"])


@pytest.mark.slow
def test_two_rank_kill_and_resume_gives_the_uninterrupted_weights(tmp_path):
    """2 ranks SIGKILLed after a mid-run checkpoint, resumed with 2 ranks: bit-identical to a 2-rank run
    that was never interrupted (per-rank RNG states, data position, optimizer)."""
    overrides = {**TINY_MODEL["overrides"], "depth": 2, "drop_path": 0.3}  # per-rank RNG state matters too
    cfg = _write_run(
        tmp_path, model={"overrides": overrides}, train={"steps": 30, "save_every": 5, "log_every": 1, "keep_last": 2}
    )
    killed = tmp_path / "killed"
    codes = _launch(tmp_path, cfg, (f"run.out_dir={killed}",), kill_when=killed / "checkpoints" / "step_00000005")
    assert codes == [-9, -9], f"the ranks were not killed mid-run (exit codes {codes})"
    assert not (killed / "final").exists()
    codes = _launch(tmp_path, cfg, (f"run.out_dir={killed}", "train.resume=true"))
    assert codes == [0, 0], f"resumed rank exit codes {codes}"
    straight = tmp_path / "straight"
    (tmp_path / "s").mkdir()
    codes = _launch(tmp_path / "s", cfg, (f"run.out_dir={straight}",))
    assert codes == [0, 0], f"uninterrupted rank exit codes {codes}"
    a, b = _weights(killed / "final" / "model.safetensors"), _weights(straight / "final" / "model.safetensors")
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed 2-rank weights differ from the uninterrupted run in {different[:5]}"
    log_a = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_a] == list(range(1, 31))
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
