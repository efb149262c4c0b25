"""Constants shared by the data pipeline, the model and the evaluation: one definition each."""

from __future__ import annotations

# ImageNet channel statistics (RGB, pixels in [0, 1]): the input normalisation of VideoMAE and of
# the Hugging Face image processors; the model undoes it to build its pixel target.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]
