"""The shipped footage in assets/: every clip decodes with every backend, sane metadata, exact seeks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from videomask.video import BACKENDS, available_backends, open_video

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CLIPS = sorted(ASSETS.glob("*/*.mp4"))
BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in available_backends(), reason=f"{name} not installed"))
    for name in BACKENDS
]


def test_assets_are_shipped_and_small():
    names = {p.relative_to(ASSETS).as_posix() for p in CLIPS}
    assert any(n.startswith("source/") for n in names) and any(n.startswith("target/") for n in names)
    assert len(CLIPS) >= 6
    assert sum(p.stat().st_size for p in CLIPS) < 6 * 1024 * 1024
    readme = (ASSETS / "README.md").read_text()
    for name in names:  # every clip has its origin and licence written down
        assert f"`{name}`" in readme, f"{name} missing from assets/README.md"


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("path", CLIPS, ids=[p.relative_to(ASSETS).as_posix() for p in CLIPS])
def test_asset_decodes_and_seeks_exactly(path, backend):
    with open_video(path, backend) as video:
        meta = video.meta
        assert meta.num_frames >= 16
        assert 5 <= meta.fps <= 60
        assert meta.duration == pytest.approx(meta.num_frames / meta.fps, rel=0.1)
        assert 120 <= min(meta.height, meta.width) <= 160 and meta.rotation == 0
        assert (meta.codec, meta.pix_fmt) == ("h264", "yuv420p")
        everything = video.read_all()
    assert everything.shape == (meta.num_frames, meta.height, meta.width, 3)
    assert everything.std() > 5  # real pictures, not blank frames
    assert np.abs(np.diff(everything.astype(np.int16), axis=0)).mean() > 0.1  # and they move
    n = meta.num_frames
    rng = np.random.default_rng(len(path.name))
    indices = [int(i) for i in rng.integers(0, n, 6)] + [n - 1, 0] + list(range(1, n, 4))[:16]
    with open_video(path, backend) as video:
        np.testing.assert_array_equal(video.read(indices), everything[indices])
