"""CycleGAN's history of generated images (Shrivastava et al. 2017; Zhu et al. 2017).

The discriminator is shown a mix of the newest fakes and older ones, which damps the
oscillation of adversarial training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ImagePool(nn.Module):
    """Up to ``size`` past generated images; ``query`` returns a batch to show the discriminator.

    While the pool fills, incoming images are stored and returned unchanged. Once full,
    each incoming image is, with probability 1/2, swapped with a random stored one (the
    stored one is returned), otherwise returned as is. Vectorised over the batch; when
    two images of one batch pick the same slot, the later one is kept. The pool content
    is part of the module's state dict, so a resumed run continues with the same history.
    """

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: torch.Tensor | None = None
        self.count = 0

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        if self.images is None or self.images.shape[1:] != images.shape[1:]:
            self.images = images.new_empty((self.size, *images.shape[1:]))
            self.count = 0
        elif self.images.device != images.device:  # restored from a checkpoint on the CPU
            self.images = self.images.to(images.device)
        out = images.clone()
        n_fill = min(self.size - self.count, images.shape[0])
        if n_fill:
            self.images[self.count : self.count + n_fill] = images[:n_fill]
            self.count += n_fill
        rest = images[n_fill:]
        if rest.shape[0]:
            device = images.device
            swap = torch.rand(rest.shape[0], device=device) < 0.5
            slots = torch.randint(0, self.size, (rest.shape[0],), device=device)
            swap_idx = swap.nonzero().squeeze(1)
            if swap_idx.numel():
                chosen = slots[swap_idx]
                out[n_fill + swap_idx] = self.images[chosen]
                # one write per slot, the batch's later image: an indexed write with repeated
                # indices keeps an arbitrary one (or a mix of them, across threads)
                repeated = torch.triu(chosen[:, None] == chosen[None, :], diagonal=1).any(dim=1)
                keep = swap_idx[~repeated]
                self.images[slots[keep]] = rest[keep].to(self.images.dtype)
        return out

    def get_extra_state(self) -> dict[str, Any]:
        stored = None if self.images is None else self.images[: self.count].cpu()
        return {"images": stored, "count": self.count}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        stored = state.get("images")
        self.count = int(state.get("count", 0))
        if stored is None or self.count == 0:
            self.images, self.count = None, 0
            return
        self.images = stored.new_empty((self.size, *stored.shape[1:]))
        self.images[: self.count] = stored
