"""AdaBN (Li et al., 2016): the cheapest domain adaptation, as a row RVSL has to beat.

A trained network keeps every weight; only the running statistics of the BatchNorm layers on
the re-identification path (encoders, trunk, BNNeck) are re-estimated on the UNLABELLED real
hazy training images (``FVRID_real/train_foggy``, the images RVSL's stage 3 adapts on), seen
once through the evaluation transform (no augmentation). InstanceNorm layers keep no running
statistics and are left alone, as are the generators' BatchNorms (re-identification never
uses them).

As a chain entry, ``{stage: adabn, name: baseline_adabn, from: baseline}`` adapts the
checkpoint selected for the entry named by ``from``, saves it as
``<name>/checkpoints/adapted.ckpt`` and evaluates it as a trained stage is evaluated after
fitting (``train.evaluate_selected``), so its metrics become a row of the chain's summary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from rvsl.data import fvrid
from rvsl.data.datasets import ImageDataset
from rvsl.models.checkpoint import load_untrusted
from rvsl.models.rvsl_net import RVSLNet
from rvsl.models.start_weights import load_earlier_stage
from rvsl.training.checkpointing import SelectedCheckpoint
from rvsl.training.stages import STAGES
from rvsl.training.train import build_model, build_trainer, evaluate_selected, prepare_data
from rvsl.utils.config import instantiate_group
from rvsl.utils.files import atomic_torch_save

log = logging.getLogger(__name__)
ADAPTED_CKPT = Path("checkpoints") / "adapted.ckpt"  # in the entry's run folder
# what an adapted checkpoint keeps of its source besides the (adapted) weights
KEPT_KEYS = ("rvsl", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step")


class _ImageWeightedAverage:
    """A BatchNorm pre-forward hook: sets the layer's momentum so that its running statistics
    become the average over every image it has seen, each call weighted by its batch size.

    This is ``momentum=None``'s cumulative average, except that a short last batch counts for
    the images it holds, and a layer called twice per batch (the trunk, once per branch) counts
    both calls.
    """

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, layer: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        count = int(inputs[0].shape[0])
        self.images += count
        layer.momentum = count / self.images


def reid_batchnorms(net: RVSLNet) -> list[_BatchNorm]:
    """The BatchNorm layers re-identification runs through: both encoders (one when the
    branches share it), the trunk and the BNNeck. Generators are not on this path."""
    layers: dict[int, _BatchNorm] = {}
    for part in (net.enc_hazy, net.enc_clear, net.trunk, net.bnneck):
        for module in part.modules():
            if isinstance(module, _BatchNorm):
                layers.setdefault(id(module), module)
    return list(layers.values())


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    images: Iterable[Tensor],
    forward: Callable[[Tensor], Any],
    layers: Sequence[_BatchNorm] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
) -> int:
    """Re-estimate ``layers``' running mean and variance (default: every BatchNorm of
    ``model``) from ``forward(batch)`` over ``images``; returns how many images were used.

    The statistics are reset first and become image-weighted averages of the batch statistics
    (see :class:`_ImageWeightedAverage`). Only these layers are in training mode; the rest of
    the model stays in evaluation mode, no gradient is computed and no parameter changes.
    Batches of a single image are skipped (a BatchNorm over pooled features needs two).
    ``max_batches`` stops after that many batches; ``None``: one pass over ``images``.
    """
    layers = list(layers) if layers is not None else _batchnorms(model)
    modes = {module: module.training for module in model.modules()}
    momenta = [layer.momentum for layer in layers]
    hooks = [layer.register_forward_pre_hook(_ImageWeightedAverage()) for layer in layers]
    used = 0
    try:
        model.eval()
        for layer in layers:
            layer.reset_running_stats()
            layer.train()
        for index, batch in enumerate(images):
            if max_batches is not None and index >= max_batches:
                break
            if batch.shape[0] < 2:
                continue
            forward(batch.to(device, non_blocking=True))
            used += int(batch.shape[0])
    finally:
        for hook in hooks:
            hook.remove()
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        for module, training in modes.items():
            module.train(training)
    if used == 0:
        raise ValueError("AdaBN: no batch of two or more images to estimate statistics on")
    return used


def _batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def adapt_reid_network(
    net: RVSLNet,
    loader: Iterable[dict[str, Any]],
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
) -> int:
    """AdaBN of a re-identification network on a loader of ``{"image": ...}`` batches: every
    image through each distinct branch (the baseline's shared encoder once), so the trunk's
    statistics mix the branches as they do in training. Returns the number of images."""
    branch = "hazy" if net.enc_clear is net.enc_hazy else "both"
    return adapt_batchnorm(
        net,
        (batch["image"] for batch in loader),
        lambda images: net.embed(images, branch),
        reid_batchnorms(net),
        device,
        max_batches,
    )


def real_hazy_loader(datamodule: Any) -> DataLoader:
    """The real hazy training images (no labels used) through the evaluation transform, in
    file order, in batches of the datamodule's evaluation batch size."""
    records = fvrid.real_train_images(datamodule.root, STAGES["real_haze"].number)
    dataset = ImageDataset(records, datamodule.eval_transform, datamodule.strict)
    return DataLoader(
        dataset,
        batch_size=datamodule.eval_batch_size,
        shuffle=False,
        num_workers=datamodule.num_workers,
        pin_memory=datamodule.pin_memory,
    )


def save_adapted(model: pl.LightningModule, source: str | Path, path: Path, **provenance) -> Path:
    """The source checkpoint with the adapted weights, without its training state (optimizers,
    loops), plus an ``adabn`` section saying where it came from; written atomically."""
    original = load_untrusted(source)
    state = {
        k: v.detach().cpu() if isinstance(v, Tensor) else v  # extra states (image pools) as is
        for k, v in model.state_dict().items()
    }
    checkpoint = {k: original[k] for k in KEPT_KEYS if k in original}
    checkpoint.setdefault("pytorch-lightning_version", pl.__version__)
    checkpoint |= {"state_dict": state, "adabn": {"source": str(source), **provenance}}
    atomic_torch_save(checkpoint, path)
    return path


def run_adabn(
    cfg: DictConfig, source: str, selection: str, max_batches: int | None = None
) -> dict[str, Any]:
    """The AdaBN row of a chain: ``cfg`` is the source entry's configuration with this entry's
    run folder; ``source`` its selected checkpoint and ``selection`` how that was chosen.

    Returns metrics shaped as ``train()``'s: the evaluated ``val/...`` values at the top and
    under ``best``, and the adapted checkpoint as the best, selected one.
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = prepare_data(cfg)
    with open_dict(cfg):
        cfg.model.init_from = None
    model = build_model(cfg, datamodule.num_classes)
    load_earlier_stage(model, source)
    trainer = build_trainer(
        cfg.trainer, callbacks=[], logger=instantiate_group(cfg.get("logger")) or False
    )
    device = trainer.strategy.root_device
    model.to(device)
    images = adapt_reid_network(model.net, real_hazy_loader(datamodule), device, max_batches)
    log.info(
        "AdaBN: BatchNorm statistics of %s re-estimated on %d real hazy images", source, images
    )
    path = save_adapted(
        model, source, Path(cfg.paths.output_dir) / ADAPTED_CKPT, images=images, selection=selection
    )
    description = adabn_selection(selection, images)
    evaluated = evaluate_selected(
        cfg, trainer, model, datamodule, SelectedCheckpoint(str(path), description)
    )
    return evaluated | {
        "best": evaluated,
        "best_model_path": str(path),
        "best_model_score": evaluated.get(model.monitor),
        "selected_model_path": str(path),
        "selection": description,
        "adapted_from": str(source),
    }


def adabn_selection(source_selection: str, images: int) -> str:
    """How an AdaBN row's checkpoint came about, for the summary."""
    return (
        f"{source_selection} of the source, then AdaBN: BatchNorm statistics re-estimated on "
        f"{images} unlabelled real hazy training images"
    )
