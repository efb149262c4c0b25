"""Detectors: the :class:`Detection` record and protocol, OpenCV's HOG people and Haar detectors,
per-label NMS, and combined / user-function detectors.

A detector maps RGB frames ``uint8 [N, H, W, 3]`` to one list of :class:`Detection` per frame, with
boxes ``(x0, y0, x1, y1)`` in the frames' own pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from videomask.errors import VideomaskError

__all__ = [
    "Detection",
    "Detector",
    "HogPeopleDetector",
    "HaarDetector",
    "CombinedDetector",
    "CallableDetector",
    "nms",
]


@dataclass(frozen=True)
class Detection:
    """One detected object: ``box = (x0, y0, x1, y1)`` in original frame pixels, a ``label`` and a ``score``.

    The score is the detector's own confidence (HOG: SVM margin; Haar: the last stage's level weight);
    scores of different detectors are not calibrated against each other.
    """

    box: tuple[float, float, float, float]
    label: str
    score: float


class Detector(Protocol):
    """``__call__(frames uint8 [N, H, W, 3] RGB) -> list[list[Detection]]`` (one list per frame), ``.identity``."""

    identity: dict

    def __call__(self, frames: np.ndarray) -> list[list[Detection]]: ...


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise VideomaskError(f"a detector takes uint8 RGB frames [N, H, W, 3], got {frames.dtype} {frames.shape}")
    return frames


def working_factor(height: int, width: int, min_side: int, max_side: int | None, max_scale: float) -> float:
    """The resize factor a detector applies to a ``height`` x ``width`` frame before detecting.

    Small frames are upscaled until their short side reaches ``min_side`` (factor <= ``max_scale``): the
    detectors' windows are larger than people in small clips. Then the long side is capped at ``max_side``
    (None: no cap): detection time grows with the pixel count, and HD frames hold people far larger than
    the windows. Boxes found at the working size are divided by the factor (:func:`_clip_box`).
    """
    factor = min(float(max_scale), max(1.0, float(min_side) / float(min(height, width))))
    if max_side is not None and max(height, width) * factor > max_side:
        factor = float(max_side) / float(max(height, width))
    return factor


def _resize(gray: np.ndarray, factor: float) -> np.ndarray:
    """``gray`` resized by ``factor`` (area averaging down, cubic up; unchanged at 1)."""
    if factor == 1.0:
        return gray
    h, w = gray.shape[:2]
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    return cv2.resize(gray, size, interpolation=cv2.INTER_CUBIC if factor > 1.0 else cv2.INTER_AREA)


def _clip_box(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> tuple[float, float, float, float]:
    return (
        round(float(min(max(x0, 0.0), w)), 2),
        round(float(min(max(y0, 0.0), h)), 2),
        round(float(min(max(x1, 0.0), w)), 2),
        round(float(min(max(y1, 0.0), h)), 2),
    )


class HogPeopleDetector:
    """OpenCV's HOG + linear SVM pedestrian detector (Dalal & Triggs), label ``person``.

    The detector's window is 64x128 px (a person ~96 px tall), so frames whose short side is below
    ``min_side`` are upscaled first: people in small clips are far smaller than the window. A long side
    above ``max_side`` is scaled down to it (:func:`working_factor`): the time grows with the pixel count.
    Boxes come back in the frame's own pixels, shrunk to the person inside the window as in OpenCV's
    ``peopledetect.py`` sample (15% each side horizontally, 5% vertically); boxes scoring below
    ``min_score`` (the SVM margin) are dropped.
    """

    def __init__(
        self,
        *,
        min_side: int = 576,
        max_side: int | None = None,
        max_scale: float = 6.0,
        win_stride: int = 8,
        scale: float = 1.05,
        hit_threshold: float = 0.0,
        min_score: float = 0.0,
    ) -> None:
        self.min_side = int(min_side)
        self.max_side = int(max_side) if max_side is not None else None
        self.max_scale = float(max_scale)
        self.win_stride = int(win_stride)
        self.scale = float(scale)
        self.hit_threshold = float(hit_threshold)
        self.min_score = float(min_score)
        self._hog = None

    @property
    def identity(self) -> dict:
        return {
            "name": "hog",
            "min_side": self.min_side,
            "max_side": self.max_side,
            "max_scale": self.max_scale,
            "win_stride": self.win_stride,
            "scale": self.scale,
            "hit_threshold": self.hit_threshold,
            "min_score": self.min_score,
        }

    def __getstate__(self) -> dict:  # the OpenCV object is rebuilt lazily in each process
        state = dict(self.__dict__)
        state["_hog"] = None
        return state

    def _model(self):
        if self._hog is None:
            hog = cv2.HOGDescriptor()
            hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
            self._hog = hog
        return self._hog

    def __call__(self, frames: np.ndarray) -> list[list[Detection]]:

        frames = _check_frames(frames)
        hog = self._model()
        out: list[list[Detection]] = []
        for frame in frames:
            h, w = frame.shape[:2]
            factor = working_factor(h, w, self.min_side, self.max_side, self.max_scale)
            gray = _resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), factor)
            rects, weights = hog.detectMultiScale(
                gray,
                hitThreshold=self.hit_threshold,
                winStride=(self.win_stride, self.win_stride),
                padding=(8, 8),
                scale=self.scale,
            )
            found = []
            for (x, y, bw, bh), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
                if float(score) < self.min_score:
                    continue
                pw, ph = 0.15 * bw, 0.05 * bh
                box = _clip_box(
                    (x + pw) / factor, (y + ph) / factor, (x + bw - pw) / factor, (y + bh - ph) / factor, w, h
                )
                found.append(Detection(box, "person", round(float(score), 4)))
            out.append(found)
        return out


class HaarDetector:
    """An OpenCV Haar cascade from ``cv2.data.haarcascades`` (shipped with opencv-python), one label.

    Frames are converted to grey, histogram-equalised and upscaled to a short side of at least
    ``min_side``, or scaled down to a long side of at most ``max_side`` (:func:`working_factor`); boxes
    come back in the frame's own pixels. The score is the cascade's last-stage level weight
    (``detectMultiScale3``).
    """

    def __init__(
        self,
        cascade: str,
        label: str,
        *,
        name: str | None = None,
        min_side: int = 320,
        max_side: int | None = None,
        max_scale: float = 6.0,
        scale_factor: float = 1.1,
        min_neighbors: int = 3,
        min_score: float = -math.inf,
    ) -> None:
        self.cascade = cascade
        self.label = label
        self.name = name or f"haar:{cascade}"
        self.min_side = int(min_side)
        self.max_side = int(max_side) if max_side is not None else None
        self.max_scale = float(max_scale)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_score = float(min_score)
        self._model_obj = None

    @property
    def identity(self) -> dict:
        return {
            "name": self.name,
            "cascade": self.cascade,
            "label": self.label,
            "min_side": self.min_side,
            "max_side": self.max_side,
            "max_scale": self.max_scale,
            "scale_factor": self.scale_factor,
            "min_neighbors": self.min_neighbors,
            "min_score": self.min_score if math.isfinite(self.min_score) else None,
        }

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_model_obj"] = None
        return state

    def _model(self):
        if self._model_obj is None:
            path = self.cascade if os.path.exists(self.cascade) else os.path.join(cv2.data.haarcascades, self.cascade)
            model = cv2.CascadeClassifier(path)
            if model.empty():
                raise VideomaskError(f"cannot load Haar cascade {self.cascade!r} (looked in {cv2.data.haarcascades})")
            self._model_obj = model
        return self._model_obj

    def __call__(self, frames: np.ndarray) -> list[list[Detection]]:

        frames = _check_frames(frames)
        model = self._model()
        out: list[list[Detection]] = []
        for frame in frames:
            h, w = frame.shape[:2]
            gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
            factor = working_factor(h, w, self.min_side, self.max_side, self.max_scale)
            gray = _resize(gray, factor)
            rects, _, weights = model.detectMultiScale3(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, outputRejectLevels=True
            )
            found = []
            for (x, y, bw, bh), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
                if float(score) < self.min_score:
                    continue
                box = _clip_box(x / factor, y / factor, (x + bw) / factor, (y + bh) / factor, w, h)
                found.append(Detection(box, self.label, round(float(score), 4)))
            out.append(found)
        return out


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one box ``[4]`` with boxes ``[M, 4]`` -> ``[M]``."""
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(detections: Sequence[Detection], iou: float = 0.5) -> list[Detection]:
    """Greedy non-maximum suppression per label: keep the highest score, drop same-label boxes with IoU > ``iou``."""
    kept: list[Detection] = []
    by_label: dict[str, list[Detection]] = {}
    for det in detections:
        by_label.setdefault(det.label, []).append(det)
    for label in sorted(by_label):
        dets = sorted(by_label[label], key=lambda d: -d.score)
        boxes = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
        alive = np.ones(len(dets), dtype=bool)
        for i in range(len(dets)):
            if not alive[i]:
                continue
            kept.append(dets[i])
            rest = np.arange(i + 1, len(dets))
            if rest.size:
                alive[rest[_iou(boxes[i], boxes[rest]) > iou]] = False
    return kept


