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
    "model.net.backbone=resnet18_ibn_a",
    "model.pretrained=scratch",  # FVRID runs must say so: no ImageNet weights in the tests
    "model.pool_size=4",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


def _composer(config_name, base_overrides, data_root, output_dir):
    """compose(config_name) as its CLI would, with the caller's overrides on top of a base.

    The caller's choice of a group or key (data=..., experiment=...) replaces the base's.
    GlobalHydra stays initialised so hydra.utils can resolve what the config names.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    def _compose(*overrides: str):
        chosen = {o.split("=", 1)[0] for o in overrides if "=" in o}
        base = [o for o in base_overrides if o.lstrip("~").split("=", 1)[0] not in chosen]
        GlobalHydra.instance().clear()
        initialize_config_module(config_module="rvsl.conf", version_base="1.3")
        cfg = compose(
            config_name=config_name,
            overrides=[*base, f"data.root={data_root}", *overrides],
            return_hydra_config=True,
        )
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir / "run")
            cfg.paths.log_dir = str(output_dir / "logs")
        return cfg

    return _compose


@pytest.fixture
def compose_train(tiny_fvrid, tmp_path):
    """Compose the REAL ``train`` config, shrunk to a CPU run of seconds, as rvsl-train would."""
    from hydra.core.global_hydra import GlobalHydra

    yield _composer("train", TINY_OVERRIDES, tiny_fvrid, tmp_path)
    GlobalHydra.instance().clear()


EVAL_OVERRIDES = [
    "data=fvrid",
    "data.image_size=[32,32]",
    "data.num_workers=0",
    "data.pin_memory=false",
    "data.eval_batch_size=16",
    "device=cpu",
]


@pytest.fixture
def compose_eval(tiny_fvrid, tmp_path):
    """Compose the REAL ``eval`` config on the tiny dataset, as rvsl-eval would."""
    from hydra.core.global_hydra import GlobalHydra

    yield _composer("eval", EVAL_OVERRIDES, tiny_fvrid, tmp_path)
    GlobalHydra.instance().clear()
