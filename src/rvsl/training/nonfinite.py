"""NaN/Inf in GAN training: checks that cost one sync each, and the streak that stops a run.

:class:`~rvsl.training.module.RVSLModule` skips an optimizer's update whose loss or gradients
are not finite. These helpers decide that cheaply and name the culprits; a
:class:`NonFiniteStreak` of ``limit`` skipped main updates in a row ends the run with
:class:`NonFiniteLossError`, whose message says what went wrong and how to resume.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from rvsl.models.checkpoint import short_list

log = logging.getLogger(__name__)


@rank_zero_only
def _warn(message: str) -> None:
    log.warning(message)


class NonFiniteLossError(RuntimeError):
    """The main loss was NaN/Inf in ``max_nonfinite_steps`` training steps in a row.

    The message names the non-finite loss terms, the step, and the checkpoint to resume from.
    """


def update_is_finite(opt: Any, loss: Tensor) -> bool:
    """Loss and gradients finite: one fused max-abs over the gradients, one sync.

    Under DDP the gradients are already averaged, so a NaN on any process shows on all
    and every process takes the same decision without another all-reduce.
    """
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    values = [loss.detach().float().reshape(1)]
    if grads:
        norms = torch._foreach_norm(grads, float("inf"))  # max |g|: NaN/Inf show
        values += [n.float().reshape(1) for n in norms]
    return bool(torch.isfinite(torch.cat(values)).all())


def nonfinite_terms(loss: Tensor, terms: Mapping[str, Tensor]) -> str:
    """Which terms are NaN/Inf (one sync; only called once the loss is known to be)."""
    if bool(torch.isfinite(loss).all()):
        return "NaN/Inf loss on another process"
    values = torch.stack([t.detach().float().sum() for t in terms.values()])
    bad = [k for k, ok in zip(terms, torch.isfinite(values).tolist(), strict=True) if not ok]
    return f"NaN/Inf loss terms: {', '.join(bad) or 'the sum overflowed'}"


def nonfinite_buffers(module: nn.Module) -> list[str]:
    """Buffers (batch-norm statistics) that a NaN/Inf forward pass has already corrupted
    (one sync; only called after a skipped main update)."""
    named = [(n, b) for n, b in module.named_buffers() if b.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(b).all() for _, b in named]).tolist()
    return [n for (n, _), ok in zip(named, finite, strict=True) if not ok]


def newest_checkpoint(callbacks: Iterable[Any]) -> str | None:
    """The newest file the checkpoint callbacks saved (best or last), if any.

    Weights in it are good: skipped updates never write NaN into the parameters.
    """
    paths = {
        path
        for callback in callbacks
        for path in (
            getattr(callback, "last_model_path", ""),
            getattr(callback, "best_model_path", ""),
        )
        if path and os.path.isfile(path)
    }
    return max(paths, key=os.path.getmtime) if paths else None


class NonFiniteStreak:
    """Consecutive skipped main updates and what was non-finite in them.

    ``limit`` such updates in a row exhaust it; 0 never does (steps are only skipped).
    Not checkpointed: a resumed run starts a new streak.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"max_nonfinite_steps must be >= 0, not {limit}")
        self.limit = limit
        self.count = 0
        self.reasons: dict[str, None] = {}  # an ordered set

    def reset(self) -> None:
        self.count = 0
        self.reasons.clear()

    def add(self, reason: str) -> None:
        self.count += 1
        self.reasons[reason] = None

    @property
    def exhausted(self) -> bool:
        return bool(self.limit) and self.count >= self.limit

    def stop_message(
        self, where: str, buffers: Sequence[str], corrupted: bool, checkpoint: str | None
    ) -> str:
        """Why the run stops at ``where``, and how to resume from ``checkpoint``."""
        n = self.count
        what = f"the main update was skipped in {n} consecutive training step{'s' * (n > 1)}"
        if buffers:
            what += f" and NaN/Inf reached the buffers {short_list(list(buffers))}"
        elif corrupted:
            what += " and NaN/Inf reached batch-norm statistics on another process"
        if checkpoint is None:
            resume = "No checkpoint was saved yet: start again"
        else:
            resume = f"Last good checkpoint: {checkpoint}. Resume with ckpt_path={checkpoint}"
        return (
            f"training stopped at {where}: {what} ({'; '.join(self.reasons)}). {resume}, with "
            "a lower learning rate (model.optimizer.lr) or model.gradient_clip_val set; "
            "model.max_nonfinite_steps=0 only skips such steps."
        )


