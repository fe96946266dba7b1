"""recipe=paper and experiment=paper*: the official training, every reference behaviour at once."""

from __future__ import annotations

import time
from importlib.resources import files

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from torch._subclasses.fake_tensor import FakeTensorMode
from torchvision.transforms import v2

from official_schedule import official_lr
from rvsl.data.transforms import ERASE_MEAN, RandomErasingDraws, RandomScaleCenterCrop
from rvsl.losses import discriminator_loss
from rvsl.training import objectives
from rvsl.training.module import RVSLModule
from rvsl.training.train import build_model

PAPER_PRIORS = objectives.PriorOptions(
    dark_channel_target="one",
    first_image_only=True,
    remap_from_minus_one=True,
    tv_border="zero_pad",
    airlight="reference",
)


def _build(cfg, num_classes: int = 6) -> tuple[RVSLModule, object]:
    return build_model(cfg, num_classes), hydra.utils.instantiate(cfg.data)


def test_the_paper_recipe_switches_every_reference_behaviour_on(compose_train):
    cfg = compose_train("experiment=paper_real_haze")
    model, datamodule = _build(cfg)

    assert model.prior_options == PAPER_PRIORS
    assert model.hparams.adversarial_pairing == "reference"
    assert dict(cfg.model.inherit) == {"classifier": True, "discriminators": False}
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    schedule = model.scheduler_factory(optimizer=opt)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        schedule.step()
    assert lrs == pytest.approx([official_lr(1e-4, e) for e in range(30)], rel=1e-12)

    assert datamodule.real_sampling == "pk"
    assert datamodule.syn_clear_input == "clear"
    steps = datamodule.train_transform.transforms
    jitter = next(t for t in steps if isinstance(t, RandomScaleCenterCrop))
    erasing = next(t for t in steps if isinstance(t, v2.RandomErasing))
    assert jitter.per_axis
    assert isinstance(erasing, RandomErasingDraws)
    assert erasing.ratio_sampling == "uniform" and erasing.attempts == 100
    assert list(erasing.value) == pytest.approx(list(ERASE_MEAN))

    assert cfg.restoration_metrics == "reference"
    assert cfg.trainer.precision == "16-mixed" and cfg.seed == 1229
    paper = OmegaConf.load(files("rvsl.conf") / "recipe" / "paper.yaml")
    assert paper.trainer.max_epochs == 200  # the tests' own max_epochs=1 wins over it here


def test_the_default_recipe_keeps_every_switch_at_its_sensible_value(compose_train):
    cfg = compose_train("stage=real_haze")
    model, datamodule = _build(cfg)
    assert model.prior_options == objectives.PriorOptions()
    assert model.hparams.adversarial_pairing == "consistent"
    assert dict(cfg.model.inherit) == {"classifier": True, "discriminators": True}
    assert cfg.model.scheduler.warmup_epochs == 10 and cfg.model.scheduler.epoch_offset == 0
    assert datamodule.real_sampling == "random" and datamodule.syn_clear_input == "hazy"
    assert not any(isinstance(t, RandomErasingDraws) for t in datamodule.train_transform.transforms)
    assert cfg.restoration_metrics == "standard" and cfg.trainer.precision == "auto"


def test_only_the_papers_stage_2_starts_with_a_fresh_classifier(compose_train):
    fresh = {
        stage: compose_train(f"experiment=paper_{stage}").model.inherit.classifier
        for stage in ("syn_haze", "real_clear", "real_haze")
    }
    assert fresh == {"syn_haze": True, "real_clear": False, "real_haze": True}
    chain = compose_train("experiment=paper").chain
    assert [entry if isinstance(entry, str) else entry["stage"] for entry in chain] == [
        "syn_haze",
        "real_clear",
        "real_haze",
    ]
    assert list(chain[1]["overrides"]) == ["model.inherit.classifier=false"]


