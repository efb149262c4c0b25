"""The quick benchmark end to end on generated footage, the report's shape, the target time split, the fixed
random mask, the motion-energy reference, and the one-line stop without the bench extra."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from videomask.bench import (
    METRICS,
    MOTION_BASELINE,
    compare,
    load_bench_config,
    markdown_table,
    split_target,
    summarise,
    write_lossless,
)
from videomask.bench.reconstruction import fixed_random_mask
from videomask.errors import VideomaskError

REPO = Path(__file__).resolve().parents[2]


def make_footage(root: Path, *, videos: int = 3, frames: int = 80, size: int = 48, seed: int = 0) -> Path:
    """Source clips (scrolling texture) and target clips (texture + a moving bright box, the 'person'),
    plus ``boxes.jsonl``: the box of every target frame in the cache's line format."""
    rng = np.random.default_rng(seed)
    records = []
    for domain in ("source", "target"):
        for v in range(videos):
            texture = rng.integers(0, 120, (size, size * 2, 3), dtype=np.uint8)
            clip = np.stack([texture[:, k % size : k % size + size] for k in range(frames)])
            if domain == "target":
                for k in range(frames):
                    x0 = 4 + (k // 2) % (size - 20)
                    clip[k, 10:34, x0 : x0 + 12] = 240
                    records.append(
                        {
                            "video": f"t{v}.mkv",
                            "frame": k,
                            "box": [x0, 10, x0 + 12, 34],
                            "label": "person",
                            "score": 1.0,
                        }
                    )
            write_lossless(clip, root / domain / f"{domain[0]}{v}.mkv")
    (root / "boxes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def quick_config(root: Path) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "bench_quick.yaml").read_text())
    raw.update(
        source=str(root / "source"),
        target=str(root / "target"),
        out=str(root / "results"),
        work_dir=str(root / "work"),
        name="quick",
    )
    raw["detect"] = {"detector": str(root / "boxes.jsonl"), "stride": 2, "labels": "person"}
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_quick_bench_end_to_end(tmp_path):
    from videomask.cli import main

    root = make_footage(tmp_path)
    cfg_path = quick_config(root)
    assert main(["bench", "--config", str(cfg_path)]) == 0
    data = json.loads((root / "results" / "quick.json").read_text())
    md = (root / "results" / "quick.md").read_text()
    assert (root / "results" / "quick.png").stat().st_size > 1000
    cfg = load_bench_config(cfg_path)
    variants = list(cfg.variants)
    assert [r["variant"] for r in data["runs"]] == ["random init", "base", MOTION_BASELINE] + variants
    for run in data["runs"][3:]:
        assert {"wall_s", "train_loss"} <= set(run["metrics"])
    assert set(data["runs"][2]["metrics"]) == {"arrow_linear", "arrow_knn", "speed_linear", "speed_knn"}
    for run in data["runs"][:2] + data["runs"][3:]:
        for key in METRICS:
            assert key in run["metrics"]
            value = run["metrics"][key]
            if key.endswith(("linear", "knn")):
                assert 0.0 <= value <= 1.0
            else:
                assert math.isfinite(value) and value > 0  # the moving box gives person tokens
    for run in data["runs"][3:]:
        assert run["metrics"]["wall_s"] > 0
    # the table: header + rule + one row per variant (random init, base, motion energy, every trained variant)
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 3 + len(variants)
    assert all(ln.count("|") == table[0].count("|") for ln in table)
    assert "videomask bench --config" in md
    assert data["setup"]["recon_tokens"]["anchor"] > 0


def test_target_split_holds_out_the_end(tmp_path):
    from videomask.video import open_video

    root = make_footage(tmp_path, videos=1, frames=50)
    targets = split_target(root / "target", tmp_path / "copies", 0.7)
    (t,) = targets
    assert (t.num_frames, t.cut) == (50, 35)
    with open_video(t.train_copy) as copy, open_video(t.path) as full:
        assert copy.meta.num_frames == 35
        assert np.array_equal(copy.read([0, 17, 34]), full.read([0, 17, 34]))


def test_summary_table_and_comparison():
    runs = [
        {"variant": "random", "seed": s, "metrics": {"arrow_linear": a, "recon_person": r, "wall_s": 2.0}}
        for s, (a, r) in enumerate([(0.5, 1.0), (0.6, 1.2)])
    ] + [
        {"variant": "difference-mask", "seed": s, "metrics": {"arrow_linear": a, "recon_person": r, "wall_s": 3.0}}
        for s, (a, r) in enumerate([(0.9, 0.5), (0.92, 0.52)])
    ]
    summary = summarise(runs)
    assert summary["random"]["arrow_linear"]["mean"] == pytest.approx(0.55)
    assert summary["random"]["arrow_linear"]["std"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    table = markdown_table(summary)
    assert "55.0 ± 7.1" in table and "| difference-mask | 2 |" in table
    (line,) = compare(summary, "random", ["difference-mask"])
    assert "arrow lin. % +36.0 pts (better)" in line and "recon. person -0.590 (better)" in line
    one = summarise([r for r in runs if r["seed"] == 0])
    (line,) = compare(one, "random", ["difference-mask"])
    assert "no noise estimate" in line and "better" not in line


def test_bad_bench_config_is_a_one_line_error(tmp_path):
    raw = yaml.safe_load((REPO / "configs" / "bench_quick.yaml").read_text())
    raw["stepz"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(VideomaskError, match="stepz"):
        load_bench_config(path)
    raw.pop("stepz")
    raw["variants"] = {"x": {"options": {}}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(VideomaskError, match="variant 'x'"):
        load_bench_config(path)
    raw["variants"] = {"x": {"name": "tube"}}
    raw["train"]["optim"]["lrr"] = 1.0
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(VideomaskError, match="optim.lrr"):
        load_bench_config(path)


def test_bench_missing_footage_is_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "videomask",
            "bench",
            "--source",
            str(tmp_path / "none"),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0], proc.stderr
    assert not (tmp_path / "work").exists()  # nothing created or deleted before the check


def test_fixed_random_mask_is_fixed():
    a, b = fixed_random_mask(64, 0.75, seed=3), fixed_random_mask(64, 0.75, seed=3)
    assert torch.equal(a, b) and int(a.sum()) == 48
    assert not torch.equal(a, fixed_random_mask(64, 0.75, seed=4))
    with pytest.raises(VideomaskError):
        fixed_random_mask(4, 0.1)


def test_motion_energy_grows_with_playback_speed():
    from videomask.bench.motion_energy import motion_energy_features

    x = torch.arange(64, dtype=torch.float32)
    base = (127 + 120 * torch.sin(2 * torch.pi * x / 64)).to(torch.uint8).expand(3, 64, 64)  # a smooth horizontal wave
    clips = torch.stack(
        [
            torch.stack(
                [torch.roll(base, shifts=s * k, dims=2) for k in range(4)], dim=1
            )  # [3, T, 64, 64], s px per frame
            for s in (1, 2, 4)
        ]
    )  # [3, 3, 4, 64, 64]
    feats = motion_energy_features(clips, patch=16)
    assert feats.shape == (3, 3 * 4 * 4)
    energy = feats.mean(dim=1)
    assert energy[0] < energy[1] < energy[2]
    assert (
        float(motion_energy_features(clips[:, :, :1].repeat(1, 1, 4, 1, 1)).abs().max()) == 0.0
    )  # still clip: no motion


def test_bench_without_the_extra_is_one_line(tmp_path, monkeypatch, capsys):
    from videomask.cli import main
    from videomask.commands import bench as command

    monkeypatch.setattr(command, "BENCH_EXTRA", ("yaml", "videomask_no_such_package"))
    assert main(["bench", "--quick", "--work-dir", str(tmp_path / "work")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "videomask_no_such_package" in lines[0] and "videomask[bench]" in lines[0], lines
    assert "yaml" not in lines[0]
    assert not (tmp_path / "work").exists()
