"""Building the boxes cache: detection over videos, resumable, in this process or a pool of spawned workers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from videomask.detect.boxes import read_cache
from videomask.detect.detectors import identity_of
from videomask.detect.registry import build_detector, detect_frames
from videomask.errors import VideomaskError
from videomask.video import open_video

__all__ = ["DetectReport", "build_cache", "detect_video"]


def detect_video(
    path: str | Path, detector: Any, *, video_id: str, stride: int = 4, chunk: int = 16
) -> tuple[list[dict], int]:
    """Detect on frames ``0, stride, ... < num_frames`` of one video -> ``(box records, num_frames)``."""

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

    if stride < 1:
        raise VideomaskError(f"stride must be >= 1, got {stride}")
    if workers < 1:
        raise VideomaskError(f"workers must be >= 1, got {workers}")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    detector = build_detector(detector)
    identity = identity_of(detector)
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
                    # one write per video: an interruption leaves at most a partial tail
                    f.write("\n".join(lines) + "\n")
                    f.flush()
                    report.detected += 1
                    report.boxes += len(records)
                bar.update(1)
                bar.set_postfix(boxes=report.boxes, skipped=len(report.skipped))
    finally:
        bar.close()
    return report