def test_the_paper_experiments_train_on_fvrid_with_the_paper_recipe(compose_train):
    for name in ("paper", "paper_syn_haze", "paper_real_clear", "paper_real_haze"):
        cfg = compose_train(f"experiment={name}", "data.root=/data/FVRID")
        assert cfg.task_name == name
        assert cfg.data._target_ == "rvsl.data.datamodule.RVSLDataModule"
        assert cfg.model.priors.airlight == "reference", name


def _full_size_step(stage: str, compose_train) -> dict[str, tuple[int, ...]]:
    """One training step of the paper preset at full size (ResNet-50-IBN-a, 384x384, batch
    36 + 18 real), on fake tensors: every operation runs with its real shapes and dtypes, but
    nothing is allocated or computed (a real one needs about 90 GB of CPU memory)."""
    cfg = compose_train(
        f"experiment=paper_{stage}",
        "model.net.backbone=resnet50_ibn_a",
        "data.image_size=[384,384]",
        "data.batch_size=36",
        "data.num_instances=6",
        "data.real_batch_size=18",
        "model.pool_size=50",
    )
    b, r, h = cfg.data.batch_size, cfg.data.real_batch_size, cfg.data.image_size[0]
    with FakeTensorMode():
        model, _ = _build(cfg, num_classes=575)
        batch = {
            "syn": {
                "clear": torch.rand(b, 3, h, h),
                "hazy": torch.rand(b, 3, h, h),
                "pid": torch.arange(b) // cfg.data.num_instances,
            },
            "real": {"image": torch.rand(r, 3, h, h)},
        }
        step = model.spec.objective(model.context, batch)
        terms, outs = step.terms, step.outputs
        objectives.total(terms).backward()
        main = [p for n, p in model.net.named_parameters() if p.requires_grad]
        assert all(p.grad is not None for p in main)
        jobs = step.discriminator_inputs
        for name, (real, fake) in jobs.items():
            disc, pool = getattr(model, name), getattr(model, name.replace("disc_", "pool_"))
            gan_loss = model.context.gan_loss
            d_loss = discriminator_loss(disc(real), disc(pool.query(fake.detach())), gan_loss)
            d_loss.backward()
            assert all(p.grad is not None for p in disc.parameters())
        shapes = {k: tuple(v.shape) for out in outs.values() for k, v in out.items()}
        shapes["discriminators"] = (len(jobs),)
    return shapes


def test_one_full_size_paper_step_of_stage_1_runs_on_the_cpu(compose_train):
    start = time.perf_counter()
    shapes = _full_size_step("syn_haze", compose_train)
    assert shapes["gen_clear"] == (36, 3, 384, 384) and shapes["feat_hazy"] == (36, 2048)
    assert shapes["logits_clear"] == (36, 575) and shapes["discriminators"] == (2,)
    assert time.perf_counter() - start < 120


def test_one_full_size_paper_step_of_stage_3_runs_on_the_cpu(compose_train):
    shapes = _full_size_step("real_haze", compose_train)
    assert shapes["cycle_hazy"] == (18, 3, 384, 384) and shapes["global_hazy"] == (18, 2048)
    assert shapes["discriminators"] == (1,)


def test_the_paper_chain_trains_end_to_end_on_a_cpu(compose_train):
    from rvsl.training.chain import run

    cfg = compose_train("experiment=paper")
    stages = run(cfg)["stages"]
    assert list(stages) == ["syn_haze", "real_clear", "real_haze"]
    hparams = {
        name: torch.load(metrics["best_model_path"], weights_only=True)["hyper_parameters"]
        for name, metrics in stages.items()
    }
    assert [h["inherit"]["classifier"] for h in hparams.values()] == [True, False, True]
    assert all(h["inherit"]["discriminators"] is False for h in hparams.values())
    assert hparams["real_haze"]["priors"]["airlight"] == "reference"
    assert "val/SYN/dehaze/ssim" in stages["real_haze"]["best"]
