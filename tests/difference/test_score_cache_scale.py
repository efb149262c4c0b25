"""The score cache at scale: a folder of per-video float16 files read lazily (look-ups equal to the one-file
cache of earlier versions), built in parallel by the ranks of a Gloo job (equal to a one-process build), and
resumed after an interrupted build."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers_train import tiny_run, torchrun_env, write_videos
from safetensors.torch import save_file

from videomask.config import load_config
from videomask.data import ClipTransform, VideoDataset, prepare_process
from videomask.difference import CNNEmbedder, ScoreCache, build_score_cache, fit_statistics
from videomask.difference.cache import CACHE_FORMAT
from videomask.errors import VideomaskError
from videomask.io.per_video import META_FILE, video_file
from videomask.masking import DifferenceMasker
from videomask.patches import Grid


def _entries(count: int, seed: int = 0) -> dict:
    """``count`` generated videos: 3 to 8 cached slots of 4 x 6 maps, frames at stride 4, 60 x 80 sources."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(count):
        n = 3 + i % 6
        frames = np.arange(0, 4 * n, 4, dtype=np.int64)
        out[f"clip{i}.mp4"] = (frames, torch.rand(n, 4, 6, generator=g), (60, 80))
    return out


def _write_v1(path: Path, entries: dict, meta: dict) -> Path:
    """A cache in the one-file layout of videomask's version 1 (what ``ScoreCache.save`` wrote before)."""
    tensors, index = {}, []
    for i, (vid, (frames, maps, src)) in enumerate(sorted(entries.items())):
        tensors[f"{i}.frames"] = torch.as_tensor(frames)
        tensors[f"{i}.maps"] = maps.half().contiguous()
        index.append({"video": vid, "src": list(src)})
    full = {**meta, "format": CACHE_FORMAT, "version": 1, "index": index}
    save_file(tensors, str(path), metadata={"videomask": json.dumps(full)})
    return path


def _batch(entries: dict, seed: int) -> dict:
    """A loader batch of 6 clips of 4 frames over random videos, with random crops and flips."""
    rng = np.random.default_rng(seed)
    ids = sorted(entries)
    vids = [ids[k] for k in rng.integers(0, len(ids), 6)]
    frames, geometry = [], []
    for vid in vids:
        last = int(entries[vid][0][-1])
        start = int(rng.integers(0, max(1, last - 6)))
        frames.append([start + 2 * k for k in range(4)])
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 80))
        y0, x0 = int(rng.integers(0, 60 - h + 1)), int(rng.integers(0, 80 - w + 1))
        geometry.append([60, 80, y0, x0, h, w, 32, 32, float(rng.random() < 0.5)])
    return {"video_id": vids, "frame_indices": torch.tensor(frames), "geometry": torch.tensor(geometry).double()}


def test_folder_cache_is_lazy_and_looks_up_as_the_one_file_cache(tmp_path):
    """Saved as a folder, the cache holds no map in memory and its look-ups equal the version-1 file's
    exactly (both store float16) and the in-memory float32 cache's within float16 rounding."""
    entries = _entries(40)
    meta = {"scorer": "distance", "stats": "x", "size": 64}
    memory = ScoreCache(entries, meta)
    folder = ScoreCache.load(memory.save(tmp_path / "scores"))
    old = ScoreCache.load(_write_v1(tmp_path / "scores.safetensors", entries, meta))
    assert len(folder) == len(old) == 40 and folder.meta["size"] == 64 and "clip3.mp4" in folder
    assert "nope" not in folder and vars(folder.videos).keys() == {"root", "count"}  # no map, no index held
    assert folder.videos["clip3.mp4"][1].dtype == torch.float16
    grid, tubelet = Grid(2, 2, 2), (2, 16, 16)
    for seed in range(5):
        batch = _batch(entries, seed)
        got, want = folder.lookup(batch, grid, tubelet), old.lookup(batch, grid, tubelet)
        assert torch.equal(got, want)
        exact = memory.lookup(batch, grid, tubelet)
        assert not torch.equal(got, exact) and torch.allclose(got, exact, atol=1e-3, rtol=0)  # fp16: 2**-11
    with pytest.raises(VideomaskError, match="not in score cache"):
        folder.lookup({**batch, "video_id": ["nope"] * 6}, grid, tubelet)


