"""Pictures reach the active loggers: images in wandb and TensorBoard, PNG files elsewhere;
during training, one dehazing panel per validation, always of the same images."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only
from tensorboardX.proto import event_pb2
from torch import nn

from rvsl.evaluation.image_logging import log_picture
from rvsl.evaluation.pictures import dehazing_panel
from rvsl.training import callbacks as callbacks_module
from rvsl.training.callbacks import DehazingPanelCallback
from rvsl.training.train import train


def _picture(h: int = 20, w: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _tensorboard_images(folder: Path) -> list[tuple[str, int, np.ndarray]]:
    """(tag, step, decoded picture) of every image summary in the event files under ``folder``.

    Event files are TFRecord files (length, length CRC, Event proto, data CRC), read here with
    tensorboardX's protos since ``tensorboard`` itself is not a dependency. Record lengths are
    checked (a file not closed ends short), CRCs are not.
    """
    images = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("image"):
                    png = Image.open(io.BytesIO(value.image.encoded_image_string))
                    images.append((value.tag, event.step, np.asarray(png.convert("RGB"))))
        assert pos == len(data), f"{path.name}: last record cut short (writer not closed)"
    return images


# ---------------------------------------------------------------- log_picture


def test_tensorboard_gets_an_image_summary_with_the_pictures_pixels(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    picture = _picture()
    log_picture([logger], "pictures/dehazing_SYN", picture, step=7)
    logger.finalize("success")  # tensorboardX writes on close
    [(tag, step, image)] = _tensorboard_images(tmp_path / "tb")
    assert (tag, step) == ("pictures/dehazing_SYN", 7)
    assert image.shape == (20, 30, 3)
    np.testing.assert_array_equal(image, picture)  # PNG is lossless


def test_an_offline_wandb_run_gets_an_image_file_in_its_media_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network, no credentials
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=tmp_path, offline=True, project="t")
    picture = _picture()
    try:
        log_picture([logger], "pictures/dehazing_SYN", picture, step=3, caption="epoch 0")
        files = Path(logger.experiment.dir)
    finally:
        logger.experiment.finish()
    [saved] = [p for p in (files / "media").rglob("*.png") if "dehazing_SYN" in p.name]
    np.testing.assert_array_equal(np.asarray(Image.open(saved).convert("RGB")), picture)


def test_a_logger_that_cannot_show_images_gets_a_png_in_its_log_dir(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    picture = _picture()
    log_picture([logger], "pictures/dehazing_SYN", picture, step=5)
    saved = tmp_path / "csv" / "pictures" / "pictures_dehazing_SYN_step5.png"
    np.testing.assert_array_equal(np.asarray(Image.open(saved)), picture)


def test_every_logger_of_the_list_gets_the_picture_and_only_rank_zero_logs(tmp_path, monkeypatch):
    tensorboard = TensorBoardLogger(tmp_path, name="tb", version="")
    csv = CSVLogger(tmp_path, name="csv", version="")
    log_picture([tensorboard, csv], "p", _picture(), step=1)
    with monkeypatch.context() as patch:  # as if on the second process
        patch.setattr(rank_zero_only, "rank", 1)
        log_picture([tensorboard, csv], "p", _picture(), step=2)
    tensorboard.finalize("success")
    assert [step for _, step, _ in _tensorboard_images(tmp_path / "tb")] == [1]
    assert sorted(p.name for p in (tmp_path / "csv" / "pictures").iterdir()) == ["p_step1.png"]


# ---------------------------------------------------------------- the callback, unit


class _HalfDehazer(nn.Module):
    """``dehaze`` halves the image and remembers what it was given and in which mode."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.seen: list[tuple[torch.Tensor, bool, bool]] = []

    def dehaze(self, hazy: torch.Tensor) -> torch.Tensor:
        self.seen.append((hazy.clone(), self.training, torch.is_grad_enabled()))
        return hazy * 0.5


class _Module(nn.Module):
    def __init__(self, stage: str = "syn_haze") -> None:
        super().__init__()
        self.net = _HalfDehazer()
        self.frozen = nn.BatchNorm2d(3)
        self.stage = stage
        self.device = torch.device("cpu")


