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


def test_working_size_caps_the_long_side_and_upscales_small_frames():
    from videomask.detect.detectors import working_factor

    assert working_factor(1080, 1920, 576, 960, 6.0) == 0.5  # HD: the long side capped
    assert working_factor(128, 170, 576, 960, 6.0) == pytest.approx(576 / 128)  # small: up to min_side
    assert working_factor(128, 228, 576, 960, 6.0) == pytest.approx(960 / 228)  # ... but never past the cap
    assert working_factor(1080, 1920, 576, None, 6.0) == 1.0  # no cap: as given


@pytest.mark.skipif(not FACE.exists(), reason="shipped clip assets/target/webcam_face.mp4 not present")
def test_boxes_found_at_a_reduced_size_map_back_to_the_frame():
    """The same picture at 160x120 and at 8x that size: the detector works on both at 320x240 and the boxes it
    returns are in each frame's own pixels, 8x apart."""
    import cv2

    from videomask.detect import HaarDetector

    small = _frames(FACE, [0, 30])  # [2, 120, 160, 3]
    big = np.stack([cv2.resize(f, (1280, 960), interpolation=cv2.INTER_CUBIC) for f in small])
    detector = HaarDetector("haarcascade_frontalface_default.xml", "face", min_neighbors=5, max_side=320)
    for (face_small,), (face_big,) in zip(detector(small), detector(big)):
        scaled = np.array(face_big.box) / 8.0
        ix = min(scaled[2], face_small.box[2]) - max(scaled[0], face_small.box[0])
        iy = min(scaled[3], face_small.box[3]) - max(scaled[1], face_small.box[1])
        area = (scaled[2] - scaled[0]) * (scaled[3] - scaled[1])
        other = (face_small.box[2] - face_small.box[0]) * (face_small.box[3] - face_small.box[1])
        iou = max(ix, 0) * max(iy, 0) / (area + other - max(ix, 0) * max(iy, 0))
        assert iou > 0.8, (face_small.box, face_big.box)
        assert 320 < (face_big.box[0] + face_big.box[2]) / 2 < 960  # in the big frame's pixels


ANIMALS = ASSETS / "source" / "bigbuckbunny.mp4"


@pytest.mark.skipif(not ANIMALS.exists(), reason="shipped clip assets/source/bigbuckbunny.mp4 not present")
def test_people_does_not_fire_on_animals_and_still_finds_pedestrians():
    """The thresholds chosen by benchmarks/detector.py: no person on the cartoon rabbit's frames where the
    unthresholded detector found some, the pedestrians still found; HD frames are detected at a capped size."""
    people = build_detector("people")
    assert people(_frames(ANIMALS, [20, 40, 45, 59, 63])) == [[], [], [], [], []]
    if PEDESTRIANS.exists():
        assert all(people(_frames(PEDESTRIANS, [0, 24, 48])))
    assert [part.max_side for part in people.detectors] == [768, 480]
