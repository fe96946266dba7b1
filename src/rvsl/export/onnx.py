"""Writing the ONNX models: the embedding path, the dehazer and the manifest.

``export_onnx`` writes ``embed_<branch>.onnx`` (one branch's encoder -> ReID trunk -> pool ->
BNNeck: input ``images`` (B, 3, H, W), output ``features`` (B, D)), ``dehaze.onnx`` (hazy
encoder -> clear generator: input ``hazy``, output ``dehazed``, same size and normalisation as
the input) and ``export.json``, a manifest saying how to feed them. The batch axis is dynamic;
H and W are fixed at export, or dynamic too with ``dynamic_size`` (then the models take any
size the network takes, and ``image_size`` in the manifest is the size to resize to, the one the
network was trained at). Every file is written atomically (:func:`rvsl.utils.files.atomic_write`).

Dynamic H and W: the generator pads or crops after each upsampling, in Python branches that
tracing records as constants (``generator.upsample_to``). Both its crops are one pixel or none
(the encoder's stem and max-pool round up), and the branch taken when H and W are 1 mod 4 (a
one-pixel crop at both upsamplings, on both axes) is the general one: its shape arithmetic is
traced and also gives the no-crop case. So a dynamic export traces at :func:`trace_size`, the
next size up that is 1 mod 4 on both sides; traced at a multiple of 4 the graph would lose the
crops and fail on any other size.

Exporter: the TorchScript-based one (``dynamo=False``, ``dynamic_axes``). The default dynamo
exporter of torch 2.14 needs ``onnxscript``, which is not installed; the TorchScript exporter
needs only ``onnx`` (in the ``dev`` extra, as is ``onnxruntime``) and handles every op of this
network (IBN's InstanceNorm, bilinear Resize with align_corners, Pad); the generator's pad
arithmetic is written so that it exports exactly (``generator._floor_half``). It is
deprecated and says so on
every call: that warning and a few known-harmless ones are silenced around the call only
(see ``_quiet_exporter``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from rvsl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, size_pair
from rvsl.models.rvsl_net import BRANCHES, RVSLNet
from rvsl.utils.files import atomic_write

DEFAULT_OPSET = 17  # run by every ONNX Runtime since 1.11 and by most other runtimes
MIN_OPSET = 11  # Resize with align_corners
MAX_OPSET = 20  # the TorchScript exporter's highest (torch.onnx._constants)
MANIFEST = "export.json"
#: Largest max abs error (features or dehazed pixels) accepted between ONNX Runtime and PyTorch.
TOLERANCE = 1e-3


class ExportError(ValueError):
    """Settings an export cannot use; the message is one sentence for the user."""


class EmbedModel(nn.Module):
    """One branch's embedding: ``RVSLNet.embed(images, branch)`` as a single-tensor module."""

    def __init__(self, net: RVSLNet, branch: str = "hazy") -> None:
        super().__init__()
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, not {branch!r}")
        self.net = net
        self.branch = branch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed(images, self.branch)[f"feat_{self.branch}"]


class DehazeModel(nn.Module):
    """The dehazer, ``RVSLNet.dehaze(hazy)``, as a module to export."""

    def __init__(self, net: RVSLNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, hazy: torch.Tensor) -> torch.Tensor:
        return self.net.dehaze(hazy)


