"""Outputs replace only what rvsl itself wrote: ONNX exports, run folders, feature files and
converted checkpoints are refused by name when a user's file is in the way."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rvsl.cli.export import main as export_main
from rvsl.export import export_onnx
from rvsl.models import RVSLNet, save_net
from rvsl.utils.config import RunConfigError
from rvsl.utils.run_folder import MARK, claim_features_file, claim_run_folder


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_export_refuses_to_replace_a_file_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "dehaze.onnx").write_bytes(b"my own model")
    with pytest.raises(FileExistsError, match=r"refusing to replace dehaze\.onnx"):
        export_onnx(None, tmp_path, 32)  # refused before the network is touched
    (tmp_path / "dehaze.onnx").unlink()
    (tmp_path / "export.json").write_text(json.dumps({"my": "notes"}))
    with pytest.raises(FileExistsError, match=r"export\.json"):
        export_onnx(None, tmp_path, 32)
    assert (tmp_path / "export.json").read_text() == '{"my": "notes"}'


def test_rvsl_export_names_the_file_in_the_way_with_exit_2(tmp_path: Path, capsys) -> None:
    save_net(RVSLNet("resnet18_ibn_a", num_classes=4, generator_width=8), tmp_path / "n.ckpt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/embed_hazy.onnx").write_bytes(b"my own model")
    assert export_main([f"checkpoint={tmp_path / 'n.ckpt'}", f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refusing to replace embed_hazy.onnx" in err
    assert (tmp_path / "out/embed_hazy.onnx").read_bytes() == b"my own model"


def test_a_second_export_into_the_same_folder_replaces_only_its_own_files(tmp_path: Path):
    torch.manual_seed(0)
    net = RVSLNet("resnet18_ibn_a", num_classes=4, generator_width=8)
    export_onnx(net, tmp_path, 32, branch="hazy")
    export_onnx(net, tmp_path, 32, branch="clear")
    written = json.loads((tmp_path / "export.json").read_text())["written"]
    assert sorted(written) == ["dehaze.onnx", "embed_clear.onnx", "embed_hazy.onnx"]
    assert written == {k: v for k, v in hashes(tmp_path).items() if k.endswith(".onnx")}
    export_onnx(net, tmp_path, 32, branch="hazy")  # both embeddings stay replaceable


# ----------------------------------------------------------------------------- run folders


def test_a_run_folder_holding_a_users_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    (tmp_path / ".hydra").mkdir()
    with pytest.raises(RunConfigError, match=r"hydra\.run\.dir=.*\(thesis\.tex\)"):
        claim_run_folder(tmp_path, "rvsl-train", own=("train.log",))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "thesis.tex"]


def test_a_fresh_or_earlier_run_folder_is_claimed(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / "train.log").write_text("")
    claim_run_folder(fresh, "rvsl-train", own=("train.log",))
    (fresh / "results.json").write_text("{}")
    claim_run_folder(fresh, "rvsl-eval")  # marked: a later run may write there again
    older = tmp_path / "older"  # a run folder from before the mark
    (older / "checkpoints").mkdir(parents=True)
    (older / "checkpoints/last.ckpt").write_bytes(b"")
    (older / "metrics.csv").write_text("")
    claim_run_folder(older, "rvsl-train")
    assert (fresh / MARK).is_file() and (older / MARK).is_file()


def test_export_features_never_replaces_a_file_rvsl_eval_did_not_write(tmp_path: Path):
    np.savez(tmp_path / "mine.npz", weights=np.zeros(3))
    with pytest.raises(RunConfigError, match=r"mine\.npz already exists"):
        claim_features_file(tmp_path / "mine.npz")
    (tmp_path / "notes.npz").write_text("not even a zip")
    with pytest.raises(RunConfigError, match=r"notes\.npz"):
        claim_features_file(tmp_path / "notes")  # numpy would append .npz
    np.savez(tmp_path / "ours.npz", SYN_hazy_features=np.zeros(2), SYN_pids=np.zeros(2))
    assert claim_features_file(tmp_path / "ours.npz") == tmp_path / "ours.npz"
