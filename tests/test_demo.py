"""The README's main job, `videomask demo`, end to end in a shortened form."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "benchmarks" / "results" / "demo.txt"  # the full demo's output, its command on the first line
SUMMARY_START = "videomask demo done in "


def demo_summary(text: str) -> list[str]:
    """The summary the demo prints last: its lines from ``videomask demo done in ...`` to the end."""
    lines = text.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(SUMMARY_START)]
    assert starts, f"no line starts with {SUMMARY_START!r}"
    return lines[starts[-1] :]


def readme_demo_block() -> list[str]:
    """The README's copy of the demo's summary: the fenced block that starts with the summary's first line."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.M | re.S)
    found = [b.rstrip().splitlines() for b in blocks if b.startswith(SUMMARY_START)]
    assert len(found) == 1, "README.md needs exactly one block with the demo's summary"
    return found[0]


def summary_shape(lines: list[str]) -> list[str]:
    """The summary with its paths and numbers blanked out: labels, order and format only."""
    out = []
    for line in lines:
        line = re.sub(r"[^\s(]*/[^\s),;]*", "<path>", line)  # paths (relative or absolute)
        out.append(re.sub(r"\d+(\.\d+)?", "<n>", line))
    return out


def test_readme_demo_block_is_the_recorded_demo_output() -> None:
    """README.md shows what the full demo printed (benchmarks/results/demo.txt), line for line."""
    recorded = RECORDED.read_text()
    assert recorded.splitlines()[0].startswith("$ ") and "videomask demo" in recorded.splitlines()[0]
    assert readme_demo_block() == demo_summary(recorded)


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
    # the summary has the README's lines, labels and format (numbers and paths aside)
    assert summary_shape(demo_summary(proc.stdout)) == summary_shape(readme_demo_block())
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


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("mask.ratio=1.5", ["mask.ratio", "(0, 1)"]),
        ("mask.options.embedder=pixel", ["embedder", "pixel"]),
        ("demo.fit.num_words=many", ["demo.fit.num_words"]),
    ],
)
def test_demo_rejects_a_bad_override_before_stage_1(tmp_path: Path, override: str, words: list[str]) -> None:
    """Stage 3's settings are checked with the config, not after two stages have run."""
    proc = subprocess.run(
        [sys.executable, "-m", "videomask", "demo", "--quick", "--out", str(tmp_path / "demo"), override],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert all(w in lines[0] for w in words), lines[0]
    assert "[1/4]" not in proc.stdout and not (tmp_path / "demo").exists()
