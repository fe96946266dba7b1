"""After a stage: dehazing quality on SYN and the pictures (dehazing panel, rank list)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rvsl.data.datamodule import RVSLDataModule
from rvsl.engine.pictures import dehazing_panel, rank_list, save_png, shown_gallery
from rvsl.metrics.distance import pairwise_distance
from rvsl.metrics.restoration import dehazing_quality
from rvsl.models.rvsl_net import RVSLNet


@torch.no_grad()
def rank_list_picture(
    net: RVSLNet,
    datamodule: RVSLDataModule,
    test_set: str,
    branch: str = "hazy",
    num_queries: int = 6,
    top_k: int = 10,
    device: str | torch.device = "cpu",
) -> Any:
    """Rank lists of the first ``num_queries`` queries of ``test_set`` through one branch."""
    index = datamodule.val_set_names.index(test_set)
    loader = datamodule.val_dataloader()[index]
    feats, pids, camids, is_query = [], [], [], []
    net.eval()
    for batch in loader:
        feats.append(net.embed(batch["image"].to(device), branch)[f"feat_{branch}"].float().cpu())
        pids.append(batch["pid"])
        camids.append(batch["camid"])
        is_query.append(batch["is_query"])
    feats, pids, camids = torch.cat(feats), torch.cat(pids), torch.cat(camids)
    is_query = torch.cat(is_query).bool()
    q = torch.nonzero(is_query).squeeze(1)[:num_queries]
    g = torch.nonzero(~is_query).squeeze(1)
    distmat = pairwise_distance(feats[q], feats[g])
    # Load only the gallery images that can appear: each query's top_k under the protocol
    # (same identity AND camera left out), chosen with the stable order rank_list uses.
    # A whole gallery of images would not fit in memory at FVRID size.
    shown = shown_gallery(distmat, pids[q], pids[g], camids[q], camids[g], top_k)
    dataset = loader.dataset
    gallery_images = torch.stack([dataset[int(g[j])]["image"] for j in shown.tolist()])
    query_images = torch.stack([dataset[int(i)]["image"] for i in q])
    return rank_list(
        query_images,
        gallery_images,
        distmat[:, shown],
        pids[q],
        pids[g][shown],
        camids[q],
        camids[g][shown],
        top_k,
    )


def stage_report(
    net: RVSLNet,
    datamodule: RVSLDataModule,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    dehazing: bool = True,
) -> dict[str, float]:
    """SSIM/PSNR of the dehazer on SYN (when ``dehazing``: the baseline has no trained
    generator), and PNGs in ``out_dir/pictures``."""
    out = Path(out_dir) / "pictures"
    results: dict[str, float] = {}
    if dehazing and "SYN" in datamodule.val_set_names:
        pairs = datamodule.syn_test_pairs_dataloader()
        quality = dehazing_quality(net, pairs, device)
        results |= {"val/SYN/dehaze/ssim": quality["ssim"], "val/SYN/dehaze/psnr": quality["psnr"]}
        batch = next(iter(pairs))
        hazy, clear = batch["hazy"][:8].to(device), batch["clear"][:8]
        with torch.no_grad():
            net.eval()
            dehazed = net.dehaze(hazy).cpu()
        save_png(dehazing_panel(hazy.cpu(), dehazed, clear), out / "dehazing_SYN.png")
    target = "REAL_FOGGY" if "REAL_FOGGY" in datamodule.val_set_names else None
    if target is not None:
        picture = rank_list_picture(net, datamodule, target, device=device)
        save_png(picture, out / f"rank_list_{target}.png")
    return results
