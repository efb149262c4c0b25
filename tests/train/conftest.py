"""Fixtures shared by the training tests: one torch thread and a folder of tiny generated clips."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_train import write_videos


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every training test runs on one torch thread (the ``one_thread`` fixture of tests/conftest.py)."""


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Four tiny clips written once per test module."""
    return write_videos(tmp_path_factory.mktemp("videos"))
