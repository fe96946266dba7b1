"""Shared test set-up: small thread count for 2-core CI, and the parity reference folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # helper modules such as official_fill

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``shared/reference`` beside the checkout (CI places ``shared/`` next to the clone)."""
    from official_fill import REFERENCE

    if not (REFERENCE / "parity_64.npz").is_file():
        pytest.fail(f"parity fixture not found at {REFERENCE}; check out shared/ beside the repo")
    return REFERENCE


@pytest.fixture(scope="session")
def tiny_fvrid(tmp_path_factory) -> Path:
    """A few identities of random 32x16 images in the FVRID layout, shared by the session."""
    from conftest_data import make_fvrid

    return make_fvrid(tmp_path_factory.mktemp("fvrid") / "FVRID")


TINY_OVERRIDES = [
    "~experiment",  # not the demo chain: one stage, as the tests say
    "data=fvrid",
    "data.image_size=[32,32]",
    "data.num_workers=0",
    "data.pin_memory=false",
    "data.num_instances=2",
    "data.batch_size=6",
    "data.real_batch_size=4",
    "data.eval_batch_size=16",
    "model.backbone=resnet18_ibn_a",
    "model.pool_size=4",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


@pytest.fixture
def compose_train(tiny_fvrid, tmp_path):
    """Compose the REAL ``train`` config, shrunk to a CPU run of seconds, as rvsl-train would."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    def _compose(*overrides: str):
        # the caller's choice of a group (data=..., experiment=...) replaces the tiny default
        chosen = {o.split("=", 1)[0] for o in overrides if "=" in o}
        base = [o for o in TINY_OVERRIDES if o.lstrip("~").split("=", 1)[0] not in chosen]
        GlobalHydra.instance().clear()
        initialize_config_module(config_module="rvsl.conf", version_base="1.3")  # stays active
        cfg = compose(
            config_name="train",
            overrides=[*base, f"data.root={tiny_fvrid}", *overrides],
            return_hydra_config=True,
        )
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
