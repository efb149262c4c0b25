"""A video whose read hangs (its open blocks until the test ends) costs its rank ``data.timeout_s`` once:
it is skipped for good, listed in the skip log, and replaced by the next video exactly as a corrupt video
is, so training goes on with the same batches."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers_train import tiny_run, write_videos
from safetensors.torch import load_file

import videomask.data.dataset as dataset_module
from videomask.config import load_config
from videomask.data import VideoDataset
from videomask.errors import VideomaskError
from videomask.io import MODEL_FILE
from videomask.train import train


@pytest.fixture()
def listing(tmp_path):
    """A list file: v0, then ``odd.mp4`` (a good video, made to hang or made corrupt by the test), v1..v3."""
    videos = write_videos(tmp_path / "videos", count=4)
    shutil.copy(videos / "v3.mp4", videos / "odd.mp4")
    names = ["v0.mp4", "odd.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    path = tmp_path / "videos.txt"
    path.write_text("".join(f"videos/{n}\n" for n in names))
    return path, videos / "odd.mp4"


@pytest.fixture()
def hang_odd(monkeypatch):
    """Opening ``odd.mp4`` blocks until the test ends (also in forked DataLoader workers)."""
    release = threading.Event()
    real_open = dataset_module.open_video

    def hanging_open(path, *args, **kwargs):
        if str(path).endswith("odd.mp4"):
            release.wait()
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "open_video", hanging_open)
    yield
    release.set()  # the abandoned decode threads of this process end


def test_a_hung_video_is_replaced_by_the_next_one_deterministically(listing, hang_odd):
    path, _ = listing
    start = time.monotonic()
    first = VideoDataset.from_list(path, num_frames=4, sampling_rate=2, size=32, seed=3, timeout=0.5)[1]
    assert time.monotonic() - start < 5  # one time-out, not a hang
    again = VideoDataset.from_list(path, num_frames=4, sampling_rate=2, size=32, seed=3, timeout=0.5)
    second = again[1]
    assert first["video_id"] == second["video_id"] == "videos/v1.mp4"  # the next video in the list
    assert torch.equal(first["video"], second["video"]) and torch.equal(first["geometry"], second["geometry"])
    assert again.skipped_videos() == [("videos/odd.mp4", "decode timed out after 0.5 s")]


def _train(tmp_path: Path, videos_list: Path, name: str) -> Path:
    raw = tiny_run(videos_list, tmp_path / name, data={"timeout_s": 2.0, "num_workers": 2}, train={"steps": 3})
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    result = train(load_config(cfg))
    assert result.ok and result.steps == 3
    return tmp_path / name


def test_training_goes_on_past_a_hung_video_with_a_corrupt_videos_batches(tmp_path, listing, hang_odd):
    """Two loader workers meet the hung video: the run finishes, lists it in skipped.tsv as timed out, and
    trains to the same weights as a run where that video is a corrupt file."""
    path, odd = listing
    hung = _train(tmp_path, path, "hung")
    odd.write_bytes(b"not a video")
    corrupt = _train(tmp_path, path, "corrupt")
    skipped = (hung / "skipped.tsv").read_text()
    assert "videos/odd.mp4\tdecode timed out after 2 s" in skipped
    assert "videos/odd.mp4" in (corrupt / "skipped.tsv").read_text()
    a, b = load_file(str(hung / "final" / MODEL_FILE)), load_file(str(corrupt / "final" / MODEL_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_item_timeout_is_a_checked_config_key(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(tmp_path / "videos", tmp_path / "run")))
    assert load_config(cfg).data.timeout_s == 30.0 and load_config(cfg, ["data.timeout_s=0"]).data.timeout_s == 0
    for overrides, words in (
        (["data.timeout_s=-1"], "data.timeout_s must be >= 0"),
        (["data.timeout_s=60", "run.dist_timeout_s=60"], "must be shorter than run.dist_timeout_s=60"),
        (["data.options.timeout=5"], "data.options.timeout is now data.timeout_s"),
    ):
        with pytest.raises(VideomaskError, match=words) as err:
            load_config(cfg, overrides)
        assert "\n" not in str(err.value)
