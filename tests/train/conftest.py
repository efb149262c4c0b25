"""Fixtures shared by the training tests: one torch thread and a folder of tiny generated clips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_train import write_videos


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model's ops are too small to gain from threads; one thread keeps steps fast on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Four tiny clips written once per test module."""
    return write_videos(tmp_path_factory.mktemp("videos"))
