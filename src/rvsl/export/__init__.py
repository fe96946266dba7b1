"""ONNX export of a trained RVSL network: the embedding path and the dehazer.

:func:`export_onnx` writes ``embed_<branch>.onnx`` (one branch's encoder -> ReID trunk -> pool
-> BNNeck), ``dehaze.onnx`` (hazy encoder -> clear generator) and ``export.json``, a manifest
saying how to feed them (:mod:`rvsl.export.onnx`); :func:`verify_onnx` checks ONNX Runtime
against PyTorch (:mod:`rvsl.export.verify`); :func:`export_checkpoint` is all of it from a
checkpoint file, what ``rvsl-export`` runs (:mod:`rvsl.export.checkpoint`).
"""

from rvsl.export.checkpoint import ExportResult, check_settings, export_checkpoint
from rvsl.export.onnx import (
    DEFAULT_OPSET,
    MANIFEST,
    MAX_OPSET,
    MIN_OPSET,
    TOLERANCE,
    DehazeModel,
    EmbedModel,
    ExportError,
    export_embed,
    export_module,
    export_onnx,
)
from rvsl.export.verify import verify_onnx

__all__ = [
    "DEFAULT_OPSET",
    "MANIFEST",
    "MAX_OPSET",
    "MIN_OPSET",
    "TOLERANCE",
    "DehazeModel",
    "EmbedModel",
    "ExportError",
    "ExportResult",
    "check_settings",
    "export_checkpoint",
    "export_embed",
    "export_module",
    "export_onnx",
    "verify_onnx",
]
