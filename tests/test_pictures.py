"""Dehazing panels, rank lists and dehazing quality: what a person looks at after a run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rvsl.evaluation.pictures import GREEN, RED, dehazing_panel, rank_list, shown_gallery
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
