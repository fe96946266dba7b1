"""How hazy an image looks, and which encoder should embed it.

RVSL has two encoders: one trained on clear images, one on hazy ones. A camera's footage
mixes both (fog comes and goes), so ``rvsl-search`` can pick the encoder per image. The haze
score is the mean dark channel (He et al., 2009): the per-pixel minimum over colour and a
small window, near 0 in a clear outdoor image, lifted toward the airlight by haze.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rvsl.losses.priors import dark_channel

#: ``hazy``/``clear``: one encoder for every image; ``auto``: each image through the encoder
#: its haze score picks; ``fuse``: the mean of both encoders' L2-normalised features.
BRANCH_CHOICES = ("hazy", "clear", "auto", "fuse")
#: The score is computed at this height (aspect kept): cheap, and the window below is sized
#: for it (a 15-pixel window at 96 rows covers what the usual 35 covers at ~220).
SCORE_HEIGHT = 96
SCORE_PATCH = 15
#: ``auto`` embeds an image through the hazy encoder when its score is above this. Chosen on
#: the demo world's TRAINING images (real clear vs real hazy), never on a test set:
#: docs/search.md says how, and ``--haze-threshold`` overrides it.
DEFAULT_HAZE_THRESHOLD = 0.212
#: The choice ``rvsl-search`` makes unless told: the one that ranked best on the demo world's
#: mixed clear + hazy gallery (docs/search.md has the table and the command).
DEFAULT_BRANCH = "auto"


def haze_score(images: Tensor) -> Tensor:
    """(B,) mean dark channel of (B, 3, H, W) images in [0, 1]; higher is hazier."""
    if images.shape[-2] > SCORE_HEIGHT:
        width = max(1, round(images.shape[-1] * SCORE_HEIGHT / images.shape[-2]))
        images = F.interpolate(
            images.float(), size=(SCORE_HEIGHT, width), mode="bilinear", antialias=True
        )
    return dark_channel(images.clamp(0, 1), SCORE_PATCH).mean(dim=(1, 2, 3))


def embed_by_choice(
    net: torch.nn.Module, images: Tensor, choice: str, hazy: Tensor
) -> tuple[Tensor, list[str]]:
    """(B, D) features of ``images`` through the encoder(s) ``choice`` names, and the branch
    each image went through. ``hazy`` (B,) bool says which images ``auto`` treats as hazy."""
    if choice in ("hazy", "clear"):
        return net.embed(images, choice)[f"feat_{choice}"], [choice] * len(images)
    if choice == "fuse":
        both = net.embed(images, "both")
        fused = F.normalize(both["feat_hazy"], dim=1) + F.normalize(both["feat_clear"], dim=1)
        return fused / 2, ["fuse"] * len(images)
    if choice != "auto":
        raise ValueError(f"branch must be one of {BRANCH_CHOICES}, not {choice!r}")
    feats = None
    for branch, mask in (("hazy", hazy), ("clear", ~hazy)):
        if mask.any():  # each image through its own encoder only: no work is thrown away
            part = net.embed(images[mask], branch)[f"feat_{branch}"]
            if feats is None:
                feats = part.new_empty(len(images), part.shape[1])
            feats[mask] = part
    assert feats is not None, "embed_by_choice needs at least one image"
    return feats, ["hazy" if h else "clear" for h in hazy.tolist()]
