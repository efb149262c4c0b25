"""Copy a converted state dict into a :class:`~videomask.model.VideoMAE`, reporting what does not fit.

Unknown checkpoint keys raise :class:`~videomask.errors.VideomaskError` (with ``strict=False`` they are
logged and skipped); missing decoder keys are logged (fresh decoder), other missing keys raise.
"""

from __future__ import annotations

import logging

from torch import Tensor

from videomask.errors import VideomaskError
from videomask.model import VideoMAE

log = logging.getLogger("videomask.io")

DECODER_PREFIXES = ("encoder_to_decoder.", "mask_token", "decoder_blocks.", "decoder_norm.", "decoder_head.")


def list_keys(keys: list[str], limit: int = 12) -> str:
    """``a, b, c ... and N more`` (every key when there are at most ``limit``)."""
    head = ", ".join(keys[:limit])
    return head + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def group_keys(keys: list[str]) -> str:
    """Keys grouped by their top module: ``decoder_blocks (30 keys), mask_token``."""
    groups: dict[str, int] = {}
    for key in keys:
        top = key.split(".", 1)[0]
        groups[top] = groups.get(top, 0) + 1
    return ", ".join(f"{top} ({n} keys)" if n > 1 else top for top, n in groups.items())


def load_into(model: VideoMAE, state: dict[str, Tensor], unknown: list[str], source: str, strict: bool) -> VideoMAE:
    """Copy ``state`` (videomask keys) into ``model``; report unknown and missing keys (see module docstring).

    ``unknown`` lists the checkpoint keys (in the checkpoint's own names) that map to no model key.
    """
    expected = model.state_dict()
    unknown = sorted(set(unknown) | {k for k in state if k not in expected})
    missing = sorted(k for k in expected if k not in state)
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if shape_errors:
        raise VideomaskError(
            f"{source}: shape mismatch for {len(shape_errors)} key(s): {'; '.join(shape_errors[:5])}"
            " (a different model size? pass the matching config or size overrides)"
        )
    if unknown:
        msg = f"{source}: {len(unknown)} unknown key(s) not used by the model: {list_keys(unknown)}"
        if strict:
            raise VideomaskError(msg + " (pass strict=False to skip them)")
        log.warning(msg + " (skipped)")
    fresh_decoder = [k for k in missing if k.startswith(DECODER_PREFIXES)]
    fresh_fc = [k for k in missing if k.startswith("fc_norm.")]  # only classification checkpoints carry fc_norm
    hard = [k for k in missing if k not in fresh_decoder and k not in fresh_fc]
    if hard:
        msg = f"{source}: {len(hard)} model key(s) missing from the checkpoint: {list_keys(hard)}"
        if strict:
            raise VideomaskError(msg + " (pass strict=False to keep them freshly initialised)")
        log.warning(msg + " (left at their fresh initialisation)")
    if fresh_fc:
        log.info("%s: no fc_norm in the checkpoint; features() uses a fresh (identity-affine) fc_norm", source)
    if fresh_decoder:
        log.warning(
            "%s: the checkpoint has no decoder; %d decoder key(s) freshly initialised: %s",
            source,
            len(fresh_decoder),
            group_keys(fresh_decoder),
        )
    result = model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return model
