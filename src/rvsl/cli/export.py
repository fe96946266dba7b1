"""``rvsl-export checkpoint=PATH out=DIR [key=value ...]``: ONNX export of an rvsl checkpoint.

Optional keys: ``image_size`` (256; ``N`` or ``[H,W]``), ``branch`` (hazy or clear), ``opset``
(17) and ``normalize`` (false; only recorded in the manifest: whether the network was trained
on ImageNet-normalised inputs, ``data.normalize``). Arguments are written as Hydra overrides.

Loads the checkpoint (training or ``rvsl-convert`` output), writes ``embed_<branch>.onnx``,
``dehaze.onnx`` and the ``export.json`` manifest into ``out``, then checks both models with ONNX
Runtime against PyTorch at batch sizes 1 and 3 and prints the max abs errors.

Exit codes: 0 exported and verified; 1 ONNX Runtime disagrees with PyTorch; 2 bad input.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rvsl.export import (
    BRANCHES,
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    export_onnx,
    require,
    verify_onnx,
)
from rvsl.models.checkpoint import CheckpointError, load_net
from rvsl.models.image_size import image_size_problem

PROG = "rvsl-export"
#: Largest max abs error (features or dehazed pixels) accepted between ONNX Runtime and PyTorch.
TOLERANCE = 1e-3
USAGE = (
    f"usage: {PROG} checkpoint=PATH out=DIR [image_size=256|[H,W]] [branch={'|'.join(BRANCHES)}] "
    f"[opset={DEFAULT_OPSET}] [normalize=false|true]"
)
KEYS = ("checkpoint", "out", "image_size", "branch", "opset", "normalize")


class UsageError(ValueError):
    """A command line that cannot be run; the message is one sentence for the user."""


@dataclass(frozen=True)
class Options:
    checkpoint: Path
    out: Path
    image_size: tuple[int, int] = (256, 256)
    branch: str = "hazy"
    opset: int = DEFAULT_OPSET
    normalize: bool = False


def _image_size(text: str) -> tuple[int, int]:
    parts = [p.strip() for p in text.strip().removeprefix("[").removesuffix("]").split(",")]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise UsageError(f"image_size must be a positive integer N or [H,W], got {text!r}")
    problem = image_size_problem((sizes[0], sizes[-1]), setting="image_size")
    if problem:
        raise UsageError(problem)
    return (sizes[0], sizes[-1])


def _opset(text: str) -> int:
    try:
        opset = int(text)
    except ValueError:
        opset = 0
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {text!r}")
    return opset


def _branch(text: str) -> str:
    if text not in BRANCHES:
        raise UsageError(f"branch must be {' or '.join(BRANCHES)}, got {text!r}")
    return text


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise UsageError(f"normalize must be true or false, got {text!r}")
    return text.lower() == "true"


def parse_args(argv: list[str]) -> Options:
    """``key=value`` tokens -> Options; UsageError on anything malformed, unknown or missing."""
    given: dict[str, str] = {}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"malformed argument {token!r}: expected key=value, e.g. out=onnx/")
        if key not in KEYS:
            raise UsageError(f"unknown argument {key!r}: expected one of {', '.join(KEYS)}")
        if key in given:
            raise UsageError(f"argument {key!r} is given twice")
        given[key] = value
    for key in ("checkpoint", "out"):
        if key not in given:
            raise UsageError(f"missing argument {key}=...; {USAGE}")
    out = Path(given["out"])
    if out.exists() and not out.is_dir():
        raise UsageError(f"out={out} is an existing file; out must be a directory")
    return Options(
        checkpoint=Path(given["checkpoint"]),
        out=out,
        image_size=_image_size(given.get("image_size", "256")),
        branch=_branch(given.get("branch", "hazy")),
        opset=_opset(given.get("opset", str(DEFAULT_OPSET))),
        normalize=_bool(given.get("normalize", "false")),
    )


def _fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(f"{USAGE}\n\n{__doc__.strip()}")
        return 0
    try:
        opts = parse_args(argv)
    except UsageError as err:
        return _fail(str(err))

    try:
        require("onnx")
        require("onnxruntime")
        net = load_net(opts.checkpoint)
    except (ModuleNotFoundError, CheckpointError) as err:
        return _fail(str(err))
    try:
        paths = export_onnx(
            net, opts.out, opts.image_size, opts.opset, opts.branch, normalize=opts.normalize
        )
    except OSError as err:
        return _fail(f"cannot write to out={opts.out}: {err.strerror or err}")
    h, w = opts.image_size
    print(f"wrote {paths['embed']} (images B x 3 x {h} x {w} -> features B x {net.feature_dim})")
    print(f"wrote {paths['dehaze']} (hazy B x 3 x {h} x {w} -> dehazed B x 3 x {h} x {w})")
    print(f"wrote {paths['manifest']}")
    errors = verify_onnx(net, paths, opts.image_size)
    print(
        "onnxruntime vs pytorch, max abs error (name@batch): "
        + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
    )
    worst = max(errors, key=errors.__getitem__)
    if not errors[worst] <= TOLERANCE:
        return _fail(
            f"ONNX Runtime disagrees with PyTorch on {worst} (max abs error "
            f"{errors[worst]:.3g} > {TOLERANCE:g}); do not use these files",
            code=1,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
