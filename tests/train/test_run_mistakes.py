"""User mistakes in a training run: one-line errors before the expensive work, messages that count unreadable
videos as unreadable, the skip list kept in the run folder, and no ``config.yaml`` left by a failed start."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers_train import tiny_run, write_clip

from videomask.config import load_config
from videomask.errors import VideomaskError
from videomask.train import train


def _config(tmp_path: Path, videos: Path, overrides=(), **sections):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_run(videos, tmp_path / "run", **sections)))
    return load_config(path, list(overrides))


def _unreadable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a video\n")
    return path


@pytest.fixture(scope="module")
def cnn_stats(tmp_path_factory, videos) -> Path:
    """Difference statistics fitted with the cnn embedder (an embedder a run scores into a score cache)."""
    from videomask.data import ClipTransform, VideoDataset
    from videomask.difference import CNNEmbedder, fit_statistics

    ds = VideoDataset.from_folder(
        videos, num_frames=4, sampling_rate=2, sampling="center", transform=ClipTransform(size=(32, 32))
    )
    stats = fit_statistics(
        ds, ds, CNNEmbedder(tubelet=(2, 16, 16)), num_words=4, num_anchors=2, num_prototypes=8, progress=False
    )
    return stats.save(tmp_path_factory.mktemp("stats") / "cnn.safetensors")


@pytest.mark.parametrize(
    ("option", "words"),
    [("mask.options.embedder=pixel", ["embedder", "pixel"]), ("mask.options.scorer=enrichment", ["visual words"])],
)
def test_masker_mistakes_stop_before_the_score_cache(tmp_path, videos, cnn_stats, option, words):
    """An embedder given by name, or a word anchor rule with the score cache the cnn embedder gets: one line,
    and no score cache built first."""
    cfg = _config(tmp_path, videos, ["mask.name=difference", f"mask.options.stats={cnn_stats}", option])
    with pytest.raises(VideomaskError) as caught:
        train(cfg)
    assert "\n" not in str(caught.value) and all(w in str(caught.value) for w in words), str(caught.value)
    assert not (tmp_path / "run" / "scores").exists()
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_an_unreadable_only_video_in_a_worker_is_one_line_with_the_skip_list_in_the_run_folder(tmp_path):
    bad = _unreadable(tmp_path / "videos" / "x.mp4").parent
    cfg = _config(tmp_path, bad, data={"batch_size": 1, "num_workers": 1})
    with pytest.raises(VideomaskError) as caught:
        train(cfg)
    message = str(caught.value)
    run = tmp_path / "run"
    assert "\n" not in message and "every video failed to decode (1 video;" in message and "x.mp4" in message
    assert f"all reasons in {run / 'skipped.tsv'}" in message
    assert (run / "skipped.tsv").read_text().startswith("x.mp4\t")  # still there after the run
    assert not (run / "config.yaml").exists() and not (run / "metrics.jsonl").exists()


def test_too_few_videos_counts_the_unreadable_ones(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_clip(folder / "good.mp4")
    _unreadable(folder / "broken.mp4")
    with pytest.raises(VideomaskError) as caught:
        train(_config(tmp_path / "a", folder, data={"batch_size": 4}))
    message = str(caught.value)
    assert "1 readable video (1 unreadable; first: broken.mp4: " in message and "data.batch_size" in message
    (folder / "good.mp4").unlink()
    with pytest.raises(VideomaskError, match=r"no video in data.path can be read \(1 unreadable; first: broken"):
        train(_config(tmp_path / "b", folder, data={"batch_size": 4}))


def test_a_fresh_run_lists_its_own_skipped_videos_in_the_run_folder(tmp_path, videos):
    """A good run with one broken video lists it in run/skipped.tsv; a list left by an earlier failed start
    is not reused (the video it names may have been fixed since)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for clip in sorted(videos.glob("*.mp4")):
        (folder / clip.name).write_bytes(clip.read_bytes())
    _unreadable(folder / "broken.mp4")
    run = tmp_path / "run"
    run.mkdir()
    (run / "skipped.tsv").write_text("v0.mp4\tcannot open video (an earlier run)\n")
    result = train(_config(tmp_path, folder, train={"steps": 4, "save_every": 0}))
    assert result.ok
    listed = [line.split("\t")[0] for line in (run / "skipped.tsv").read_text().splitlines()]
    assert listed == ["broken.mp4"]


def test_a_config_yaml_the_run_did_not_write_stays_after_a_failed_start(tmp_path):
    bad = _unreadable(tmp_path / "videos" / "x.mp4").parent
    cfg = _config(tmp_path, bad, data={"batch_size": 1})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("# the user's own file\n")
    with pytest.raises(VideomaskError):
        train(cfg)
    assert (run / "config.yaml").exists()
