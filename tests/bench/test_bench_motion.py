"""The known-answer bench: labels on generated footage, paired intervals, the sanity verdict, its configs, the
protocol end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from videomask.bench.object_tasks import object_clip_starts, object_task_labels
from videomask.bench.stats import paired_difference, paired_table, sanity_verdicts, summarise_runs
from videomask.eval import ProbeSample, decode_samples

REPO = Path(__file__).resolve().parents[2]


def _write_clip(path: Path, frames: np.ndarray) -> None:
    from videomask.bench.footage import write_clip

    write_clip(path, frames, fps=15, crf=10)


def test_motion_labels_are_right_on_generated_clips(tmp_path):
    """A bright square on flat grey scenery: the direction, speed class and final cell the bench uses
    must agree with where the square actually is in the decoded clips."""
    from videomask.bench.footage import DIRECTIONS, ObjectSource, build_known_difference

    assets = tmp_path / "assets"
    _write_clip(assets / "source" / "flat.mp4", np.full((48, 64, 64, 3), 100, np.uint8))
    _write_clip(assets / "target" / "blob.mp4", np.full((4, 16, 16, 3), 250, np.uint8))
    out = tmp_path / "footage"
    build_known_difference(
        out,
        assets=assets,
        num_source=1,
        num_target=10,
        num_frames=16,
        sizes=(10,),
        speeds=(1.0, 2.0),
        objects=[ObjectSource("blob", "target/blob.mp4", (0, 0, 16, 16))],
        square=True,
        seed=3,
    )
    labels = json.loads((out / "labels.json").read_text())["clips"]
    num_frames, stride = 8, 2
    starts = object_clip_starts(16, num_frames, stride, windows=2)
    assert starts == [0, 1]
    samples = [
        ProbeSample(
            str(out / "target" / c["clip"]), c["clip"], tuple(s + k * stride for k in range(num_frames)), -1, "test", i
        )
        for i, c in enumerate(labels)
        for s in starts
    ]
    clips = decode_samples(samples, 64)
    seen_directions = set()
    for sample, clip, geom in zip(samples, clips.clips, clips.geometry):
        label = next(c for c in labels if c["clip"] == sample.video_id)
        answers = object_task_labels(label, sample.indices, geom)
        bright = clip.float().mean(0) > 175  # [T, H, W]: the pasted square
        centres = []
        for t in (0, num_frames - 1):
            ys, xs = torch.nonzero(bright[t], as_tuple=True)
            assert len(ys) > 10, "the object is visible"
            centres.append((float(xs.float().mean()) + 0.5, float(ys.float().mean()) + 0.5))
        (x0, y0), (x1, y1) = centres
        angle = math.atan2(-(y1 - y0), x1 - x0)  # image y points down
        measured = int(round(angle / (math.pi / 4))) % 8
        assert answers["direction"] == measured == label["direction"]
        seen_directions.add(measured)
        dx, dy = DIRECTIONS[measured]
        travelled = math.hypot(x1 - x0, y1 - y0) / (
            (num_frames - 1) * stride
        )  # px per source frame (64 px clips = source size)
        assert travelled == pytest.approx(label["speed"], abs=0.35)
        assert answers["obj_speed"] == label["speed_class"] == (0 if label["speed"] == 1.0 else 1)
        cell = min(2, int(3 * y1 / 64)) * 3 + min(2, int(3 * x1 / 64))
        assert answers["position"] == cell
    assert len(seen_directions) >= 4  # the check covers several directions


def test_paired_interval_on_a_hand_made_example():
    tube = [0.50, 0.60, 0.70]
    other = [0.55, 0.68, 0.75]
    p = paired_difference(other, tube)
    # d = [0.05, 0.08, 0.05]: mean 0.06, sd sqrt(0.0003), se 0.01, t(0.975, df=2) = 4.302653
    assert p["mean"] == pytest.approx(0.06)
    assert p["std"] == pytest.approx(math.sqrt(0.0003))
    assert p["low"] == pytest.approx(0.06 - 0.04302653, abs=1e-6)
    assert p["high"] == pytest.approx(0.06 + 0.04302653, abs=1e-6)
    assert math.isnan(paired_difference([0.1], [0.2])["low"])
    # paired by seed, whatever the order of the runs
    runs = [
        {"variant": "tube", "seed": s, "metrics": {"direction_attentive": v}}
        for s, v in zip((2, 0, 1), (0.70, 0.50, 0.60))
    ]
    runs += [
        {"variant": "difference-mask", "seed": s, "metrics": {"direction_attentive": v}} for s, v in enumerate(other)
    ]
    table = paired_table(runs, "tube", ["tube", "difference-mask"], ["direction_attentive"])
    assert table["difference-mask"]["direction_attentive"]["mean"] == pytest.approx(0.06)
    assert table["difference-mask"]["direction_attentive"]["high"] == pytest.approx(p["high"])


def test_sanity_verdict_marks_cells_inconclusive():
    runs = [{"variant": "random init", "seed": 0, "metrics": {"a_linear": 0.50, "b_linear": 0.30}}]
    runs += [
        {"variant": v, "seed": s, "metrics": {"a_linear": 0.52 + 0.01 * s, "b_linear": 0.45}}
        for v in ("tube", "random")
        for s in range(3)
    ]
    verdicts = sanity_verdicts(summarise_runs(runs), ["tube", "random"], ["a_linear", "b_linear"], margin_pts=5.0)
    assert verdicts["a_linear"]["gap_pts"] == pytest.approx(3.0) and not verdicts["a_linear"]["conclusive"]
    assert verdicts["b_linear"]["gap_pts"] == pytest.approx(15.0) and verdicts["b_linear"]["conclusive"]


def test_base_mask_section():
    """The base model's masker: tube by default, random in VideoMAE's token mode, anything else refused."""
    from videomask.bench import BenchConfig, base_mask_section
    from videomask.errors import VideomaskError

    assert base_mask_section(BenchConfig().base_masker) == {"name": "tube", "options": {}, "mode": None}
    assert base_mask_section({"name": "random"})["mode"] == "token"
    assert base_mask_section({"name": "random", "mode": "tube"})["mode"] == "tube"
    for bad in ({"name": "difference"}, {"name": "tube", "ratio": 0.5}, {"name": "tube", "mode": "frame"}):
        with pytest.raises(VideomaskError, match="base_masker"):
            base_mask_section(bad)


def test_motion_bench_end_to_end(tmp_path):
    """The known-answer protocol on the shipped assets with minimal settings: the report, its paired
    table against tube and the JSON's shape."""
    from videomask.cli import main

    raw = yaml.safe_load((REPO / "configs" / "bench_motion_quick.yaml").read_text())
    raw.update(
        assets=str(REPO / "assets"),
        out=str(tmp_path / "results"),
        work_dir=str(tmp_path / "work"),
        name="m",
        seeds=[0, 1],
        base_steps=2,
        base_masker={"name": "random"},
        steps=1,
        upper_steps=0,
        footage={"num_source": 4, "num_target": 12, "num_frames": 16, "sizes": [24], "square": True},
    )
    raw["variants"] = {
        "tube": {"name": "tube"},
        "difference-mask": {"name": "difference", "options": {"direction": "mask"}},
        "objects-truth-mask": {"name": "objects", "boxes": "truth", "options": {"direction": "mask"}},
    }
    raw["eval"] = {
        "tasks": ["direction", "position", "arrow"],
        "probes": ["linear", "attentive"],
        "knn_k": 3,
        "attentive": {"steps": 10, "eval_every": 5, "width": 16, "heads": 2, "pca_dim": 8, "weight_decays": [0.01]},
    }
    cfg = tmp_path / "m.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["bench", "--config", str(cfg)]) == 0
    data = json.loads((tmp_path / "results" / "m.json").read_text())
    md = (tmp_path / "results" / "m.md").read_text()
    assert (tmp_path / "results" / "m.png").stat().st_size > 1000
    names = [r["variant"] for r in data["runs"]]
    assert names[:3] == ["random init", "base", "motion energy (no model)"]
    # the config's base_steps and base_masker, not the defaults (200 steps of tube masking)
    assert "2 steps of random masking (token mode)" in data["setup"]["base"]
    assert names.count("tube") == names.count("difference-mask") == 2
    for run in data["runs"]:
        if run["variant"] == "motion energy (no model)":
            assert set(run["metrics"]) == {"direction_linear", "position_linear", "arrow_linear"}
            continue
        for key in ("direction_linear", "direction_attentive", "position_attentive", "arrow_attentive"):
            assert 0.0 <= run["metrics"][key] <= 1.0
        assert math.isfinite(run["metrics"]["recon_object"]) and math.isfinite(run["metrics"]["recon_other"])
    assert data["setup"]["recon_tokens"]["object"] > 0
    assert set(data["paired"]) == {"difference-mask", "objects-truth-mask"}
    assert data["paired"]["difference-mask"]["direction_attentive"]["n"] == 2
    assert "## Paired difference to tube" in md and "| difference-mask |" in md
    assert "conclusive" in md  # every accuracy cell is marked conclusive or inconclusive
    assert "videomask bench --config" in md


