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
    dynamic_size: bool = False  # H and W dynamic; errors then cover checked_sizes[1] too
    checked_sizes: tuple[tuple[int, int], ...] = ()  # the (H, W) sizes ONNX Runtime ran

    @property
    def worst(self) -> tuple[str, float]:
        """(name, error) of the largest error; NaN counts as the worst."""
        name = max(self.errors, key=lambda k: (self.errors[k] != self.errors[k], self.errors[k]))
        return name, self.errors[name]

    @property
    def verified(self) -> bool:
        """Every error at most :data:`TOLERANCE` (NaN fails)."""
        return all(e <= TOLERANCE for e in self.errors.values())


def other_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """The second size a dynamic-size export is checked at: (H + 33, W + 34). Larger, so the
    network takes it; and 1 and 2 more mod 4, so that the generator crops otherwise than at
    ``image_size`` (H + 32 would crop alike: see :mod:`rvsl.export.onnx` on dynamic sizes)."""
    return image_size[0] + 33, image_size[1] + 34


def check_settings(
    image_size: Any = None,
    branch: Any = "hazy",
    opset: Any = DEFAULT_OPSET,
    normalize: Any = None,
    dynamic_size: Any = False,
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
    if not isinstance(dynamic_size, bool):
        raise ExportError(f"dynamic_size must be true or false, got {dynamic_size!r}")
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
    dynamic_size: bool = False,
) -> ExportResult:
    """Load ``checkpoint``, write the ONNX models and manifest into ``out_dir``, check them with
    ONNX Runtime (:func:`verify_onnx`; the caller judges ``result.verified``).

    ``checkpoint``: ours (``rvsl-train``, ``rvsl-convert``) or the authors' raw weights, loaded
    as :meth:`rvsl.inference.Reidentifier.from_checkpoint` loads them. ``image_size`` and
    ``normalize``: None takes what the checkpoint records (a training run records its
    ``data.image_size`` and ``data.normalize``), else the paper's 384x384
    (:data:`rvsl.inference.DEFAULT_IMAGE_SIZE`) and false, as the inference API does.
    ``dynamic_size``: both models take any H and W (:func:`rvsl.export.export_onnx`); they are
    then checked at ``image_size`` and at :func:`other_size` (keys ``<name>@<batch>`` and
    ``<name>@<batch>@<H>x<W>``).

    Raises, before anything is written: ExportError (a setting), ModuleNotFoundError (``onnx``
    or ``onnxruntime`` missing), ``rvsl.models.checkpoint.CheckpointError`` (the file);
    FileExistsError when ``out_dir`` holds files of these names that no export wrote.
    """
    size = check_settings(image_size, branch, opset, normalize, dynamic_size)
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
    paths = export_onnx(net, out_dir, size, opset, branch, normalize, dynamic_size)
    errors, checked = verify_onnx(net, paths, size), [size]
    if dynamic_size:
        checked.append(other_size(size))
        h, w = checked[-1]
        errors |= {f"{k}@{h}x{w}": v for k, v in verify_onnx(net, paths, (h, w)).items()}
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
        errors=errors,
        dynamic_size=dynamic_size,
        checked_sizes=tuple(checked),
    )
