"""The detector registry (built-in names, registered at import), :func:`build_detector` and :func:`detect_frames`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videomask.detect.boxes import PrecomputedDetector
from videomask.detect.detectors import CallableDetector, CombinedDetector, Detection, HaarDetector, HogPeopleDetector
from videomask.errors import VideomaskError

__all__ = ["DETECTORS", "register_detector", "available_detectors", "build_detector", "detect_frames"]

DETECTORS: dict[str, Callable[..., Any]] = {}


def register_detector(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a detector factory (no required arguments) under ``name``."""

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        DETECTORS[name] = factory
        return factory

    return decorator


def available_detectors() -> list[str]:
    """Names of the registered detectors, sorted."""
    return sorted(DETECTORS)


# the working size (long side capped) and score thresholds of the people detectors, chosen on footage with
# and without people by benchmarks/detector.py (benchmarks/results/detector.md)
HOG_DEFAULTS: dict[str, Any] = {"max_side": 768, "min_score": 0.5}
UPPERBODY_DEFAULTS: dict[str, Any] = {"max_side": 480, "min_score": 0.5}
PEOPLE_NMS_IOU = 0.5

register_detector("hog")(lambda: HogPeopleDetector(**HOG_DEFAULTS))
register_detector("haar-fullbody")(lambda: HaarDetector("haarcascade_fullbody.xml", "person", name="haar-fullbody"))
register_detector("haar-upperbody")(
    lambda: HaarDetector("haarcascade_upperbody.xml", "person", name="haar-upperbody", **UPPERBODY_DEFAULTS)
)
register_detector("haar-face")(
    lambda: HaarDetector("haarcascade_frontalface_default.xml", "face", name="haar-face", min_neighbors=5)
)
register_detector("haar-profileface")(
    lambda: HaarDetector("haarcascade_profileface.xml", "face", name="haar-profileface", min_neighbors=5)
)
register_detector("haar-catface")(
    lambda: HaarDetector("haarcascade_frontalcatface.xml", "cat", name="haar-catface", min_neighbors=5)
)
register_detector("haar-plate")(
    lambda: HaarDetector("haarcascade_russian_plate_number.xml", "license_plate", name="haar-plate", min_neighbors=5)
)
register_detector("people")(
    lambda: CombinedDetector([DETECTORS["hog"](), DETECTORS["haar-upperbody"]()], name="people", iou=PEOPLE_NMS_IOU)
)
register_detector("bodies")(
    lambda: CombinedDetector([DETECTORS[n]() for n in ("hog", "haar-fullbody", "haar-upperbody")], name="bodies")
)
register_detector("faces")(
    lambda: CombinedDetector([DETECTORS["haar-face"](), DETECTORS["haar-profileface"]()], name="faces")
)
register_detector("all")(
    lambda: CombinedDetector(
        [
            DETECTORS[n]()
            for n in (
                "hog",
                "haar-fullbody",
                "haar-upperbody",
                "haar-face",
                "haar-profileface",
                "haar-catface",
                "haar-plate",
            )
        ],
        name="all",
    )
)


def build_detector(spec: Any) -> Any:
    """A detector from a registered name, a boxes file path (``.jsonl``), a detector object or a callable."""
    if isinstance(spec, (str, Path)):
        name = str(spec)
        if name in DETECTORS:
            return DETECTORS[name]()
        if name.endswith((".jsonl", ".json")) or os.path.isfile(name):
            return PrecomputedDetector(name)
        raise VideomaskError(
            f"unknown detector {name!r} (choose from {', '.join(available_detectors())}, or a boxes .jsonl file)"
        )
    if hasattr(spec, "identity") and callable(spec):
        return spec
    if callable(spec):
        return CallableDetector(spec)
    raise VideomaskError(f"a detector must be a name, a boxes file or a callable, got {type(spec).__name__}")


def _wants_context(detector: Any) -> bool:
    return bool(getattr(detector, "wants_context", False))


def detect_frames(
    detector: Any, frames: np.ndarray, *, video_id: str | None = None, frame_indices: Sequence[int] | None = None
) -> list[list[Detection]]:
    """Run ``detector`` on frames; detectors that need the frames' identity (precomputed files) get it."""
    if _wants_context(detector):
        return detector(frames, video_id=video_id, frame_indices=frame_indices)
    return detector(frames)
