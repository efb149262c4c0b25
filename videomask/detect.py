"""Anchor objects: offline detectors, the resumable boxes cache, and TF-ICF over detected labels.

Detectors map RGB frames ``uint8 [N, H, W, 3]`` to one list of :class:`Detection` per frame, with
boxes ``(x0, y0, x1, y1)`` in the frames' own (original) pixels. Built in, with OpenCV's shipped
models (no download): HOG people, Haar full body / upper body / frontal and profile face / cat face /
licence plate, and combinations of them (``people`` = HOG + upper body). Any callable with the same
signature works, and so does a precomputed boxes file (:class:`PrecomputedDetector`).

Detection is slow, so ``videomask detect`` runs it once per video and writes the **boxes cache**, a
JSON-lines file::

    {"video": "a/b.mp4", "frame": 12, "box": [x0, y0, x1, y1], "label": "person", "score": 1.3}
    {"video": "a/b.mp4", "done": true, "num_frames": 300, "stride": 4, "detector": {...}}

Frames ``0, stride, 2*stride, ... < num_frames`` are scanned; the ``done`` line closes a video. A rerun
keeps the closed videos and redoes only the others (lines of unfinished videos and a partial trailing
line are dropped first). :meth:`BoxCache.load` indexes the file in memory once; a lookup returns the
boxes of the nearest scanned frame within the stride.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from videomask.errors import VideomaskError

if TYPE_CHECKING:  # torch is imported lazily: detection worker processes start without it
    from torch import Tensor

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


def _upscale(gray: np.ndarray, min_side: int, max_scale: float) -> tuple[np.ndarray, float]:
    """Resize ``gray`` so its short side is at least ``min_side`` (factor <= ``max_scale``); returns (image, factor)."""
    import cv2

    h, w = gray.shape[:2]
    factor = min(float(max_scale), max(1.0, float(min_side) / float(min(h, w))))
    if factor <= 1.0:
        return gray, 1.0
    size = (int(round(w * factor)), int(round(h * factor)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_CUBIC), factor


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
    ``min_side`` are upscaled first (the shipped clips are 128-160 px on the short side, where people
    are 25-40 px tall). Boxes are shrunk to the person inside the window as in OpenCV's
    ``peopledetect.py`` sample (15% each side horizontally, 5% vertically).
    """

    def __init__(
        self,
        *,
        min_side: int = 576,
        max_scale: float = 6.0,
        win_stride: int = 8,
        scale: float = 1.05,
        hit_threshold: float = 0.0,
        min_score: float = 0.0,
    ) -> None:
        self.min_side = int(min_side)
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
            import cv2

            hog = cv2.HOGDescriptor()
            hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
            self._hog = hog
        return self._hog

    def __call__(self, frames: np.ndarray) -> list[list[Detection]]:
        import cv2

        frames = _check_frames(frames)
        hog = self._model()
        out: list[list[Detection]] = []
        for frame in frames:
            h, w = frame.shape[:2]
            gray, factor = _upscale(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), self.min_side, self.max_scale)
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
    ``min_side``. The score is the cascade's last-stage level weight (``detectMultiScale3``).
    """

    def __init__(
        self,
        cascade: str,
        label: str,
        *,
        name: str | None = None,
        min_side: int = 320,
        max_scale: float = 6.0,
        scale_factor: float = 1.1,
        min_neighbors: int = 3,
        min_score: float = -math.inf,
    ) -> None:
        self.cascade = cascade
        self.label = label
        self.name = name or f"haar:{cascade}"
        self.min_side = int(min_side)
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
            import cv2

            path = self.cascade if os.path.exists(self.cascade) else os.path.join(cv2.data.haarcascades, self.cascade)
            model = cv2.CascadeClassifier(path)
            if model.empty():
                raise VideomaskError(f"cannot load Haar cascade {self.cascade!r} (looked in {cv2.data.haarcascades})")
            self._model_obj = model
        return self._model_obj

    def __call__(self, frames: np.ndarray) -> list[list[Detection]]:
        import cv2

        frames = _check_frames(frames)
        model = self._model()
        out: list[list[Detection]] = []
        for frame in frames:
            h, w = frame.shape[:2]
            gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
            gray, factor = _upscale(gray, self.min_side, self.max_scale)
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
        return {"name": self.name, "iou": self.iou, "parts": [_identity_of(d) for d in self.detectors]}

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


def _identity_of(detector: Any) -> dict:
    ident = getattr(detector, "identity", None)
    if isinstance(ident, Mapping):
        return dict(ident)
    return {"name": f"{type(detector).__module__}.{type(detector).__qualname__}"}


# --------------------------------------------------------------------------------------------- #
# registry
# --------------------------------------------------------------------------------------------- #

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


register_detector("hog")(lambda: HogPeopleDetector())
register_detector("haar-fullbody")(lambda: HaarDetector("haarcascade_fullbody.xml", "person", name="haar-fullbody"))
register_detector("haar-upperbody")(lambda: HaarDetector("haarcascade_upperbody.xml", "person", name="haar-upperbody"))
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
    lambda: CombinedDetector([DETECTORS["hog"](), DETECTORS["haar-upperbody"]()], name="people")
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


# --------------------------------------------------------------------------------------------- #
# the boxes cache: reading and indexing
# --------------------------------------------------------------------------------------------- #


def read_cache(path: str | Path) -> tuple[list[dict], int, int]:
    """Parse a boxes cache: ``(records, bad_lines, complete_bytes)``.

    A trailing line without its newline (an interrupted write) is ignored, and so are lines that do
    not parse as JSON objects (counted in ``bad_lines``). ``complete_bytes`` is the length of the
    file up to its last complete line.
    """
    data = Path(path).read_bytes()
    end = data.rfind(b"\n") + 1  # 0 when there is no complete line
    records: list[dict] = []
    bad = 0
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(rec, dict) or "video" not in rec:
            bad += 1
            continue
        records.append(rec)
    return records, bad, end


_KEY = np.int64(1) << np.int64(32)  # flat index key = video number * 2**32 + frame index


@dataclass
class _VideoBoxes:
    """In-memory index of one video: scanned frames (sorted), per-frame offsets into its boxes."""

    frames: np.ndarray  # [F] int64, sorted scanned frame indices
    offsets: np.ndarray  # [F + 1] int64, boxes of frames[i] are boxes[offsets[i]:offsets[i+1]]
    boxes: np.ndarray  # [M, 4] float32, original pixels
    labels: np.ndarray  # [M] int32 ids into BoxCache.labels
    scores: np.ndarray  # [M] float32
    stride: int
    num_frames: int | None
    done: bool


class BoxCache:
    """A boxes cache indexed in memory for cheap lookups (see the module docstring for the file format).

    ``boxes(video_id, frame_indices, labels)`` returns, for each asked frame, the boxes ``[N_k, 4]``
    (original pixels) of the nearest scanned frame, when that frame is at most ``stride`` away.
    Videos with a ``done`` line were scanned at ``0, stride, ... < num_frames``; videos without one
    (an interrupted run, or a foreign boxes file) use the frames that have boxes, with ``stride`` given
    to :meth:`load` or, by default, the greatest common divisor of their frame indices' gaps.
    """

    def __init__(
        self, videos: dict[str, _VideoBoxes], labels: list[str], path: str | None = None, detector: dict | None = None
    ) -> None:
        self.videos = videos
        self.labels = labels
        self.label_ids = {name: i for i, name in enumerate(labels)}
        self.path = path
        self.detector = detector
        self._build_index()

    def _build_index(self) -> None:
        """One flat index over all videos for batched lookups: key = video number * 2**32 + frame."""
        order = sorted(self.videos)
        self._number = {vid: i for i, vid in enumerate(order)}
        vids = [self.videos[vid] for vid in order]
        frames = [v.frames for v in vids]
        self._keys = (
            np.concatenate([np.int64(i) * _KEY + f for i, f in enumerate(frames)]) if vids else np.zeros(0, np.int64)
        )
        starts = np.cumsum([0] + [len(v.boxes) for v in vids])
        self._offsets = np.concatenate([v.offsets[:-1] + s for v, s in zip(vids, starts)] + [starts[-1:]]).astype(
            np.int64
        )
        self._boxes = np.concatenate([v.boxes for v in vids]) if vids else np.zeros((0, 4), np.float32)
        self._labels = np.concatenate([v.labels for v in vids]) if vids else np.zeros(0, np.int32)
        self._scores = np.concatenate([v.scores for v in vids]) if vids else np.zeros(0, np.float32)
        self._strides = np.array([v.stride for v in vids], dtype=np.int64)

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, stride: int | None = None) -> "BoxCache":
        """Read and index a cache file (a missing or empty file is a user error)."""
        path = Path(path)
        if not path.is_file():
            raise VideomaskError(f"boxes cache {str(path)!r} does not exist (build it with `videomask detect`)")
        records, _, _ = read_cache(path)
        if not records:
            raise VideomaskError(f"boxes cache {str(path)!r} holds no records")
        return cls.from_records(records, stride=stride, path=str(path))

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], *, stride: int | None = None, path: str | None = None
    ) -> "BoxCache":
        """Index records (dicts in the cache's line format)."""
        boxes: dict[str, list[tuple[int, list[float], str, float]]] = {}
        done: dict[str, Mapping[str, Any]] = {}
        for rec in records:
            vid = str(rec["video"])
            if rec.get("done"):
                done[vid] = rec
                boxes.setdefault(vid, [])
            elif "box" in rec:
                boxes.setdefault(vid, []).append(
                    (int(rec["frame"]), rec["box"], str(rec.get("label", "object")), float(rec.get("score", 1.0)))
                )
        labels = sorted({label for items in boxes.values() for _, _, label, _ in items})
        label_ids = {name: i for i, name in enumerate(labels)}
        videos: dict[str, _VideoBoxes] = {}
        detector = None
        for vid, items in boxes.items():
            items.sort(key=lambda it: it[0])
            box_frames = np.array([it[0] for it in items], dtype=np.int64)
            rec = done.get(vid)
            if rec is not None:
                s = max(1, int(rec.get("stride", 1)))
                n = int(rec.get("num_frames", int(box_frames.max()) + 1 if box_frames.size else 0))
                frames = np.arange(0, n, s, dtype=np.int64)
                detector = detector or rec.get("detector")
                extra = np.setdiff1d(box_frames, frames)  # boxes off the stride grid (foreign files)
                if extra.size:
                    frames = np.union1d(frames, extra)
            else:
                frames = np.unique(box_frames)
                if stride is not None:
                    s = int(stride)
                else:
                    gaps = np.diff(frames)
                    s = int(np.gcd.reduce(gaps)) if gaps.size else 1
                n = None
            slot = np.searchsorted(frames, box_frames)  # [M] scanned-frame slot of each box
            counts = np.bincount(slot, minlength=len(frames))
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            videos[vid] = _VideoBoxes(
                frames=frames,
                offsets=offsets,
                boxes=np.array([it[1] for it in items], dtype=np.float32).reshape(-1, 4),
                labels=np.array([label_ids[it[2]] for it in items], dtype=np.int32),
                scores=np.array([it[3] for it in items], dtype=np.float32),
                stride=max(1, s),
                num_frames=n,
                done=rec is not None,
            )
        return cls(videos, labels, path, detector)

    @classmethod
    def from_detections(
        cls,
        video_id: str,
        frame_indices: Sequence[int],
        detections: Sequence[Sequence[Detection]],
        *,
        num_frames: int | None = None,
    ) -> "BoxCache":
        """An in-memory cache of one video from detections on the given frames (e.g. ``show-masks --detector``)."""
        records: list[dict] = []
        for frame, found in zip(frame_indices, detections):
            for d in found:
                records.append(
                    {"video": video_id, "frame": int(frame), "box": list(d.box), "label": d.label, "score": d.score}
                )
        cache = cls.from_records(records)
        frames = np.unique(np.asarray(list(frame_indices), dtype=np.int64))
        if video_id in cache.videos:  # every asked frame was scanned, also those without boxes
            old = cache.videos[video_id]
            slot = np.searchsorted(frames, np.repeat(old.frames, np.diff(old.offsets)))
            old.offsets = np.concatenate([[0], np.cumsum(np.bincount(slot, minlength=len(frames)))]).astype(np.int64)
            old.frames = frames
            old.done = True
        else:
            cache.videos[video_id] = _VideoBoxes(
                frames,
                np.zeros(len(frames) + 1, np.int64),
                np.zeros((0, 4), np.float32),
                np.zeros(0, np.int32),
                np.zeros(0, np.float32),
                1,
                num_frames,
                True,
            )
        gaps = np.diff(frames)
        cache.videos[video_id].stride = int(gaps.max()) if gaps.size else 1
        cache._build_index()
        return cache

    # -- queries -------------------------------------------------------------------------------
    def __contains__(self, video_id: object) -> bool:
        return video_id in self.videos

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def video_ids(self) -> list[str]:
        return sorted(self.videos)

    def resolve_video_id(self, path_or_id: str) -> str | None:
        """The cache's id for a video path: the id itself, or the one id that the path ends with."""
        if path_or_id in self.videos:
            return path_or_id
        posix = Path(path_or_id).as_posix()
        matches = [vid for vid in self.videos if posix == vid or posix.endswith("/" + vid)]
        return matches[0] if len(matches) == 1 else None

    def label_mask(self, labels: Sequence[str] | str | None) -> np.ndarray:
        """Bool ``[num_labels]``: which label ids are kept (``None`` keeps every label)."""
        if labels is None:
            return np.ones(len(self.labels), dtype=bool)
        if isinstance(labels, str):
            labels = [labels]
        keep = np.zeros(len(self.labels), dtype=bool)
        for name in labels:
            if name in self.label_ids:
                keep[self.label_ids[name]] = True
        return keep

    def _check(self, video_id: str) -> None:
        if video_id not in self.videos:
            raise VideomaskError(
                f"video {video_id!r} is not in boxes cache {self.path or '(in memory)'} "
                "(run `videomask detect` on this data)"
            )

    def _lookup(
        self, video_ids: Sequence[str | None], frame_indices: np.ndarray, keep: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of the flat box table answering a batch of clips: ``(rows [N], clip [N], frame_pos [N])``.

        Each asked frame takes the boxes of the nearest scanned frame of its video (the earlier one on
        a tie) when it is at most the video's stride away. One ``searchsorted`` for the whole batch.
        """
        frame_indices = np.asarray(frame_indices, dtype=np.int64)  # [B, T]
        T = frame_indices.shape[1]
        present = [b for b, vid in enumerate(video_ids) if vid is not None]
        none = np.zeros(0, np.int64)
        if not present or self._keys.size == 0:
            return none, none, none
        for b in present:
            self._check(video_ids[b])  # type: ignore[arg-type]
        number = np.array([self._number[video_ids[b]] for b in present], dtype=np.int64)  # [B']
        query = (number[:, None] * _KEY + frame_indices[present]).reshape(-1)  # [B'*T]
        owner = np.repeat(number, T)  # [B'*T] video number of each query
        pos = np.searchsorted(self._keys, query)  # first scanned key >= query
        left = np.clip(pos - 1, 0, len(self._keys) - 1)
        right = np.clip(pos, 0, len(self._keys) - 1)
        far = np.iinfo(np.int64).max
        d_left = np.where(self._keys[left] // _KEY == owner, np.abs(self._keys[left] - query), far)
        d_right = np.where(self._keys[right] // _KEY == owner, np.abs(self._keys[right] - query), far)
        slot = np.where(d_right < d_left, right, left)  # [B'*T] nearest scanned frame of the same video
        valid = np.minimum(d_left, d_right) <= self._strides[owner]
        starts = self._offsets[slot]
        counts = np.where(valid, self._offsets[slot + 1] - starts, 0)  # [B'*T] boxes per query
        total = int(counts.sum())
        if total == 0:
            return none, none, none
        query_of = np.repeat(np.arange(len(query)), counts)  # [N] which query each box answers
        first = np.cumsum(counts) - counts
        rows = np.repeat(starts - first, counts) + np.arange(total)  # [N] rows of the flat box table
        ok = np.ones(total, bool) if keep is None else keep[self._labels[rows]]
        clip = np.asarray(present, dtype=np.int64)[query_of // T]
        return rows[ok], clip[ok], (query_of % T)[ok]

    def gather_batch(
        self, video_ids: Sequence[str | None], frame_indices: np.ndarray, keep: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat lookup for a batch of clips in one pass: ``(boxes [N, 4] float32, clip [N], frame_pos [N])``.

        ``frame_indices [B, T]``; ``video_ids[b] = None`` skips clip ``b``; other ids must be in the
        cache. ``keep``: bool ``[num_labels]`` from :meth:`label_mask` (None keeps every label).
        """
        rows, clip, pos = self._lookup(video_ids, frame_indices, keep)
        return self._boxes[rows], clip, pos

    def boxes(
        self,
        video_id: str,
        frame_indices: Sequence[int] | np.ndarray | Tensor,
        labels: Sequence[str] | str | None = None,
    ) -> list[Tensor]:
        """Boxes ``[N_k, 4]`` (float32, original pixels) for each asked frame; ``labels`` filters (None = all)."""
        import torch

        if isinstance(frame_indices, torch.Tensor):
            frame_indices = frame_indices.cpu().numpy()
        self._check(video_id)
        asked = np.asarray(frame_indices, dtype=np.int64).reshape(1, -1)  # [1, T]
        rows, _, pos = self._lookup([video_id], asked, self.label_mask(labels))
        split = np.searchsorted(pos, np.arange(1, asked.shape[1]))  # pos is sorted
        return [torch.from_numpy(np.ascontiguousarray(b)) for b in np.split(self._boxes[rows], split)]

    def detections(
        self, video_id: str, frame_indices: Sequence[int], labels: Sequence[str] | str | None = None
    ) -> list[list[Detection]]:
        """Like :meth:`boxes` but as :class:`Detection` lists (with labels and scores), for drawing."""
        self._check(video_id)
        asked = np.asarray(frame_indices, dtype=np.int64).reshape(1, -1)  # [1, T]
        rows, _, pos = self._lookup([video_id], asked, self.label_mask(labels))
        out: list[list[Detection]] = [[] for _ in range(asked.shape[1])]
        for r, k in zip(rows, pos):
            box = tuple(float(v) for v in self._boxes[r])
            out[k].append(Detection(box, self.labels[self._labels[r]], float(self._scores[r])))  # type: ignore[arg-type]
        return out

    def label_counts(self, video_ids: Iterable[str] | None = None) -> dict[str, int]:
        """Number of detections per label."""
        counts = np.zeros(len(self.labels), np.int64)
        for vid in self.videos if video_ids is None else video_ids:
            counts += np.bincount(self.videos[vid].labels, minlength=len(self.labels))
        return {name: int(c) for name, c in zip(self.labels, counts)}

    def frame_counts(self) -> tuple[dict[str, int], int]:
        """``({label: scanned frames with at least one detection of it}, scanned frames in all)``."""
        counts = np.zeros(len(self.labels), np.int64)
        scanned = 0
        for video in self.videos.values():
            scanned += len(video.frames)
            if video.labels.size:
                slot = np.repeat(np.arange(len(video.frames)), np.diff(video.offsets))
                pairs = np.unique(slot.astype(np.int64) * max(1, len(self.labels)) + video.labels)
                counts += np.bincount(pairs % max(1, len(self.labels)), minlength=len(self.labels))
        return {name: int(c) for name, c in zip(self.labels, counts)}, scanned

    def summary(self) -> str:
        """A short report: videos, scanned frames, detections and frames per label."""
        per_frame, scanned = self.frame_counts()
        det = self.label_counts()
        lines = [f"{len(self.videos)} videos, {scanned} scanned frames, {sum(det.values())} detections"]
        for name in self.labels:
            lines.append(
                f"  {name:16s} {det[name]:8d} boxes  in {per_frame[name]:7d} frames "
                f"({per_frame[name] / max(scanned, 1):.1%})"
            )
        return "\n".join(lines)


class PrecomputedDetector:
    """A boxes file (the cache's line format) used as a detector: looks boxes up by video id and frame index."""

    wants_context = True

    def __init__(self, boxes: str | Path | BoxCache) -> None:
        self.cache = boxes if isinstance(boxes, BoxCache) else BoxCache.load(boxes)

    @property
    def identity(self) -> dict:
        return {"name": "precomputed", "path": self.cache.path}

    def __call__(
        self, frames: np.ndarray, *, video_id: str | None = None, frame_indices: Sequence[int] | None = None
    ) -> list[list[Detection]]:
        if video_id is None or frame_indices is None:
            raise VideomaskError("a precomputed boxes file needs the video id and frame indices of the frames")
        vid = self.cache.resolve_video_id(video_id)
        if vid is None:
            raise VideomaskError(f"video {video_id!r} is not in boxes file {self.cache.path}")
        return self.cache.detections(vid, list(frame_indices))


# --------------------------------------------------------------------------------------------- #
# the boxes cache: building (resumable, parallel over videos)
# --------------------------------------------------------------------------------------------- #


def detect_video(
    path: str | Path, detector: Any, *, video_id: str, stride: int = 4, chunk: int = 16
) -> tuple[list[dict], int]:
    """Detect on frames ``0, stride, ... < num_frames`` of one video -> ``(box records, num_frames)``."""
    from videomask.video import open_video

    records: list[dict] = []
    with open_video(str(path)) as reader:
        n = int(reader.meta.num_frames)
        if n <= 0:
            raise VideomaskError(f"video {str(path)!r} has no frames")
        scan = list(range(0, n, stride))
        for i in range(0, len(scan), chunk):
            indices = scan[i : i + chunk]
            frames = reader.read(indices)  # uint8 [N, H, W, 3]
            for frame, found in zip(indices, detect_frames(detector, frames, video_id=video_id, frame_indices=indices)):
                for d in found:
                    records.append(
                        {
                            "video": video_id,
                            "frame": frame,
                            "box": [round(float(v), 2) for v in d.box],
                            "label": d.label,
                            "score": round(float(d.score), 4),
                        }
                    )
    return records, n


_WORKER_DETECTOR: Any = None


def _init_worker(detector: Any) -> None:
    global _WORKER_DETECTOR
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    _WORKER_DETECTOR = detector


def _detect_task(video_id: str, path: str, stride: int, chunk: int) -> tuple[str, list[dict] | None, int, str | None]:
    """Worker body: ``(video_id, records or None, num_frames, error message or None)``.

    Decode errors are reported, not raised."""
    try:
        records, n = detect_video(path, _WORKER_DETECTOR, video_id=video_id, stride=stride, chunk=chunk)
    except VideomaskError as err:
        return video_id, None, 0, str(err)
    except Exception as err:  # a decoder crash on a corrupt file must not stop the whole run
        return video_id, None, 0, f"{type(err).__name__}: {err}"
    return video_id, records, n, None


@dataclass
class DetectReport:
    """What :func:`build_cache` did: videos detected now, already done before, skipped (with reasons)."""

    detected: int = 0
    already_done: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    boxes: int = 0
    dropped_lines: int = 0


def _prepare_cache(path: Path, detector_identity: dict, stride: int) -> set[str]:
    """Keep only closed videos in an existing cache (rewriting it if needed) -> their ids."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return set()
    records, bad, end = read_cache(path)
    done = {str(r["video"]): r for r in records if r.get("done")}
    for rec in done.values():
        if rec.get("detector") != detector_identity or int(rec.get("stride", -1)) != stride:
            raise VideomaskError(
                f"boxes cache {str(path)!r} was built with detector {json.dumps(rec.get('detector'))} and stride "
                f"{rec.get('stride')}, not {json.dumps(detector_identity)} and stride {stride}; write to a new file"
            )
    keep = [r for r in records if str(r["video"]) in done]
    if len(keep) != len(records) or bad or end != path.stat().st_size:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            for r in keep:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, path)
    return set(done)


def _detect_all(
    todo: Sequence[tuple[str, str]], detector: Any, workers: int, stride: int, chunk: int
) -> Iterator[tuple[str, list[dict] | None, int, str | None]]:
    """``_detect_task`` results for ``todo``, in this process or (``workers > 1``) a pool, as they finish."""
    if workers == 1 or len(todo) <= 1:
        _init_worker(detector)
        for vid, p in todo:
            yield _detect_task(vid, p, stride, chunk)
        return
    # spawned, not forked: a forked child can crash finalising decoder (PyAV) objects of the parent
    with ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(detector,),
    ) as pool:
        pending = {pool.submit(_detect_task, vid, p, stride, chunk) for vid, p in todo}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
        except BaseException:  # an error or an interruption (also GeneratorExit): drop what has not started
            for fut in pending:
                fut.cancel()
            raise


def build_cache(
    videos: Sequence[tuple[str, str | Path]],
    path: str | Path,
    detector: Any = "people",
    *,
    stride: int = 4,
    workers: int = 1,
    chunk: int = 16,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> DetectReport:
    """Detect objects in ``videos`` (``(video_id, file path)`` pairs) into the cache at ``path``.

    Resumable: videos with a ``done`` line are kept; lines of unfinished videos and a partial trailing
    line are dropped and those videos redone. ``workers > 1`` runs videos in a pool of spawned
    processes (the detector must be picklable; torch is not imported there). A video that fails to
    decode is skipped, reported in ``DetectReport.skipped``, and retried by the next run.
    """
    from tqdm import tqdm

    if stride < 1:
        raise VideomaskError(f"stride must be >= 1, got {stride}")
    if workers < 1:
        raise VideomaskError(f"workers must be >= 1, got {workers}")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    detector = build_detector(detector)
    identity = _identity_of(detector)
    path = Path(path)
    ids = [vid for vid, _ in videos]
    if len(set(ids)) != len(ids):
        raise VideomaskError("video ids must be unique")
    done = _prepare_cache(path, identity, stride)
    todo = [(vid, str(p)) for vid, p in videos if vid not in done]
    report = DetectReport(already_done=len(videos) - len(todo))
    bar = tqdm(
        total=len(videos),
        initial=report.already_done,
        desc="detect",
        unit="video",
        disable=not progress,
        file=sys.stderr,
    )
    try:
        with open(path, "a") as f:
            for vid, records, n, error in _detect_all(todo, detector, workers, stride, chunk):
                if records is None:
                    report.skipped[vid] = error or "unknown error"
                    log(f"videomask detect: skipping {vid}: {error}")
                else:
                    done_line = {"video": vid, "done": True, "num_frames": n, "stride": stride, "detector": identity}
                    lines = [json.dumps(r) for r in records] + [json.dumps(done_line)]
                    f.write(
                        "\n".join(lines) + "\n"
                    )  # one write per video: an interruption leaves at most a partial tail
                    f.flush()
                    report.detected += 1
                    report.boxes += len(records)
                bar.update(1)
                bar.set_postfix(boxes=report.boxes, skipped=len(report.skipped))
    finally:
        bar.close()
    return report


# --------------------------------------------------------------------------------------------- #
# anchor labels by TF-ICF
# --------------------------------------------------------------------------------------------- #


def label_tficf(target: BoxCache, source: BoxCache) -> dict[str, float]:
    """TF-ICF of every label detected in the target, at frame level (see :func:`choose_anchor_labels`)."""
    f_t, n_t = target.frame_counts()
    f_s, n_s = source.frame_counts()
    labels = [name for name in target.labels if f_t[name] > 0]
    V = len(set(labels) | {name for name in source.labels if f_s[name] > 0})
    scores = {}
    for name in labels:
        tf = f_t[name] / max(n_t, 1)
        icf = math.log((n_s + V) / (f_s.get(name, 0) + 1))
        scores[name] = tf * icf
    return scores


def choose_anchor_labels(
    target_cache: BoxCache | str | Path, source_cache: BoxCache | str | Path, top_k: int = 1
) -> list[str]:
    """The ``top_k`` labels most typical of the target and rare in the source, by TF-ICF over scanned frames.

    With ``f_T(l)`` / ``f_S(l)`` the number of scanned target / source frames holding at least one
    detection of label ``l``, ``F_T`` / ``F_S`` the scanned frames in each cache and ``V`` the number
    of labels seen in either::

        tf_T(l)    = f_T(l) / F_T
        icf(l)     = log((F_S + V) / (f_S(l) + 1))
        tficf(l)   = tf_T(l) * icf(l)

    (the same shape as :func:`videomask.stats.tficf_scores`, counted in frames instead of tokens).
    Labels never detected in the target are not candidates; ties go to the alphabetically first label.
    """
    target = target_cache if isinstance(target_cache, BoxCache) else BoxCache.load(target_cache)
    source = source_cache if isinstance(source_cache, BoxCache) else BoxCache.load(source_cache)
    if top_k < 1:
        raise VideomaskError(f"top_k must be >= 1, got {top_k}")
    scores = label_tficf(target, source)
    if not scores:
        raise VideomaskError(
            f"the target boxes cache {target.path or ''} holds no detections to choose anchor labels from"
        )
    ranked = sorted(scores, key=lambda name: (-scores[name], name))
    return ranked[:top_k]
