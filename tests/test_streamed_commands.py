"""A streamed image folder (data.stream=true) through every command: pretrain with every kind of method
(the kNN monitor included), linear-eval, finetune and PART's figures. A stream decodes the same pixels as
the folder read whole, so each command must give what it gives on the folder read whole, without ever
decoding the whole folder."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_shape_splits
from safetensors.torch import load_file

from spatialssl.cli import main
from spatialssl.data import make_demo_images, readers
from spatialssl.data.stream import stream_images
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain

STATISTICS = ["data.mean=[0.3,0.3,0.3]", "data.std=[0.25,0.25,0.25]"]  # the same for both: measured ones would
# differ in the last bits (summed in other chunks), and the runs then by more
SMALL = ["model.backbone=resnet8", "method.patch_size=12", "train.batch_size=16", "train.epochs=2",
         "train.knn_monitor=16", "train.deterministic=true", "data.image_size=32", "data.workers=0", *STATISTICS]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shape_splits(tmp_path_factory.mktemp("streamed") / "shapes")


def never_decode_whole(monkeypatch):
    """A streamed command that read the whole folder into memory would fail here."""
    def refused(*args, **kwargs):
        raise AssertionError("the whole folder was decoded although data.stream=true")
    monkeypatch.setattr(readers, "decode_files", refused)


def method_weights(run):
    return {k: v for k, v in load_file(run / "last.ckpt").items() if k.startswith("method.")}


@pytest.mark.parametrize("method", [["method.name=sr", "method.num_patches=2"], ["method.name=deepcluster",
                                                                                "deepcluster.clusters=4"]])
def test_a_streamed_pretraining_equals_the_folder_read_whole(method, folder, tmp_path, monkeypatch):
    whole = pretrain(load_config(overrides=[*SMALL, *method, f"data.path={folder}"]), tmp_path / "whole",
                     progress=False).parent
    never_decode_whole(monkeypatch)
    streamed = pretrain(load_config(overrides=[*SMALL, *method, f"data.path={folder}", "data.stream=true"]),
                        tmp_path / "streamed", progress=False).parent
    ours, theirs = method_weights(streamed), method_weights(whole)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    monitored = [[row["knn_acc"] for row in read_metrics(run)] for run in (streamed, whole)]
    assert monitored[0] == monitored[1] and all(acc != "" for acc in monitored[0])  # the kNN monitor streams too


def test_linear_eval_finetune_and_figures_take_a_streamed_run(folder, tmp_path, monkeypatch, capsys):
    runs = {}
    for name, stream in (("whole", []), ("streamed", ["data.stream=true"])):
        if stream:
            never_decode_whole(monkeypatch)
        run = tmp_path / name
        pretrain(load_config(overrides=[*SMALL, "method.name=sr", f"data.path={folder}", *stream]), run,
                 progress=False)
        assert main(["linear-eval", "--checkpoint", str(run), "--data", str(folder), "--epochs", "3"]) == 0
        assert main(["finetune", "--checkpoint", str(run), "--data", str(folder), "--out", str(tmp_path / f"ft-{name}"),
                     "--epochs", "1", "--no-progress", "train.batch_size=16", "finetune.mixup=0",
                     "finetune.cutmix=0"]) == 0
        runs[name] = run
    capsys.readouterr()
    reports = [json.loads((runs[name] / "linear_eval-shapes.json").read_text()) for name in ("streamed", "whole")]
    assert reports[0]["linear"] == reports[1]["linear"] and reports[0]["knn"] == reports[1]["knn"]
    tuned = [json.loads((tmp_path / f"ft-{name}" / "finetune.json").read_text()) for name in ("streamed", "whole")]
    assert tuned[0]["test_acc"] == tuned[1]["test_acc"] and tuned[0]["kappa"] == tuned[1]["kappa"]


def test_part_figures_draw_from_a_streamed_unlabelled_folder(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    images = make_demo_images(24, seed=6).images.permute(0, 2, 3, 1).numpy()
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, image in enumerate(images):
        from PIL import Image

        Image.fromarray(image).save(flat / f"{i:03d}.jpg")
    never_decode_whole(monkeypatch)
    cfg = load_config(overrides=["method.name=part", "model.backbone=vit_tiny", "model.patch_size=8", "model.depth=1", "part.num_pairs=64",
                                 "train.batch_size=8", "train.epochs=1", "train.knn_monitor=0", "data.stream=true",
                                 "data.image_size=32", "data.workers=0", f"data.path={flat}"])
    run = pretrain(cfg, tmp_path / "part", progress=False).parent
    figure = tmp_path / "reconstruct.png"
    assert main(["reconstruct", "--checkpoint", str(run), "--data", str(flat), "--out", str(figure)]) == 0
    assert figure.stat().st_size > 0 and "position_error" in capsys.readouterr().out


def test_a_streams_subsets_and_statistics_are_those_of_the_folder_read_whole(folder):
    whole = readers.load_images(folder, "train", image_size=32, cache=False)
    streamed = stream_images(folder, "train", 32, workers=0)
    picked = streamed.subset(20, seed=1)
    assert torch.equal(picked.images_at(range(20)), whole.subset(20, seed=1).images)
    assert torch.equal(picked.labels, whole.subset(20, seed=1).labels)
    assert np.allclose(streamed.mean_std(), whole.mean_std(), atol=1e-12)
    assert len(streamed.subset(1000)) == len(streamed)


def _streamed_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    """pretrain -> extract_features(shard=True) -> linear-eval -> finetune on the stream (a folder's, or its
    shards'), in one of two processes; what this process decoded is recorded by index, and the shards it
    scanned."""
    from test_distributed import SETTINGS, _join, _leave

    from spatialssl import load_backbone
    from spatialssl.data import shards, stream
    from spatialssl.data.load import load_data
    from spatialssl.evaluate import extract_features

    _join(rank, world, port)
    decoded, scanned = [], []
    original, scan = stream._Files.__getitem__, shards.scan_shard
    stream._Files.__getitem__ = lambda self, i: (decoded.append(i), original(self, i))[1]
    shards.scan_shard = lambda path: (scanned.append(path), scan(path))[1]
    run, out = Path(out) / "run", Path(out)
    cfg = load_config(overrides=[*SETTINGS, *STATISTICS, "data.stream=true", "data.image_size=32", "data.workers=0",
                                 "data.cache=false", f"data.path={data}"])  # no kept shard index: each run scans
    pretrain(cfg, run, progress=False)
    trained, decoded[:] = sorted(decoded), []
    backbone, _ = load_backbone(run)
    features = extract_features(backbone, load_data(cfg, "train", data), cfg.data.mean, cfg.data.std, shard=True)
    torch.save({"trained": trained, "extracted": sorted(decoded), "features": features, "scanned": len(scanned)},
               out / f"rank{rank}.pt")
    assert main(["linear-eval", "--checkpoint", str(run), "--data", data, "--epochs", "2"]) == 0
    assert main(["finetune", "--checkpoint", str(run), "--data", data, "--out", str(out / "ft"), "--epochs", "1",
                 "--no-progress", "train.batch_size=16", "finetune.mixup=0", "finetune.cutmix=0"]) == 0
    _leave()


@pytest.mark.parametrize("source", ["folder", "shards"])
def test_two_processes_each_read_their_share_of_a_stream_through_every_command(source, folder, tmp_path):
    import torch.multiprocessing as mp
    from test_distributed import _free_port

    from spatialssl import load_backbone
    from spatialssl.evaluate import extract_features

    data = folder
    if source == "shards":
        data = tmp_path / "shards"
        assert main(["shard", "--data", str(folder), "--out", str(data), "--samples-per-shard", "10",
                     "--no-progress"]) == 0
    mp.spawn(_streamed_worker, args=(2, _free_port(), str(data), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # 56 images, global batch 16: 3 steps of 8 images per process, no image in both
    assert len(ranks[0]["trained"]) == len(ranks[1]["trained"]) == 24
    assert not set(ranks[0]["trained"]) & set(ranks[1]["trained"])
    assert ranks[0]["extracted"] == list(range(28)) and ranks[1]["extracted"] == list(range(28, 56))
    if source == "shards":  # one process scans the 6 shards, for pretrain and for the features; the other is
        assert ranks[0]["scanned"] == 12 and ranks[1]["scanned"] == 0  # handed what it listed
    backbone, cfg = load_backbone(tmp_path / "run")
    alone = extract_features(backbone, stream_images(folder, "train", 32, workers=0), cfg.data.mean, cfg.data.std)
    assert all(torch.allclose(r["features"], alone, atol=1e-5) for r in ranks)  # all have the whole, in order
    reports = sorted(p.name for p in (tmp_path / "run").glob("linear_eval-*.json"))
    assert reports == [f"linear_eval-{data.name}.json"]  # rank 0 alone reported
    assert json.loads((tmp_path / "ft" / "finetune.json").read_text())["test_acc"] >= 0
