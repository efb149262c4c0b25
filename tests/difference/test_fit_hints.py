"""`videomask fit` names the next thing to try when nothing in the target looks new."""

from __future__ import annotations

from pathlib import Path

import pytest

from videomask.cli import main as cli_main
from videomask.difference import DifferenceStats

ASSETS = Path(__file__).resolve().parents[2] / "assets"


@pytest.fixture(scope="module")
def same_domain_stats(tmp_path_factory) -> tuple[Path, str]:
    """Statistics fitted with the source clips as the target too (nothing is new), and what fit printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("hints") / "stats.safetensors"
    source = str(ASSETS / "source")
    argv = ["fit", "--source", source, "--target", source, "-o", str(out), "--size", "64", "--num-frames", "4"]
    argv += [
        "--clips-per-video",
        "4",
        "--num-words",
        "8",
        "--num-anchors",
        "2",
        "--dim",
        "16",
        "--tokens-per-clip",
        "32",
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli_main(argv) == 0
    return out, printed.getvalue()


def test_fit_warning_names_the_next_embedder(same_domain_stats):
    out, printed = same_domain_stats
    assert "nothing in the target looks new to this embedder" in printed
    hint = [line for line in printed.splitlines() if "try next:" in line]
    assert len(hint) == 1 and "--embedder cnn" in hint[0] and "more source videos" in hint[0]


@pytest.mark.parametrize(
    "embedder, names",
    [
        ({"kind": "cnn"}, "--embedder pixel"),
        ({"kind": "model", "layer": "patch"}, "--layer block:2"),
        ({"kind": "model", "layer": "block:2"}, "--embedder cnn or --embedder pixel"),
        ({"kind": "callable"}, "--embedder cnn or --embedder pixel"),
    ],
)
def test_fit_hint_follows_the_embedder(same_domain_stats, embedder, names):
    stats = DifferenceStats.load(same_domain_stats[0])
    stats.embedder = embedder
    lines = stats.warnings()
    assert lines[-1].startswith("  try next: ") and names in lines[-1]
    assert "check that source and target differ" in lines[-1]
