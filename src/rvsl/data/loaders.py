"""Training loaders that a run killed mid-epoch resumes exactly where it stopped.

Lightning's fit loop saves the ``state_dict()`` of every training loader that has one (the
iterables of its ``CombinedLoader``: the synthetic :class:`ResumableLoader` and, in stages 2-3,
the real :class:`RestartingLoader`) in each checkpoint, under
``loops.fit_loop.state_dict.combined_loader``. On a resume inside an epoch it hands those states
back to ``load_state_dict`` before the first batch, and the loaders continue their passes at the
next batch. Augmentations follow the items, not the processes: every item is read with torch's
generator seeded from its own seed (:class:`SeededItems`), so the pixels after a resume are those
of an uninterrupted run, with or without worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from rvsl.data.samplers import PlanSampler

#: Pass ``j`` of epoch ``e`` of a :class:`RestartingLoader` shuffles as sampler epoch
#: ``e * PASSES_PER_EPOCH + j``.
PASSES_PER_EPOCH = 2**20


class SeededItems(Dataset):
    """A dataset read by ``(index, seed)`` keys: item ``index``, with torch's CPU generator
    seeded from ``seed`` while it is read (and restored afterwards).

    The training transforms draw from torch's global generator; seeding it per item makes an
    item's augmentation a function of its key alone, whichever process reads it and whatever
    was read before. The keys come from a :class:`PlanSampler` with ``item_seed``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`PlanSampler` whose place in a pass Lightning saves.

    ``state_dict()`` is the sampler's state with the pass being read and where it stands,
    counted in batches handed out (not indices the sampler gave away: worker processes read
    ahead); after ``load_state_dict`` the next pass of that epoch starts at the next batch.
    """

    sampler: PlanSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, PlanSampler):
            raise TypeError(f"ResumableLoader needs a PlanSampler, not {type(self.sampler)}")
        self._epoch: int | None = None  # of the pass being read (None: none yet)
        self._position = 0

    @property
    def position(self) -> int:
        """Batches of the current pass handed out, counting those before a resume."""
        return self._position

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        state = self.sampler.state_dict()  # the start a restored state left, else 0
        self._epoch, self._position = state["epoch"], state["start"] // self.batch_size
        for batch in super().__iter__():
            self._position += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        state = self.sampler.state_dict()
        if self._epoch is not None:
            state.update(epoch=self._epoch, start=self._position * self.batch_size)
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
        restored = self.sampler.state_dict()
        self._epoch, self._position = restored["epoch"], restored["start"] // self.batch_size


class RestartingLoader:
    """Endless iterable over a DataLoader: when a pass ends, a fresh pass starts.

    Every pass re-runs the sampler and the augmentations (a new shuffle, a sampler with
    ``set_epoch`` gets the pass number), unlike ``itertools.cycle``, which replays cached batches.
    Deliberately has no ``len``: in a ``CombinedLoader(mode="min_size")`` the other loaders set
    the epoch length.

    Each iteration (a training epoch) starts a fresh pass; pass ``j`` of epoch ``e`` gives the
    sampler the epoch ``e * PASSES_PER_EPOCH + j``, ``e`` from the ``epoch`` callable (the
    trainer's current epoch; 0 without one). So an epoch's stream depends on its number alone,
    and a run resumed at an epoch's end continues it exactly. Over a :class:`ResumableLoader` it
    is stateful as well: ``state_dict`` holds the epoch, the passes started and the loader's
    place, and after ``load_state_dict`` the next iteration of that epoch continues the pass
    where it stopped (how Lightning resumes it mid-epoch).
    """

    def __init__(self, loader: DataLoader, epoch: Callable[[], int] | None = None) -> None:
        self.loader = loader
        self._current_epoch = epoch or (lambda: 0)
        self.epoch = 0  # of the current iteration
        self.passes = 0  # passes started in it
        self._restored: dict[str, Any] | None = None

    def _set_pass(self, number: int) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(number)

    def __iter__(self) -> Iterator[Any]:
        self.epoch = int(self._current_epoch())
        restored, self._restored = self._restored, None
        resume = False
        loader = self.loader
        if restored is not None and restored["epoch"] == self.epoch and "loader" in restored:
            assert isinstance(loader, ResumableLoader)
            self.passes = int(restored["passes"])
            loader.load_state_dict(restored["loader"])
            resume = self.passes > 0 and loader.position < len(loader)  # a pass to finish
        else:
            self.passes = 0
        while True:
            if not resume:
                self._set_pass(self.epoch * PASSES_PER_EPOCH + self.passes)
                self.passes += 1
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
            if empty and not resume:
                raise RuntimeError("the cycled loader yields no batches; is its dataset too small?")
            resume = False

    def state_dict(self) -> dict[str, Any]:
        if self._restored is not None:  # restored, not yet iterated
            return self._restored
        state: dict[str, Any] = {"epoch": self.epoch, "passes": self.passes}
        if isinstance(self.loader, ResumableLoader):
            state["loader"] = self.loader.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = dict(state)


def resolve_pin_memory(pin_memory: bool | str) -> bool:
    """``pin_memory`` as a bool: ``auto`` page-locks batches when there is a GPU to copy them to
    (on a CPU-only machine pinning only costs)."""
    if pin_memory not in (True, False, "auto"):
        raise ValueError(f"pin_memory must be true, false or auto, not {pin_memory!r}")
    return torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
