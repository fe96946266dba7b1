"""Dehazing panels, rank lists and dehazing quality: what a person looks at after a run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rvsl.evaluation.features import SplitFeatures
from rvsl.evaluation.pictures import (
    GREEN,
    RED,
    dehazing_panel,
    dehazing_picture,
    first_images,
    rank_list,
    rank_list_picture,
    shown_gallery,
)
from rvsl.metrics.restoration import dehazing_quality


def test_a_dehazing_panel_has_one_row_per_image_and_three_columns_with_ground_truth():
    hazy, dehazed, clear = (torch.rand(4, 3, 16, 8) for _ in range(3))
    panel = dehazing_panel(hazy, dehazed, clear)
    assert panel.dtype == np.uint8 and panel.shape == (4 * 18 + 2, 3 * 10 + 2, 3)
    assert dehazing_panel(hazy, dehazed).shape == (4 * 18 + 2, 2 * 10 + 2, 3)
    np.testing.assert_array_equal(panel[2:18, 12:20], (dehazed[0].permute(1, 2, 0) * 255).round())


def test_a_rank_list_frames_true_matches_green_and_false_ones_red_skipping_same_camera():
    query = torch.full((1, 3, 32, 32), 0.5)
    gallery = torch.full((3, 3, 32, 32), 0.5)
    distmat = torch.tensor([[0.1, 0.2, 0.3]])
    g_pids, g_cams = torch.tensor([7, 7, 8]), torch.tensor([0, 1, 1])
    picture = rank_list(
        query, gallery, distmat, torch.tensor([7]), g_pids, torch.tensor([0]), g_cams, top_k=3
    )
    tile = 34
    first, second = picture[2, 2 + tile], picture[2, 2 + 2 * tile]  # top-left corner pixels
    assert tuple(first) == tuple(round(c * 255) for c in GREEN)  # gallery 1: same id, other cam
    assert tuple(second) == tuple(round(c * 255) for c in RED)  # gallery 2: other id
    assert (picture[2:34, 2 + 3 * tile : 2 + 4 * tile] == 255).all()  # gallery 0 left out: blank


class _IdentityDehazer(torch.nn.Module):
    def dehaze(self, hazy):
        return hazy


def test_dehazing_quality_is_psnr_and_ssim_of_the_clamped_output_against_the_clear_twin():
    torch.manual_seed(0)
    clear = torch.rand(4, 3, 32, 32) * 0.8 + 0.1
    hazy = clear + 0.05
    quality = dehazing_quality(_IdentityDehazer(), [{"clear": clear, "hazy": hazy}])
    assert quality["psnr"] == pytest.approx(10 * math.log10(1 / 0.05**2), abs=1e-3)
    assert 0.9 < quality["ssim"] < 1.0


def test_rank_lists_drawn_on_the_shown_gallery_subset_equal_those_on_the_whole_gallery():
    torch.manual_seed(0)
    queries, gallery = torch.rand(3, 3, 8, 8), torch.rand(40, 3, 8, 8)
    distmat = torch.randint(0, 5, (3, 40)).float()  # many ties: the stable order must hold
    q_pids, g_pids = torch.tensor([0, 1, 2]), torch.randint(0, 4, (40,))
    q_cams, g_cams = torch.tensor([0, 0, 1]), torch.randint(0, 2, (40,))
    full = rank_list(queries, gallery, distmat, q_pids, g_pids, q_cams, g_cams, top_k=5)
    shown = shown_gallery(distmat, q_pids, g_pids, q_cams, g_cams, top_k=5)
    assert len(shown) < 40
    subset = rank_list(
        queries,
        gallery[shown],
        distmat[:, shown],
        q_pids,
        g_pids[shown],
        q_cams,
        g_cams[shown],
        top_k=5,
    )
    np.testing.assert_array_equal(subset, full)


class _DarkeningDehazer(torch.nn.Module):
    """``dehaze`` darkens; remembers the mode and gradient state it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.BatchNorm2d(3)
        self.seen: list[tuple[bool, bool]] = []

    def dehaze(self, hazy):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return hazy * 0.25


def test_the_dehazing_picture_is_the_panel_of_the_dehazed_images_drawn_in_eval_mode():
    net = _DarkeningDehazer().train()
    net.frozen.eval()
    hazy, clear = torch.rand(3, 3, 8, 6), torch.rand(3, 3, 8, 6)
    picture = dehazing_picture(net, hazy, clear)
    np.testing.assert_array_equal(picture, dehazing_panel(hazy, hazy * 0.25, clear))
    assert net.seen == [(False, False)]  # evaluation mode, no graph
    assert net.training and not net.frozen.training  # every submodule's mode restored
    assert dehazing_picture(net, hazy).shape == dehazing_panel(hazy, hazy).shape  # no truth


def test_first_images_gathers_across_batches_and_reads_no_batch_more():
    read = []

    def loader():
        for i in range(5):
            read.append(i)
            yield {"hazy": torch.full((3, 1, 2, 2), float(i)), "clear": torch.zeros(3, 1, 2, 2)}

    hazy, clear = first_images(loader(), ("hazy", "clear"), 7)
    assert hazy.shape[0] == clear.shape[0] == 7 and read == [0, 1, 2]
    assert hazy[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 2]
    with pytest.raises(ValueError, match="no images"):
        first_images(iter([]), ("image",), 4)


class _CountingDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.read = images, []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        self.read.append(index)
        return {"image": self.images[index]}


def test_the_rank_list_picture_of_a_test_set_loads_only_the_images_it_shows():
    torch.manual_seed(1)
    images = torch.rand(33, 3, 8, 8)  # 3 queries, then 30 gallery images
    pids = torch.cat([torch.tensor([0, 1, 2]), torch.randint(0, 4, (30,))])
    camids = torch.randint(0, 2, (33,))
    split = SplitFeatures({}, pids, camids, torch.arange(33) < 3)
    distmat = torch.randint(0, 6, (3, 30)).float()
    dataset = _CountingDataset(images)
    picture = rank_list_picture(dataset, split, distmat, num_queries=2, top_k=4)
    full = rank_list(
        images[:2], images[3:], distmat[:2], pids[:2], pids[3:], camids[:2], camids[3:], top_k=4
    )
    np.testing.assert_array_equal(picture, full)
    assert len(dataset.read) <= 2 + 2 * 4 and set(dataset.read[:2]) == {0, 1}
