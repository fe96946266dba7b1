"""Training samplers whose epoch order is a function of (seed, epoch): PK identity sampling
(P identities x K instances per batch, DDP-aware) and a uniform shuffle. Both can resume a pass
at any position, which is what makes a mid-epoch resume exact (see ``rvsl.data.loaders``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class PlanSampler(Sampler[Any]):
    """A sampler whose order for an epoch is a function of its seed and that epoch alone.

    So a pass can be resumed anywhere: ``state_dict()`` is ``{"epoch", "start", "size"}``, the
    epoch, the position (in dataset indices) at which its next pass begins, and ``len``;
    after ``load_state_dict`` the next ``__iter__`` of that epoch yields the epoch's order from
    ``start`` on. Only that one pass: passes after it, and a pass of another epoch, start at 0.

    With ``item_seed`` set the sampler yields ``(index, seed)`` keys instead of indices, one
    seed per position of the epoch's order, drawn from ``(item_seed, epoch)``: a dataset
    wrapped in ``rvsl.data.loaders.SeededItems`` augments each item from its own seed, the same
    in any worker process and after a resume.

    Subclasses set ``seed``, ``item_seed`` and ``epoch`` and implement :meth:`order`.
    """

    seed: int
    item_seed: int | None
    epoch: int
    _pending: tuple[int, int] | None = None  # (epoch, start) from load_state_dict

    def order(self) -> np.ndarray:
        """The dataset indices of one whole pass over this epoch, in order."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle: the order is a function of ``seed`` and ``epoch``."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        pending = self._pending
        start = pending[1] if pending is not None and pending[0] == self.epoch else 0
        return {"epoch": self.epoch, "start": start, "size": len(self)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Set the epoch and where its next pass begins (``size`` must match this sampler's)."""
        self.epoch = int(state["epoch"])
        start, size = int(state.get("start", 0)), int(state.get("size", len(self)))
        if size != len(self) or not 0 <= start <= size:
            log.warning(
                "the saved sampler position (%d of %d) does not fit this sampler (%d indices "
                "per epoch): were the data settings changed? Epoch %d restarts from its "
                "beginning",
                start,
                size,
                len(self),
                self.epoch,
            )
            start = 0
        self._pending = (self.epoch, start)

    def __iter__(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        start = pending[1] if pending is not None and pending[0] == self.epoch else 0
        indices = self.order()
        if self.item_seed is None:
            return iter(indices[start:].tolist())
        seeds = np.random.default_rng([self.item_seed, self.epoch]).integers(
            0, 2**63, size=len(indices)
        )
        return zip(indices[start:].tolist(), seeds[start:].tolist(), strict=True)


class ShuffleSampler(PlanSampler):
    """Every index once per epoch, in a uniformly random order drawn from ``(seed, epoch)``.

    Like ``RandomSampler`` with a generator, but resumable (see :class:`PlanSampler`).
    """

    def __init__(self, num_items: int, seed: int = 0, item_seed: int | None = None) -> None:
        if num_items < 1:
            raise ValueError(f"ShuffleSampler needs at least one item, got {num_items}")
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.item_seed = item_seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_items

    def order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)


class PKSampler(PlanSampler):
    """Yield dataset indices so that every ``batch_size`` block is P identities x K instances.

    Each identity is cut into chunks of K of its images (shuffled each epoch); an identity with
    fewer than K images gives one chunk with its images repeated (sampling with replacement),
    one with ``n >= K`` images gives ``n // K`` chunks. All ranks draw the same plan from
    ``seed + epoch``: a global step holds ``P * num_replicas`` chunks of distinct identities and
    rank ``r`` takes the ``r``-th group of P whole identities, so identities are disjoint across
    ranks within a step and every rank yields the same number of batches.

    The number of steps S depends only on the identity sizes, so ``len`` is exact: with
    ``drop_last`` S is the largest count for which steps can be filled from the chunks
    (identities capped at S chunks, the surplus dropped); without it, one more step when chunks
    are left over, filled with extra chunks of identities not yet in it. Call ``set_epoch`` each
    epoch (Lightning's fit loop does it for a DataLoader's sampler) to reshuffle.

    Args:
        pids: identity label of each dataset index.
        num_instances: K, images per identity in a batch.
        batch_size: per-rank batch size, P * K.
        seed: shared by all ranks.
        num_replicas, rank: DDP world size and this rank; default from torch.distributed, else
            1 and 0.
        drop_last: see above.
        item_seed: None (yield indices) or the seed of the per-item seeds (yield keys).
    """

    def __init__(
        self,
        pids: Sequence[int],
        num_instances: int = 6,
        batch_size: int = 36,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = True,
        item_seed: int | None = None,
    ) -> None:
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of num_instances "
                f"({num_instances})"
            )
        world, this_rank = _world()
        self.num_replicas = world if num_replicas is None else int(num_replicas)
        self.rank = this_rank if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside [0, {self.num_replicas})")
        self.num_instances = num_instances
        self.batch_size = batch_size
        self.ids_per_batch = batch_size // num_instances
        self.seed = int(seed)
        self.drop_last = drop_last
        self.item_seed = item_seed
        self.epoch = 0

        labels = np.asarray(pids, dtype=np.int64)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError("pids must be a non-empty 1-D sequence of identity labels")
        _, self._label = np.unique(labels, return_inverse=True)
        self._counts = np.bincount(self._label)
        self._offsets = np.cumsum(self._counts) - self._counts
        num_ids = len(self._counts)
        self._ids_per_step = self.ids_per_batch * self.num_replicas
        if num_ids < self._ids_per_step:
            raise ValueError(
                f"PKSampler needs at least P x num_replicas = {self.ids_per_batch} x "
                f"{self.num_replicas} = {self._ids_per_step} identities, got {num_ids}"
            )
        self._chunks = np.maximum(1, self._counts // num_instances)
        self.num_steps = self._count_steps()

    def _count_steps(self) -> int:
        """S from the chunk counts c_i: fill(s) = sum_i min(c_i, s) against s * (P * world)."""
        m = self._ids_per_step
        cmax = int(self._chunks.max())
        # at_least[s - 1] = #{i: c_i >= s}; fill(s) is its running sum.
        at_least = np.bincount(self._chunks, minlength=cmax + 1)[::-1].cumsum()[::-1][1:]
        fill = np.cumsum(at_least)
        steps = np.arange(1, cmax + 1)
        slack = fill - steps * m  # concave with slack(0) = 0, slack(1) = num_ids - m >= 0
        if slack[-1] >= 0:  # past cmax fill(s) stays at the chunk total
            total = int(fill[-1])
            floor_steps, left = total // m, total % m
        else:
            floor_steps = int(steps[slack >= 0].max())
            left = int(slack[floor_steps - 1])
        return floor_steps + int(not self.drop_last and left > 0)

    def __len__(self) -> int:
        return self.num_steps * self.batch_size

    def plan(self) -> np.ndarray:
        """This rank's indices for the epoch, shape (num_steps, P, K)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        S, m, K = self.num_steps, self._ids_per_step, self.num_instances
        num_ids = len(self._counts)

        # Chunks per identity in a random identity order, trimmed or padded to exactly S * m.
        perm = torch.randperm(num_ids, generator=g).numpy()
        take = np.minimum(self._chunks[perm], S)
        before = np.cumsum(take) - take
        if take.sum() > S * m:
            take = np.clip(S * m - before, 0, take)
        else:
            room = S - take
            room_before = np.cumsum(room) - room
            take = take + np.clip(S * m - take.sum() - room_before, 0, room)

        # Lay chunks out identity by identity and deal position p to step p % S: an identity has
        # at most S chunks, so its chunks land in distinct steps.
        ident = np.repeat(perm, take)
        chunk = np.arange(S * m) - np.repeat(np.cumsum(take) - take, take)
        ident, chunk = ident.reshape(m, S).T, chunk.reshape(m, S).T
        order = torch.randperm(S, generator=g).numpy()
        cols = slice(self.rank * self.ids_per_batch, (self.rank + 1) * self.ids_per_batch)
        ident, chunk = ident[order, cols], chunk[order, cols]

        # Shuffle images within identities; chunk k of identity i is its images k*K .. k*K+K-1,
        # wrapping around (repeats) when the identity has too few.
        keys = torch.rand(len(self._label), generator=g).numpy()
        shuffled = np.lexsort((keys, self._label))
        within = (chunk[..., None] * K + np.arange(K)) % self._counts[ident][..., None]
        return shuffled[self._offsets[ident][..., None] + within]

    def order(self) -> np.ndarray:
        return self.plan().reshape(-1)
