"""The teacher cache: lookups equal the teacher's own features through each clip's geometry, it refuses
another teacher, and the ``teacher-cache`` command and a run that reads it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from videomask.data import frames_to_tensor, normalize
from videomask.errors import VideomaskError
from videomask.objectives import TeacherCache, build_teacher, build_teacher_cache, frame_tokens
from videomask.patches import ClipGeometry, Grid
from videomask.video import open_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_train import tiny_run, write_clip  # noqa: E402


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teacher_videos")
    write_clip(root / "square.mp4", num_frames=8, height=64, width=64, seed=1)
    write_clip(root / "big.mp4", num_frames=8, height=128, width=128, seed=2)
    return root


def _frames(path: Path) -> torch.Tensor:
    with open_video(str(path)) as reader:
        return normalize(frames_to_tensor(reader.read_all()))  # [N, 3, H, W]


def _batch(video_id: str, frames: list[int], geometry: ClipGeometry) -> dict:
    return {
        "video_id": [video_id],
        "frame_indices": torch.tensor([frames]),
        "geometry": geometry.to_tensor()[None],
    }


def test_lookup_equals_in_loop_teacher_on_the_full_frame(clip_dir, tmp_path):
    """A clip that is the whole frame at the teacher's size: the cached targets equal the teacher run in the
    step on the decoded clip (fp16 storage aside); a flipped clip gets the same targets mirrored."""
    teacher = build_teacher("cnn", tubelet=(2, 16, 16), size=0)
    path, skipped = build_teacher_cache(teacher, [("square.mp4", str(clip_dir / "square.mp4"))], tmp_path / "t.st")
    assert not skipped
    cache = TeacherCache(path)
    cache.check(teacher)
    frames = [1, 3, 5, 7]
    clip = _frames(clip_dir / "square.mp4")[frames].transpose(0, 1)[None]  # [1, 3, 4, 64, 64]
    in_loop = teacher(clip)  # [1, L, 192]
    grid = Grid(2, 4, 4)
    looked = cache.lookup(_batch("square.mp4", frames, ClipGeometry.identity(64, 64)), grid)
    assert looked.shape == in_loop.shape == (1, 32, 192)
    assert torch.allclose(looked, in_loop, atol=0.02), float((looked - in_loop).abs().max())
    flipped = ClipGeometry(64, 64, 0, 0, 64, 64, 64, 64, True)
    mirrored = cache.lookup(_batch("square.mp4", frames, flipped), grid).view(1, 2, 4, 4, 192)
    assert torch.allclose(mirrored.flip(3), looked.view(1, 2, 4, 4, 192), atol=1e-5)


def test_lookup_of_a_patch_aligned_crop_is_the_mean_of_its_cells(clip_dir, tmp_path):
    """A 64 px crop at (32, 32) of a 128 px frame, resized to a 32 px clip: each token covers 2 x 2 cells of
    the teacher's 8 x 8 map, and its target is their mean (then normalised, tubelet frames concatenated)."""
    teacher = build_teacher("cnn", tubelet=(2, 16, 16), size=0)
    path, _ = build_teacher_cache(teacher, [("big.mp4", str(clip_dir / "big.mp4"))], tmp_path / "t.st")
    frames = [0, 2, 4, 6]
    geom = ClipGeometry(128, 128, 32, 32, 64, 64, 32, 32, False)
    looked = TeacherCache(path).lookup(_batch("big.mp4", frames, geom), Grid(2, 2, 2))  # [1, 8, 192]
    maps = teacher.frame_maps(_frames(clip_dir / "big.mp4")[frames])  # [4, 96, 8, 8]
    cells = F.avg_pool2d(maps[:, :, 2:6, 2:6], 2)  # [4, 96, 2, 2]: the crop's cells, 2 x 2 per token
    expected = frame_tokens(cells[None], 2)
    assert torch.allclose(looked, expected, atol=0.02), float((looked - expected).abs().max())


