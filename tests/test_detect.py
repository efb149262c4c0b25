"""Detectors, the resumable boxes cache, ``videomask detect`` and TF-ICF over detected labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers_squares import SquareDetector, write_square_clip

from videomask.cli import main
from videomask.detect import (
    DETECTORS,
    BoxCache,
    CallableDetector,
    Detection,
    PrecomputedDetector,
    build_cache,
    build_detector,
    choose_anchor_labels,
    label_tficf,
    nms,
    read_cache,
)
from videomask.errors import VideomaskError
from videomask.video import open_video

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PEDESTRIANS = ASSETS / "target" / "pedestrians_a.mp4"
FACE = ASSETS / "target" / "webcam_face.mp4"
NO_PEOPLE = ASSETS / "source" / "tree.mp4"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    paths = {
        name: write_square_clip(root / f"{name}.mp4", num_frames=n) for name, n in (("a", 12), ("b", 9), ("c", 10))
    }
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real video" * 20)
    paths["broken"] = root / "broken.mp4"
    return paths


# ------------------------------------------------------------------------------------------ detectors


def _frames(path: Path, indices: list[int]) -> np.ndarray:
    with open_video(str(path)) as reader:
        return reader.read(indices)


@pytest.mark.skipif(
    not PEDESTRIANS.exists(), reason="shipped pedestrian clip assets/target/pedestrians_a.mp4 not present"
)
def test_hog_finds_the_pedestrians_in_a_shipped_clip():
    frames = _frames(PEDESTRIANS, [0, 24, 48])  # 170x128: people are ~25-45 px tall
    found = build_detector("hog")(frames)
    counts = [len(f) for f in found]
    print("HOG people per frame on pedestrians_a:", counts)
    assert min(counts) >= 2  # the square is busy in every frame (vtest.avi shows 4-7 people)
    h, w = frames.shape[1:3]
    for det in (d for f in found for d in f):
        x0, y0, x1, y1 = det.box
        assert det.label == "person" and 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (y1 - y0) > (x1 - x0)  # upright people are taller than wide
    if NO_PEOPLE.exists():
        assert build_detector("hog")(_frames(NO_PEOPLE, [0, 24])) == [[], []]  # a tree through a window


@pytest.mark.skipif(not FACE.exists(), reason="shipped clip assets/target/webcam_face.mp4 not present")
def test_haar_face_finds_the_webcam_face():
    frames = _frames(FACE, [0, 30])  # 160x120, a man talking to a webcam
    found = build_detector("haar-face")(frames)
    assert [len(f) for f in found] == [1, 1]
    for (det,) in found:
        x0, y0, x1, y1 = det.box
        assert det.label == "face" and 40 < (x0 + x1) / 2 < 120 and (y0 + y1) / 2 < 70  # upper middle of the frame


def test_registry_combined_and_user_detectors():
    assert {"hog", "haar-face", "haar-fullbody", "haar-upperbody", "people", "faces", "all"} <= set(DETECTORS)
    people = build_detector("people")
    assert people.identity["name"] == "people" and [p["name"] for p in people.identity["parts"]] == [
        "hog",
        "haar-upperbody",
    ]
    blank = np.full((2, 64, 48, 3), 128, dtype=np.uint8)
    assert people(blank) == [[], []]  # nothing on a uniform frame
    with pytest.raises(VideomaskError, match="unknown detector"):
        build_detector("yolo")
    fn = CallableDetector(lambda frames: [[((1, 2, 3, 4), "thing", 0.5)] for _ in frames])
    assert fn(blank)[1] == [Detection((1.0, 2.0, 3.0, 4.0), "thing", 0.5)]
    assert build_detector(SquareDetector()).identity == {"name": "square"}
    with pytest.raises(VideomaskError, match="uint8"):
        people(np.zeros((1, 8, 8), dtype=np.float32))


def test_nms_per_label():
    dets = [
        Detection((0, 0, 10, 20), "person", 0.9),
        Detection((1, 0, 11, 20), "person", 0.5),  # IoU 0.82 with the first: suppressed
        Detection((1, 0, 11, 20), "face", 0.4),  # another label: kept
        Detection((30, 0, 40, 20), "person", 0.3),  # far away: kept
    ]
    kept = nms(dets, iou=0.5)
    assert sorted((d.label, d.score) for d in kept) == [("face", 0.4), ("person", 0.3), ("person", 0.9)]


# ------------------------------------------------------------------------------------------ the cache


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


# ------------------------------------------------------------------------------------------ TF-ICF


def _synthetic(video: str, scanned: int, present: dict[str, int]) -> BoxCache:
    """A cache of one video with ``scanned`` frames; label ``l`` is detected in the first ``present[l]`` frames."""
    records = [
        {"video": video, "frame": f, "box": [0, 0, 8, 8], "label": label, "score": 1.0}
        for label, n in present.items()
        for f in range(n)
    ]
    records.append({"video": video, "done": True, "num_frames": scanned, "stride": 1})
    return BoxCache.from_records(records)


def test_tficf_label_choice():
    target = _synthetic("t", 100, {"person": 80, "dog": 50, "car": 10})
    source = _synthetic("s", 200, {"person": 180, "car": 150})
    scores = label_tficf(target, source)
    V = 3
    assert math.isclose(scores["dog"], 0.5 * math.log((200 + V) / 1))
    assert math.isclose(scores["person"], 0.8 * math.log((200 + V) / 181))
    assert choose_anchor_labels(target, source, top_k=1) == ["dog"]  # frequent in the target, absent in the source
    assert choose_anchor_labels(target, source, top_k=3) == ["dog", "person", "car"]
    with pytest.raises(VideomaskError, match="no detections"):
        choose_anchor_labels(_synthetic("e", 10, {}), source)


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
