"""videomask: masked video pretraining that chooses what to mask (Difference-Masking for video)."""

__version__ = "0.1.0"
