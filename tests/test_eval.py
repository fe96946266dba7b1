"""``rvsl-eval`` (``rvsl.evaluation.run``) and ``rvsl.evaluation.evaluate``: the standard protocol
on every test set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from rvsl.data.datamodule import RVSLDataModule
from rvsl.evaluation.evaluate import (
    EvalOptions,
    EvaluationError,
    SplitFeatures,
    evaluate,
    extract_features,
    rank_split,
)
from rvsl.evaluation.run import run
from rvsl.metrics import evaluate_rank, pairwise_distance
from rvsl.models.checkpoint import CheckpointError, save_net
from rvsl.models.rvsl_net import RVSLNet
from rvsl.utils.config import RunConfigError


@pytest.fixture(scope="module")
def tiny_net() -> RVSLNet:
    torch.manual_seed(0)
    net = RVSLNet("resnet18_ibn_a", num_classes=6, generator_width=8)
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for _ in range(3):
            net(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    return net.eval()


@pytest.fixture
def checkpoint(tiny_net, tmp_path):
    path = tmp_path / "tiny.ckpt"
    save_net(tiny_net, path)
    return path


@pytest.fixture
def datamodule(tiny_fvrid):
    return RVSLDataModule(
        tiny_fvrid, image_size=(32, 32), num_instances=2, batch_size=4, num_workers=0,
        eval_batch_size=5,
    )  # fmt: skip


def test_every_test_set_is_ranked_through_both_branches_with_the_standard_metrics(
    tiny_net, datamodule
):
    results = evaluate(tiny_net, datamodule)
    assert list(results["test_sets"]) == ["SYN", "REAL_CLEAR", "REAL_FOGGY"]
    for per_set in results["test_sets"].values():
        for branch in ("hazy", "clear"):
            metrics = per_set[branch]
            assert set(metrics) >= {"mAP", "rank1", "rank5", "rank10", "mINP"}
            assert 0 < metrics["mAP"] <= 1 and 0 < metrics["mINP"] <= 1  # fractions
            assert metrics["rank1"] <= metrics["rank5"] <= metrics["rank10"] <= 1
    dehaze = results["test_sets"]["SYN"]["dehaze"]
    assert dehaze["psnr"] > 0 and -1 <= dehaze["ssim"] <= 1
    assert "dehaze" not in results["test_sets"]["REAL_FOGGY"]  # no ground truth there


def test_metrics_are_evaluate_rank_on_euclidean_distances_of_post_bnneck_features(
    tiny_net, tiny_fvrid
):
    datamodule = RVSLDataModule(
        tiny_fvrid, image_size=(32, 32), num_instances=2, batch_size=4, num_workers=0,
        eval_batch_size=5, test_sets=["REAL_FOGGY"],
    )  # fmt: skip
    datamodule.setup("test")
    loader = datamodule.test_dataloader()[0]
    feats, pids, camids, is_query = [], [], [], []
    with torch.no_grad():
        for batch in loader:
            feats.append(tiny_net.embed(batch["image"], "hazy")["feat_hazy"])
            pids.append(batch["pid"])
            camids.append(batch["camid"])
            is_query.append(batch["is_query"])
    feats, pids, camids = torch.cat(feats), torch.cat(pids), torch.cat(camids)
    q = torch.cat(is_query)
    expected = evaluate_rank(
        pairwise_distance(feats[q], feats[~q]), pids[q], pids[~q], camids[q], camids[~q]
    )
    results = evaluate(tiny_net, datamodule, EvalOptions(branches=("hazy",)))
    metrics = results["test_sets"]["REAL_FOGGY"]["hazy"]
    assert metrics["mAP"] == pytest.approx(expected["mAP"])
    assert metrics["mINP"] == pytest.approx(expected["mINP"])
    assert metrics["rank1"] == pytest.approx(expected["cmc"][0])


def test_flip_averages_each_feature_with_that_of_the_mirrored_image(tiny_net):
    images = torch.rand(3, 3, 32, 32)
    batch = {"image": images, "pid": torch.arange(3), "camid": torch.zeros(3)}
    batch["is_query"] = torch.tensor([True, False, False])
    split = extract_features(tiny_net, [batch], ("hazy",), flip=True)
    with torch.no_grad():
        plain = tiny_net.embed(images, "hazy")["feat_hazy"]
        mirrored = tiny_net.embed(images.flip(-1), "hazy")["feat_hazy"]
    torch.testing.assert_close(split.features["hazy"], (plain + mirrored) / 2)


def split_of(features, pids, camids, num_query):
    is_query = torch.arange(len(pids)) < num_query
    return SplitFeatures({"hazy": features}, torch.tensor(pids), torch.tensor(camids), is_query)


def test_cosine_distance_ranks_like_euclidean_on_normalised_features():
    torch.manual_seed(1)
    features = torch.randn(30, 8) * torch.rand(30, 1) * 5  # norms differ a lot
    split = split_of(features, list(range(10)) * 3, [0] * 10 + [1] * 20, 10)
    cosine, _ = rank_split(split, "hazy", EvalOptions(metric="cosine"))
    normalised, _ = rank_split(split, "hazy", EvalOptions(normalize=True))
    plain, _ = rank_split(split, "hazy", EvalOptions())
    assert cosine["mAP"] == pytest.approx(normalised["mAP"])
    assert cosine["mAP"] != pytest.approx(plain["mAP"])


def test_re_ranking_replaces_the_distance_when_asked():
    torch.manual_seed(2)
    features = torch.randn(10, 4).repeat(4, 1) + 0.8 * torch.randn(40, 4)
    split = split_of(features, list(range(10)) * 4, [0] * 10 + [1] * 30, 10)
    plain, plain_dist = rank_split(split, "hazy", EvalOptions())
    reranked, reranked_dist = rank_split(split, "hazy", EvalOptions(rerank=True, k1=6, k2=3))
    assert plain_dist.shape == reranked_dist.shape == (10, 30)
    assert not torch.allclose(plain_dist, reranked_dist)
    assert reranked["num_valid_queries"] == plain["num_valid_queries"] == 10


def test_a_query_set_with_no_identity_in_the_gallery_is_an_error_naming_the_set():
    split = split_of(torch.randn(6, 4), [1, 2, 3, 4, 5, 6], [0] * 6, 3)
    with pytest.raises(EvaluationError, match="REAL_FOGGY: no query has a matching identity"):
        rank_split(split, "hazy", EvalOptions(), "REAL_FOGGY")


def test_an_empty_query_or_gallery_is_an_error():
    split = split_of(torch.randn(4, 4), [1, 1, 2, 2], [0, 1, 0, 1], 0)
    with pytest.raises(EvaluationError, match="SYN has 0 query and 4 gallery images"):
        rank_split(split, "hazy", EvalOptions(), "SYN")


def test_options_are_checked():
    with pytest.raises(EvaluationError, match=r"eval\.branches"):
        EvalOptions(branches=("foggy",))
    with pytest.raises(EvaluationError, match=r"eval\.metric"):
        EvalOptions(metric="manhattan")


def test_eval_writes_results_pictures_and_exported_features(compose_eval, checkpoint, tmp_path):
    features_path = tmp_path / "features.npz"
    cfg = compose_eval(
        f"checkpoint={checkpoint}", f"export_features={features_path}", "eval.flip=true"
    )
    done = run(cfg)
    results = done.results
    out = tmp_path / "run"
    assert done.results_file == out / "results.json"
    assert json.loads((out / "results.json").read_text())["test_sets"] == results["test_sets"]
    table = (out / "results.md").read_text()
    assert "| REAL_FOGGY | hazy |" in table and "SSIM" in table
    assert done.table in table
    foggy = results["test_sets"]["REAL_FOGGY"]["hazy"]  # fractions; the table shows percent
    assert f"| REAL_FOGGY | hazy | {100 * foggy['mAP']:.2f} | {100 * foggy['rank1']:.2f} |" in table
    pictures = sorted(p.name for p in (out / "pictures").iterdir())
    assert "rank_list_REAL_FOGGY_hazy.png" in pictures and "dehazing_SYN.png" in pictures
    exported = np.load(features_path)
    num_images = len(exported["REAL_FOGGY_pids"])
    assert exported["REAL_FOGGY_hazy_features"].shape == (num_images, 512)
    assert exported["REAL_FOGGY_paths"][0].endswith(".png")
    assert (
        exported["REAL_FOGGY_is_query"].sum()
        == results["test_sets"]["REAL_FOGGY"]["hazy"]["num_query"]
    )


def test_one_test_set_and_one_branch_can_be_chosen(compose_eval, checkpoint):
    cfg = compose_eval(
        f"checkpoint={checkpoint}", "test_set=real_foggy", "eval.branches=[clear]", "pictures=false"
    )
    results = run(cfg).results
    assert list(results["test_sets"]) == ["REAL_FOGGY"]
    assert list(results["test_sets"]["REAL_FOGGY"]) == ["clear"]


def test_the_held_out_haze_is_evaluated_on_request(compose_eval, checkpoint, tiny_fvrid, tmp_path):
    root = tmp_path / "with_heldout"
    shutil.copytree(tiny_fvrid, root)
    for split in ("query_foggy", "gallery_foggy"):  # any hazed copy of the real test images
        shutil.copytree(root / "FVRID_real" / split, root / "FVRID_heldout" / split)
    cfg = compose_eval(
        f"checkpoint={checkpoint}", "test_set=real_heldout", "pictures=false", f"data.root={root}"
    )
    results = run(cfg).results
    assert list(results["test_sets"]) == ["REAL_HELDOUT"]
    foggy = run(compose_eval(f"checkpoint={checkpoint}", "test_set=REAL_FOGGY", "pictures=false"))
    assert results["test_sets"]["REAL_HELDOUT"] == foggy.results["test_sets"]["REAL_FOGGY"]


def test_an_unknown_test_set_is_refused_with_the_valid_names(compose_eval, checkpoint):
    with pytest.raises(RunConfigError, match="test_set=FOGGY: unknown test set; expected one"):
        run(compose_eval(f"checkpoint={checkpoint}", "test_set=FOGGY"))


def test_a_missing_or_foreign_checkpoint_is_refused(compose_eval, tmp_path):
    with pytest.raises(RunConfigError, match="no such file"):
        run(compose_eval(f"checkpoint={tmp_path / 'nope.ckpt'}"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="rvsl-convert"):
        run(compose_eval(f"checkpoint={foreign}"))


def test_a_checkpoint_of_the_wrong_architecture_is_refused(compose_eval, tiny_net, tmp_path):
    path = tmp_path / "wrong.ckpt"
    save_net(tiny_net, path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["rvsl"]["net"]["backbone"] = "resnet50_ibn_a"  # the weights are a ResNet-18's
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        run(compose_eval(f"checkpoint={path}"))


def test_a_test_set_with_an_empty_gallery_folder_is_refused(
    compose_eval, checkpoint, tiny_fvrid, tmp_path
):
    root = tmp_path / "FVRID"
    shutil.copytree(tiny_fvrid, root)
    for image in (root / "FVRID_real" / "gallery_foggy").iterdir():
        image.unlink()
    with pytest.raises(RunConfigError, match="gallery_foggy"):
        run(compose_eval(f"checkpoint={checkpoint}", f"data.root={root}"))


@pytest.mark.slow
def test_the_command_exits_2_with_one_sentence_on_bad_input(tmp_path):
    command = [sys.executable, "-m", "rvsl.cli.eval", f"checkpoint={tmp_path / 'x.ckpt'}"]
    command.append(f"hydra.run.dir={tmp_path / 'run'}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "rvsl-eval: checkpoint=" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_the_metrics_and_pictures_go_to_the_chosen_logger(compose_eval, checkpoint, tmp_path):
    cfg = compose_eval(
        f"checkpoint={checkpoint}", "test_set=REAL_FOGGY", "eval.branches=[hazy]", "logger=csv"
    )
    run(cfg)
    logged = tmp_path / "run" / "csv"
    header = (logged / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "test/REAL_FOGGY/hazy/mAP" in header
    pictures = sorted(p.name for p in (logged / "pictures").iterdir())
    assert any(name.startswith("pictures_rank_list_REAL_FOGGY_hazy") for name in pictures)


@pytest.mark.slow
def test_two_gloo_processes_evaluate_exactly_what_one_process_does(
    compose_eval, checkpoint, tiny_fvrid, tmp_path
):
    one = run(compose_eval(f"checkpoint={checkpoint}", "test_set=real_foggy", "pictures=false"))
    command = [
        sys.executable, "-m", "rvsl.cli.eval", f"checkpoint={checkpoint}", "data=fvrid",
        f"data.root={tiny_fvrid}", "data.image_size=[32,32]", "data.num_workers=0",
        "data.pin_memory=false", "data.eval_batch_size=16", "device=cpu", "devices=2",
        "test_set=real_foggy", "pictures=false", f"hydra.run.dir={tmp_path / 'ddp'}",
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("results:") == 1  # rank 0 reports; rank 1 only embeds
    two = json.loads((tmp_path / "ddp" / "results.json").read_text())
    for branch, metrics in one.results["test_sets"]["REAL_FOGGY"].items():
        assert two["test_sets"]["REAL_FOGGY"][branch] == pytest.approx(metrics)
    assert not (tmp_path / "ddp" / ".shards").exists()