def test_cache_refuses_another_teacher_and_unknown_videos(clip_dir, tmp_path):
    teacher = build_teacher("cnn", tubelet=(2, 16, 16), size=0)
    path, _ = build_teacher_cache(teacher, [("square.mp4", str(clip_dir / "square.mp4"))], tmp_path / "t.st")
    cache = TeacherCache(path)
    with pytest.raises(VideomaskError, match="rebuild it"):
        cache.check(build_teacher("cnn", tubelet=(2, 16, 16), size=96))
    with pytest.raises(VideomaskError, match="not in teacher cache"):
        cache.lookup(_batch("nope.mp4", [0, 1, 2, 3], ClipGeometry.identity(64, 64)), Grid(2, 4, 4))
    (tmp_path / "bad.st").write_bytes(b"not a cache")
    with pytest.raises(VideomaskError, match="not a readable teacher cache"):
        TeacherCache(tmp_path / "bad.st")


def test_unreadable_videos_are_skipped_and_counted(clip_dir, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    teacher = build_teacher("cnn", tubelet=(2, 16, 16), size=0)
    path, skipped = build_teacher_cache(
        teacher, [("square.mp4", str(clip_dir / "square.mp4")), ("bad.mp4", str(bad))], tmp_path / "t.st"
    )
    assert [vid for vid, _ in skipped] == ["bad.mp4"]
    assert len(TeacherCache(path)) == 1


@pytest.mark.parametrize("objective", ["teacher", "contrastive", "distill"])
def test_pretrain_reads_the_teacher_cache_the_command_wrote(objective, tmp_path, capsys):
    """``videomask teacher-cache`` then ``videomask pretrain`` with that cache: the run trains, its final
    checkpoint carries the objective's heads, and a cache of another teacher size is refused in one line."""
    import yaml

    from videomask.cli import main

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        write_clip(videos / f"v{i}.mp4", seed=i)
    cache = tmp_path / "teacher.safetensors"
    assert main(["teacher-cache", str(videos), "-o", str(cache), "--size", "32"]) == 0
    assert "4 videos, 0 skipped" in capsys.readouterr().out
    raw = tiny_run(videos, tmp_path / "run", train={"steps": 4, "save_every": 0})
    raw["objective"] = {"name": objective, "teacher": "cnn", "teacher_size": 32, "teacher_cache": str(cache)}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", "--config", str(cfg)]) == 0
    from videomask.io import load_model

    model, _ = load_model(str(tmp_path / "run" / "final"))
    assert model.config.feature_dim == 192 and model.distill_head is not None
    assert (model.contrast_head is not None) == (objective == "contrastive")
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses and all(v == v for v in losses)
    raw["objective"]["teacher_size"] = 48
    raw["run"]["out_dir"] = str(tmp_path / "run2")
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", "--config", str(cfg)]) == 2
    assert "rebuild it" in capsys.readouterr().err


def test_ema_clean_branch_resumes_bit_identical(tmp_path):
    """contrastive + clean: ema, killed after its step-3 checkpoint and resumed: the final weights equal an
    uninterrupted run's, because the checkpoint carries the EMA encoder (whose features are the targets)."""
    import shutil

    import yaml
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from videomask.config import load_config
    from videomask.io import MODEL_FILE
    from videomask.train import train
    from videomask.train.checkpoint import STATE_FILE, load_checkpoint

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        write_clip(videos / f"v{i}.mp4", seed=i)
    raw = tiny_run(videos, tmp_path / "straight", train={"steps": 6, "save_every": 3, "keep_last": 2})
    raw["objective"] = {"name": "contrastive", "clean": "ema", "ema_decay": 0.5, "teacher_weight": 0.0}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    straight = tmp_path / "straight"
    assert train(load_config(cfg)).ok
    ema = load_checkpoint(straight / "checkpoints" / "step_00000003")["extra"]
    assert ema and all(k.startswith("ema.") for k in ema)
    # what a kill right after the step-3 checkpoint leaves behind
    killed = tmp_path / "killed"
    shutil.copytree(straight, killed)
    shutil.rmtree(killed / "final")
    shutil.rmtree(killed / "checkpoints" / "step_00000006")
    assert train(load_config(cfg, [f"run.out_dir={killed}", "train.resume=true"])).ok
    a, b = load_file(str(killed / "final" / MODEL_FILE)), load_file(str(straight / "final" / MODEL_FILE))
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    # and the EMA matters: a resume whose checkpoint lost it ends elsewhere
    lost = tmp_path / "lost"
    shutil.copytree(killed, lost)
    shutil.rmtree(lost / "final")
    shutil.rmtree(lost / "checkpoints" / "step_00000006")
    state_file = lost / "checkpoints" / "step_00000003" / STATE_FILE
    with safe_open(str(state_file), "pt") as f:
        header = f.metadata()
        kept = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("extra.")}
    save_file(kept, str(state_file), metadata=header)
    assert train(load_config(cfg, [f"run.out_dir={lost}", "train.resume=true"])).ok
    c = load_file(str(lost / "final" / MODEL_FILE))
    assert [k for k in c if not torch.equal(c[k], b[k])]


