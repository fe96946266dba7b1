"""Config helpers every command shares: the error for a setting that cannot run, and Hydra
groups (callbacks, loggers) instantiated entry by entry."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


class RunConfigError(ValueError):
    """A configuration that cannot run; raised before any work starts, with the setting named."""


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Objects of a callbacks/logger group: every entry with a ``_target_``."""
    import hydra

    if not cfg:
        return []
    return [
        hydra.utils.instantiate(entry)
        for entry in cfg.values()
        if isinstance(entry, DictConfig) and "_target_" in entry
    ]