@pytest.mark.parametrize("objective", ["teacher", "contrastive"])
def test_evidence_protocol_quick_runs(objective, tmp_path):
    """configs/bench_evidence_quick.yaml cut to two maskers and the identity task: a distilled source model,
    continued pretraining with the objective, the CNN references and random-init seeds in the tables."""
    from videomask.cli import main

    raw = yaml.safe_load((REPO / "configs" / "bench_evidence_quick.yaml").read_text())
    raw.update(
        assets=str(REPO / "assets"),
        out=str(tmp_path / "results"),
        work_dir=str(tmp_path / "work"),
        name="e",
        base_steps=2,
        steps=1,
        footage={**raw["footage"], "num_source": 4, "num_target": 12, "sizes": [24]},
    )
    raw["variants"] = {"tube": {"name": "tube"}, "objects-truth-keep": raw["variants"]["objects-truth-keep"]}
    raw["train"]["objective"] = {**raw["train"]["objective"], "name": objective}
    raw["eval"] = {**raw["eval"], "tasks": ["identity", "position"], "probes": ["linear", "temporal"]}
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["bench", "--config", str(cfg)]) == 0
    data = json.loads((tmp_path / "results" / "e.json").read_text())
    md = (tmp_path / "results" / "e.md").read_text()
    names = [r["variant"] for r in data["runs"]]
    assert names.count("random init") == 2  # random_init_seeds
    assert {"random CNN", "teacher CNN", "base", "tube", "objects-truth-keep"} <= set(names)
    assert "feature distillation from the cnn teacher" in data["setup"]["base"]
    assert f'"name": "{objective}"' in md  # the objective is in the setup text
    for run in data["runs"]:
        if run["variant"] in ("tube", "objects-truth-keep", "teacher CNN"):
            assert 0.0 <= run["metrics"]["identity_linear"] <= 1.0
    assert data["paired"]["objects-truth-keep"]["identity_temporal"]["n"] == 1
    assert "random init / random CNN" in md  # the floor the sanity ladder uses
    assert "harness bar (conclusive cells on at least two object tasks" in md


