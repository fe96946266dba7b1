"""RVSL losses: ReID (CE, batch-hard triplet), image (EA, P2P), LSGAN, and the haze priors."""

from rvsl.losses.adversarial import LSGANLoss, discriminator_loss
from rvsl.losses.image import embedding_alignment, reconstruction
from rvsl.losses.priors import (
    colinear_relation_loss,
    dark_channel,
    dark_channel_loss,
    estimate_airlight,
    midc_loss,
    total_variation_loss,
)
from rvsl.losses.reid import (
    TripletLoss,
    cross_entropy,
    hard_example_mining,
    pairwise_euclidean,
    reid_loss,
)

__all__ = [
    "LSGANLoss",
    "TripletLoss",
    "colinear_relation_loss",
    "cross_entropy",
    "dark_channel",
    "dark_channel_loss",
    "discriminator_loss",
    "embedding_alignment",
    "estimate_airlight",
    "hard_example_mining",
    "midc_loss",
    "pairwise_euclidean",
    "reconstruction",
    "reid_loss",
    "total_variation_loss",
]
