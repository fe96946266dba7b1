"""Numerical faults: a NaN/Inf loss skips that optimizer's update with a warning; several in a
row stop the run with a message naming the loss term and the last good checkpoint.

Real tiny stage-1 runs (resnet18_ibn_a, 32x32 images, no validation) on the CPU, with NaN
injected into chosen training batches.
"""

from __future__ import annotations

import logging

import hydra
import pytest
import pytorch_lightning as pl
import torch

from rvsl.models.rvsl_net import RVSLNet
from rvsl.training import objectives
from rvsl.training.module import RVSLModule
from rvsl.training.nonfinite import NonFiniteLossError
from rvsl.training.train import build_model, build_trainer

PARTS = ("net", "disc_clear", "disc_hazy")


def _tiny(compose_train, **model_kwargs):
    cfg = compose_train("trainer.max_epochs=20", "model.net.generator_width=8")
    model = build_model(cfg, 6, **model_kwargs)
    return cfg, model, hydra.utils.instantiate(cfg.data)


def _fit(cfg, model, datamodule, max_steps, callbacks=(), checkpointing=False):
    trainer = build_trainer(
        cfg.trainer,
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=checkpointing,
        callbacks=list(callbacks),
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


def _nan_in_ea_at(monkeypatch, batches):
    """The ``ea`` loss term is NaN in the given training batches (counted by its calls)."""
    ea, calls = objectives.embedding_alignment, []

    def faulty(*args, **kwargs):
        calls.append(None)
        value = ea(*args, **kwargs)
        return value * float("nan") if len(calls) - 1 in batches else value

    monkeypatch.setattr(objectives, "embedding_alignment", faulty)


class ParameterRecorder(pl.Callback):
    """Per training batch: whether each part's parameters changed during it."""

    def __init__(self) -> None:
        self.changed: list[dict[str, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = {
            part: [p.detach().clone() for p in getattr(pl_module, part).parameters()]
            for part in PARTS
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = {part: list(getattr(pl_module, part).parameters()) for part in PARTS}
        self.changed.append(
            {
                part: any(map(lambda a, b: not torch.equal(a, b), self.before[part], after[part]))
                for part in PARTS
            }
        )


def test_a_nan_loss_term_skips_the_main_update_only_and_training_goes_on(
    compose_train, monkeypatch, caplog
):
    cfg, model, data = _tiny(compose_train)
    assert model.hparams.max_nonfinite_steps == 5  # conf/model/rvsl.yaml
    _nan_in_ea_at(monkeypatch, {1})
    recorder = ParameterRecorder()
    with caplog.at_level(logging.WARNING, logger="rvsl.training.module"):
        trainer = _fit(cfg, model, data, max_steps=3 + 2 + 3, callbacks=[recorder])

    assert trainer.state.finished and trainer.global_step == 8  # the skipped step is not counted
    assert recorder.changed == [
        {"net": True, "disc_clear": True, "disc_hazy": True},
        {"net": False, "disc_clear": True, "disc_hazy": True},  # fakes were finite: D learns
        {"net": True, "disc_clear": True, "disc_hazy": True},
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'main' optimizer's update" in warnings[0] and "syn/ea" in warnings[0]
    assert "syn/ce_clear" not in warnings[0]  # only the non-finite terms are named
    assert model.skipped_updates == {"main": 1}
    assert trainer.callback_metrics["train/skipped_updates/main"] == 1
    assert trainer.callback_metrics["train/skipped_updates/disc_clear"] == 0
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])  # means of applied steps


def test_nan_generated_images_skip_their_discriminator_and_stay_out_of_its_pool(
    compose_train, caplog
):
    cfg, model, data = _tiny(compose_train)
    calls = []

    def nan_at_batch_1(module, inputs, output):
        calls.append(None)
        return output * float("nan") if len(calls) == 2 else output

    model.net.gen_clear.register_forward_hook(nan_at_batch_1)
    recorder = ParameterRecorder()
    with caplog.at_level(logging.WARNING, logger="rvsl.training.module"):
        _fit(cfg, model, data, max_steps=3 + 1 + 3, callbacks=[recorder])

    assert recorder.changed[1] == {"net": False, "disc_clear": False, "disc_hazy": True}
    assert recorder.changed[2] == {"net": True, "disc_clear": True, "disc_hazy": True}
    assert torch.isfinite(model.pool_clear.images[: model.pool_clear.count]).all()
    warnings = " | ".join(r.getMessage() for r in caplog.records)
    assert "syn/p2p_clear" in warnings and "syn/adv" in warnings
    assert "'disc_clear' optimizer's update" in warnings and "image pool" in warnings
    assert model.skipped_updates == {"main": 1, "disc_clear": 1}


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # main never stepped
def test_nan_gradients_from_a_finite_loss_skip_the_update(compose_train, monkeypatch, caplog):
    class NaNGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return torch.full_like(grad, float("nan"))

    ea = objectives.embedding_alignment
    monkeypatch.setattr(objectives, "embedding_alignment", lambda *a: NaNGradient.apply(ea(*a)))
    cfg, model, data = _tiny(compose_train)
    recorder = ParameterRecorder()
    with caplog.at_level(logging.WARNING, logger="rvsl.training.module"):
        _fit(cfg, model, data, max_steps=2, callbacks=[recorder])

    assert recorder.changed[0] == {"net": False, "disc_clear": True, "disc_hazy": True}
    assert "NaN/Inf gradients (the loss was finite)" in caplog.text
    assert all(p.grad is None for p in model.net.parameters())  # nothing half-applied later


@pytest.mark.filterwarnings("ignore:Using ModelCheckpoint with manual optimization")
def test_consecutive_nan_steps_stop_the_run_naming_the_term_and_the_last_checkpoint(
    compose_train, monkeypatch, tmp_path
):
    cfg, model, data = _tiny(compose_train, max_nonfinite_steps=2)
    _nan_in_ea_at(monkeypatch, set(range(1, 100)))
    saver = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=3
    )
    with pytest.raises(NonFiniteLossError) as failure:
        _fit(cfg, model, data, max_steps=50, callbacks=[saver], checkpointing=True)

    last = tmp_path / "ckpt" / "last.ckpt"
    message = str(failure.value)
    assert "2 consecutive training steps" in message and "syn/ea" in message
    assert "epoch 0, batch 2" in message
    assert f"Last good checkpoint: {last}" in message and f"ckpt_path={last}" in message
    # saved after batch 0; the skipped main updates left the network's weights as saved
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 3
    for name, param in model.net.named_parameters():
        torch.testing.assert_close(param.detach(), saved["state_dict"][f"net.{name}"], msg=name)


def test_without_a_checkpoint_the_message_says_so(compose_train, monkeypatch):
    cfg, model, data = _tiny(compose_train, max_nonfinite_steps=1)
    _nan_in_ea_at(monkeypatch, {0})
    with pytest.raises(
        NonFiniteLossError,
        match=r"1 consecutive training step \(NaN/Inf loss terms: syn/ea\)\. No checkpoint",
    ):
        _fit(cfg, model, data, max_steps=5)


def test_nan_in_batch_norm_statistics_stops_the_run_at_once(compose_train):
    cfg, model, data = _tiny(compose_train, max_nonfinite_steps=5)
    calls = []

    def nan_images_at_batch_1(module, inputs):
        calls.append(None)
        return (inputs[0] * float("nan"),) if len(calls) == 2 else None

    model.net.enc_hazy.register_forward_pre_hook(nan_images_at_batch_1)
    with pytest.raises(NonFiniteLossError, match=r"1 consecutive.*buffers.*net\.enc_hazy\."):
        _fit(cfg, model, data, max_steps=20)  # skipping cannot undo NaN running statistics


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # main never stepped
def test_a_finite_step_resets_the_count_and_zero_never_stops(compose_train, monkeypatch):
    cfg, model, data = _tiny(compose_train, max_nonfinite_steps=2)
    _nan_in_ea_at(monkeypatch, {0, 2})  # two NaN steps, not in a row
    trainer = _fit(cfg, model, data, max_steps=2 + 3 + 2)
    assert trainer.state.finished and model.skipped_updates == {"main": 2}

    cfg, model, data = _tiny(compose_train, max_nonfinite_steps=0)
    _nan_in_ea_at(monkeypatch, set(range(100)))
    before = [p.detach().clone() for p in model.net.parameters()]
    trainer = _fit(cfg, model, data, max_steps=2 * 3)  # only the discriminators step
    assert trainer.state.finished and model.skipped_updates == {"main": 3}
    assert all(torch.equal(a, b) for a, b in zip(before, model.net.parameters(), strict=True))


def test_a_negative_max_nonfinite_steps_is_rejected():
    with pytest.raises(ValueError, match="max_nonfinite_steps must be >= 0"):
        RVSLModule(RVSLNet("resnet18_ibn_a", num_classes=2), max_nonfinite_steps=-1)


def test_the_streak_stops_after_its_limit_and_names_each_reason_once():
    from rvsl.training.nonfinite import NonFiniteStreak

    streak = NonFiniteStreak(limit=2)
    streak.add("NaN/Inf loss terms: real/dcp")
    assert not streak.exhausted
    streak.add("NaN/Inf loss terms: real/dcp")
    assert streak.exhausted
    message = streak.stop_message("epoch 3, batch 7", ["net.bnneck.running_var"], True, "l.ckpt")
    assert message.startswith("training stopped at epoch 3, batch 7: the main update was")
    assert message.count("real/dcp") == 1 and "net.bnneck.running_var" in message
    assert "Resume with ckpt_path=l.ckpt" in message
    streak.reset()
    assert streak.count == 0 and not streak.exhausted
    never = NonFiniteStreak(limit=0)
    for _ in range(100):
        never.add("NaN")
    assert not never.exhausted
    assert "No checkpoint was saved yet" in never.stop_message("epoch 0", [], False, None)
