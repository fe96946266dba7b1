"""Speed options change speed, never results; `auto` picks what pays on the run's device."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from rvsl.data.datamodule import RVSLDataModule
from rvsl.models.checkpoint import load_untrusted
from rvsl.models.rvsl_net import RVSLNet
from rvsl.training.module import RVSLModule
from rvsl.training.optim import build_optimizer
from rvsl.training.speed import apply_host_settings, device_defaults, resolve
from rvsl.training.train import build_model, build_trainer, train
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


# ---------------------------------------------------------------- what `auto` picks per device
def test_auto_turns_on_what_pays_on_each_device():
    assert device_defaults(on_gpu=False) == {
        "channels_last": False,  # measured slower on CPUs
        "compile": False,
        "fused_optimizers": False,  # within the noise on CPUs
        "keep_freed_memory": True,
    }
    assert device_defaults(on_gpu=True) == {
        "channels_last": True,
        "compile": True,
        "fused_optimizers": True,
        "keep_freed_memory": False,  # CUDA tensors live in CUDA's own caching allocator
    }
    assert resolve("auto", "compile", on_gpu=True) is True
    assert resolve(False, "compile", on_gpu=True) is False  # a set value is kept
    with pytest.raises(ValueError, match="compile must be true, false or auto, not 'fast'"):
        resolve("fast", "compile", on_gpu=False)


def test_a_cpu_run_gets_none_of_the_gpu_options_unless_asked(compose_train):
    model = build_model(compose_train("stage=real_haze"), 6)
    assert not model.hparams.channels_last and not model.hparams.compile
    assert not model.hparams.fused_optimizers
    assert not any(o["optimizer"].defaults["fused"] for o in model.configure_optimizers())
    fused = build_model(compose_train("stage=real_haze", "model.fused_optimizers=true"), 6)
    assert [o["optimizer"].defaults["fused"] for o in fused.configure_optimizers()] == [True] * 2


def test_a_gpu_run_gets_nhwc_and_compile_chosen_at_build_time(compose_train, monkeypatch):
    cfg = compose_train("stage=real_haze", "trainer.accelerator=auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = build_model(cfg, 6)
    assert model.hparams.channels_last and model.hparams.compile and model.hparams.fused_optimizers
    overridden = build_model(compose_train("trainer.accelerator=auto", "model.compile=false"), 6)
    assert not overridden.hparams.compile  # each option overridable


def test_pinned_batches_are_asked_for_only_when_there_is_a_gpu(tiny_fvrid, monkeypatch):
    def datamodule(pin_memory):
        return RVSLDataModule(root=str(tiny_fvrid), image_size=(32, 32), pin_memory=pin_memory)

    assert datamodule("auto").pin_memory is torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert datamodule("auto").pin_memory is True
    assert datamodule(False).pin_memory is False
    with pytest.raises(ValueError, match="pin_memory must be true, false or auto"):
        datamodule("yes")


# ---------------------------------------------------------------- fused optimizer steps
def test_a_fused_adam_step_is_the_loop_adam_step():
    torch.manual_seed(0)
    params = [torch.randn(64, 32), torch.randn(32)]
    grads = [torch.randn_like(p) for p in params]
    results = []
    for fused in (False, True):
        weights = [nn.Parameter(p.clone()) for p in params]
        opt = build_optimizer(
            partial(torch.optim.Adam, lr=1e-3, weight_decay=5e-4), weights, fused=fused
        )
        for _ in range(3):
            for w, g in zip(weights, grads, strict=True):
                w.grad = g.clone()
            opt.step()
        results.append(weights)
    for loop, fused in zip(*results, strict=True):
        torch.testing.assert_close(fused, loop, rtol=1e-6, atol=1e-7)


def test_an_optimizer_without_a_fused_kernel_or_with_its_own_choice_is_built_as_it_is():
    weights = [nn.Parameter(torch.zeros(3))]
    plain = build_optimizer(lambda params: torch.optim.SGD(params, lr=0.1), weights, fused=True)
    assert not plain.defaults.get("fused")
    own = build_optimizer(partial(torch.optim.Adam, foreach=True), weights, fused=True)
    assert own.defaults["foreach"] and not own.defaults["fused"]


# ---------------------------------------------------------------- memory
def test_gradients_are_freed_after_every_applied_update(compose_train):
    seen = []

    class GradsAfterStep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(sum(p.grad is not None for p in pl_module.parameters()))

    cfg = compose_train("stage=real_haze", "trainer.limit_train_batches=2")
    model = build_model(cfg, 6)
    trainer = build_trainer(
        cfg.trainer, logger=False, enable_checkpointing=False, callbacks=[GradsAfterStep()]
    )
    trainer.fit(model, datamodule=hydra.utils.instantiate(cfg.data))
    assert seen == [0, 0]  # nothing held into the next step's forward


def test_a_freed_block_is_reused_without_page_faults_once_freed_memory_is_kept():
    # in a child process: the malloc settings are process-wide. A 64 MiB block, written and
    # freed five times, straight through the C library (what PyTorch's CPU allocator calls).
    probe = textwrap.dedent(
        """
        import ctypes, resource, sys
        from rvsl.utils.memory import keep_freed_memory
        if sys.argv[1] == "keep":
            assert keep_freed_memory()
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        size = 64 * 2**20
        faults = []
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = libc.malloc(size)
            libc.memset(block, 1, size)
            libc.free(block)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(sum(faults[1:]))
        """
    )
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True
            ).stdout
        )
        for mode in ("default", "keep")
    }
    assert faults["default"] > 4 * 16_000  # unmapped on free, 16,384 pages faulted in again
    assert faults["keep"] < 100  # kept in the heap and reused


def test_a_mistyped_keep_freed_memory_setting_is_a_one_line_error(compose_train):
    with pytest.raises(RunConfigError, match="keep_freed_memory must be true, false or auto"):
        apply_host_settings(compose_train("keep_freed_memory=always"))
