"""``rvsl-export checkpoint=PATH out=DIR [key=value ...]``: ONNX export of an rvsl checkpoint.

A Hydra app on ``conf/export.yaml`` (``rvsl-export --help`` lists the settings, ``--cfg job``
shows the composed config). Optional keys: ``image_size`` (``N`` or ``[H,W]``; default: the size
the checkpoint records, else 384), ``branch`` (hazy or clear), ``opset`` (17), ``normalize``
(whether the network takes ImageNet-normalised inputs; default: what the checkpoint records)
and ``dynamic_size`` (false; true: H and W are dynamic axes too, checked at a second size).

Loads the checkpoint (training, ``rvsl-convert`` output or the authors' raw weights), writes
``embed_<branch>.onnx``, ``dehaze.onnx`` and the ``export.json`` manifest into ``out``, then
checks both models with ONNX Runtime against PyTorch at batch sizes 1 and 3 and prints the max
abs errors (:func:`rvsl.export.export_checkpoint` does the work).

Exit codes: 0 exported and verified; 1 ONNX Runtime disagrees with PyTorch; 2 bad input, said in
one line ``rvsl-export: error: ...``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.resources import files

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from rvsl.export import TOLERANCE, ExportError, export_checkpoint
from rvsl.models.checkpoint import CheckpointError
from rvsl.utils.files import DiskFullError

PROG = "rvsl-export"
CONFIG = "export"


class UsageError(ValueError):
    """A command line that cannot be run; the message is one sentence for the user."""


def config_keys() -> list[str]:
    """The settings of ``conf/export.yaml``, in file order."""
    cfg = OmegaConf.create(files("rvsl.conf").joinpath(f"{CONFIG}.yaml").read_text())
    return [str(k) for k in cfg if k not in ("defaults", "hydra")]


def check_overrides(overrides: Sequence[str], keys: Sequence[str]) -> None:
    """UsageError for an override Hydra cannot parse, a key the config does not have, or a key
    given twice (Hydra would keep the last silently). ``hydra.*`` overrides are Hydra's."""
    parser = OverridesParser.create()
    seen: set[str] = set()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException:
            raise UsageError(
                f"malformed argument {text!r}: expected key=value, e.g. out=onnx/"
            ) from None
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if key not in keys:
            raise UsageError(f"unknown argument {key!r}: expected one of {', '.join(keys)}")
        if key in seen:
            raise UsageError(f"argument {key!r} is given twice")
        seen.add(key)


def run(cfg: DictConfig) -> int:
    """Export as ``cfg`` says and print what was written; the exit code."""
    for key in ("checkpoint", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise UsageError(f"missing argument {key}=...; see {PROG} --help")
    image_size = cfg.image_size
    if OmegaConf.is_list(image_size):
        image_size = OmegaConf.to_container(image_size)
    result = export_checkpoint(
        str(cfg.checkpoint),
        str(cfg.out),
        image_size=image_size,
        branch=cfg.branch,
        opset=cfg.opset,
        normalize=cfg.normalize,
        dynamic_size=cfg.dynamic_size,
    )
    (h, w), paths = result.image_size, result.paths
    size_from = {
        "given": "image_size=",
        "checkpoint": "recorded in the checkpoint",
        "default": "the checkpoint records none: the paper's; set image_size= to choose",
    }[result.image_size_source]
    normalize_from = "normalize=" if result.normalize_source == "given" else "the checkpoint's"
    print(
        f"{result.backbone}, {result.branch} branch, opset {result.opset}: image size {h} x {w} "
        f"({size_from}), normalize={str(result.normalize).lower()} ({normalize_from})"
    )
    if result.dynamic_size:
        (h, w), checked = ("H", "W"), " and ".join(f"{a} x {b}" for a, b in result.checked_sizes)
        print(f"H and W are dynamic (dynamic_size=true); checked at {checked}")
    print(f"wrote {paths['embed']} (images B x 3 x {h} x {w} -> features B x {result.feature_dim})")
    print(f"wrote {paths['dehaze']} (hazy B x 3 x {h} x {w} -> dehazed B x 3 x {h} x {w})")
    print(f"wrote {paths['manifest']}")
    print(
        "onnxruntime vs pytorch, max abs error (name@batch): "
        + ", ".join(f"{k} {v:.2e}" for k, v in result.errors.items())
    )
    if not result.verified:
        worst, error = result.worst
        return _fail(
            f"ONNX Runtime disagrees with PyTorch on {worst} (max abs error {error:.3g} > "
            f"{TOLERANCE:g}); do not use these files",
            code=1,
        )
    return 0


def _fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


@hydra.main(version_base="1.3", config_path="pkg://rvsl.conf", config_name=CONFIG)
def _app(cfg: DictConfig) -> None:
    try:
        code = run(cfg)
    except (UsageError, ExportError, CheckpointError, ModuleNotFoundError) as err:
        code = _fail(str(err))
    except OSError as err:  # FileExistsError (files no export wrote), a full disk, ...
        detail = err if isinstance(err, DiskFullError) or not err.strerror else err.strerror
        code = _fail(f"cannot write to out={cfg.out}: {detail}")
    if code:
        sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """The console command: Hydra's command line (``argv``, default ``sys.argv[1:]``) checked
    for unknown, malformed and repeated keys, then the Hydra app; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = get_args_parser().parse_known_args(argv)
    try:
        check_overrides(args.overrides, config_keys())
    except UsageError as err:
        return _fail(str(err))
    saved = sys.argv
    sys.argv = [PROG, *argv]
    try:
        _app()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
