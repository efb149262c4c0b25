"""Every seed videomask derives, in one place: each is a pure function of its coordinates.

A clip's random draws come from ``(seed, epoch, index, sample)``, a micro-batch's mask from
``(seed, step, micro, rank)``, and a rank's global torch RNG (drop-path, dropout) from ``(seed, rank)``,
so a run is reproducible across processes, workers, resumes and world sizes.
"""

from __future__ import annotations

import hashlib

import torch

_MASK63 = (1 << 63) - 1


def item_seed(seed: int, epoch: int, index: int, sample: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, index, sample)`` (stable across processes)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}/{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63


def item_generator(seed: int, epoch: int, index: int, sample: int) -> torch.Generator:
    """The CPU generator all random draws of one clip come from."""
    generator = torch.Generator()
    generator.manual_seed(item_seed(seed, epoch, index, sample))
    return generator


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """A 63-bit seed for the mask generator of one micro-batch, a pure function of its coordinates."""
    digest = hashlib.sha256(f"videomask:{seed}:{step}:{micro}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & _MASK63


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's global torch RNG for the loop (drop-path, dropout): different on every rank."""
    digest = hashlib.sha256(f"videomask-rank:{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & _MASK63
