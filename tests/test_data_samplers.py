"""PKSampler: P identities x K instances per batch, DDP-aware, deterministic, exact length."""

from __future__ import annotations

import numpy as np
import pytest

from rvsl.data.samplers import PKSampler

# 10 identities with 1..12 images each, in a shuffled index order.
SIZES = [1, 2, 3, 4, 5, 6, 8, 9, 11, 12]
PIDS = np.random.default_rng(0).permutation(np.repeat(np.arange(10) * 7 + 3, SIZES)).tolist()
K, P = 3, 2


def batches(sampler: PKSampler) -> np.ndarray:
    """The sampler's stream as (num_batches, P, K) dataset indices."""
    idx = np.array(list(sampler))
    assert len(idx) == len(sampler)
    return idx.reshape(-1, sampler.ids_per_batch, sampler.num_instances)


def ranks(world: int, epoch: int = 0, **kw: object) -> list[np.ndarray]:
    out = []
    for rank in range(world):
        s = PKSampler(PIDS, K, P * K, seed=5, num_replicas=world, rank=rank, **kw)
        s.set_epoch(epoch)
        out.append(batches(s))
    return out


@pytest.mark.parametrize("drop_last", [True, False])
def test_pk_sampler_blocks_are_p_identities_times_k_instances(drop_last: bool) -> None:
    pids = np.array(PIDS)
    for block in batches(PKSampler(PIDS, K, P * K, drop_last=drop_last)):
        labels = pids[block]
        assert (labels == labels[:, :1]).all()  # each row of K is one identity
        assert len(set(labels[:, 0])) == P  # P distinct identities


def test_pk_sampler_samples_with_replacement_for_identities_with_few_images() -> None:
    pids = np.array(PIDS)
    seen_small = False
    for block in batches(PKSampler(PIDS, K, P * K)).reshape(-1, K):
        n = int((pids == pids[block[0]]).sum())
        assert len(set(block.tolist())) == min(n, K)  # repeats only when n < K
        seen_small |= n < K
    assert seen_small


def test_pk_sampler_gives_each_rank_whole_identities() -> None:
    pids = np.array(PIDS)
    per_rank = ranks(world=2)
    for step in range(len(per_rank[0])):
        ids = [set(pids[r[step]].ravel().tolist()) for r in per_rank]
        assert len(ids[0]) == P and len(ids[1]) == P
        assert not ids[0] & ids[1]  # disjoint identities within a step


def test_pk_sampler_yields_equal_lengths_on_every_rank() -> None:
    for world in (1, 2, 3, 5):
        samplers = [PKSampler(PIDS, K, P * K, num_replicas=world, rank=r) for r in range(world)]
        assert len({len(s) for s in samplers}) == 1
        assert all(len(list(s)) == len(s) for s in samplers)


def test_pk_sampler_length_covers_the_chunks() -> None:
    chunks = sum(max(1, n // K) for n in SIZES)  # 16 chunks of K images
    assert len(PKSampler(PIDS, K, P * K, drop_last=True)) == (chunks // P) * P * K
    assert len(PKSampler(PIDS, K, P * K, drop_last=False)) == -(-chunks // P) * P * K
    big = PKSampler(PIDS, K, P * K, num_replicas=3, rank=0, drop_last=True)
    assert len(big) == (chunks // (3 * P)) * P * K


def test_pk_sampler_is_deterministic_from_seed_and_epoch() -> None:
    a = PKSampler(PIDS, K, P * K, seed=1)
    b = PKSampler(PIDS, K, P * K, seed=1)
    assert list(a) == list(b) == list(a)
    assert list(PKSampler(PIDS, K, P * K, seed=2)) != list(a)


def test_pk_sampler_set_epoch_reshuffles() -> None:
    s = PKSampler(PIDS, K, P * K, seed=1)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    assert first != second and len(first) == len(second)
    s.set_epoch(0)
    assert list(s) == first


def test_pk_sampler_uses_no_global_rng_state() -> None:
    state = np.random.get_state()[1].copy()
    import torch

    torch_state = torch.get_rng_state()
    list(PKSampler(PIDS, K, P * K))
    assert (np.random.get_state()[1] == state).all()
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_pk_sampler_rejects_too_few_identities_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="at least"):
        PKSampler(PIDS, K, 4 * K, num_replicas=3, rank=0)
    with pytest.raises(ValueError, match="multiple of num_instances"):
        PKSampler(PIDS, 4, 6)
    with pytest.raises(ValueError, match="rank"):
        PKSampler(PIDS, K, P * K, num_replicas=2, rank=2)


def test_pk_sampler_caps_a_dominant_identity_so_steps_stay_distinct() -> None:
    pids = [0] * 60 + [1, 1, 1, 2, 2, 2]
    s = PKSampler(pids, 3, 6)
    blocks = batches(s)
    labels = np.array(pids)[blocks[:, :, 0]]
    assert all(len(set(row)) == 2 for row in labels.tolist())
    assert len(blocks) == 2  # identity 0 can pair with 1 and 2 once each
