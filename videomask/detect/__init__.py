"""Anchor objects: offline detectors, the resumable boxes cache, and TF-ICF over detected labels.

Built-in detectors use OpenCV's shipped models (no download): HOG people, Haar full body / upper body
/ frontal and profile face / cat face / licence plate, and combinations (``people`` = HOG + upper
body). Any callable with the same signature works, and so does a precomputed boxes file.

``videomask detect`` runs detection once per video into the **boxes cache**, a JSON-lines file::

    {"video": "a/b.mp4", "frame": 12, "box": [x0, y0, x1, y1], "label": "person", "score": 1.3}
    {"video": "a/b.mp4", "done": true, "num_frames": 300, "stride": 4, "detector": {...}}

Frames ``0, stride, 2*stride, ... < num_frames`` are scanned; the ``done`` line closes a video. A rerun
keeps the closed videos and redoes the others. A lookup returns the boxes of the nearest scanned frame
within the stride.

Modules: ``detectors`` (detection record, OpenCV detectors, NMS), ``registry`` (names,
``build_detector``), ``boxes`` (reading and indexing the cache), ``build`` (writing it), ``labels``
(anchor label choice).
"""

from videomask.detect.boxes import BoxCache, PrecomputedDetector, read_cache
from videomask.detect.build import DetectReport, build_cache, detect_video
from videomask.detect.detectors import (
    CallableDetector,
    CombinedDetector,
    Detection,
    Detector,
    HaarDetector,
    HogPeopleDetector,
    nms,
)
from videomask.detect.labels import choose_anchor_labels, label_tficf
from videomask.detect.registry import DETECTORS, available_detectors, build_detector, detect_frames, register_detector

__all__ = [
    "Detection",
    "Detector",
    "HogPeopleDetector",
    "HaarDetector",
    "CombinedDetector",
    "CallableDetector",
    "PrecomputedDetector",
    "DETECTORS",
    "register_detector",
    "build_detector",
    "available_detectors",
    "nms",
    "detect_frames",
    "detect_video",
    "BoxCache",
    "DetectReport",
    "read_cache",
    "build_cache",
    "choose_anchor_labels",
    "label_tficf",
]
