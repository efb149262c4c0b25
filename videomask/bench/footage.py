"""Known-difference footage: real scenery in both domains, real objects pasted into the target only.

:func:`build_known_difference` writes ``source/`` and ``target/`` clips and their ground truth
(``target_boxes.jsonl``, ``labels.json``), deterministic from ``seed``: footage where a difference score's
answer is known.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from videomask.errors import VideomaskError
from videomask.video import open_video

__all__ = ["ObjectSource", "DEFAULT_OBJECTS", "DIRECTIONS", "PastedObject", "build_known_difference", "write_clip"]

# 8 motion directions, 0 = right, counter-clockwise (image y grows downwards, so "up" is -y)
DIRECTIONS = [(math.cos(k * math.pi / 4), -math.sin(k * math.pi / 4)) for k in range(8)]


@dataclass(frozen=True)
class ObjectSource:
    """An object crop: the region ``(x0, y0, x1, y1)`` (original pixels) of a shipped clip, animated over its frames."""

    name: str
    video: str  # relative to the assets folder
    box: tuple[int, int, int, int]
    frames: tuple[int, int] | None = None  # frame range to animate over (default: all)


# regions chosen by looking at the shipped clips (assets/target, see assets/README.md)
DEFAULT_OBJECTS = (
    ObjectSource("face_webcam", "target/webcam_face.mp4", (50, 0, 122, 84)),
    ObjectSource("face_car", "target/carphone.mp4", (48, 6, 112, 100)),
    ObjectSource("cyclist", "target/cyclist.mp4", (40, 40, 132, 128), frames=(6, 10)),
    ObjectSource("standing_man", "target/cyclist.mp4", (126, 44, 160, 104)),
)


@dataclass
class PastedObject:
    """What was pasted into one target clip (all positions in the clip's own pixels)."""

    clip: str
    scenery: str
    object: str
    width: int
    height: int
    speed: float  # px per frame
    speed_class: int
    direction: int  # 0..7, see DIRECTIONS
    boxes: list[list[float]]  # per frame (x0, y0, x1, y1)


def _read_all(path: Path) -> np.ndarray:

    with open_video(str(path)) as reader:
        return reader.read_all()  # [N, H, W, 3] uint8


def write_clip(path: Path, frames: np.ndarray, fps: int = 15, crf: int = 18) -> None:
    """Write RGB frames ``uint8 [N, H, W, 3]`` (even H and W) as an H.264 MP4 (keyframe every second)."""
    import av  # PyAV loads only when a clip is written

    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.gop_size = fps
        vs.codec_context.options = {"crf": str(crf), "preset": "medium", "keyint_min": str(fps), "sc_threshold": "0"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)


def _window(frames: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` frames from ``start``, ping-pong looped when the clip is shorter."""
    n = frames.shape[0]
    period = max(1, 2 * n - 2)
    idx = [(start + i) % period for i in range(length)]
    idx = [i if i < n else period - i for i in idx]
    return frames[idx]


def _shift_scenery(frames: np.ndarray) -> np.ndarray:
    """The scenery shift: 1.25x centre zoom, warm colour grade, contrast 0.8."""
    import cv2  # OpenCV loads only when footage is built

    n, h, w, _ = frames.shape
    ch, cw = int(round(h / 1.25)), int(round(w / 1.25))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    out = np.empty_like(frames)
    for i in range(n):
        out[i] = cv2.resize(frames[i, y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    x = out.astype(np.float32)
    x = (x - 128.0) * 0.8 + 128.0
    x *= np.array([1.12, 1.0, 0.82], dtype=np.float32)  # warm: more red, less blue
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _centre_square(frames: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` -> ``[N, s, s, 3]``, the centre square (``s = min(H, W)``)."""
    h, w = frames.shape[1:3]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return frames[:, y0 : y0 + s, x0 : x0 + s]


def _even(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    return frames[:, :h, :w]


def _object_frames(src: ObjectSource, assets: Path, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The object's animated crop resized to ``width`` px wide (aspect kept) ``[N, h, w, 3]`` and its alpha
    ``[h, w]``."""
    import cv2  # OpenCV loads only when footage is built

    frames = _read_all(assets / src.video)
    if src.frames is not None:
        frames = frames[src.frames[0] : src.frames[1]]
    x0, y0, x1, y1 = src.box
    crop = frames[:, y0:y1, x0:x1]
    height = max(2, int(round(width * (y1 - y0) / (x1 - x0))))
    obj = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in crop])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = ((xx + 0.5 - width / 2) / (width / 2)) ** 2 + ((yy + 0.5 - height / 2) / (height / 2)) ** 2
    alpha = np.clip((1.0 - r) / 0.15, 0.0, 1.0)  # soft elliptical edge
    return obj, alpha


