"""The known-difference benchmark's real-shift variant: a folder of real target footage by argument."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("known_difference", ROOT / "benchmarks" / "known_difference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SMALL = ["--embedders", "pixel", "--size", "64", "--num-frames", "4", "--num-words", "8", "--num-prototypes", "16"]
SMALL += ["--real-clips-per-video", "2"]


def test_real_variant_measures_the_shift_per_folder_and_updates_only_its_rows(tmp_path):
    kd = _script()
    out = tmp_path / "results"
    # an earlier full run: a pasted-object row made with the same settings
    earlier = {
        "command": "python benchmarks/known_difference.py",
        "date": "2026-01-01 00:00",
        "seconds": 1.0,
        "settings": {**vars(kd.parse_args(SMALL)), "clips_per_video": 2, "eval_clips": 2},
        "footage": {"object": {"source_clips": 1}},
        "rows": [{"variant": "object", "embedder": "pixel", "scorer": "distance", "anchor_rule": "calibrated"}],
    }
    earlier["rows"][0].update(auc=0.9, anchor_share=0.1, precision=0.5, chance=0.1, lift=5.0, recall=0.5, iou=0.3)
    out.mkdir()
    (out / "kd.json").write_text(json.dumps(earlier))
    assets = ROOT / "assets"
    argv = [*SMALL, "--variants", "real", "--out", str(out), "--name", "kd", "--update"]
    argv += ["--real-target", str(assets / "target"), "--real-control", str(assets / "source")]
    assert kd.main(argv) == 0

    result = json.loads((out / "kd.json").read_text())
    assert [r["variant"] for r in result["rows"]] == ["object", "real:target", "control:source"]
    new, same = result["rows"][1], result["rows"][2]
    assert new["expected"] == "new" and same["expected"] == "same"
    assert new["ratio_99"] == new["target_share_99"] / new["source_share_99"]
    assert set(new["per_video_ratio_99"]) == {p.name for p in (assets / "target").glob("*.mp4")}
    # the files used are recorded, and the run that made the real rows
    files = {Path(f["file"]).name for f in result["footage"]["real:target"]["target"]}
    assert files == {p.name for p in (assets / "target").glob("*.mp4")}
    assert result["command"] == earlier["command"] and result["updates"][0]["variants"] == ["real"]
    md = (out / "kd.md").read_text()
    assert "## Real shift" in md and "| real:target | new | `pixel` |" in md and "--update" in md
    assert "| `pixel` | AUC 0.900 |" in md  # the per-embedder table puts both measurements side by side
