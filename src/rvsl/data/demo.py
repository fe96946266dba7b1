"""The demo world as a training data source: generated (or reused from cache), then loaded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rvsl.data.datamodule import RVSLDataModule
from rvsl.data.demo_world import build_demo_world

log = logging.getLogger(__name__)


def demo_datamodule(
    root: str | Path,
    world_seed: int = 0,
    world_scale: float = 1.0,
    image_size: Sequence[int] = (64, 64),
    **datamodule_args: Any,
) -> RVSLDataModule:
    """Build the demo world under ``root`` if it is missing or stale, then its datamodule.

    The world is rendered at ``image_size`` so no resizing blurs it; a cached world with the
    same generator version, seed, size and scale is reused as is. A folder holding anything
    the generator did not write is never rebuilt: DemoWorldError suggests another data.root.
    """
    size = (int(image_size[0]), int(image_size[1]))
    summary = build_demo_world(
        root, seed=world_seed, size=size, scale=world_scale, fresh_hint="data.root=<new folder>"
    )
    verb = "reused" if summary.reused else f"built in {summary.seconds:.0f} s"
    log.info(
        "demo world %s: %s (%d identities, %d images)",
        verb,
        root,
        summary.identities,
        summary.images,
    )
    return RVSLDataModule(root, image_size=size, **datamodule_args)