def test_shares_build_the_cache_one_process_builds_and_a_version_1_file_is_still_read(clip_dir, tmp_path):
    """Two shares (as two machines would, ``--part 1/2`` then ``0/2``) give the cache one process gives; the
    folder is incomplete until the last share ends; a one-file cache of version 1 looks up the same targets."""
    from safetensors.torch import save_file

    from videomask.io.per_video import META_FILE
    from videomask.objectives.cache import CACHE_FORMAT

    teacher = build_teacher("cnn", tubelet=(2, 16, 16), size=32)
    items = [(name, str(clip_dir / name)) for name in ("square.mp4", "big.mp4")]
    whole, _ = build_teacher_cache(teacher, items, tmp_path / "whole", progress=False)
    build_teacher_cache(teacher, items, tmp_path / "split", progress=False, rank=1, world_size=2)
    assert not (tmp_path / "split" / META_FILE).exists()
    with pytest.raises(VideomaskError, match="incomplete"):
        TeacherCache(tmp_path / "split")
    build_teacher_cache(teacher, items, tmp_path / "split", progress=False, rank=0, world_size=2)
    a, b = TeacherCache(whole), TeacherCache(tmp_path / "split")
    assert len(a) == len(b) == 2 and a.meta == b.meta and "nope.mp4" not in a
    assert all(torch.equal(a.maps(vid), b.maps(vid)) for vid, _ in items)

    index = {vid: {"key": f"v{i}", "src": [0, 0], "frames": 8} for i, (vid, _) in enumerate(items)}
    tensors = {f"v{i}": a.maps(vid) for i, (vid, _) in enumerate(items)}
    header = {"format": CACHE_FORMAT, "meta": json.dumps({**a.meta, "version": 1}), "videos": json.dumps(index)}
    save_file(tensors, str(tmp_path / "v1.safetensors"), metadata=header)
    old = TeacherCache(tmp_path / "v1.safetensors")
    old.check(teacher)
    batch = _batch("big.mp4", [0, 2, 4, 6], ClipGeometry(128, 128, 32, 32, 64, 64, 32, 32, True))
    assert torch.equal(old.lookup(batch, Grid(2, 2, 2)), a.lookup(batch, Grid(2, 2, 2)))


def test_teacher_cache_command_reads_videos_in_shards(clip_dir, tmp_path, capsys):
    """`videomask teacher-cache` on a shard folder reads each video's bytes from the shards: its look-ups equal
    those of the cache built from the files."""
    from videomask.cli import main
    from videomask.data import list_videos, write_shards

    shards = tmp_path / "shards"
    assert write_shards(list_videos(clip_dir), shards).videos == 2
    assert main(["teacher-cache", str(shards), "-o", str(tmp_path / "from_shards"), "--size", "32"]) == 0
    assert main(["teacher-cache", str(clip_dir), "-o", str(tmp_path / "from_files"), "--size", "32"]) == 0
    assert "0 skipped" in capsys.readouterr().out
    a, b = TeacherCache(tmp_path / "from_shards"), TeacherCache(tmp_path / "from_files")
    assert len(a) == len(b) == 2
    geometry = ClipGeometry.identity(64, 64)
    for frames in ([0, 1, 2, 3], [4, 5, 6, 7]):
        batch = _batch("square.mp4", frames, geometry)
        grid = Grid(2, 4, 4)
        assert torch.equal(a.lookup(batch, grid), b.lookup(batch, grid))
