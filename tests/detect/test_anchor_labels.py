"""TF-ICF over detected labels and the anchor label choice."""

from __future__ import annotations

import math

import pytest

from videomask.detect import BoxCache, choose_anchor_labels, label_tficf
from videomask.errors import VideomaskError


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
