"""Held-out target time: lossless copies of each target video's first frames, and the boxes of those copies."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from videomask.data import list_videos
from videomask.detect import read_cache
from videomask.errors import VideomaskError
from videomask.video import open_video


def write_lossless(frames: np.ndarray, path: Path, fps: float = 25.0) -> None:
    """Write uint8 ``[N, H, W, 3]`` frames as a lossless FFV1 MKV (frame i decodes to exactly frames[i])."""
    import av  # PyAV loads only when a clip is written

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.mkv")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "bgr0"  # lossless RGB
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


@dataclass
class TargetVideo:
    path: str  # the full video (evaluation)
    video_id: str  # id relative to the target folder
    num_frames: int
    cut: int  # frames [0, cut) form the train copy
    train_copy: str  # path of the lossless copy of frames [0, cut)
    train_id: str  # its id relative to the train-copy folder


def split_target(
    target_root: str | Path, out_dir: Path, train_share: float, backend: str = "pyav"
) -> list[TargetVideo]:
    """Decode each target video once, count its frames and write the train-time copy of its first frames."""

    root = Path(target_root)
    videos = []
    for item in list_videos(root):
        path, vid = item.path, item.video_id
        copy_id = str(Path(vid).with_suffix(".mkv").as_posix())
        copy = out_dir / copy_id
        with open_video(str(path), backend=backend) as reader:
            frames = reader.read_all()  # uint8 [N, H, W, 3]
            fps = float(reader.meta.fps or 25.0)
        n = int(frames.shape[0])
        cut = int(math.floor(train_share * n))
        if cut < 2:
            continue
        write_lossless(frames[:cut], copy, fps)
        videos.append(TargetVideo(str(path), vid, n, cut, str(copy), copy_id))
    if not videos:
        raise VideomaskError(f"no usable target videos under {root}")
    return videos


def derive_train_cache(target_cache: Path, out: Path, targets: list[TargetVideo]) -> Path:
    """Boxes of the train copies: the target cache's records of frames ``< cut``, under the copies' ids."""

    records, _, _ = read_cache(target_cache)
    by_id = {t.video_id: t for t in targets}
    lines = []
    for rec in records:
        t = by_id.get(str(rec["video"]))
        if t is None:
            continue
        if rec.get("done"):
            lines.append({**rec, "video": t.train_id, "num_frames": t.cut})
        elif int(rec["frame"]) < t.cut:
            lines.append({**rec, "video": t.train_id})
    lines.sort(key=lambda r: (r["video"], bool(r.get("done")), r.get("frame", 0)))  # done line last per video
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in lines))
    tmp.replace(out)
    return out
