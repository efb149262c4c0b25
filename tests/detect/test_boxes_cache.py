"""The resumable boxes cache: building, resuming, workers, bad lines, boxes files, ``videomask detect``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_squares import SquareDetector, write_square_clip

from videomask.cli import main
from videomask.detect import BoxCache, PrecomputedDetector, build_cache, build_detector, read_cache
from videomask.errors import VideomaskError


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    paths = {
        name: write_square_clip(root / f"{name}.mp4", num_frames=n) for name, n in (("a", 12), ("b", 9), ("c", 10))
    }
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real video" * 20)
    paths["broken"] = root / "broken.mp4"
    return paths


def _ids(clips: dict[str, Path], names=("a", "b", "c")) -> list[tuple[str, str]]:
    return [(f"{n}.mp4", str(clips[n])) for n in names]


def test_cache_boxes_follow_the_square(clips, tmp_path):
    out = tmp_path / "boxes.jsonl"
    report = build_cache(_ids(clips), out, SquareDetector(), stride=3, progress=False)
    assert report.detected == 3 and not report.skipped
    records, bad, _ = read_cache(out)
    done = {r["video"]: r for r in records if r.get("done")}
    assert (
        done["a.mp4"]["num_frames"] == 12
        and done["a.mp4"]["stride"] == 3
        and done["a.mp4"]["detector"] == {"name": "square"}
    )
    assert sorted(r["frame"] for r in records if r["video"] == "a.mp4" and not r.get("done")) == [0, 3, 6, 9]
    cache = BoxCache.load(out)
    boxes = cache.boxes("a.mp4", [6, 7, 11])  # 7 -> nearest scanned 6; 11 -> 12 is past the end, 9 is nearest
    assert [b.shape[0] for b in boxes] == [1, 1, 1]
    x0 = [float(b[0, 0]) for b in boxes]
    assert abs(x0[0] - (4 + 2 * 6)) <= 1 and x0[1] == x0[0] and abs(x0[2] - (4 + 2 * 9)) <= 1
    assert cache.label_counts() == {"square": 4 + 3 + 4}
    assert "3 videos" in cache.summary()


def test_cache_resumes_after_interruption(clips, tmp_path):
    out = tmp_path / "boxes.jsonl"
    full = build_cache(_ids(clips), out, SquareDetector(), stride=2, progress=False)
    reference = out.read_text()
    lines = reference.splitlines(keepends=True)
    # simulate a crash while writing video c: keep a and b, then half of c's first line
    cut = [i for i, line in enumerate(lines) if '"c.mp4"' in line][0]
    out.write_text("".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
    detector = SquareDetector()
    report = build_cache(_ids(clips), out, detector, stride=2, progress=False)
    assert (report.detected, report.already_done) == (1, 2)
    assert detector.frames_seen == len(range(0, 10, 2))  # only video c (10 frames) was redone
    assert sorted(out.read_text().splitlines()) == sorted(reference.splitlines())
    # a video with box lines but no done line (killed between lines) is redone too, without duplicates
    lines = out.read_text().splitlines(keepends=True)
    done_a = [i for i, line in enumerate(lines) if '"a.mp4"' in line and '"done"' in line][0]
    out.write_text("".join(lines[:done_a] + lines[done_a + 1 :]))
    again = build_cache(_ids(clips), out, SquareDetector(), stride=2, progress=False)
    assert (again.detected, again.already_done) == (1, 2)
    assert sorted(out.read_text().splitlines()) == sorted(reference.splitlines())
    assert full.boxes == sum(1 for line in reference.splitlines() if '"box"' in line)
    # nothing left to do; a different detector or stride must not be mixed into the same file
    assert build_cache(_ids(clips), out, SquareDetector(), stride=2, progress=False).detected == 0
    with pytest.raises(VideomaskError, match="write to a new file"):
        build_cache(_ids(clips), out, SquareDetector(), stride=4, progress=False)


def test_corrupt_video_is_skipped_counted_and_retried(clips, tmp_path):
    out = tmp_path / "boxes.jsonl"
    report = build_cache(
        _ids(clips, ("a", "broken")), out, SquareDetector(), stride=4, progress=False, log=lambda m: None
    )
    assert report.detected == 1 and list(report.skipped) == ["broken.mp4"]
    again = build_cache(
        _ids(clips, ("a", "broken")), out, SquareDetector(), stride=4, progress=False, log=lambda m: None
    )
    assert (again.detected, again.already_done, len(again.skipped)) == (0, 1, 1)
    assert "broken.mp4" not in BoxCache.load(out)


def test_parallel_workers_match_serial(clips, tmp_path):
    serial, parallel = tmp_path / "serial.jsonl", tmp_path / "parallel.jsonl"
    build_cache(_ids(clips), serial, SquareDetector(), stride=3, progress=False)
    report = build_cache(_ids(clips), parallel, SquareDetector(), stride=3, workers=2, progress=False)
    assert report.detected == 3
    assert sorted(serial.read_text().splitlines()) == sorted(parallel.read_text().splitlines())


def test_precomputed_boxes_file_as_detector(clips, tmp_path):
    src = tmp_path / "foreign.jsonl"
    src.write_text(json.dumps({"video": "a.mp4", "frame": 4, "box": [1, 2, 3, 4], "label": "cat", "score": 0.7}) + "\n")
    detector = build_detector(str(src))
    assert isinstance(detector, PrecomputedDetector)
    out = tmp_path / "imported.jsonl"
    build_cache(_ids(clips, ("a",)), out, str(src), stride=4, progress=False)
    cache = BoxCache.load(out)
    assert [len(b) for b in cache.boxes("a.mp4", [0, 4, 8])] == [0, 1, 0]
    with pytest.raises(VideomaskError, match="not in boxes file"):
        detector(np.zeros((1, 8, 8, 3), np.uint8), video_id="zzz.mp4", frame_indices=[0])


def test_partial_trailing_line_and_bad_lines_are_ignored(tmp_path):
    path = tmp_path / "boxes.jsonl"
    good = {"video": "v", "frame": 0, "box": [0, 0, 4, 4], "label": "person", "score": 1.0}
    path.write_text(
        json.dumps(good)
        + "\nnot json\n"
        + json.dumps({"video": "v", "done": True, "num_frames": 4, "stride": 2})
        + '\n{"video": "v", "fra'
    )
    records, bad, complete = read_cache(path)
    assert len(records) == 2 and bad == 1 and complete < path.stat().st_size
    assert [len(b) for b in BoxCache.load(path).boxes("v", [0, 1, 2])] == [1, 1, 0]
    with pytest.raises(VideomaskError, match="does not exist"):
        BoxCache.load(tmp_path / "none.jsonl")


# ------------------------------------------------------------------------------------------ CLI


def test_detect_cli_resumable_and_counts_bad_videos(clips, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a", "b", "broken"):
        (folder / clips[name].name).write_bytes(clips[name].read_bytes())
    out = tmp_path / "boxes.jsonl"
    assert main(["detect", str(folder), "-o", str(out), "--detector", "haar-face", "--stride", "6", "--quiet"]) == 0
    text = capsys.readouterr()
    assert "2 videos detected now, 0 already done, 1 skipped" in text.out
    assert main(["detect", str(folder), "-o", str(out), "--detector", "haar-face", "--stride", "6", "--quiet"]) == 0
    assert "0 videos detected now, 2 already done, 1 skipped" in capsys.readouterr().out
    assert main(["detect", str(folder), "-o", str(out), "--detector", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown detector" in err[0]
    assert main(["detect", str(tmp_path / "missing"), "-o", str(out)]) == 2
