"""The README's main job, `videomask demo`, end to end in a shortened form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]


def test_demo_quick_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "videomask",
            "demo",
            "--quick",
            "--out",
            str(out),
            "data.num_frames=8",
            "data.size=64",
            "train.progress=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "videomask demo done" in proc.stdout
    # every stage left its product
    for stage in ("source", "target"):
        assert (out / stage / "config.yaml").is_file()
        assert (out / stage / "final" / "model.safetensors").is_file()
    with safe_open(str(out / "stats.safetensors"), "pt") as f:
        assert "centroids" in f.keys()
    records = [json.loads(line) for line in (out / "target" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if r.get("loss") is not None]
    assert steps, "stage 3 logged no loss"
    # the difference masker returns anchors, so the anchor / other loss split is logged
    assert any(r.get("loss_anchor") is not None for r in steps)
    assert (out / "masks.gif").stat().st_size > 0 and (out / "masks.png").stat().st_size > 0


def test_demo_bad_override_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "videomask", "demo", "--quick", "--out", str(tmp_path), "train.nosuchkey=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nosuchkey" in lines[0], proc.stderr
