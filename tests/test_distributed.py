"""torchrun-style training on CPU with gloo: two processes equal one on the same global batch."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from spatialssl.data import make_demo_images
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain

# Deterministic augmentation (full-image crops, no flip or colour), so only the split of the
# batch differs; a ViT (LayerNorm, no batch statistics: PyTorch's SyncBatchNorm is GPU-only);
# SGD makes the weights after the step a linear function of the gradients.
SETTINGS = ["method.name=supervised", "model.backbone=vit_tiny", "model.depth=1", "train.batch_size=16",
            "train.epochs=1", "train.knn_monitor=0", "train.device=cpu", "optim.name=sgd", "optim.lr=0.1",
            "augment.scale=[1.0,1.0]", "augment.ratio=[1.0,1.0]", "augment.flip_p=0", "augment.jitter_p=0",
            "augment.gray_p=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    pretrain(load_config(overrides=SETTINGS), out, train_set=make_demo_images(32, seed=4), progress=False)
    torch.distributed.destroy_process_group()


def test_two_processes_equal_one_on_the_same_global_batch(tmp_path):
    single = pretrain(load_config(overrides=SETTINGS), tmp_path / "one", train_set=make_demo_images(32, seed=4),
                      progress=False)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    one, two = load_file(single), load_file(tmp_path / "two" / "last.ckpt")
    weights = [k for k in one if k.startswith("method.") and one[k].is_floating_point()]
    assert weights and all(torch.allclose(one[k], two[k], atol=1e-5) for k in weights)
    losses = [float(read_metrics(tmp_path / run)[0]["loss"]) for run in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)  # the logged loss is the mean over processes


def test_each_process_takes_its_own_share_of_the_global_batch():
    from spatialssl.engine.distributed import Distributed

    shares = [Distributed(rank, 4).shard(torch.arange(8)).tolist() for rank in range(4)]
    assert shares == [[0, 1], [2, 3], [4, 5], [6, 7]]  # disjoint, covering: each image once per epoch
    assert Distributed(0, 1).shard(torch.arange(8)).tolist() == list(range(8))