def require(package: str) -> None:
    """Raise ModuleNotFoundError naming ``package`` (``onnx`` to export, ``onnxruntime`` to verify).

    Both are optional dependencies of rvsl (the ``dev`` extra), so the message says how to get them.
    """
    if importlib.util.find_spec(package) is None:
        raise ModuleNotFoundError(
            f"ONNX export needs the {package!r} package, which is not installed "
            f"(pip install {package})",
            name=package,
        )


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def _cpu_eval_copy(net: RVSLNet) -> RVSLNet:
    """A float32 CPU copy in eval mode: the caller's network keeps its device and mode."""
    return copy.deepcopy(net).to("cpu", torch.float32).eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the known-harmless warnings an export of this network raises, and nothing else.

    - the deprecation notice of the TorchScript exporter (chosen on purpose, see module doc);
    - ``setup_onnx_logging`` deprecation, raised by the exporter's own internals;
    - "operator 'instance_norm' is set to train=True": IBN's InstanceNorm keeps no running
      statistics, so it normalises per instance in eval mode too, which is what is exported;
    - "Constant folding - Only steps=1 ...": a missed graph simplification around the crop
      (H or W not a multiple of 4), not an error;
    - TracerWarnings raised inside torch itself (InstanceNorm's input checks): torch ignores
      these by default (``TracerWarning.ignore_lib_warnings``), test runners re-enable them;
    - TracerWarnings of the generator's pad/crop branch: with H and W fixed at export that
      branch is meant to be a constant; with ``dynamic_size`` the branch traced is the general
      one (see the module doc, :func:`trace_size`).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx\."
        )
        warnings.filterwarnings(
            "ignore", ".*operator 'instance_norm' is set to train=True", UserWarning
        )
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.")
        warnings.filterwarnings(
            "ignore", category=torch.jit.TracerWarning, module=r"rvsl\.models\.generator"
        )
        yield


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _previous_export(out_dir: Path) -> dict[str, str | None] | None:
    """File name -> SHA-256 of what earlier exports wrote into ``out_dir`` (from its
    ``export.json``; None for a name recorded without a hash), {} when there is no manifest,
    None when ``export.json`` is not one of ours."""
    path = out_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None
    written: dict[str, str | None] = {
        entry["file"]: None
        for entry in manifest["files"].values()
        if isinstance(entry, dict) and isinstance(entry.get("file"), str)
    }
    if isinstance(manifest.get("written"), dict):
        written.update({k: str(v) for k, v in manifest["written"].items()})
    return written


def _refuse_foreign(out_dir: Path, names: Sequence[str]) -> dict[str, str | None]:
    """FileExistsError naming the files of ``names`` (and ``export.json``) in ``out_dir`` that no
    earlier export wrote, or that changed since; else the earlier exports' record."""
    previous = _previous_export(out_dir)
    foreign = [] if previous is not None else [MANIFEST]
    for name in names:
        path = out_dir / name
        if not (path.exists() or path.is_symlink()):
            continue
        known = (previous or {}).get(name, "")
        if path.is_symlink() or not path.is_file() or known not in (None, _sha256(path)):
            foreign.append(name)
    if foreign:
        raise FileExistsError(
            f"refusing to replace {', '.join(foreign)} in {out_dir}: rvsl-export did not write "
            "them (or they changed since); move them away or choose another out="
        )
    return previous or {}


def trace_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """The (H, W) a dynamic-size export traces at: the next size up (or the same) that is 1 mod 4
    on both sides, where the generator's crops take their general branch (module doc)."""
    h, w = size_pair(image_size)
    return h + (1 - h) % 4, w + (1 - w) % 4


