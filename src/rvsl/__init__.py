"""rvsl: RVSL vehicle re-identification in haze, on PyTorch Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rvsl.inference import Reidentifier

__version__ = "0.1.0"
__all__ = ["Reidentifier", "__version__"]


def __getattr__(name: str) -> Any:
    """``rvsl.Reidentifier`` imports torch on first use only, so ``import rvsl`` stays cheap."""
    if name == "Reidentifier":
        from rvsl.inference import Reidentifier

        globals()[name] = Reidentifier
        return Reidentifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
