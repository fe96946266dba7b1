"""The RVSL LightningModule: one network, three stages, optimizers stepped by hand.

Stage 1 (``syn_haze``) steps three optimizers per batch: encoders + trunk + generators,
then the clear discriminator, then the hazy one. Stages 2 (``real_clear``) and 3
(``real_haze``) step two: the main optimizer on the auxiliary synthetic loss plus the
real-branch loss, then the discriminator of the real branch's domain. The loss recipes
live in :mod:`rvsl.training.objectives`; every weight comes from the config.

A NaN/Inf loss (GAN training can blow up) skips that optimizer's update with a warning;
``max_nonfinite_steps`` such main-loss steps in a row stop the run with
:class:`NonFiniteLossError`, which names the terms and the last checkpoint to resume from
(the checks and the streak live in :mod:`rvsl.training.nonfinite`).
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from rvsl.evaluation.evaluate import embed_batch
from rvsl.losses import LSGANLoss, TripletLoss, discriminator_loss
from rvsl.metrics import RetrievalMetric
from rvsl.models.checkpoint import FORMAT_VERSION, CheckpointError, load_untrusted, short_list
from rvsl.models.discriminator import PatchDiscriminator
from rvsl.models.pretrained import load_pretrained_backbone
from rvsl.models.rvsl_net import BRANCHES, RVSLNet
from rvsl.training import objectives
from rvsl.training.image_pool import ImagePool
from rvsl.training.nonfinite import (
    NonFiniteLossError,
    NonFiniteStreak,
    newest_checkpoint,
    nonfinite_buffers,
    nonfinite_terms,
    update_is_finite,
)
from rvsl.training.preflight import SELECTION_METRIC

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
STAGE_TEST_SET = {
    "baseline": "SYN",
    "syn_haze": "SYN",
    "real_clear": "REAL_CLEAR",
    "real_haze": "REAL_FOGGY",
}
# the discriminators each stage trains, in optimizer order after the main optimizer
STAGE_DISCRIMINATORS = {
    "baseline": (),
    "syn_haze": ("disc_clear", "disc_hazy"),
    "real_clear": ("disc_clear",),
    "real_haze": ("disc_hazy",),
}
SCRATCH = "scratch"  # model.pretrained=scratch: random initialisation, said explicitly
ADVERSARIAL_PAIRING = ("consistent", "reference")
LR_SCALING = ("none", "linear", "sqrt")

log = logging.getLogger(__name__)


@rank_zero_only
def _warn(message: str) -> None:
    log.warning(message)


@rank_zero_only
def _info(message: str) -> None:
    log.info(message)


def lr_factor(world_size: int, rule: str) -> float:
    """How much ``rule`` multiplies a one-process learning rate by with ``world_size`` processes.

    The paper's learning rates are for one GPU with ``data.batch_size`` images; with N processes
    the effective batch is N times larger. ``linear`` (Goyal et al., 2017) multiplies by N,
    ``sqrt`` by sqrt(N), ``none`` keeps the paper's values.
    """
    if rule not in LR_SCALING:
        raise ValueError(f"lr_scaling must be one of {LR_SCALING}, not {rule!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, not {world_size}")
    if rule == "linear":
        return float(world_size)
    if rule == "sqrt":
        return math.sqrt(world_size)
    return 1.0


def scaled_lr(lr: float, world_size: int, rule: str) -> float:
    """``lr`` scaled for ``world_size`` processes by ``rule`` (see :func:`lr_factor`)."""
    return lr * lr_factor(world_size, rule)


def default_adam(params: Any, lr: float = 1e-4) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


class RVSLModule(pl.LightningModule):
    """Trains :class:`RVSLNet` by the recipe of one RVSL stage.

    Args:
        backbone, num_classes, generator_width, backbone_width: the :class:`RVSLNet` to build
            (``num_classes`` = synthetic training identities; ``backbone_width``: base channels,
            64 for the standard ResNet).
        discriminator_width: first-layer channels of the PatchGAN discriminators (64: CycleGAN).
        stage: ``syn_haze`` (1), ``real_clear`` (2), ``real_haze`` (3), or ``baseline``: the
            BoT-style comparison, ReID only (CE + triplet) on synthetic clear and hazy images
            through ONE encoder (both branches share it), no generators, no discriminators.
        loss: loss-weight overrides for the stage (see ``objectives.DEFAULT_WEIGHTS``).
        optimizer, disc_optimizer: partial optimizers (``params`` missing).
        scheduler, disc_scheduler: partial per-epoch schedulers (``optimizer`` missing) or None.
        pool_size: history of generated images per discriminator (CycleGAN: 50).
        triplet_margin: batch-hard triplet margin; None for the soft-margin variant.
        label_smoothing: for the cross entropy.
        adversarial_pairing: ``consistent`` (the stage-2/3 adversarial term scores the image
            its discriminator is trained on) or ``reference`` (the official pairing).
        priors: :class:`objectives.PriorOptions` fields (quirk switches, patch sizes).
        gradient_clip_val: clip the main optimizer's gradient norm; None = off.
        pretrained: local ImageNet ResNet(-IBN-a) weights for the encoders and the trunk;
            None or ``"scratch"``: random initialisation.
        init_from: checkpoint of an earlier stage (ours or converted): its network and
            discriminator weights initialise this run.
        inherit: what ``init_from`` passes on besides the encoders, trunk and generators:
            ``{"classifier": bool, "discriminators": bool}`` (both True by default; the official
            code starts stage 2 with a fresh classifier and every stage with fresh
            discriminators).
        target_test_set: the stage's headline test set (reported; it never selects a model).
        baseline_domains: the synthetic images the baseline trains on: ``["clear", "hazy"]``
            (the BoT-style comparison) or ``["clear"]`` (a model that never saw haze).
        max_nonfinite_steps: stop with :class:`NonFiniteLossError` after this many consecutive
            training steps whose main update was skipped for a NaN/Inf loss or gradient;
            0 = never stop, only skip. The streak is not checkpointed: a resumed run starts at 0.
        lr_scaling: ``none`` | ``linear`` | ``sqrt``: learning rates for the world size.
        channels_last: keep convolution weights and image batches in NHWC memory order (faster
            convolutions on tensor-core GPUs, especially under bf16/fp16).
        compile: ``torch.compile`` the encoders, trunk, generators and discriminators when
            fitting. In place (``nn.Module.compile``), so checkpoints keep their keys.
        compile_options: keyword arguments for ``torch.compile`` (``mode``, ``backend``,
            ``dynamic``, ...).
        net: a ready network instead of building one (tests, custom models).
    """

    def __init__(
        self,
        backbone: str = "resnet50_ibn_a",
        num_classes: int = 1,
        generator_width: int = 64,
        backbone_width: int = 64,
        discriminator_width: int = 64,
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
        target_test_set: str | None = None,
        baseline_domains: Sequence[str] = ("clear", "hazy"),
        max_nonfinite_steps: int = 5,
        lr_scaling: str = "none",
        channels_last: bool = False,
        compile: bool = False,
        compile_options: Mapping[str, Any] | None = None,
        net: RVSLNet | None = None,
    ) -> None:
        super().__init__()
        # Factories stay out of the checkpoint so it loads with torch.load(weights_only=True).
        self.save_hyperparameters(
            logger=False,
            ignore=["net", "optimizer", "disc_optimizer", "scheduler", "disc_scheduler"],
        )
        self.optimizer_factory, self.disc_optimizer_factory = optimizer, disc_optimizer
        self.scheduler_factory, self.disc_scheduler_factory = scheduler, disc_scheduler
        self.automatic_optimization = False
        if adversarial_pairing not in ADVERSARIAL_PAIRING:
            raise ValueError(
                f"adversarial_pairing must be one of {ADVERSARIAL_PAIRING}, "
                f"not {adversarial_pairing!r}"
            )
        if lr_scaling not in LR_SCALING:
            raise ValueError(f"lr_scaling must be one of {LR_SCALING}, not {lr_scaling!r}")
        self._streak = NonFiniteStreak(max_nonfinite_steps)  # skipped main updates in a row
        self.stage = stage
        if not baseline_domains or not set(baseline_domains) <= set(BRANCHES):
            raise ValueError(
                f"baseline_domains must name 'clear' and/or 'hazy', not {list(baseline_domains)}"
            )
        self.weights = objectives.stage_weights(stage, loss)
        self.prior_options = objectives.PriorOptions(**(priors or {}))
        self.net = net or RVSLNet(backbone, num_classes, generator_width, backbone_width)
        if stage == "baseline":  # one encoder for both branches
            self.net.enc_clear = self.net.enc_hazy
        self.disc_clear = PatchDiscriminator(width=discriminator_width)
        self.disc_hazy = PatchDiscriminator(width=discriminator_width)
        self.pool_clear = ImagePool(pool_size)
        self.pool_hazy = ImagePool(pool_size)
        self.gan_loss = LSGANLoss()
        self.triplet = TripletLoss(triplet_margin)
        self.target_test_set = target_test_set or STAGE_TEST_SET[stage]
        self.val_set_names: list[str] = []
        self.val_metrics = nn.ModuleDict()
        self.skipped_updates: Counter[str] = Counter()  # per optimizer, over this module's life
        if pretrained and pretrained != SCRATCH:
            load_pretrained_backbone(self.net, pretrained)
        if init_from:
            self.load_weights_from(init_from, **(inherit or {}))
        if channels_last:  # copy_ from checkpoints keeps this layout
            self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ set-up
    @property
    def monitor(self) -> str:
        """The metric ``selection=val`` picks checkpoints by: hazy-branch mAP on VAL, training
        identities held out for validation (never a test set)."""
        return SELECTION_METRIC

    def load_weights_from(
        self, path: str | os.PathLike[str], classifier: bool = True, discriminators: bool = True
    ) -> None:
        """Start from an earlier stage: copy the network, and the classifier and discriminators
        (when present) unless told to keep this module's freshly initialised ones."""
        ckpt = load_untrusted(path)
        state = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
        if not isinstance(state, Mapping) or not any(k.startswith("net.") for k in state):
            raise CheckpointError(
                f"{path}: not an rvsl checkpoint (no network weights); convert official "
                "checkpoints first with rvsl-convert"
            )
        own = self.state_dict()
        parts = ("net.", "disc_clear.", "disc_hazy.") if discriminators else ("net.",)
        fresh = () if classifier else ("net.classifier.",)
        wanted = {k: v for k, v in state.items() if k.startswith(parts) and not k.startswith(fresh)}
        wrong = [
            f"{k} {tuple(v.shape)} (here {tuple(own[k].shape)})"
            for k, v in wanted.items()
            if k in own and own[k].shape != v.shape
        ]
        missing = [
            k for k in own if k.startswith("net.") and not k.startswith(fresh) and k not in wanted
        ]
        if wrong or missing:
            raise CheckpointError(
                f"{path}: does not fit this network ({self.net.backbone}, "
                f"{self.net.num_classes} classes); wrong shapes: {short_list(wrong)}; "
                f"missing: {short_list(missing)}"
            )
        self.load_state_dict(wanted, strict=False)

    def setup(self, stage: str) -> None:
        """Create one retrieval metric per (test set, branch) of the attached datamodule, and
        compile the networks for fitting when asked to."""
        if stage == "fit" and self.hparams.get("compile", False):
            self.compile_networks()
        datamodule = getattr(self.trainer, "datamodule", None)
        names = list(getattr(datamodule, "val_set_names", []) or [])
        if names != self.val_set_names:
            self.val_set_names = names
            self.val_metrics = nn.ModuleDict(
                {f"{name}_{branch}": RetrievalMetric() for name in names for branch in BRANCHES}
            )

    def compile_networks(self) -> None:
        """``torch.compile`` every convolutional part in place; state-dict keys are unchanged.

        Parts, not the whole module: the training step calls them in stage-dependent orders
        with optimizers toggled in between, and the small heads gain nothing from compiling.
        """
        options = dict(self.hparams.get("compile_options") or {})
        parts = [self.net.enc_hazy, self.net.trunk, self.net.gen_clear, self.net.gen_hazy]
        if self.net.enc_clear is not self.net.enc_hazy:
            parts.append(self.net.enc_clear)
        parts += [self.disc_clear, self.disc_hazy]
        for part in parts:
            part.compile(**options)

    def _in_memory_layout(self, batch: Any) -> Any:
        """With ``channels_last``, every image batch (4-D float tensor) in NHWC order.

        Done in the steps, not in ``on_after_batch_transfer``: Lightning warns whenever a module
        overrides that hook while a datamodule is attached.
        """
        if not self.hparams.get("channels_last", False):
            return batch
        return apply_to_collection(
            batch,
            Tensor,
            lambda t: (
                t.contiguous(memory_format=torch.channels_last)
                if t.dim() == 4 and t.is_floating_point()
                else t
            ),
        )

    def _world_size(self) -> int:
        """The number of training processes: the attached trainer's, else 1."""
        trainer = self._trainer
        return int(trainer.world_size) if trainer is not None else 1

    def configure_optimizers(self) -> list[dict[str, Any]]:
        """The main optimizer (network; no generators in the baseline), then one per discriminator
        of the stage, each with its per-epoch schedule. With ``lr_scaling`` every optimizer's
        learning rate is scaled for the world size before its schedule is built."""
        rule = self.hparams.get("lr_scaling", "none")
        world_size = self._world_size()
        factor = lr_factor(world_size, rule)
        skip = ("gen_clear.", "gen_hazy.") if self.stage == "baseline" else ()
        main_params = [
            p for n, p in self.net.named_parameters() if p.requires_grad and not n.startswith(skip)
        ]
        optimizers = [(self.optimizer_factory(params=main_params), self.scheduler_factory)]
        for name in STAGE_DISCRIMINATORS[self.stage]:
            opt = self.disc_optimizer_factory(params=getattr(self, name).parameters())
            optimizers.append((opt, self.disc_scheduler_factory))
        for opt, _ in optimizers:
            for group in opt.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:  # set by a scheduler the factory may have built
                    group["initial_lr"] *= factor
        if rule != "none" or world_size > 1:
            _info(f"lr x{factor:g} ({rule}, world size {world_size})")
        return [self._with_scheduler(opt, factory) for opt, factory in optimizers]

    @staticmethod
    def _with_scheduler(opt: torch.optim.Optimizer, factory: SchedulerFactory | None) -> dict:
        config: dict[str, Any] = {"optimizer": opt}
        if factory is not None:
            config["lr_scheduler"] = {"scheduler": factory(optimizer=opt), "interval": "epoch"}
        return config

    # ------------------------------------------------------------------ training
    def _adversary(self, disc: nn.Module) -> Callable[[Tensor], Tensor]:
        """The generator's LSGAN term against ``disc``: push its scores of fakes toward 1."""
        return lambda fake: self.gan_loss(disc(fake), True)

    def _generator_terms(self, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict]:
        syn = batch["syn"]
        w, opts = self.weights, self.prior_options
        smoothing = self.hparams.label_smoothing
        if self.stage == "baseline":
            domains = self.hparams.baseline_domains
            images = torch.cat([syn[d] for d in domains])
            pids = syn["pid"].repeat(len(domains))
            global_feat, feat = self.net.reid(self.net.enc_hazy(images))
            logits = self.net.classifier(feat)
            terms = objectives.reid_only(logits, global_feat, pids, w, self.triplet, smoothing)
            chunks = dict(zip(domains, logits.chunk(len(domains)), strict=True))
            out = {f"logits_{b}": chunks.get(b, next(iter(chunks.values()))) for b in BRANCHES}
            return {f"syn/{k}": v for k, v in terms.items()}, {"syn": out}
        out = self.net(syn["clear"], syn["hazy"])
        if self.stage == "syn_haze":
            syn_terms = objectives.synthetic_pair(
                out,
                syn["clear"],
                syn["hazy"],
                syn["pid"],
                w,
                self.triplet,
                smoothing,
                self._adversary(self.disc_clear),
                self._adversary(self.disc_hazy),
            )
            return {f"syn/{k}": v for k, v in syn_terms.items()}, {"syn": out}
        syn_terms = objectives.synthetic_pair(
            out, syn["clear"], syn["hazy"], syn["pid"], w, self.triplet, smoothing, prefix="aux_"
        )
        real = batch["real"]["image"]
        reference = self.hparams.adversarial_pairing == "reference"
        if self.stage == "real_clear":
            real_out = self.net.forward_real_clear(real)
            real_terms = objectives.real_clear_cycle(
                real_out,
                real,
                w,
                self._adversary(self.disc_clear),
                "gen_hazy" if reference else "cycle_clear",
                opts,
            )
        else:
            real_out = self.net.forward_real_hazy(real)
            real_terms = objectives.real_hazy_cycle(
                real_out,
                real,
                w,
                self._adversary(self.disc_hazy),
                "gen_clear" if reference else "cycle_hazy",
                opts,
            )
        terms = {f"syn/{k}": v for k, v in syn_terms.items()}
        terms |= {f"real/{k}": v for k, v in real_terms.items()}
        return terms, {"syn": out, "real": real_out}

    def _discriminator_jobs(self, batch: Mapping[str, Any], outs: Mapping[str, Any]) -> list:
        """(name, discriminator, pool, real images, generated images) for each D step."""
        syn = batch["syn"]
        if self.stage == "baseline":
            return []
        if self.stage == "syn_haze":
            return [
                (
                    "disc_clear",
                    self.disc_clear,
                    self.pool_clear,
                    syn["clear"],
                    outs["syn"]["gen_clear"],
                ),
                ("disc_hazy", self.disc_hazy, self.pool_hazy, syn["hazy"], outs["syn"]["gen_hazy"]),
            ]
        real = batch["real"]["image"]
        if self.stage == "real_clear":  # real x vs the cycle's reconstruction Gc'
            return [
                ("disc_clear", self.disc_clear, self.pool_clear, real, outs["real"]["cycle_clear"])
            ]
        return [("disc_hazy", self.disc_hazy, self.pool_hazy, real, outs["real"]["cycle_hazy"])]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """One main (encoders, trunk, generators) update, then one per discriminator.

        Each update is skipped when its loss is NaN/Inf (see :meth:`_backward_and_step`). After
        a skipped main update the generated images may be NaN too: they are checked before they
        enter a discriminator's image pool, and that discriminator is skipped if they are not
        finite; otherwise the discriminators still learn from this batch. Logged losses cover
        the applied updates only (NaN would spoil the epoch means); ``train/skipped_updates/*``
        counts the others per epoch.
        """
        batch = self._in_memory_layout(batch)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        opt_main, opt_discs = optimizers[0], optimizers[1:]

        self.toggle_optimizer(opt_main)
        terms, outs = self._generator_terms(batch)
        loss = objectives.total(terms)
        clip = self.hparams.gradient_clip_val
        main_skip = self._backward_and_step(opt_main, "main", loss, terms, clip)
        self.untoggle_optimizer(opt_main)
        self._track_streak(main_skip, batch_idx)

        logs = {}
        if main_skip is None:
            logs = {f"train/{k}": v.detach() for k, v in terms.items()}
            logs["train/loss"] = loss.detach()
        logs["train/syn/acc"] = self._accuracy(outs["syn"], batch["syn"]["pid"])
        skipped = {"main": main_skip is not None}
        for (name, disc, pool, real, fake), opt in zip(
            self._discriminator_jobs(batch, outs), opt_discs, strict=True
        ):
            self.toggle_optimizer(opt)
            if main_skip is None or self._finite_everywhere(fake):
                d_loss = discriminator_loss(disc(real), disc(pool.query(fake)), self.gan_loss)
                skip = self._backward_and_step(opt, name, d_loss)
                if skip is None:
                    logs[f"train/{name}/loss"] = d_loss.detach()
            else:  # NaN fakes would stay in the pool and poison later steps
                opt.zero_grad(set_to_none=True)
                skip = "its generated images are NaN/Inf (kept out of the image pool)"
                self._report_skip(name, skip)
            self.untoggle_optimizer(opt)
            skipped[name] = skip is not None
        batch_size = batch["syn"]["pid"].shape[0]
        # Under DDP the epoch values average (and the skip counts sum) over every process, not
        # rank zero's share alone: one small all-reduce per key and step. Every process logs
        # the same keys, because all of them skip the same updates.
        distributed = self._world_size() > 1
        self.log_dict(
            logs,
            on_step=True,
            on_epoch=True,
            prog_bar=False,
            batch_size=batch_size,
            sync_dist=distributed,
        )
        self.log_dict(
            {f"train/skipped_updates/{k}": float(v) for k, v in skipped.items()},
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            batch_size=batch_size,
            sync_dist=distributed,
        )
        if main_skip is None:
            self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=batch_size)

    # ------------------------------------------------------------------ numerical faults
    def _finite_everywhere(self, tensor: Tensor) -> bool:
        """Whether ``tensor`` is finite on every process (one GPU->CPU sync; DDP: one all-reduce,
        so that all processes skip the same updates and none waits in a backward alone)."""
        finite = bool(torch.isfinite(tensor).all())
        return self.trainer.strategy.reduce_boolean_decision(finite, all=True)

    def _backward_and_step(
        self,
        opt: Any,
        name: str,
        loss: Tensor,
        terms: Mapping[str, Tensor] | None = None,
        clip: float | None = None,
    ) -> str | None:
        """Backward, clip and step ``opt``; or skip it and return why.

        Without an AMP GradScaler: backward, then one check of loss and gradients together
        (one sync per optimizer; a NaN loss gives NaN gradients anyway). With one: the loss
        is checked before the backward (it skips Inf gradients itself and must see them to
        lower its scale). Only a failed check pays for naming the terms. A skipped optimizer
        keeps no gradients.
        """
        opt.zero_grad(set_to_none=True)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            if not self._finite_everywhere(loss):
                return self._skip(opt, name, nonfinite_terms(loss, terms or {name: loss}))
            self.manual_backward(loss)
        else:
            self.manual_backward(loss)
            if not update_is_finite(opt, loss):
                if bool(torch.isfinite(loss).all()):
                    return self._skip(opt, name, "NaN/Inf gradients (the loss was finite)")
                return self._skip(opt, name, nonfinite_terms(loss, terms or {name: loss}))
        if clip:
            self.clip_gradients(opt, clip, "norm")
        opt.step()
        return None

    def _skip(self, opt: Any, name: str, reason: str) -> str:
        """Drop ``opt``'s gradients for this step, warn, and return the reason."""
        opt.zero_grad(set_to_none=True)
        self._report_skip(name, reason)
        return reason

    def _where(self, batch_idx: int | None = None) -> str:
        batch = "" if batch_idx is None else f", batch {batch_idx}"
        return f"epoch {self.current_epoch}{batch} (global step {self.global_step})"

    def _report_skip(self, name: str, reason: str) -> None:
        self.skipped_updates[name] += 1
        _warn(
            f"{self._where()}: skipped the {name!r} optimizer's update: {reason} "
            f"({self.skipped_updates[name]} {name!r} updates skipped so far)"
        )

    def _track_streak(self, main_skip: str | None, batch_idx: int) -> None:
        """Count consecutive skipped main updates; stop the run after ``max_nonfinite_steps``.

        Also stops at once (unless 0) when a NaN/Inf forward pass has corrupted batch-norm
        statistics: skipping the update cannot undo that.
        """
        if main_skip is None:
            self._streak.reset()
            return
        self._streak.add(main_skip)
        if not self._streak.limit:
            return
        buffers = nonfinite_buffers(self)  # DDP: per process, so the decision is shared
        corrupted = self.trainer.strategy.reduce_boolean_decision(bool(buffers), all=False)
        if corrupted or self._streak.exhausted:
            checkpoint = newest_checkpoint(self.trainer.callbacks)
            raise NonFiniteLossError(
                self._streak.stop_message(self._where(batch_idx), buffers, corrupted, checkpoint)
            )

    @staticmethod
    def _accuracy(out: Mapping[str, Tensor], pids: Tensor) -> Tensor:
        hits = [(out[f"logits_{b}"].argmax(1) == pids).float().mean() for b in BRANCHES]
        return torch.stack(hits).mean()

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        if not isinstance(schedulers, list):
            schedulers = [schedulers]
        for scheduler in schedulers:
            scheduler.step()

    def on_train_epoch_start(self) -> None:
        names = ["main", *STAGE_DISCRIMINATORS[self.stage]]
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for name, opt in zip(names, optimizers, strict=True):
            self.log(
                f"lr/{name}",
                opt.param_groups[0]["lr"],
                on_step=False,
                on_epoch=True,
                sync_dist=self._world_size() > 1,  # the same on every process: keeps DDP quiet
            )

    # ------------------------------------------------------------------ validation
    def validation_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        name = self.val_set_names[dataloader_idx]
        feats = embed_batch(self.net, self._in_memory_layout(batch))
        for branch in BRANCHES:
            self.val_metrics[f"{name}_{branch}"].update(
                feats[f"feat_{branch}"].float(),
                batch["pid"],
                batch["camid"],
                batch["is_query"],
                batch["index"],
            )

    def on_validation_epoch_end(self) -> None:
        # The metrics gather every process's features, so all processes hold the same values;
        # sync_dist averages identical numbers (once per epoch) and keeps Lightning's
        # per-key "use sync_dist" warning out of DDP logs.
        distributed = self._world_size() > 1
        for name in self.val_set_names:
            for branch in BRANCHES:
                metric = self.val_metrics[f"{name}_{branch}"]
                results = metric.compute()
                for key, value in results.items():
                    self.log(
                        f"val/{name}/{branch}/{key}",
                        value,
                        sync_dist=distributed,
                        add_dataloader_idx=False,
                    )
                metric.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the Lightning checkpoint self-describing, like ``rvsl-convert`` output."""
        checkpoint["rvsl"] = {
            "format": FORMAT_VERSION,
            "net": self.net.config(),
            "stage": self.stage,
        }