def _pairs(n: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    hazy = torch.rand(n, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    clear = torch.rand(n, 3, 8, 6, generator=torch.Generator().manual_seed(1))
    return [
        {"hazy": hazy[i : i + batch_size], "clear": clear[i : i + batch_size]}
        for i in range(0, n, batch_size)
    ]


def _trainer(datamodule, epoch: int = 0, **kw) -> SimpleNamespace:
    fields = {
        "sanity_checking": False,
        "is_global_zero": True,
        "state": SimpleNamespace(fn=TrainerFn.FITTING),
        "current_epoch": epoch,
        "global_step": 10 * (epoch + 1),
        "datamodule": datamodule,
        "loggers": [],
        "val_dataloaders": None,
    }
    return SimpleNamespace(**(fields | kw))


@pytest.fixture
def logged(monkeypatch) -> list[tuple[str, np.ndarray, int]]:
    calls: list[tuple[str, np.ndarray, int]] = []
    monkeypatch.setattr(
        callbacks_module,
        "log_picture",
        lambda loggers, key, picture, step=None: calls.append((key, picture, step)),
    )
    return calls


def test_the_panel_shows_the_same_first_syn_images_every_epoch_and_restores_the_mode(logged):
    batches = _pairs(n=20, batch_size=3)  # 8 images need three batches
    opened = []
    datamodule = SimpleNamespace(
        val_set_names=["SYN", "REAL_FOGGY"],
        syn_test_pairs_dataloader=lambda: opened.append(1) or iter(batches),
    )
    module = _Module()
    module.train()
    module.frozen.eval()  # a submodule kept in eval stays in eval
    callback = DehazingPanelCallback(num_images=8)
    for epoch in range(2):
        callback.on_validation_epoch_end(_trainer(datamodule, epoch), module)
        assert module.training and module.net.training and not module.frozen.training
    assert len(opened) == 1  # loaded once, then cached
    hazy = torch.cat([b["hazy"] for b in batches])[:8]
    clear = torch.cat([b["clear"] for b in batches])[:8]
    for seen, training, grad in module.net.seen:
        torch.testing.assert_close(seen, hazy)
        assert not training and not grad  # eval mode, no graph
    expected = dehazing_panel(hazy, hazy * 0.5, clear)
    assert [(key, step) for key, _, step in logged] == [
        ("pictures/dehazing_SYN", 10),
        ("pictures/dehazing_SYN", 20),
    ]
    for _, panel, _ in logged:
        np.testing.assert_array_equal(panel, expected)


def test_without_a_syn_test_set_the_first_val_images_are_shown_without_ground_truth(logged):
    images = torch.rand(5, 3, 8, 6)
    datamodule = SimpleNamespace(val_set_names=["REAL_FOGGY"])
    val = [[{"image": images[:4]}, {"image": images[4:]}], [{"image": torch.zeros(2, 3, 8, 6)}]]
    trainer = _trainer(datamodule, val_dataloaders=val)
    DehazingPanelCallback(num_images=8).on_validation_epoch_end(trainer, _Module())
    [(key, panel, _)] = logged
    assert key == "pictures/dehazing_REAL_FOGGY"
    np.testing.assert_array_equal(panel, dehazing_panel(images, images * 0.5))  # 2 columns


@pytest.mark.parametrize(
    ("stage", "trainer_fields", "epoch"),
    [
        ("syn_haze", {"sanity_checking": True}, 0),
        ("syn_haze", {"is_global_zero": False}, 0),
        ("syn_haze", {"state": SimpleNamespace(fn=TrainerFn.VALIDATING)}, 0),
        ("baseline", {}, 0),  # its generators are never trained
        ("syn_haze", {}, 0),  # every_n_epochs=2: the first epoch is skipped
    ],
)
def test_no_panel_in_sanity_checks_other_ranks_trainer_validate_the_baseline_or_off_epochs(
    logged, stage, trainer_fields, epoch
):
    datamodule = SimpleNamespace(
        val_set_names=["SYN"], syn_test_pairs_dataloader=lambda: iter(_pairs(4, 4))
    )
    callback = DehazingPanelCallback(num_images=2, every_n_epochs=2)
    callback.on_validation_epoch_end(_trainer(datamodule, epoch, **trainer_fields), _Module(stage))
    assert logged == []
    callback.on_validation_epoch_end(_trainer(datamodule, 1), _Module())
    assert len(logged) == 1  # the second epoch is drawn


# ---------------------------------------------------------------- a tiny training run


def test_a_training_run_logs_one_dehazing_panel_per_validation_and_the_stage_report(
    compose_train,
):
    cfg = compose_train(
        "logger=tensorboard",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=1",
        "data.test_sets=[SYN,REAL_FOGGY]",
    )
    train(cfg)
    images = _tensorboard_images(Path(cfg.paths.output_dir) / "tensorboard")
    panels = [(step, image) for tag, step, image in images if tag == "pictures/dehazing_SYN"]
    best = [(step, image) for tag, step, image in images if tag == "pictures/best/dehazing_SYN"]
    ranks = [step for tag, step, _ in images if tag == "pictures/best/rank_list_REAL_FOGGY"]
    # two validations during the fit (8 SYN images: 8 rows, hazy | dehazed | clear), then the
    # stage report of the best checkpoint at the last step, with the rank list
    assert len(panels) == 2 and len(best) == 1 and len(ranks) == 1
    steps = [step for step, _ in panels]
    assert steps[0] < steps[1] == best[0][0] == ranks[0]
    assert panels[0][1].shape == (8 * 34 + 2, 3 * 34 + 2, 3)
