"""Files the user shares (statistics, score caches, Hugging Face exports) get a checkpoint's permissions:
a plain write's, 0666 less the umask (safetensors' own writer makes them 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from videomask.difference import PixelEmbedder, ScoreCache, fit_statistics
from videomask.io import save_hf_checkpoint, save_model_weights
from videomask.io.per_video import video_file
from videomask.model import build_model


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_shared_files_have_a_checkpoints_permissions(tmp_path, umask):
    before = os.umask(umask)
    try:
        source = [torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
        stats = fit_statistics(source, source, PixelEmbedder(dim=8), num_words=4, num_anchors=1, progress=False)
        cache = ScoreCache({"v.mp4": (np.array([0], dtype=np.int64), torch.zeros(1, 2, 2), (32, 32))}, {})
        model = build_model(
            "tiny", embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2
        )
        written = [
            stats.save(tmp_path / "stats.safetensors"),
            cache.save(tmp_path / "scores") / "meta.json",
            video_file(tmp_path / "scores", "v.mp4"),
            save_hf_checkpoint(model, tmp_path / "hf") / "model.safetensors",
        ]
        save_model_weights(model, tmp_path / "model.safetensors")
    finally:
        os.umask(before)
    expected = 0o666 & ~umask
    assert _mode(tmp_path / "model.safetensors") == expected  # the checkpoint: a plain write
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(expected) for p in written}
