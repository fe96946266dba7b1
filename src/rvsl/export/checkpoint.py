"""Export from a checkpoint file, what ``rvsl-export`` runs: settings checked, the image size and
normalisation the checkpoint records, the ONNX models written and verified."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rvsl.export.onnx import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    TOLERANCE,
    ExportError,
    export_onnx,
    require,
)
from rvsl.export.verify import verify_onnx
from rvsl.inference import Reidentifier
from rvsl.models.image_size import image_size_problem
from rvsl.models.rvsl_net import BRANCHES


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote and measured.

    ``image_size_source``: ``"given"`` (the caller's), ``"checkpoint"`` (the size it records)
    or ``"default"`` (it records none: :data:`rvsl.inference.DEFAULT_IMAGE_SIZE`, the paper's).
    ``normalize_source``: ``"given"`` or ``"checkpoint"`` (what it records; false when it
    records nothing), as :meth:`rvsl.inference.Reidentifier.from_checkpoint` reads them.
    """

    paths: dict[str, Path]
    backbone: str
    feature_dim: int
    branch: str
    opset: int
    image_size: tuple[int, int]
    image_size_source: str
    normalize: bool
    normalize_source: str
    errors: dict[str, float]  # ONNX Runtime vs PyTorch max abs error, see verify_onnx

    @property
    def worst(self) -> tuple[str, float]:
        """(name, error) of the largest error; NaN counts as the worst."""
        name = max(self.errors, key=lambda k: (self.errors[k] != self.errors[k], self.errors[k]))
        return name, self.errors[name]

    @property
    def verified(self) -> bool:
        """Every error at most :data:`TOLERANCE` (NaN fails)."""
        return all(e <= TOLERANCE for e in self.errors.values())


def check_settings(
    image_size: Any = None, branch: Any = "hazy", opset: Any = DEFAULT_OPSET, normalize: Any = None
) -> tuple[int, int] | None:
    """ExportError naming the first setting that cannot be exported; else the (H, W) of
    ``image_size`` (an integer N, or [H, W], that the network can take; None: the
    checkpoint's, decided when it is loaded)."""
    if branch not in BRANCHES:
        raise ExportError(f"branch must be {' or '.join(BRANCHES)}, got {branch!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}"
        )
    if normalize is not None and not isinstance(normalize, bool):
        raise ExportError(f"normalize must be true or false, got {normalize!r}")
    if image_size is None:
        return None
    sizes = [image_size] if isinstance(image_size, int) else image_size
    integers = isinstance(sizes, Sequence) and not isinstance(sizes, str | bytes)
    integers = integers and all(isinstance(s, int) and not isinstance(s, bool) for s in sizes)
    if not integers or len(sizes) not in (1, 2) or min(sizes) < 1:
        raise ExportError(f"image_size must be a positive integer N or [H,W], got {image_size!r}")
    problem = image_size_problem((sizes[0], sizes[-1]), setting="image_size")
    if problem:
        raise ExportError(problem)
    return sizes[0], sizes[-1]


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    image_size: int | Sequence[int] | None = None,
    branch: str = "hazy",
    opset: int = DEFAULT_OPSET,
    normalize: bool | None = None,
) -> ExportResult:
    """Load ``checkpoint``, write the ONNX models and manifest into ``out_dir``, check them with
    ONNX Runtime (:func:`verify_onnx`; the caller judges ``result.verified``).

    ``checkpoint``: ours (``rvsl-train``, ``rvsl-convert``) or the authors' raw weights, loaded
    as :meth:`rvsl.inference.Reidentifier.from_checkpoint` loads them. ``image_size`` and
    ``normalize``: None takes what the checkpoint records (a training run records its
    ``data.image_size`` and ``data.normalize``), else the paper's 384x384
    (:data:`rvsl.inference.DEFAULT_IMAGE_SIZE`) and false, as the inference API does.

    Raises, before anything is written: ExportError (a setting), ModuleNotFoundError (``onnx``
    or ``onnxruntime`` missing), ``rvsl.models.checkpoint.CheckpointError`` (the file);
    FileExistsError when ``out_dir`` holds files of these names that no export wrote.
    """
    size = check_settings(image_size, branch, opset, normalize)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"out={out_dir} is an existing file; out must be a directory")
    require("onnx")
    require("onnxruntime")
    loaded = Reidentifier.from_checkpoint(checkpoint, image_size=size)
    recorded = loaded.trained_image_size
    size_source = "given" if size else ("checkpoint" if recorded else "default")
    size = loaded.image_size
    problem = image_size_problem(size, setting="image_size")
    if problem:  # only a recorded size can get here
        raise ExportError(f"{problem} (the size the checkpoint records; set image_size=)")
    if normalize is None:
        normalize, normalize_source = loaded.normalize_input, "checkpoint"
    else:
        normalize_source = "given"
    net = loaded.net
    paths = export_onnx(net, out_dir, size, opset, branch, normalize=normalize)
    return ExportResult(
        paths=paths,
        backbone=net.backbone,
        feature_dim=int(net.feature_dim),
        branch=branch,
        opset=opset,
        image_size=size,
        image_size_source=size_source,
        normalize=normalize,
        normalize_source=normalize_source,
        errors=verify_onnx(net, paths, size),
    )