class GuardedUpdates:
    """LightningModule methods that step an optimizer only when its update is finite.

    Mixed into :class:`~rvsl.training.module.RVSLModule` (needs ``manual_backward``,
    ``clip_gradients``, ``trainer``): :meth:`guarded_step` backs up, checks and steps or skips;
    :meth:`track_main_skips` stops the run after ``max_nonfinite_steps`` skipped main updates.
    """

    skipped_updates: Counter[str]
    _streak: NonFiniteStreak

    def init_guards(self, max_nonfinite_steps: int) -> None:
        self._streak = NonFiniteStreak(max_nonfinite_steps)  # skipped main updates in a row
        self.skipped_updates = Counter()  # per optimizer, over this module's life

    def finite_everywhere(self, tensor: Tensor) -> bool:
        """Whether ``tensor`` is finite on every process (one GPU->CPU sync; DDP: one all-reduce,
        so that all processes skip the same updates and none waits in a backward alone)."""
        finite = bool(torch.isfinite(tensor).all())
        return self.trainer.strategy.reduce_boolean_decision(finite, all=True)

    def guarded_step(
        self,
        opt: Any,
        name: str,
        loss: Tensor,
        terms: Mapping[str, Tensor] | None = None,
        clip: float | None = None,
    ) -> str | None:
        """zero_grad, backward, clip, step and zero_grad ``opt``; or skip it and return why.

        Without an AMP GradScaler: backward, then one check of loss and gradients together
        (one sync per optimizer; a NaN loss gives NaN gradients anyway). With one: the loss
        is checked before the backward (it skips Inf gradients itself and must see them to
        lower its scale). Only a failed check pays for naming the terms. A skipped optimizer
        keeps no gradients.
        """
        opt.zero_grad(set_to_none=True)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            if not self.finite_everywhere(loss):
                return self.skip_update(opt, name, nonfinite_terms(loss, terms or {name: loss}))
            self.manual_backward(loss)
        else:
            self.manual_backward(loss)
            if not update_is_finite(opt, loss):
                if bool(torch.isfinite(loss).all()):
                    return self.skip_update(opt, name, "NaN/Inf gradients (the loss was finite)")
                return self.skip_update(opt, name, nonfinite_terms(loss, terms or {name: loss}))
        if clip:
            self.clip_gradients(opt, clip, "norm")
        opt.step()
        # spent: freed now, not held through the next forward (less memory to fault in)
        opt.zero_grad(set_to_none=True)
        return None

    def skip_update(self, opt: Any, name: str, reason: str) -> str:
        """Drop ``opt``'s gradients for this step, warn, and return the reason."""
        opt.zero_grad(set_to_none=True)
        self.skipped_updates[name] += 1
        _warn(
            f"{self.where()}: skipped the {name!r} optimizer's update: {reason} "
            f"({self.skipped_updates[name]} {name!r} updates skipped so far)"
        )
        return reason

    def where(self, batch_idx: int | None = None) -> str:
        batch = "" if batch_idx is None else f", batch {batch_idx}"
        return f"epoch {self.current_epoch}{batch} (global step {self.global_step})"

    def track_main_skips(self, main_skip: str | None, batch_idx: int) -> None:
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
                self._streak.stop_message(self.where(batch_idx), buffers, corrupted, checkpoint)
            )
