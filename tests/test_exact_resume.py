"""Exact resume: a run stopped after batch k and resumed from ``last.ckpt`` trains on exactly the
batches an uninterrupted run trains on (indices, augmented pixels, global random state).

The stop stands in for a SIGKILL: the run raises at the start of batch k + 1, after
``LastCheckpoint`` saved at batch k (``every_n_batches=k``), and nothing else reaches the disk.
The tiny FVRID tree has 4 synthetic batches an epoch (6 identities x 2 chunks of K=2, P=3) and 3
real hazy batches a pass (15 images, 4 a batch), so epoch 1 of a stage-3 run holds a whole real
pass and the start of a second one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytorch_lightning as pl
import torch

from rvsl.data.loaders import RestartingLoader, ResumableLoader, SeededItems
from rvsl.data.samplers import PKSampler, ShuffleSampler
from rvsl.training.image_pool import ImagePool
from rvsl.training.train import train

FAST = [
    "trainer.accelerator=cpu",  # bit-exact weights: no cuDNN
    "model.net.generator_width=8",
    "trainer.check_val_every_n_epoch=10",  # no validation
    "test_after_fit=false",
    "~callbacks.model_checkpoint",
    "~callbacks.dehazing_panel",
    "+callbacks.tap._target_=test_exact_resume.Tap",
]


class SimulatedKillError(Exception):
    """Raised by :class:`Tap` in place of a kill."""


def _digest(*tensors: torch.Tensor) -> str:
    sha = hashlib.sha256()
    for t in tensors:
        sha.update(t.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


class Tap(pl.Callback):
    """Records what every training step receives; with ``stop_after``, raises
    :class:`SimulatedKillError` when batch ``stop_after + 1`` arrives. Instances are made by
    ``train`` from the config, so each one's records are also kept in ``Tap.runs``."""

    runs: ClassVar[list[list[dict[str, Any]]]] = []

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.seen: list[dict[str, Any]] = []
        Tap.runs.append(self.seen)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.stop_after is not None and len(self.seen) == self.stop_after:
            raise SimulatedKillError(f"stopped before batch {self.stop_after + 1}")
        syn, real = batch["syn"], batch.get("real")
        record = {
            "at": (trainer.current_epoch, batch_idx),
            "syn": syn["index"].tolist(),
            "syn_pixels": _digest(syn["clear"], syn["hazy"]),
            "rng": _digest(torch.get_rng_state()),
        }
        if real is not None:
            record.update(real=real["index"].tolist(), real_pixels=_digest(real["image"]))
        self.seen.append(record)


def _run(cfg) -> list[dict[str, Any]]:
    Tap.runs.clear()
    train(cfg)
    return Tap.runs[-1]


