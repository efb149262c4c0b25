"""Detectors: HOG and Haar on shipped clips, the registry, combined and user detectors, NMS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_squares import SquareDetector

from videomask.detect import DETECTORS, CallableDetector, Detection, build_detector, nms
from videomask.errors import VideomaskError
from videomask.video import open_video

ASSETS = Path(__file__).resolve().parents[2] / "assets"
PEDESTRIANS = ASSETS / "target" / "pedestrians_a.mp4"
FACE = ASSETS / "target" / "webcam_face.mp4"
NO_PEOPLE = ASSETS / "source" / "tree.mp4"


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
