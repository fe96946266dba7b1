"""The RVSL LightningModule: one network, the stage's objective, optimizers stepped by hand.

Each training step is the main update (encoders, trunk, classifier and, except in the
baseline, generators) on the stage's objective, then one update per discriminator of the
stage, on the real and generated images the objective names. What each stage trains and how
its loss is made are in :mod:`rvsl.training.stages` and :mod:`rvsl.training.objectives`; the
network and the discriminators are built by Hydra (``conf/model/rvsl.yaml``) and handed in.

A NaN/Inf loss or gradient skips that optimizer's update with a warning, and too many skipped
main updates in a row stop the run (:class:`~rvsl.training.nonfinite.GuardedUpdates`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import Tensor, nn

from rvsl.losses import LSGANLoss, TripletLoss, discriminator_loss
from rvsl.models.checkpoint import FORMAT_VERSION
from rvsl.models.discriminator import PatchDiscriminator
from rvsl.models.rvsl_net import BRANCHES, RVSLNet
from rvsl.models.start_weights import load_start_weights
from rvsl.training import objectives
from rvsl.training.image_pool import ImagePool
from rvsl.training.nonfinite import GuardedUpdates
from rvsl.training.optim import (
    LR_SCALING,
    OptimizerFactory,
    SchedulerFactory,
    default_adam,
    lr_factor,
    stage_optimizers,
)
from rvsl.training.preflight import SELECTION_METRIC
from rvsl.training.speed import channels_last_images, compile_in_place
from rvsl.training.stages import get_stage, stage_weights
from rvsl.training.validation import RetrievalValidation

ADVERSARIAL_PAIRING = ("consistent", "reference")
BUILT_PARTS = ("net", "discriminator", "optimizer", "disc_optimizer", "scheduler", "disc_scheduler")


class RVSLModule(GuardedUpdates, RetrievalValidation, pl.LightningModule):
    """Trains an :class:`RVSLNet` by the objective of one stage.

    Args:
        net: the network; discriminator: builds one PatchGAN discriminator (called twice).
        stage: a name of :data:`rvsl.training.stages.STAGES`; loss: weight overrides for it.
        optimizer, disc_optimizer: partial optimizers (``params`` missing); scheduler,
            disc_scheduler: partial per-epoch schedulers (``optimizer`` missing) or None.
        pool_size: generated images kept per discriminator (CycleGAN: 50).
        triplet_margin: batch-hard triplet margin (None: soft margin); label_smoothing: for CE.
        adversarial_pairing: ``consistent`` (the stage-2/3 adversarial term scores the image
            its discriminator is trained on) or ``reference`` (the official pairing).
        priors: :class:`objectives.PriorOptions` fields; gradient_clip_val: main optimizer's.
        pretrained, init_from, inherit: the weights to start from (see
            :func:`rvsl.models.start_weights.load_start_weights`).
        baseline_domains: the synthetic images the baseline trains on (``["clear"]``: a model
            that never saw haze).
        max_nonfinite_steps: stop after this many skipped main updates in a row; 0 = never.
        lr_scaling: ``none`` | ``linear`` | ``sqrt``: learning rates for the world size.
        channels_last, compile, compile_options, fused_optimizers: speed options
            (:mod:`rvsl.training.speed`; ``build_model`` picks them for the device).
    """

    def __init__(
        self,
        net: RVSLNet,
        discriminator: Callable[[], nn.Module] = PatchDiscriminator,
        stage: str = "syn_haze",
        loss: Mapping[str, float] | None = None,
        optimizer: OptimizerFactory = default_adam,
        disc_optimizer: OptimizerFactory = default_adam,
        scheduler: SchedulerFactory | None = None,
        disc_scheduler: SchedulerFactory | None = None,
        pool_size: int = 50,
        triplet_margin: float | None = 0.3,
        label_smoothing: float = 0.0,
        adversarial_pairing: str = "consistent",
        priors: Mapping[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        pretrained: str | None = None,
        init_from: str | None = None,
        inherit: Mapping[str, bool] | None = None,
        baseline_domains: Sequence[str] = ("clear", "hazy"),
        max_nonfinite_steps: int = 5,
        lr_scaling: str = "none",
        channels_last: bool = False,
        compile: bool = False,
        compile_options: Mapping[str, Any] | None = None,
        fused_optimizers: bool = True,
    ) -> None:
        super().__init__()
        # Built parts and factories stay out of the checkpoint (it loads with weights_only=True).
        self.save_hyperparameters(logger=False, ignore=list(BUILT_PARTS))
        self.automatic_optimization = False
        _check_choice("adversarial_pairing", adversarial_pairing, ADVERSARIAL_PAIRING)
        _check_choice("lr_scaling", lr_scaling, LR_SCALING)
        if not baseline_domains or not set(baseline_domains) <= set(BRANCHES):
            raise ValueError(
                f"baseline_domains must name 'clear' and/or 'hazy', not {list(baseline_domains)}"
            )
        self.init_guards(max_nonfinite_steps)
        self.stage, self.spec = stage, get_stage(stage)
        self.objective = self.spec.objective  # resolved once, not per step
        self.optimizer_factory, self.disc_optimizer_factory = optimizer, disc_optimizer
        self.scheduler_factory, self.disc_scheduler_factory = scheduler, disc_scheduler
        self.net = net
        if self.spec.shared_encoder:  # one encoder for both branches
            self.net.enc_clear = self.net.enc_hazy
        self.disc_clear, self.disc_hazy = discriminator(), discriminator()
        self.pool_clear, self.pool_hazy = ImagePool(pool_size), ImagePool(pool_size)
        self.weights = stage_weights(stage, loss)
        self.prior_options = objectives.PriorOptions(**(priors or {}))
        self.context = objectives.ObjectiveContext(
            net=self.net,
            weights=self.weights,
            triplet=TripletLoss(triplet_margin),
            discriminators={"disc_clear": self.disc_clear, "disc_hazy": self.disc_hazy},
            gan_loss=LSGANLoss(),
            label_smoothing=label_smoothing,
            priors=self.prior_options,
            adversarial_pairing=adversarial_pairing,
            baseline_domains=tuple(baseline_domains),
        )
        self.init_val_metrics()
        load_start_weights(self, pretrained, init_from, inherit)
        if channels_last:  # copy_ from checkpoints keeps this layout
            self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ set-up
    @property
    def monitor(self) -> str:
        """The metric ``selection=val`` picks checkpoints by: hazy-branch mAP on VAL, training
        identities held out for validation (never a test set)."""
        return SELECTION_METRIC

    def setup(self, stage: str) -> None:
        """One retrieval metric per (validation set, branch) of the attached datamodule; the
        networks compiled for fitting when asked to."""
        if stage == "fit" and self.hparams.get("compile", False):
            self.compile_networks()
        names = list(getattr(self.trainer.datamodule, "val_set_names", []) or [])
        if names != self.val_set_names:
            self.init_val_metrics(names)

    def compile_networks(self) -> None:
        """``torch.compile`` the encoders, trunk, generators and discriminators in place."""
        net = self.net
        parts = [net.enc_hazy, net.enc_clear, net.trunk, net.gen_clear, net.gen_hazy]
        compile_in_place([*parts, self.disc_clear, self.disc_hazy], self.hparams.compile_options)

    def _in_memory_layout(self, batch: Any) -> Any:
        """With ``channels_last``, image batches in NHWC order (here, not in
        ``on_after_batch_transfer``, which Lightning warns about with a datamodule)."""
        return channels_last_images(batch) if self.hparams.get("channels_last") else batch

    def _world_size(self) -> int:
        return int(self._trainer.world_size) if self._trainer is not None else 1

    def configure_optimizers(self) -> list[dict[str, Any]]:
        """The main optimizer (network; no generators in the baseline), then one per discriminator
        of the stage, with learning rates scaled for the world size by ``lr_scaling``."""
        rule, world_size = self.hparams.get("lr_scaling", "none"), self._world_size()
        factor = lr_factor(world_size, rule)
        if rule != "none" or world_size > 1:
            rank_zero_info(f"lr x{factor:g} ({rule}, world size {world_size})")
        skip = () if self.spec.generators else ("gen_clear.", "gen_hazy.")
        main = [
            p for n, p in self.net.named_parameters() if p.requires_grad and not n.startswith(skip)
        ]
        return stage_optimizers(
            main,
            [getattr(self, name) for name in self.spec.discriminators],
            self.optimizer_factory,
            self.scheduler_factory,
            self.disc_optimizer_factory,
            self.disc_scheduler_factory,
            factor,
            fused=self.hparams.get("fused_optimizers", True),
        )

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """The main update on the stage's objective, then one update per discriminator.

        A skipped main update (NaN/Inf) may leave NaN generated images: they are checked before
        they enter a discriminator's image pool, and that discriminator is skipped if they are
        not finite. Logged losses cover the applied updates only; ``train/skipped_updates/*``
        counts the others per epoch.
        """
        batch = self._in_memory_layout(batch)
        opt_main, *opt_discs = self._optimizer_list()

        # main update: encoders, trunk, classifier (and generators)
        self.toggle_optimizer(opt_main)
        step = self.objective(self.context, batch)
        loss = objectives.total(step.terms)
        main_skip = self.guarded_step(
            opt_main, "main", loss, step.terms, self.hparams.gradient_clip_val
        )
        self.untoggle_optimizer(opt_main)
        self.track_main_skips(main_skip, batch_idx)
        logs = {}
        if main_skip is None:
            logs = {f"train/{k}": v.detach() for k, v in step.terms.items()}
            logs["train/loss"] = loss.detach()
        logs["train/syn/acc"] = self._accuracy(step.outputs["syn"], batch["syn"]["pid"])
        skipped = {"main": main_skip is not None}

        # one update per discriminator of the stage
        for (name, (real, fake)), opt in zip(
            step.discriminator_inputs.items(), opt_discs, strict=True
        ):
            d_loss = self._discriminator_update(name, opt, real, fake, main_skip is None)
            if d_loss is not None:
                logs[f"train/{name}/loss"] = d_loss
            skipped[name] = d_loss is None
        self._log_step(
            logs, skipped, loss if main_skip is None else None, batch["syn"]["pid"].shape[0]
        )

    def _discriminator_update(
        self, name: str, opt: Any, real: Tensor, fake: Tensor, fakes_trusted: bool
    ) -> Tensor | None:
        """CycleGAN's D update: real images vs generated ones from the pool, LSGAN loss halved;
        toggle, zero_grad, backward, step. Returns the loss, or None when skipped."""
        disc, pool = getattr(self, name), getattr(self, name.replace("disc_", "pool_"))
        self.toggle_optimizer(opt)
        try:
            if not (fakes_trusted or self.finite_everywhere(fake)):
                why = "its generated images are NaN/Inf (kept out of the image pool)"
                self.skip_update(opt, name, why)  # NaN fakes would stay in the pool
                return None
            d_loss = discriminator_loss(disc(real), disc(pool.query(fake)), self.context.gan_loss)
            return None if self.guarded_step(opt, name, d_loss) else d_loss.detach()
        finally:
            self.untoggle_optimizer(opt)

    def _optimizer_list(self) -> list[Any]:
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def _log_step(
        self,
        logs: dict[str, Tensor],
        skipped: dict[str, bool],
        loss: Tensor | None,
        batch_size: int,
    ) -> None:
        """Per-step and epoch-mean losses, and the skipped updates summed per epoch. Under DDP
        every process logs the same keys (all skip the same updates) and the values reduce."""
        distributed = self._world_size() > 1
        self.log_dict(logs, on_epoch=True, batch_size=batch_size, sync_dist=distributed)
        self.log_dict(
            {f"train/skipped_updates/{k}": float(v) for k, v in skipped.items()},
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            batch_size=batch_size,
            sync_dist=distributed,
        )
        if loss is not None:
            self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=batch_size)

    @staticmethod
    def _accuracy(out: Mapping[str, Tensor], pids: Tensor) -> Tensor:
        hits = [(out[f"logits_{b}"].argmax(1) == pids).float().mean() for b in BRANCHES]
        return torch.stack(hits).mean()

    def on_train_epoch_start(self) -> None:
        pairs = zip(["main", *self.spec.discriminators], self._optimizer_list(), strict=True)
        lrs = {f"lr/{name}": opt.param_groups[0]["lr"] for name, opt in pairs}
        # the same on every process: sync_dist keeps DDP quiet
        self.log_dict(lrs, on_step=False, on_epoch=True, sync_dist=self._world_size() > 1)

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if scheduler is not None:
                scheduler.step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the Lightning checkpoint self-describing, like ``rvsl-convert`` output."""
        checkpoint["rvsl"] = {
            "format": FORMAT_VERSION,
            "net": self.net.config(),
            "stage": self.stage,
        }


def _check_choice(setting: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{setting} must be one of {tuple(allowed)}, not {value!r}")
