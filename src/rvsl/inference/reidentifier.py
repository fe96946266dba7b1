"""Inference for practitioners: a trained RVSL network as image -> feature and image -> dehazed.

Images go through the same eval pipeline as validation (:func:`build_eval_transform`), so a
feature computed here equals the one the training run measured its mAP with. Features come
from the embedding engine's :class:`~rvsl.inference.engine.EmbeddingModule`, the code that
``rvsl-search`` and ``rvsl-eval`` embed with; image files are decoded in DataLoader workers
(:class:`~rvsl.inference.images.ImageFiles`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from rvsl.data.transforms import (
    ImageReadError,
    build_eval_transform,
    load_image,
    size_pair,
    to_rgb,
    undo_normalize,
)
from rvsl.inference.engine import EmbeddingModule
from rvsl.inference.images import ImageFiles
from rvsl.metrics.distance import pairwise_distance
from rvsl.models.checkpoint import CheckpointError, load_net, load_untrusted, unwrap_state_dict
from rvsl.models.convert import load_official
from rvsl.models.rvsl_net import BRANCHES, RVSLNet

#: The paper's training and test size (H, W), used when a checkpoint records none.
DEFAULT_IMAGE_SIZE = (384, 384)

#: Distances :meth:`Reidentifier.rank` holds at a time with ``top_k`` (64 MiB of float32).
RANK_CHUNK_ELEMENTS = 1 << 24

ImageInput = str | os.PathLike | Image.Image | Tensor
Images = ImageInput | Sequence[ImageInput]


def _recorded_settings(ckpt: Any) -> dict[str, Any]:
    """Eval image size and input normalisation recorded in a checkpoint, where it has them.

    ``rvsl.image_size`` first, then the datamodule's hyper-parameters that Lightning stores
    in its checkpoints (``datamodule_hyper_parameters``: ``image_size``, ``normalize``).
    """
    if not isinstance(ckpt, Mapping):
        return {}
    found: dict[str, Any] = {}
    for section in (ckpt.get("datamodule_hyper_parameters"), ckpt.get("rvsl")):
        if isinstance(section, Mapping):  # later sections win
            found |= {k: section[k] for k in ("image_size", "normalize") if k in section}
    return found


class Reidentifier:
    """Features and dehazed images from a trained RVSL network, on any images.

    ``image_size`` is the (H, W) every image is resized to; ``normalize_input`` applies the
    ImageNet mean/std after scaling to [0, 1], as a run with ``data.normalize=true`` did.
    """

    def __init__(
        self,
        net: RVSLNet,
        image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE,
        device: str | torch.device = "cpu",
        normalize_input: bool = False,
    ) -> None:
        self._device = torch.device(device)
        #: The (H, W) the checkpoint says it was trained at; None when it records none.
        self.trained_image_size: tuple[int, int] | None = None
        self.net = net.to(self._device).eval()
        self._image_size = size_pair(image_size)
        self.normalize_input = bool(normalize_input)
        self.transform = build_eval_transform(self._image_size, normalize=self.normalize_input)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        image_size: int | Sequence[int] | None = None,
    ) -> Reidentifier:
        """Load a checkpoint of ``rvsl-train`` or ``rvsl-convert`` (or the authors' raw weights).

        The image size is, in order: ``image_size``, the size the checkpoint records, 384x384.
        """
        ckpt = load_untrusted(path)
        settings = _recorded_settings(ckpt)
        meta = ckpt.get("rvsl") if isinstance(ckpt, Mapping) else None
        if isinstance(meta, Mapping) and "net" in meta:
            del ckpt  # load_net reads the file again; keep one copy in memory at a time
            net = load_net(path)
        else:
            net = cls._official_or_refuse(ckpt, path)
        reidentifier = cls(
            net,
            image_size=image_size or settings.get("image_size") or DEFAULT_IMAGE_SIZE,
            device=device,
            normalize_input=bool(settings.get("normalize", False)),
        )
        recorded = settings.get("image_size")
        reidentifier.trained_image_size = size_pair(recorded) if recorded else None
        return reidentifier

    @staticmethod
    def _official_or_refuse(ckpt: Any, path: str | os.PathLike[str]) -> RVSLNet:
        """The authors' raw state dict when the file is one; else a CheckpointError."""
        try:
            return load_official(unwrap_state_dict(ckpt, str(path)))
        except CheckpointError as err:
            raise CheckpointError(
                f"{path}: not an rvsl checkpoint (no 'rvsl' section) nor an official RVSL "
                f"state dict ({err}). Use a checkpoint written by rvsl-train, or convert the "
                "authors' weights with: rvsl-convert OFFICIAL.pth OUT.ckpt"
            ) from None

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def feature_dim(self) -> int:
        return int(self.net.feature_dim)

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backbone={self.net.backbone!r}, "
            f"feature_dim={self.feature_dim}, image_size={self.image_size}, "
            f"device='{self.device}', normalize_input={self.normalize_input})"
        )

    # ------------------------------------------------------------------ inference
    def embed(
        self,
        images: Images,
        branch: str = "hazy",
        batch_size: int = 64,
        flip: bool = False,
        normalize: bool = False,
        num_workers: int = 0,
    ) -> Tensor:
        """(N, feature_dim) float32 CPU features (post-BNNeck, as evaluated in training).

        ``branch``: ``hazy`` (the encoder for hazy images, the paper's test branch) or
        ``clear``. ``flip`` averages each image's features with its mirror image's (the usual
        ReID test-time augmentation); ``normalize`` then scales each row to unit L2 norm.
        When every image is a file path, the files are decoded by ``num_workers`` DataLoader
        worker processes (0: in this process) while the network runs; other inputs (PIL images,
        tensors, or paths mixed with them) are prepared here, and ``num_workers`` is unused.
        A file that cannot be read raises ImageReadError naming it (the first such file).
        """
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, not {branch!r}")
        _check_count("batch_size", batch_size, minimum=1)
        _check_count("num_workers", num_workers, minimum=0)
        items = _flatten(images)
        if items and all(isinstance(item, (str, os.PathLike)) for item in items):
            batches = self._file_batches(items, batch_size, num_workers)
        else:
            batches = self._batches(items, batch_size)
        module = EmbeddingModule(self.net, branches=(branch,), flip=flip)
        parts = []
        for batch in batches:
            with torch.inference_mode():  # float32, flip averaged: as rvsl-search and rvsl-eval
                out = module.predict_step({"image": batch}, len(parts))
            parts.append(out[f"feat_{branch}"].cpu())
        # concatenated outside inference mode: callers get ordinary, editable tensors
        feats = torch.cat(parts) if parts else torch.empty(0, self.feature_dim)
        return F.normalize(feats, dim=1) if normalize else feats

    def dehaze(self, images: Images, batch_size: int = 16) -> Tensor:
        """(N, 3, H, W) float32 CPU images in [0, 1]: ``Dc(Ef(hazy))`` at ``image_size``.

        The generator has no output activation; like the training code's pictures and SSIM,
        its output is clamped to [0, 1] (after undoing the input normalisation, if any).
        """
        _check_count("batch_size", batch_size, minimum=1)
        parts = []
        with torch.inference_mode():
            for batch in self._batches(_flatten(images), batch_size):
                out = self.net.dehaze(batch).float()
                if self.normalize_input:
                    out = undo_normalize(out)
                parts.append(out.clamp(0, 1).cpu())
        return torch.cat(parts) if parts else torch.empty(0, 3, *self.image_size)

    @staticmethod
    def distance(query: Tensor, gallery: Tensor, metric: str = "euclidean") -> Tensor:
        """(num_query, num_gallery) distances; see :func:`rvsl.metrics.pairwise_distance`."""
        return pairwise_distance(query, gallery, metric)

    @staticmethod
    def rank(
        query: Tensor, gallery: Tensor, top_k: int | None = None, metric: str = "euclidean"
    ) -> Tensor:
        """(num_query, top_k) gallery indices, nearest first; all of them when ``top_k`` is None.

        Equal distances keep gallery order (the lower index first): the result is the first
        ``top_k`` columns of the stable argsort of :meth:`distance`, ties at the cut included.
        With ``top_k`` only the k nearest are selected (``torch.topk``), a chunk of query rows
        at a time (:data:`RANK_CHUNK_ELEMENTS` distances). NaN distances rank last.
        """
        if top_k is None:
            return torch.argsort(pairwise_distance(query, gallery, metric), dim=1, stable=True)
        _check_count("top_k", top_k, minimum=0)
        k = min(top_k, len(gallery))
        rows = max(1, RANK_CHUNK_ELEMENTS // max(1, len(gallery)))
        parts = [
            _nearest(pairwise_distance(query[start : start + rows], gallery, metric), k)
            for start in range(0, len(query), rows)
        ]
        return torch.cat(parts) if parts else torch.empty(0, k, dtype=torch.long)

    # ------------------------------------------------------------------ input handling
    def _batches(self, items: Sequence[ImageInput], batch_size: int) -> Iterator[Tensor]:
        """Preprocessed (B, 3, H, W) batches on the device; files are read one batch at a time."""
        for start in range(0, len(items), batch_size):
            chunk = [self._preprocess(item) for item in items[start : start + batch_size]]
            yield torch.stack(chunk).to(self.device)

    def _file_batches(
        self, paths: Sequence[str | os.PathLike], batch_size: int, num_workers: int
    ) -> Iterator[Tensor]:
        """:meth:`_batches` of image files, decoded by DataLoader workers; ImageReadError for
        the first file that cannot be read."""
        loader = DataLoader(
            ImageFiles(paths, self.transform, self.image_size),
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            if not batch["valid"].all():  # the first: "cannot read image PATH: reason"
                raise ImageReadError(batch["error"][int(batch["valid"].int().argmin())])
            yield batch["image"].to(self.device, non_blocking=True)

    def _preprocess(self, image: ImageInput) -> Tensor:
        """One image -> float32 (3, H, W), exactly as the validation loader prepares it."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)  # ImageReadError names the file
        elif isinstance(image, Image.Image):
            image = to_rgb(image)  # 16-bit grey scaled to 8 bits, not clipped to white
        elif isinstance(image, Tensor):
            _check_tensor_image(image)
        return self.transform(image).as_subclass(Tensor)


def _flatten(images: Images) -> list[ImageInput]:
    """One entry per image: a (N, 3, H, W) tensor, alone or in a list, gives N entries."""
    if isinstance(images, (str, os.PathLike, Image.Image, Tensor)):
        images = [images]
    if not isinstance(images, Sequence):
        raise TypeError(
            "images must be a path, a PIL image, a (3, H, W) or (N, 3, H, W) tensor, or a "
            f"list of those, not {type(images).__name__}"
        )
    items: list[ImageInput] = []
    for image in images:
        if isinstance(image, Tensor) and image.ndim == 4:
            items.extend(image.unbind(0))
        elif isinstance(image, (str, os.PathLike, Image.Image, Tensor)):
            items.append(image)
        else:
            raise TypeError(
                f"cannot use a {type(image).__name__} as an image: pass a path, a PIL image "
                "or a tensor"
            )
    return items


def _check_count(name: str, value: object, minimum: int) -> None:
    """ValueError unless ``value`` is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def _nearest(dist: Tensor, k: int) -> Tensor:
    """The first ``k`` columns of ``dist.argsort(dim=1, stable=True)``, through ``topk``.

    ``topk`` gives each row's k-th smallest distance; everything below it is kept, and of the
    distances equal to it the lowest indices fill the remaining places, whichever ``topk``
    picked. The kept indices are then sorted by distance, stably.
    """
    if k == 0:
        return torch.empty(len(dist), 0, dtype=torch.long, device=dist.device)
    dist.nan_to_num_(nan=torch.inf)  # +inf becomes float32's max: NaN ranks last, as in argsort
    kth = dist.topk(k, dim=1, largest=False, sorted=False).values.amax(dim=1, keepdim=True)
    below, tied = dist < kth, dist == kth
    room = k - below.sum(dim=1)
    crowded = (tied.sum(dim=1) > room).nonzero().squeeze(1)
    if len(crowded):  # more ties at the cut than places: the lowest indices
        ties = tied[crowded]
        tied[crowded] = ties & (ties.cumsum(dim=1) <= room[crowded, None])
    kept = (below | tied).nonzero()[:, 1].view(len(dist), k)  # ascending index order
    return kept.gather(1, dist.gather(1, kept).argsort(dim=1, stable=True))


def _check_tensor_image(image: Tensor) -> None:
    """A (3, H, W) tensor: uint8 (0-255), or float in [0, 1] (not yet normalised)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"an image tensor must be (3, H, W) or (N, 3, H, W), got shape {tuple(image.shape)}"
        )
    if image.dtype == torch.uint8:
        return
    if not image.is_floating_point():
        raise ValueError(f"an image tensor must be uint8 or float, got {image.dtype}")
    low, high = image.aminmax()
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"a float image must hold values in [0, 1], got [{low:.3g}, {high:.3g}]: pass "
            "uint8 for 0-255 pixels, and do not normalise (the Reidentifier does)"
        )