def _paste(frame: np.ndarray, obj: np.ndarray, alpha: np.ndarray, x: float, y: float) -> list[float]:
    """Alpha-blend ``obj`` with its top-left corner at (round(x), round(y)); returns its box (x0, y0, x1, y1)."""
    h, w = alpha.shape
    xi, yi = int(round(x)), int(round(y))
    H, W = frame.shape[:2]
    fx0, fy0, fx1, fy1 = max(0, xi), max(0, yi), min(W, xi + w), min(H, yi + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return [0.0, 0.0, 0.0, 0.0]
    a = alpha[fy0 - yi : fy1 - yi, fx0 - xi : fx1 - xi, None]
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    src = obj[fy0 - yi : fy1 - yi, fx0 - xi : fx1 - xi].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = np.clip(a * src + (1 - a) * region + 0.5, 0, 255).astype(np.uint8)
    return [float(fx0), float(fy0), float(fx1), float(fy1)]


def _balanced_plan(
    num_target: int, num_scenery: int, num_objects: int, num_sizes: int, num_speeds: int, every: int, rng
) -> list[tuple[int, int, int, int]] | None:
    """Per target clip ``(object, size, speed class, direction)`` indices, balanced within every (scenery,
    split group) cell (see ``balance_every`` of :func:`build_known_difference`); None when ``every <= 0``."""
    if every <= 0:
        return None
    cells: dict[tuple[int, bool], list[int]] = {}
    for i in range(num_target):
        cells.setdefault((i % num_scenery, i % every == every - 1), []).append(i)
    plan: dict[int, tuple[int, int, int, int]] = {}

    def deck(n: int, k: int) -> list[int]:  # n values, each of range(k) as evenly as n allows, shuffled
        values = [int(v) for v in rng.permutation(k)]
        out = [values[j % k] for j in range(n)]
        return [out[j] for j in rng.permutation(n)]

    for key in sorted(cells):
        clips = cells[key]
        n = len(clips)
        for i, o, w, sp, d in zip(
            clips, deck(n, num_objects), deck(n, num_sizes), deck(n, num_speeds), deck(n, len(DIRECTIONS))
        ):
            plan[i] = (o, w, sp, d)
    return [plan[i] for i in range(num_target)]


def _paste_moving(
    frames: np.ndarray,
    obj: np.ndarray,
    alpha: np.ndarray,
    step: tuple[float, float],
    speed: float,
    rng: np.random.Generator,
) -> list[list[float]]:
    """Paste the animated object into ``frames [T, H, W, 3]`` (in place) moving ``speed`` px per frame along
    ``step``, from a random start that keeps the whole path inside the frame -> its box per frame."""
    num_frames, H, W = frames.shape[:3]
    oh, ow = alpha.shape
    dx, dy = step
    travel_x, travel_y = dx * speed * (num_frames - 1), dy * speed * (num_frames - 1)
    # a start point that keeps the whole path inside the frame (shrunk when the frame is too small)
    lo_x, hi_x = max(0.0, -travel_x), W - ow - max(0.0, travel_x)
    lo_y, hi_y = max(0.0, -travel_y), H - oh - max(0.0, travel_y)
    x = float(rng.uniform(lo_x, hi_x)) if hi_x > lo_x else (W - ow - travel_x) / 2
    y = float(rng.uniform(lo_y, hi_y)) if hi_y > lo_y else (H - oh - travel_y) / 2
    return [
        _paste(frames[f], obj[f % obj.shape[0]], alpha, x + dx * speed * f, y + dy * speed * f)
        for f in range(num_frames)
    ]


def _truth_lines(clip_name: str, boxes: list[list[float]]) -> list[str]:
    """Boxes-cache lines (the ``videomask detect`` format, label ``object``) of one clip's true boxes."""
    lines = [
        json.dumps({"video": clip_name, "frame": f, "box": box, "label": "object", "score": 1.0})
        for f, box in enumerate(boxes)
        if box[2] > box[0]
    ]
    done = {
        "video": clip_name,
        "done": True,
        "num_frames": len(boxes),
        "stride": 1,
        "detector": {"kind": "ground_truth", "builder": "videomask.bench.footage"},
    }
    return [*lines, json.dumps(done)]


def build_known_difference(
    out: str | Path,
    *,
    assets: str | Path,
    num_source: int = 24,
    num_target: int = 24,
    num_frames: int = 32,
    sizes: Sequence[int] = (24, 32, 48),
    speeds: Sequence[float] = (1.0, 2.0, 3.0),
    shift: bool = False,
    objects: Sequence[ObjectSource] = DEFAULT_OBJECTS,
    fps: int = 15,
    seed: int = 0,
    square: bool = False,
    balance_every: int = 0,
) -> dict:
    """Write the known-difference footage under ``out``; returns a summary dict.

    * ``source/``: windows from the *first* half of every scenery clip in ``assets/source``;
    * ``target/``: windows from the *second* half of the same clips, each with one object moving through it
      in a straight line: an animated crop of a clip under ``assets`` (``objects``) with a soft elliptical
      edge, ``sizes`` px wide, at ``speeds`` px per frame, in one of 8 directions (:data:`DIRECTIONS`);
    * ``target_boxes.jsonl``: the object's box in every frame in the boxes-cache format of ``videomask
      detect`` (label ``object``), so the ``objects`` masker can use it as perfect detections;
    * ``labels.json``: per target clip the object's name, width, speed, direction class (0 = right,
      counter-clockwise in steps of 45 degrees, image y pointing down), speed class and box in every frame.

    ``shift=True`` also changes the target scenery (1.25x zoom, warm colour grade, lower contrast), so that the
    object is not the only difference. ``square=True`` centre-crops every scenery clip to a square first (so
    a centre-square evaluation crop sees the whole frame and every object path).

    ``balance_every = n > 0`` stratifies the labels for a split by clip index: target clip ``i`` is in group
    ``i % n == n - 1`` or in the rest (the motion bench's ``test_every`` split), and within every (scenery,
    group) the directions and speed classes are dealt from shuffled balanced decks, and the object crop and
    width drawn independently of the scenery. Then no scenery (or object) carries a label prior that differs
    between the groups, so a probe cannot score by recognising the scene. With ``0``, object and width cycle
    with the clip index and direction and speed are drawn independently."""
    out, assets = Path(out), Path(assets)
    scenery_paths = sorted((assets / "source").glob("*.mp4"))
    if not scenery_paths:
        raise VideomaskError(f"no scenery clips (*.mp4) under {assets / 'source'}")
    rng = np.random.default_rng(seed)
    scenery = {p.stem: _even(_centre_square(_read_all(p)) if square else _read_all(p)) for p in scenery_paths}
    names = sorted(scenery)

    def scenery_window(name: str, half: int) -> np.ndarray:
        frames = scenery[name]
        n = frames.shape[0]
        lo, hi = (0, max(1, n // 2)) if half == 0 else (n // 2, n)
        start = int(rng.integers(lo, max(lo + 1, hi - min(num_frames, hi - lo) + 1)))
        part = frames[lo:hi] if hi - lo >= 2 else frames
        return _window(part, start - lo, num_frames).copy()

    for i in range(num_source):
        name = names[i % len(names)]
        write_clip(out / "source" / f"{name}_{i:03d}.mp4", scenery_window(name, 0), fps)

    plan = _balanced_plan(num_target, len(names), len(objects), len(sizes), len(speeds), balance_every, rng)
    cache_lines: list[str] = []
    labels: list[dict] = []
    object_cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    for i in range(num_target):
        name = names[i % len(names)]
        frames = scenery_window(name, 1)
        if shift:
            frames = _shift_scenery(frames)
        if plan is None:
            src = objects[i % len(objects)]
            width = int(sizes[(i // len(objects)) % len(sizes)])
            speed_class = int(rng.integers(len(speeds)))
            direction = int(rng.integers(8))
        else:
            obj_i, size_i, speed_class, direction = plan[i]
            src, width = objects[obj_i], int(sizes[size_i])
        speed = float(speeds[speed_class])
        key = (src.name, width)
        if key not in object_cache:
            object_cache[key] = _object_frames(src, assets, width)
        obj, alpha = object_cache[key]
        oh, ow = alpha.shape
        clip_name = f"{name}_{i:03d}.mp4"
        boxes = _paste_moving(frames, obj, alpha, DIRECTIONS[direction], speed, rng)  # pasted in place
        cache_lines += _truth_lines(clip_name, boxes)
        write_clip(out / "target" / clip_name, frames, fps)
        labels.append(asdict(PastedObject(clip_name, name, src.name, ow, oh, speed, speed_class, direction, boxes)))

    (out / "target_boxes.jsonl").write_text("\n".join(cache_lines) + "\n")
    summary = {
        "source_clips": num_source,
        "target_clips": num_target,
        "num_frames": num_frames,
        "sizes": list(sizes),
        "speeds": list(speeds),
        "shift": shift,
        "seed": seed,
        "square": square,
        "balance_every": balance_every,
        "scenery": names,
        "objects": [o.name for o in objects],
    }
    (out / "labels.json").write_text(json.dumps({"summary": summary, "clips": labels}, indent=1))
    return summary
