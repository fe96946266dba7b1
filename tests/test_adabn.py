"""AdaBN: BatchNorm statistics re-estimated on unlabelled real hazy images, weights untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from rvsl.models.checkpoint import load_net, load_untrusted
from rvsl.models.rvsl_net import RVSLNet
from rvsl.training.adabn import adapt_batchnorm, adapt_reid_network


class TwoPaths(nn.Module):
    """Two convolutions sharing one BatchNorm, which therefore runs twice per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3)
        self.conv_b = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bn(self.conv_a(x)), self.bn(self.conv_b(x))


def parameters_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def buffers_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_running_statistics_become_the_image_weighted_statistics_of_the_adapted_images():
    torch.manual_seed(0)
    model = TwoPaths().train()
    model(torch.rand(8, 3, 6, 6) + 3)  # source-domain statistics, to be replaced
    weights = parameters_of(model)
    images = torch.rand(10, 3, 6, 6)
    batches = list(images.split(4))  # 4, 4 and a short last batch of 2

    used = adapt_batchnorm(model, batches, model)

    with torch.no_grad():
        outputs = [(model.conv_a(b), model.conv_b(b)) for b in batches]
    every_activation = torch.cat([out for pair in outputs for out in pair])
    expected_mean = every_activation.mean(dim=(0, 2, 3))
    expected_var = sum(
        out.shape[0] * out.var(dim=(0, 2, 3), unbiased=True) for pair in outputs for out in pair
    ) / sum(out.shape[0] for pair in outputs for out in pair)
    assert used == 10
    torch.testing.assert_close(model.bn.running_mean, expected_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.bn.running_var, expected_var, rtol=0, atol=1e-6)
    assert all(torch.equal(weights[k], v) for k, v in parameters_of(model).items())
    assert model.bn.momentum == 0.1 and model.training and model.bn.training  # modes restored


@pytest.mark.parametrize("shared_encoder", [False, True], ids=["rvsl", "baseline"])
def test_a_reid_network_adapts_its_reid_path_only_and_keeps_its_weights(shared_encoder):
    torch.manual_seed(0)
    net = RVSLNet("resnet18_ibn_a", num_classes=4, generator_width=8)
    if shared_encoder:  # the baseline: one encoder for both branches
        net.enc_clear = net.enc_hazy
    weights = parameters_of(net)
    generators = buffers_of(net.gen_clear) | buffers_of(net.gen_hazy)
    instance_norm = net.enc_hazy.layer1[0].bn1.IN
    images = torch.rand(7, 3, 32, 32)
    loader = [{"image": batch} for batch in images.split(3)]  # 3, 3 and a lone image

    used = adapt_reid_network(net, loader)

    assert used == 6  # the single-image batch is skipped: BNNeck needs two images
    with torch.no_grad():
        for encoder in (net.enc_hazy, net.enc_clear):
            expected = encoder.conv1(images[:6]).mean(dim=(0, 2, 3))
            torch.testing.assert_close(encoder.bn1.running_mean, expected, rtol=0, atol=1e-5)
    calls_per_batch = 1 if shared_encoder else 2  # the trunk runs once per distinct branch
    assert int(net.trunk.layer4[0].bn1.num_batches_tracked) == 2 * calls_per_batch
    assert int(net.bnneck.num_batches_tracked) == 2 * calls_per_batch
    assert all(torch.equal(weights[k], v) for k, v in parameters_of(net).items())
    after = buffers_of(net.gen_clear) | buffers_of(net.gen_hazy)
    assert all(torch.equal(generators[k], v) for k, v in after.items())  # not on the ReID path
    assert instance_norm.running_mean is None and not instance_norm.track_running_stats


def test_an_adabn_chain_entry_adapts_the_baselines_checkpoint_into_a_summary_row(compose_train):
    from rvsl.training.chain import run

    cfg = compose_train(
        "chain=[baseline,{stage:adabn,name:baseline_adabn,from:baseline}]",
        "test_after_fit=true",
        "data.test_sets=[REAL_FOGGY]",  # one test set keeps the test fast
    )
    stages = run(cfg)["stages"]

    root = Path(cfg.paths.output_dir)
    adapted_path = root / "baseline_adabn" / "checkpoints" / "adapted.ckpt"
    source_path = stages["baseline"].get("selected_model_path") or stages["baseline"].get(
        "best_model_path"
    )
    row = stages["baseline_adabn"]
    assert row["selected_model_path"] == str(adapted_path)
    assert "AdaBN" in row["selection"] and "15 unlabelled real hazy" in row["selection"]
    assert "val/REAL_FOGGY/hazy/mAP" in row["best"]
    adapted, source = load_untrusted(adapted_path), load_untrusted(source_path)
    assert adapted["adabn"]["source"] == source_path
    assert "optimizer_states" not in adapted  # weights only, nothing to resume
    state, before = adapted["state_dict"], source["state_dict"]
    bn = "net.enc_hazy.bn1"
    assert torch.equal(state[f"{bn}.weight"], before[f"{bn}.weight"])
    assert not torch.equal(state[f"{bn}.running_mean"], before[f"{bn}.running_mean"])
    reloaded = load_net(adapted_path).enc_hazy.bn1.running_mean  # the package's loader reads it
    assert torch.equal(reloaded, state[f"{bn}.running_mean"])

    summary = json.loads((root / "summary.json").read_text())
    assert [r["model"] for r in summary["rows"]] == ["baseline", "baseline_adabn"]
    assert summary["roles"]["adabn"] == "baseline_adabn"
    assert summary["rows"][1]["from"] == "baseline"
    assert "| baseline_adabn |" in (root / "summary.md").read_text()
    assert (root / "summary.png").is_file()