def export_module(
    module: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike[str],
    input_name: str,
    output_name: str,
    opset: int = DEFAULT_OPSET,
    replace: bool = False,
    dynamic_size: bool = False,
) -> Path:
    """Export a one-input, one-output eval-mode module with a dynamic batch axis, atomically.

    ``dynamic_size``: H and W (dims 2 and 3) of the input are dynamic too, and of the output
    when it is an image; the module is traced at :func:`trace_size` of the example's H and W
    (a random input of that size), not at the example's own size. An existing file at ``path``
    is replaced only when ``replace`` (the caller has checked that it wrote it); otherwise
    FileExistsError.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in {MIN_OPSET}..{MAX_OPSET}, got {opset}")
    require("onnx")  # the TorchScript exporter imports it to write the file
    path = Path(path)
    if not replace and (path.exists() or path.is_symlink()):
        raise FileExistsError(f"refusing to replace {path}: it already exists")
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}}
    if dynamic_size:
        size = trace_size(tuple(example.shape[-2:]))
        example = torch.rand(*example.shape[:-2], *size, generator=torch.Generator().manual_seed(0))
        axes[input_name] |= {2: "height", 3: "width"}
        with torch.no_grad():
            if module.eval()(example).ndim == 4:  # an image out: the same H and W
                axes[output_name] |= {2: "height", 3: "width"}

    def write(handle: BinaryIO) -> None:  # the TorchScript exporter writes to a file object
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                module.eval(),
                (example,),
                handle,
                dynamo=False,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
            )

    atomic_write(path, write)
    return path


def export_embed(
    net: RVSLNet,
    path: str | os.PathLike[str],
    image_size: int | Sequence[int] = 256,
    opset: int = DEFAULT_OPSET,
    branch: str = "hazy",
    dynamic_size: bool = False,
) -> Path:
    """Write only the embedding model (``images`` -> ``features``) to ``path``."""
    h, w = size_pair(image_size)
    model = EmbedModel(_cpu_eval_copy(net), branch)
    example = torch.rand(2, 3, h, w)
    return export_module(
        model, example, path, "images", "features", opset, dynamic_size=dynamic_size
    )


def export_onnx(
    net: RVSLNet,
    out_dir: str | os.PathLike[str],
    image_size: int | Sequence[int] = 256,
    opset: int = DEFAULT_OPSET,
    branch: str = "hazy",
    normalize: bool = False,
    dynamic_size: bool = False,
) -> dict[str, Path]:
    """Write ``embed_<branch>.onnx``, ``dehaze.onnx`` and ``export.json`` into ``out_dir``.

    ``normalize`` records in the manifest whether the network was trained on ImageNet-
    normalised inputs (``data.normalize``; off by default, as in the reference); the models
    themselves take whatever the network took. ``dynamic_size``: H and W of both models'
    inputs (and of the dehazed output) are dynamic axes, ``height`` and ``width``; the
    manifest's ``image_size`` stays the size to resize to (see the module doc). Returns the
    paths under the keys ``embed``, ``dehaze`` and ``manifest``. Existing files of these names
    are replaced only when an earlier export wrote them, unchanged since (``export.json``
    records their SHA-256 under ``written``); otherwise FileExistsError names them before
    anything is written.
    """
    h, w = size_pair(image_size)
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, not {branch!r}")
    out_dir = Path(out_dir)
    written = _refuse_foreign(out_dir, [f"embed_{branch}.onnx", "dehaze.onnx"])
    cpu_net = _cpu_eval_copy(net)
    example = torch.rand(2, 3, h, w)
    paths = {
        "embed": export_module(
            EmbedModel(cpu_net, branch),
            example,
            out_dir / f"embed_{branch}.onnx",
            "images",
            "features",
            opset,
            replace=True,
            dynamic_size=dynamic_size,
        ),
        "dehaze": export_module(
            DehazeModel(cpu_net),
            example,
            out_dir / "dehaze.onnx",
            "hazy",
            "dehazed",
            opset,
            replace=True,
            dynamic_size=dynamic_size,
        ),
    }
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize else ((0.0,) * 3, (1.0,) * 3)
    if dynamic_size:
        layout = (
            "NCHW, RGB, float32; batch, H and W axes dynamic: any H, W the network takes "
            "(ceil(H/16) x ceil(W/16) >= 2); image_size is the size it was trained at"
        )
        out_h, out_w = "height", "width"
    else:
        layout, (out_h, out_w) = "NCHW, RGB, float32; batch axis dynamic, H and W fixed", (h, w)
    manifest = {
        "format": 1,
        "backbone": net.backbone,
        "feature_dim": net.feature_dim,
        "branch": branch,
        "image_size": [h, w],
        "dynamic_size": dynamic_size,
        "opset": opset,
        "exporter": f"torch.onnx TorchScript (dynamo=False), torch {torch.__version__}",
        "input": {
            "layout": layout,
            "preprocess": "resize to image_size, divide by 255, then (x - mean) / std",
            "normalize": normalize,
            "mean": list(mean),
            "std": list(std),
        },
        "files": {
            "embed": {
                "file": paths["embed"].name,
                "input": "images",
                "output": "features",
                "output_shape": ["batch", net.feature_dim],
            },
            "dehaze": {
                "file": paths["dehaze"].name,
                "input": "hazy",
                "output": "dehazed",
                "output_shape": ["batch", 3, out_h, out_w],
                "note": "same normalisation as the input; no output activation, clamp to show",
            },
        },
    }
    written |= {p.name: _sha256(p) for p in (paths["embed"], paths["dehaze"])}
    manifest["written"] = dict(sorted(written.items()))  # what a later export may replace
    paths["manifest"] = out_dir / MANIFEST
    text = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    atomic_write(paths["manifest"], lambda handle: handle.write(text))
    return paths
