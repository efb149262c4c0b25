"""Shared test fixtures: small generated clips whose frames encode their own index."""

from __future__ import annotations

import os

import torch

# Tests run on a 2-core machine; keep torch from oversubscribing it.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