class CombinedDetector:
    """Several detectors on the same frames, merged with per-label NMS (:func:`nms`)."""

    def __init__(self, detectors: Sequence[Any], *, name: str, iou: float = 0.5) -> None:
        if not detectors:
            raise VideomaskError("a combined detector needs at least one detector")
        self.detectors = list(detectors)
        self.name = name
        self.iou = float(iou)

    @property
    def identity(self) -> dict:
        return {"name": self.name, "iou": self.iou, "parts": [identity_of(d) for d in self.detectors]}

    def __call__(self, frames: np.ndarray) -> list[list[Detection]]:
        frames = _check_frames(frames)
        per_detector = [d(frames) for d in self.detectors]
        return [nms([det for found in per_detector for det in found[i]], self.iou) for i in range(len(frames))]


class CallableDetector:
    """Wraps a user function ``fn(frames uint8 [N,H,W,3]) -> per-frame lists`` as a detector.

    ``fn`` may return :class:`Detection` objects, or ``(box, label, score)`` tuples / dicts with those
    keys. It must be picklable (a module-level function) to run with ``workers > 1``.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], identity: Mapping[str, Any] | None = None) -> None:
        self.fn = fn
        self._identity = (
            dict(identity)
            if identity
            else {"name": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"}
        )

    @property
    def identity(self) -> dict:
        return dict(self._identity)

    def __call__(self, frames: np.ndarray) -> list[list[Detection]]:
        frames = _check_frames(frames)
        raw = self.fn(frames)
        if len(raw) != len(frames):
            raise VideomaskError(
                f"detector {self._identity['name']} returned {len(raw)} frame lists for {len(frames)} frames"
            )
        return [[_as_detection(d) for d in found] for found in raw]


def _as_detection(d: Any) -> Detection:
    if isinstance(d, Detection):
        return d
    if isinstance(d, Mapping):
        box, label, score = d["box"], d["label"], d.get("score", 1.0)
    else:
        box, label, score = d
    return Detection(tuple(float(v) for v in box), str(label), float(score))  # type: ignore[arg-type]


def identity_of(detector: Any) -> dict:
    ident = getattr(detector, "identity", None)
    if isinstance(ident, Mapping):
        return dict(ident)
    return {"name": f"{type(detector).__module__}.{type(detector).__qualname__}"}
