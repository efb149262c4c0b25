"""Shared test fixtures: small generated clips whose frames encode their own index."""

from __future__ import annotations

import os

import torch

# Tests run on a 2-core machine; keep torch from oversubscribing it.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config) -> None:
    """Set the test process up as the CLI sets up its process (allocator, gc before fork, FFmpeg logs)."""
    from videomask.data import prepare_process  # after the thread setting above

    prepare_process()
