"""rvsl: RVSL vehicle re-identification in haze, on PyTorch Lightning."""

__version__ = "0.1.0"
