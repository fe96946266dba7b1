"""rvsl: RVSL vehicle re-identification in haze, on PyTorch Lightning."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rvsl.inference import Reidentifier

try:
    __version__ = version("rvsl")  # the installed distribution's, so it matches pip's
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Reidentifier", "__version__"]


def __getattr__(name: str) -> Any:
    """``rvsl.Reidentifier`` imports torch on first use only, so ``import rvsl`` stays cheap."""
    if name == "Reidentifier":
        from rvsl.inference import Reidentifier

        globals()[name] = Reidentifier
        return Reidentifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