@pytest.mark.parametrize(
    "name",
    [
        "bench_motion.yaml",
        "bench_motion_cpu.yaml",
        "bench_motion_balanced.yaml",
        "bench_motion_randbase.yaml",
        "bench_motion_long.yaml",
        "bench_motion_quick.yaml",
        "bench_gpu.yaml",
        "bench_evidence_quick.yaml",
        "bench_evidence_teacher.yaml",
        "bench_evidence_teacher_1000.yaml",
        "bench_evidence_contrastive.yaml",
        "bench_evidence_contrastive_ema.yaml",
        "bench_evidence_pixels.yaml",
        "bench_evidence_gpu.yaml",
    ],
)
def test_shipped_motion_configs_load(name):
    from videomask.bench import is_motion_config, load_motion_config

    path = REPO / "configs" / name
    assert is_motion_config(path)
    cfg = load_motion_config(path)
    assert "tube" in cfg.variants and len(cfg.seeds) >= 1
    balance = cfg.footage.get("balance_every", 0)
    assert balance in (0, cfg.test_every)  # labels balanced for the split the bench uses, or not at all
    if name in ("bench_motion.yaml", "bench_motion_balanced.yaml", "bench_motion_randbase.yaml", "bench_gpu.yaml"):
        assert balance == cfg.test_every  # the current protocols; the others reproduce earlier records
    assert cfg.base_masker["name"] == ("random" if name == "bench_motion_randbase.yaml" else "tube")


def test_footage_square_option_crops_the_scenery(tmp_path):
    from videomask.bench.footage import ObjectSource, build_known_difference
    from videomask.video import open_video

    assets = tmp_path / "assets"
    _write_clip(assets / "source" / "wide.mp4", np.full((24, 48, 80, 3), 90, np.uint8))
    _write_clip(assets / "target" / "blob.mp4", np.full((2, 16, 16, 3), 250, np.uint8))
    obj = [ObjectSource("blob", "target/blob.mp4", (0, 0, 16, 16))]
    for square, width in ((False, 80), (True, 48)):
        out = tmp_path / f"f{int(square)}"
        build_known_difference(
            out,
            assets=assets,
            num_source=1,
            num_target=2,
            num_frames=8,
            sizes=(8,),
            speeds=(1.0,),
            objects=obj,
            square=square,
        )
        for clip in ("source/wide_000.mp4", "target/wide_000.mp4"):
            with open_video(str(out / clip)) as reader:
                assert (reader.meta.height, reader.meta.width) == (48, width)
        boxes = json.loads((out / "labels.json").read_text())["clips"][0]["boxes"]
        assert all(0 <= b[0] < b[2] <= width for b in boxes)
