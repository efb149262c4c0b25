"""Tasks with known answers on the known-difference footage: object direction, speed class, final cell."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from videomask.errors import VideomaskError
from videomask.patches import ClipGeometry

OBJECT_TASKS: dict[str, int] = {"direction": 8, "obj_speed": 3, "position": 9, "identity": 4}  # task -> classes


def position_cell(box: Sequence[float], geometry: ClipGeometry, cells: int = 3) -> int:
    """The ``cells x cells`` grid cell (row-major, 0 = top left) of a box centre, in the evaluation crop
    described by ``geometry`` (centres outside the crop count in the nearest border cell)."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    u = (cx - geometry.x0) / geometry.crop_w
    v = (cy - geometry.y0) / geometry.crop_h
    col = min(cells - 1, max(0, int(math.floor(u * cells))))
    row = min(cells - 1, max(0, int(math.floor(v * cells))))
    return row * cells + col


def object_clip_starts(clip_frames: int, num_frames: int, stride: int, windows: int = 2) -> list[int]:
    """Start frames of ``windows`` evaluation clips (``num_frames`` at ``stride``) spread over a clip of
    ``clip_frames`` frames: the first and the last possible start, and evenly between."""
    span = (num_frames - 1) * stride + 1
    if span > clip_frames:
        raise VideomaskError(
            f"{num_frames} frames at stride {stride} need {span} frames; the footage clips have {clip_frames}"
        )
    last = clip_frames - span
    starts = sorted({int(round(x)) for x in np.linspace(0, last, max(1, windows))})
    return starts


def object_task_labels(
    label: dict, indices: Sequence[int], geometry: ClipGeometry, objects: Sequence[str] = ()
) -> dict[str, int]:
    """The known answers of one evaluation clip of a known-difference target clip (a ``labels.json`` entry):
    motion direction (0..7, from the generator), speed class, the 3x3 cell of the object's centre at
    the clip's last frame (from the generator's box of that frame, mapped into the evaluation crop), and,
    given the footage's ``objects``, which object crop was pasted (identity)."""
    out = {
        "direction": int(label["direction"]),
        "obj_speed": int(label["speed_class"]),
        "position": position_cell(label["boxes"][int(indices[-1])], geometry),
    }
    if objects:
        out["identity"] = list(objects).index(label["object"])
    return out
