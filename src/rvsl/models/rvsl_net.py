"""The RVSL network: two encoders, the shared ReID trunk with its BNNeck head, two generators.

Notation of the paper -> attribute here:
``Ec`` -> ``enc_clear``, ``Ef`` -> ``enc_hazy``, ``Dreid`` -> ``trunk`` (+ ``bnneck``,
``classifier``), ``Dc`` (to clear, the dehazer) -> ``gen_clear``, ``Df`` (to hazy) -> ``gen_hazy``.
The discriminators are trained against this network and live beside it.

Each use has one forward, returning a dict of named tensors:
``forward(clear, hazy)`` (synthetic pair: stage 1 and the auxiliary branch of stages 2-3),
``forward_real_clear(x)`` (stage 2 cycle), ``forward_real_hazy(z)`` (stage 3 cycle) and
``embed(images)`` (evaluation: both branches on one batch).

Feature names: ``global_*`` is the pooled trunk output before the BNNeck (triplet and
alignment losses use it), ``feat_*`` the BNNeck output (evaluation), ``logits_*`` the
classifier on ``feat_*`` (cross entropy). The trunk and BNNeck run once per branch, so
each branch keeps its own batch statistics, as in the official model.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from rvsl.models.backbone import Encoder, EncoderOutput, ReIDTrunk
from rvsl.models.generator import Generator
from rvsl.models.resnet_ibn import backbone_spec

#: the two embedding branches, the hazy one (the headline) first: ``feat_hazy``, ``feat_clear``
BRANCHES = ("hazy", "clear")

Branch = Literal["clear", "hazy", "both"]


def _image_size(images: torch.Tensor) -> tuple[int, int]:
    return (images.shape[-2], images.shape[-1])


class RVSLNet(nn.Module):
    """RVSL generator-side network. ``num_classes`` = labelled synthetic training identities."""

    def __init__(
        self,
        backbone: str = "resnet50_ibn_a",
        num_classes: int = 1,
        generator_width: int = 64,
        backbone_width: int = 64,
    ) -> None:
        super().__init__()
        spec = backbone_spec(backbone, backbone_width)
        self.backbone = backbone
        self.num_classes = num_classes
        self.feature_dim = spec.feature_dim
        self.enc_clear = Encoder(spec)
        self.enc_hazy = Encoder(spec)
        self.gen_hazy = Generator(spec.encoder_channels, generator_width, spec.width)
        self.gen_clear = Generator(spec.encoder_channels, generator_width, spec.width)
        self.trunk = ReIDTrunk(spec)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bnneck = nn.BatchNorm1d(spec.feature_dim)
        self.bnneck.bias.requires_grad_(False)  # BNNeck: scale only, no shift
        self.classifier = nn.Linear(spec.feature_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    # -- building blocks -------------------------------------------------------------------
    def reid(self, encoded: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk + global average pool + BNNeck: returns (pre-BN ``global``, post-BN ``feat``)."""
        pooled = self.pool(self.trunk(encoded.feature)).flatten(1)
        return pooled, self.bnneck(pooled)

    def dehaze(self, hazy: torch.Tensor) -> torch.Tensor:
        """``Gc = Dc(Ef(hazy))``: the clear image restored from a hazy one."""
        return self.gen_clear(*self.enc_hazy(hazy), _image_size(hazy))

    def add_haze(self, clear: torch.Tensor) -> torch.Tensor:
        """``Gf = Df(Ec(clear))``: a hazy image synthesised from a clear one."""
        return self.gen_hazy(*self.enc_clear(clear), _image_size(clear))

    # -- one forward per use ---------------------------------------------------------------
    def forward(self, clear: torch.Tensor, hazy: torch.Tensor) -> dict[str, torch.Tensor]:
        """Synthetic pair (J clear, I hazy twin): both ReID branches and both translations.

        ``gen_clear = Dc(Ef(I))`` is compared with J, ``gen_hazy = Df(Ec(J))`` with I.
        """
        enc_c, enc_h = self.enc_clear(clear), self.enc_hazy(hazy)
        global_c, feat_c = self.reid(enc_c)
        global_h, feat_h = self.reid(enc_h)
        return {
            "global_clear": global_c,
            "global_hazy": global_h,
            "feat_clear": feat_c,
            "feat_hazy": feat_h,
            "logits_clear": self.classifier(feat_c),
            "logits_hazy": self.classifier(feat_h),
            "gen_clear": self.gen_clear(*enc_h, _image_size(hazy)),
            "gen_hazy": self.gen_hazy(*enc_c, _image_size(clear)),
        }

    def forward_real_clear(self, clear: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 2 cycle on an unlabeled real clear image x.

        ``gen_hazy = Df(Ec(x))``, ``cycle_clear = Dc(Ef(gen_hazy))``; features from
        ``Ec(x)`` (clear branch) and ``Ef(gen_hazy)`` (hazy branch).
        """
        size = _image_size(clear)
        enc_c = self.enc_clear(clear)
        gen_hazy = self.gen_hazy(*enc_c, size)
        enc_h = self.enc_hazy(gen_hazy)
        global_c, feat_c = self.reid(enc_c)
        global_h, feat_h = self.reid(enc_h)
        return {
            "global_clear": global_c,
            "global_hazy": global_h,
            "feat_clear": feat_c,
            "feat_hazy": feat_h,
            "gen_hazy": gen_hazy,
            "cycle_clear": self.gen_clear(*enc_h, size),
        }

    def forward_real_hazy(self, hazy: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 3 cycle on an unlabeled real hazy image z.

        ``gen_clear = Dc(Ef(z))``, ``cycle_hazy = Df(Ec(gen_clear))``; features from
        ``Ec(gen_clear)`` (clear branch) and ``Ef(z)`` (hazy branch).
        """
        size = _image_size(hazy)
        enc_h = self.enc_hazy(hazy)
        gen_clear = self.gen_clear(*enc_h, size)
        enc_c = self.enc_clear(gen_clear)
        global_c, feat_c = self.reid(enc_c)
        global_h, feat_h = self.reid(enc_h)
        return {
            "global_clear": global_c,
            "global_hazy": global_h,
            "feat_clear": feat_c,
            "feat_hazy": feat_h,
            "gen_clear": gen_clear,
            "cycle_hazy": self.gen_hazy(*enc_c, size),
        }

    def embed(self, images: torch.Tensor, branch: Branch = "both") -> dict[str, torch.Tensor]:
        """Evaluation embeddings (post-BNNeck) of one image batch through one or both branches."""
        out: dict[str, torch.Tensor] = {}
        if branch in ("clear", "both"):
            out["feat_clear"] = self.reid(self.enc_clear(images))[1]
        if branch in ("hazy", "both"):
            out["feat_hazy"] = self.reid(self.enc_hazy(images))[1]
        if not out:
            raise ValueError(f"branch must be 'clear', 'hazy' or 'both', not {branch!r}")
        return out

    def config(self) -> dict[str, object]:
        """Constructor arguments, stored in checkpoints so the network can be rebuilt."""
        return {
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "generator_width": self.gen_clear.out.in_channels,
            "backbone_width": self.enc_clear.conv1.out_channels,
        }