def _killed_and_resumed(compose_train, k: int, *overrides: str) -> list[dict[str, Any]]:
    every_k = f"callbacks.last_checkpoint.every_n_batches={k}"
    killed = compose_train(*FAST, *overrides, every_k, f"+callbacks.tap.stop_after={k}")
    Tap.runs.clear()
    with pytest.raises(SimulatedKillError):
        train(killed)
    before = Tap.runs[-1]
    assert len(before) == k
    last = Path(killed.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["callbacks"]["LastCheckpoint"]["batches"] == k
    after = _run(compose_train(*FAST, *overrides, every_k, "ckpt_path=last"))
    return before + after


def _uninterrupted(compose_train, tmp_path: Path, *overrides: str) -> list[dict[str, Any]]:
    cfg = compose_train(*FAST, *overrides, "callbacks.last_checkpoint.every_n_batches=0")
    cfg.paths.output_dir = str(tmp_path / "uninterrupted")
    cfg.paths.log_dir = str(tmp_path / "uninterrupted-logs")
    return _run(cfg)


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "epochs", "k"),
    [("syn_haze", 1, 2), ("real_haze", 2, 6)],  # stage 3: mid real pass, then a new pass
)
def test_a_run_stopped_after_batch_k_resumes_with_the_uninterrupted_batches(
    compose_train, tmp_path, stage, epochs, k
):
    run = (f"stage={stage}", f"trainer.max_epochs={epochs}")
    reference = _uninterrupted(compose_train, tmp_path, *run)
    assert len(reference) == 4 * epochs and reference[k]["at"] == (k // 4, k % 4)
    resumed = _killed_and_resumed(compose_train, k, *run)
    assert [r["at"] for r in resumed] == [r["at"] for r in reference]
    for key in ("syn", "real"):
        assert [r.get(key) for r in resumed] == [r.get(key) for r in reference]
    # the first batch after the resume, then all: the same augmented pixels, the same RNG state
    for key in ("syn_pixels", "real_pixels", "rng"):
        assert resumed[k].get(key) == reference[k].get(key)
        assert [r.get(key) for r in resumed] == [r.get(key) for r in reference]
    # and so the training ends where the uninterrupted one does, to the bit
    ours, theirs = _final_weights(tmp_path / "run"), _final_weights(tmp_path / "uninterrupted")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.slow
def test_worker_processes_read_the_same_batches_as_the_main_process_across_a_resume(
    compose_train, tmp_path
):
    run = ("stage=real_haze", "data.real_sampling=pk", "trainer.max_epochs=1")
    reference = _uninterrupted(compose_train, tmp_path, *run)
    resumed = _killed_and_resumed(compose_train, 2, *run, "data.num_workers=2")
    assert resumed == reference


# ----------------------------------------------------------------------------- the parts


def test_a_restored_sampler_continues_its_pass_once_at_the_saved_position() -> None:
    for sampler in (PKSampler([0, 0, 1, 1, 2, 2, 3, 3], 2, 4, seed=3), ShuffleSampler(9, 3)):
        sampler.set_epoch(2)
        whole = list(sampler)
        sampler.load_state_dict({"epoch": 2, "start": 4, "size": len(sampler)})
        assert sampler.state_dict() == {"epoch": 2, "start": 4, "size": len(sampler)}
        assert list(sampler) == whole[4:]
        assert list(sampler) == whole  # later passes start at the beginning


def test_a_saved_position_that_does_not_fit_restarts_the_epoch(caplog) -> None:
    sampler = ShuffleSampler(9, 3)
    sampler.load_state_dict({"epoch": 1, "start": 4, "size": 12})
    assert sampler.epoch == 1 and len(list(sampler)) == 9
    assert "data settings changed" in caplog.text


def test_item_seeds_follow_the_position_in_the_epoch_not_the_pass() -> None:
    sampler = ShuffleSampler(6, 0, item_seed=11)
    keys = list(sampler)
    assert [i for i, _ in keys] == list(ShuffleSampler(6, 0))
    sampler.load_state_dict({"epoch": 0, "start": 2})
    assert list(sampler) == keys[2:]
    sampler.set_epoch(1)
    assert {s for _, s in list(sampler)}.isdisjoint({s for _, s in keys})


class _Draws(torch.utils.data.Dataset):
    """Items are fresh draws from torch's global generator."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(2)


def test_seeded_items_draw_from_their_own_seed_and_leave_the_global_generator_alone() -> None:
    data = SeededItems(_Draws())
    before = torch.get_rng_state()
    assert torch.equal(data[(0, 5)], data[(2, 5)]) and not torch.equal(data[(0, 5)], data[(0, 6)])
    assert torch.equal(torch.get_rng_state(), before)


def _real_stream(epoch: list[int]) -> RestartingLoader:
    """7 items in batches of 2 (3 a pass), the epoch read from ``epoch[0]``."""
    sampler = ShuffleSampler(7, 1, item_seed=2)
    items = SeededItems(list(range(7)))
    loader = ResumableLoader(items, batch_size=2, sampler=sampler, drop_last=True)
    return RestartingLoader(loader, epoch=lambda: epoch[0])


def test_the_real_stream_resumes_mid_pass_and_restarts_with_each_epoch() -> None:
    epoch = [0]
    first = _real_stream(epoch)
    stream = iter(first)
    seen = [next(stream).tolist() for _ in range(5)]  # pass 0 (3 batches), 2 of pass 1
    state = first.state_dict()
    assert (state["passes"], state["loader"]["start"]) == (2, 4)
    later = [next(stream).tolist() for _ in range(3)]  # the end of pass 1, 2 of pass 2
    second = _real_stream(epoch)
    second.load_state_dict(state)
    again = iter(second)
    assert [next(again).tolist() for _ in range(3)] == later
    epoch[0] = 1  # a new epoch starts with its own first pass, wherever the last one stopped
    assert next(iter(first)).tolist() == next(iter(_real_stream([1]))).tolist()
    assert next(iter(_real_stream([1]))).tolist() != seen[0]


def test_the_image_pool_keeps_the_later_of_two_images_that_pick_one_slot(monkeypatch) -> None:
    def one(low: int, high: int, size: tuple[int], device: Any = None) -> torch.Tensor:
        return torch.ones(size, dtype=torch.long)

    monkeypatch.setattr(torch, "rand", lambda n, device=None: torch.zeros(n))  # all swap...
    monkeypatch.setattr(torch, "randint", one)  # ...into slot 1
    batch = torch.arange(1.0, 5.0).view(4, 1, 1, 1).expand(4, 3, 64, 64).contiguous()
    for _ in range(20):  # an indexed write with repeated indices keeps any of them
        pool = ImagePool(size=2)
        pool.query(torch.zeros(2, 3, 64, 64))  # fills the pool
        assert torch.equal(pool.query(batch), torch.zeros_like(batch))  # slot 1's old image
        assert torch.equal(pool.images[1], batch[3])
