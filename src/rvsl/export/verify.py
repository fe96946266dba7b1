"""ONNX Runtime against PyTorch: the check every export runs before it returns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rvsl.data.transforms import size_pair
from rvsl.export.onnx import _cpu_eval_copy, require
from rvsl.models.rvsl_net import RVSLNet


def _session(path: Path):
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_onnx(
    net: RVSLNet,
    paths: dict[str, Path],
    image_size: int | Sequence[int] = 256,
    batch: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Max abs error of ONNX Runtime (CPU) against PyTorch at batch sizes 1 and ``batch``.

    Random uniform [0, 1) inputs; compares with ``RVSLNet.embed`` and ``RVSLNet.dehaze``
    themselves. Keys: ``features@1``, ``features@<batch>``, ``dehazed@1``, ``dehazed@<batch>``
    (only for the models present in ``paths``).
    """
    if batch < 2:
        raise ValueError(f"batch must be at least 2 (1 is always checked), got {batch}")
    h, w = size_pair(image_size)
    cpu_net = _cpu_eval_copy(net)
    gen = torch.Generator().manual_seed(seed)
    errors: dict[str, float] = {}
    if "embed" in paths:
        branch = Path(paths["embed"]).stem.removeprefix("embed_")
        session = _session(Path(paths["embed"]))
        for n in (1, batch):
            images = torch.rand(n, 3, h, w, generator=gen)
            with torch.inference_mode():
                expected = cpu_net.embed(images, branch)[f"feat_{branch}"].numpy()
            (got,) = session.run(["features"], {"images": images.numpy()})
            errors[f"features@{n}"] = _max_abs(got, expected)
    if "dehaze" in paths:
        session = _session(Path(paths["dehaze"]))
        for n in (1, batch):
            hazy = torch.rand(n, 3, h, w, generator=gen)
            with torch.inference_mode():
                expected = cpu_net.dehaze(hazy).numpy()
            (got,) = session.run(["dehazed"], {"hazy": hazy.numpy()})
            errors[f"dehazed@{n}"] = _max_abs(got, expected)
    return errors


def _max_abs(got: np.ndarray, expected: np.ndarray) -> float:
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got - expected).max())
