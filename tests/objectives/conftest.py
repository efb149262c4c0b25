"""The objectives' tests run the tiny model and the CNN teacher on one torch thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every objectives test runs on one torch thread (the ``one_thread`` fixture of tests/conftest.py)."""