def test_broken_and_unfinished_caches_are_one_line(tmp_path):
    folder = ScoreCache(_entries(3), {"scorer": "distance"}).save(tmp_path / "scores")
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(VideomaskError, match="newer than this videomask reads") as err:
        ScoreCache.load(folder)
    (folder / META_FILE).unlink()
    with pytest.raises(VideomaskError, match="incomplete .* keeps the videos already done") as err2:
        ScoreCache.load(folder)
    (folder / META_FILE).write_text(json.dumps(meta))
    video_file(folder, "clip1.mp4").write_bytes(b"garbage")
    with pytest.raises(VideomaskError, match="unreadable .* rebuild the cache") as err3:
        ScoreCache.load(folder).videos["clip1.mp4"]
    assert all("\n" not in str(e.value) for e in (err, err2, err3))


# ------------------------------------------------------------------ building in parallel


@pytest.fixture(scope="module")
def cnn_setup(tmp_path_factory):
    """Five tiny videos plus an unreadable one, and CNN statistics (an embedder a run caches) at 32 px."""
    root = tmp_path_factory.mktemp("parallel")
    videos = write_videos(root / "videos", count=5)
    (videos / "broken.mp4").write_bytes(b"not a video")
    ds = VideoDataset.from_folder(
        videos, num_frames=4, sampling_rate=2, sampling="center", transform=ClipTransform(size=(32, 32))
    )
    embedder = CNNEmbedder(tubelet=(2, 16, 16))
    stats = fit_statistics(ds, ds, embedder, num_words=4, num_anchors=2, num_prototypes=8, batch_size=2, progress=False)
    return {"root": root, "videos": videos, "stats": stats.save(root / "stats.safetensors")}


def _config_file(setup: dict, out_dir: Path) -> Path:
    raw = tiny_run(setup["videos"], out_dir, mask={"name": "difference", "options": {"stats": str(setup["stats"])}})
    path = out_dir.parent / f"{out_dir.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _prepare_rank(rank: int, port: int, cfg_path: str) -> None:
    """A forked rank of a two-rank Gloo job that only prepares the run's score cache."""
    from videomask.train import build_dataset, build_model_from_config, prepare_score_cache
    from videomask.train.distributed import setup_distributed

    torchrun_env(rank, 2, port)
    torch.set_num_threads(1)
    code = 1
    try:
        cfg = load_config(cfg_path)
        info, device = setup_distributed("cpu", 60.0)
        model, _ = build_model_from_config(cfg)
        prepare_score_cache(cfg, build_dataset(cfg, model.config), info, device)
        code = 0
    finally:
        os._exit(code)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_build_the_cache_as_one_process_does(cnn_setup, tmp_path):
    """Each rank scores its share (both do work), rank 0 merges: the same videos, skip list, metadata and
    maps as one process scoring everything."""
    cfg_path = _config_file(cnn_setup, tmp_path / "run")
    prepare_process()
    ctx = multiprocessing.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_prepare_rank, args=(rank, port, str(cfg_path))) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, signal.SIGKILL)
            p.join(10)
    assert [p.exitcode for p in procs] == [0, 0]
    parallel = ScoreCache.load(tmp_path / "run" / "scores")
    reports = sorted((tmp_path / "run" / "scores" / "parts").glob("rank-*-of-00002.json"))
    assert [json.loads(r.read_text())["videos"] for r in reports] == [
        2,
        3,
    ]  # rank 0: broken, v1, v3; rank 1: v0, v2, v4

    cfg = load_config(cfg_path)
    masker = DifferenceMasker.load(cnn_setup["stats"], anchor_rule="share")
    items = [(p.name, str(p)) for p in sorted(cnn_setup["videos"].iterdir())]
    alone, skipped = build_score_cache(
        masker, items, size=32, num_frames=4, sampling_rate=2, progress=False, out=tmp_path / "alone"
    )
    assert len(parallel) == len(alone) == 5 and [vid for vid, _ in skipped] == ["broken.mp4"]
    assert parallel.meta == alone.meta and [v for v, _ in parallel.meta["skipped"]] == ["broken.mp4"]
    assert cfg.data.size == parallel.meta["size"] == 32
    for vid in sorted(alone.videos):
        (f1, m1, s1), (f2, m2, s2) = parallel.videos[vid], alone.videos[vid]
        assert np.array_equal(f1, f2) and s1 == s2 and torch.allclose(m1.float(), m2.float(), atol=1e-3)


