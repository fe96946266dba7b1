"""Speed options: channels_last, torch.compile and SyncBatchNorm change speed, never results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rvsl.models.checkpoint import load_untrusted
from rvsl.models.rvsl_net import RVSLNet
from rvsl.training.module import RVSLModule
from rvsl.training.train import train
from rvsl.utils.config import RunConfigError


def _module(**options) -> RVSLModule:
    torch.manual_seed(0)
    return RVSLModule(RVSLNet("resnet18_ibn_a", num_classes=5), stage="real_haze", **options)


def _convolution_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in module.named_parameters() if p.dim() == 4}


def test_channels_last_stores_every_convolution_weight_in_nhwc_order():
    weights = _convolution_weights(_module(channels_last=True))
    assert weights
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights.values())


def test_channels_last_gives_the_same_outputs_and_gradients_as_the_default_layout():
    # float64: only the summation order differs between layouts, so results agree to ~1e-12
    # (in float32, training-mode BatchNorm over 4 images amplifies rounding to ~1e-4)
    default, nhwc = _module().double(), _module(channels_last=True).double()
    clear, hazy = torch.rand(2, 4, 3, 32, 32, dtype=torch.float64).unbind(0)
    batch = nhwc._in_memory_layout({"syn": {"clear": clear, "hazy": hazy, "pid": torch.ones(4)}})
    assert batch["syn"]["clear"].is_contiguous(memory_format=torch.channels_last)
    assert batch["syn"]["pid"].dim() == 1  # labels are left alone
    syn = batch["syn"]
    results = []
    for module, images in ((default, (clear, hazy)), (nhwc, (syn["clear"], syn["hazy"]))):
        out = module.net(*images)
        (out["global_clear"].sum() + out["gen_clear"].mean()).backward()
        results.append((out, module.net.enc_hazy.conv1.weight.grad))
    (out_a, grad_a), (out_b, grad_b) = results
    for key in ("global_clear", "global_hazy", "gen_clear", "gen_hazy"):
        torch.testing.assert_close(out_a[key], out_b[key], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-9, atol=1e-10)


def test_a_channels_last_state_dict_loads_into_a_default_module_value_for_value():
    state = _module(channels_last=True).state_dict()
    plain = _module()
    torch.manual_seed(1)
    for p in plain.parameters():
        nn.init.normal_(p)
    plain.load_state_dict(state)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_compiling_replaces_the_calls_of_the_convolutional_parts_only():
    module = _module(compile=True, compile_options={"backend": "eager"})
    keys = set(module.state_dict())
    module.compile_networks()
    net = module.net
    compiled = [net.enc_clear, net.enc_hazy, net.trunk, net.gen_clear, net.gen_hazy]
    compiled += [module.disc_clear, module.disc_hazy]
    assert all(part._compiled_call_impl is not None for part in compiled)
    assert net.bnneck._compiled_call_impl is None and net.classifier._compiled_call_impl is None
    assert set(module.state_dict()) == keys  # no "_orig_mod." prefixes in checkpoints


def test_a_compiled_channels_last_fit_trains_and_writes_an_ordinary_checkpoint(compose_train):
    # aot_eager traces forward and backward like inductor but needs no C++ compiler (fast)
    cfg = compose_train(
        "stage=real_haze",
        "model.compile=true",
        "model.compile_options.backend=aot_eager",
        "model.channels_last=true",
        "trainer.limit_train_batches=2",
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert 0 <= metrics["val/REAL_FOGGY/hazy/mAP"] <= 1  # validation ran compiled too
    state = load_untrusted(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["state_dict"]
    eager = RVSLModule(RVSLNet("resnet18_ibn_a", num_classes=6), stage="real_haze")
    assert set(state) == set(eager.state_dict())
    eager.load_state_dict(state)  # an eager, default-layout module takes it as it is


def test_sync_batchnorm_on_cpu_processes_is_refused_before_they_start(compose_train):
    cfg = compose_train("trainer=ddp_cpu", "trainer.sync_batchnorm=true")
    with pytest.raises(RunConfigError, match="sync_batchnorm=true needs GPUs"):
        train(cfg)


def test_sync_batchnorm_converts_every_batchnorm_and_keeps_instance_norms_and_keys():
    module = _module()
    keys = set(module.state_dict())
    batchnorms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    instancenorms = sum(isinstance(m, nn.InstanceNorm2d) for m in module.modules())
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    # what Lightning's TorchSyncBatchNorm does to the module under trainer.sync_batchnorm=true
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == batchnorms > 0
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in synced.modules()) == instancenorms > 0
    assert set(synced.state_dict()) == keys
    assert {n for n, p in synced.named_parameters() if not p.requires_grad} == frozen
