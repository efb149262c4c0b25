"""The objectives' tests run the tiny model and the CNN teacher on one thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model's ops are too small to gain from threads; one thread keeps steps fast on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