def test_an_interrupted_build_resumes_with_the_videos_already_scored(cnn_setup, tmp_path, monkeypatch):
    """A build killed after two videos (no meta.json yet) keeps their files; the next build scores only
    the others, and a file made with other settings is scored again."""
    import videomask.difference.cache as cache_module

    masker = DifferenceMasker.load(cnn_setup["stats"], anchor_rule="share")
    items = [(p.name, str(p)) for p in sorted(cnn_setup["videos"].glob("v*.mp4"))]
    options = dict(size=32, num_frames=4, sampling_rate=2, progress=False, out=tmp_path / "scores")
    written: list[str] = []
    real_write = cache_module.write_video_scores

    def write_then_die(root, vid, entry, key=""):
        if len(written) == 2:
            raise KeyboardInterrupt  # the build is killed
        written.append(vid)
        return real_write(root, vid, entry, key)

    monkeypatch.setattr(cache_module, "write_video_scores", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_score_cache(masker, items, **options)
    assert not (tmp_path / "scores" / META_FILE).exists()
    monkeypatch.setattr(cache_module, "write_video_scores", lambda *a, **k: written.append(a[1]) or real_write(*a, **k))
    real_write(tmp_path / "scores", items[4][0], (np.zeros(1, dtype=np.int64), torch.zeros(1, 2, 2), (1, 1)), "other")
    cache, _ = build_score_cache(masker, items, **options)
    assert written[2:] == [vid for vid, _ in items[2:]]  # v0, v1 kept; v4 (other settings) scored again
    assert len(cache) == 5 and cache.videos[items[4][0]][1].shape[0] > 1


def test_videos_in_shards_are_scored_from_the_shards(cnn_setup, tmp_path, capsys):
    """A run whose data are shards builds its score cache from the shards' bytes (no video file needed), and
    `videomask score-cache` takes a shard folder: both equal the cache scored from the files."""
    from videomask.cli import main
    from videomask.data import list_videos, write_shards
    from videomask.train import build_dataset, build_model_from_config, prepare_score_cache
    from videomask.train.distributed import DistInfo

    shards = tmp_path / "shards"
    report = write_shards(list_videos(cnn_setup["videos"]), shards)
    assert report.videos == 5 and [vid for vid, _ in report.rejected] == ["broken.mp4"]
    masker = DifferenceMasker.load(cnn_setup["stats"], anchor_rule="share")
    files = [(p.name, str(p)) for p in sorted(cnn_setup["videos"].iterdir()) if p.name != "broken.mp4"]
    alone, _ = build_score_cache(masker, files, size=32, num_frames=4, sampling_rate=2, progress=False)

    raw = tiny_run(shards, tmp_path / "run", mask={"name": "difference", "options": {"stats": str(cnn_setup["stats"])}})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "run.yaml")
    model, _ = build_model_from_config(cfg)
    dataset = build_dataset(cfg, model.config)
    assert dataset.shards is not None
    prepare_score_cache(cfg, dataset, DistInfo(rank=0, world_size=1), torch.device("cpu"))
    from_run = ScoreCache.load(tmp_path / "run" / "scores")

    code = main(["score-cache", str(shards), "--stats", str(cnn_setup["stats"]), "--size", "32", "--num-frames", "4",
                 "--sampling-rate", "2", "-o", str(tmp_path / "cli")])  # fmt: skip
    assert code == 0 and "5 videos scored" in capsys.readouterr().out
    from_cli = ScoreCache.load(tmp_path / "cli")
    for cache in (from_run, from_cli):
        assert sorted(cache.videos) == sorted(alone.videos) and not cache.meta["skipped"]
        for vid in alone.videos:
            (f1, m1, s1), (f2, m2, s2) = cache.videos[vid], alone.videos[vid]
            assert np.array_equal(f1, f2) and s1 == s2 and torch.allclose(m1.float(), m2.float(), atol=1e-3)
