"""torchrun-style training on CPU with gloo: two processes equal one on the same global batch."""
import json
import os
import socket
from functools import partial

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

import spatialssl.methods.part
from spatialssl.data import make_demo_images
from spatialssl.engine import distributed
from spatialssl.engine.build import build_method
from spatialssl.engine.checks import check_processes
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError

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


def _leave() -> None:
    """Every process reaches the end before any tears gloo down: a process that destroys the group while a
    peer is still writing its results can abort (SIGABRT, "terminate called without an active exception")."""
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    _join(rank, world, port)
    pretrain(load_config(overrides=SETTINGS), out, train_set=make_demo_images(32, seed=4), progress=False)
    _leave()


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


# RR, SR and PART: each of two processes on its share of a global batch (DistributedDataParallel averaging
# the gradients) computes what one process computes on the whole batch. ViTs (LayerNorm): the backbone's
# BatchNorm statistics are per process by design (README). Per-process images (also one, which RR and SR
# allow since they pair over the global batch), and the settings of each method:
PAIRED = {"rr": ["method.name=rr", "method.augmentations=3"],
          "sr": ["method.name=sr", "method.augmentations=2", "method.num_patches=3", "method.patch_size=12"],
          "part": ["method.name=part", "part.num_pairs=10"]}
# SimCLR's negatives and the combinations' contrastive terms span the global batch too.
PAIRED.update({"simclr": ["method.name=simclr"],
               "sr_simclr": ["method.name=sr_simclr", "method.num_patches=3", "method.patch_size=12"],
               "part_contrastive": ["method.name=part_contrastive", "part.num_pairs=10"]})
CASES = [("rr", 3), ("sr", 3), ("part", 3), ("rr", 1), ("sr", 1),
         ("simclr", 3), ("sr_simclr", 3), ("part_contrastive", 3), ("simclr", 1)]
MODEL = ["model.backbone=vit_tiny", "model.depth=1", "model.patch_size=8", "model.input_size=[32,32]",
         "model.in_chans=3"]


def share(x: torch.Tensor, blocks: int, rank: int, world: int) -> torch.Tensor:
    """Process ``rank``'s rows of a block-major tensor of the global batch (row ``k * B + b``; image-major: one
    block): those of the contiguous share of the images that the loop gives it."""
    return x.unflatten(0, (blocks, world, -1))[:, rank].flatten(0, 1)


SAMPLE_PAIRS = spatialssl.methods.part.sample_pairs


class GlobalDraw:
    """A sampler in process ``rank``: draws for the whole global batch with the step's generator, as one process
    does, and keeps this process's share, so both settings see the same views, patches and boxes."""

    def __init__(self, sampler, images: torch.Tensor, keep):
        self.sampler, self.images, self.keep = sampler, images, keep

    def __getattr__(self, name):  # num_views, num_patches
        return getattr(self.sampler, name)

    def __call__(self, images, generator):
        return self.keep(self.sampler(self.images, generator))


def draw_globally(method, images: torch.Tensor, rank: int, world: int) -> None:
    """The samplers of ``method`` (and PART's pair sampler) replaced by their GlobalDraw."""
    mine = partial(share, rank=rank, world=world)
    if hasattr(method, "views"):  # augmentation-major
        views = method.views.num_views
        method.views = GlobalDraw(method.views, images, lambda drawn: mine(drawn, views))
    if hasattr(method, "patches"):  # patch-major, and their centres N x B x 2
        patches = method.patches.num_patches
        method.patches = GlobalDraw(method.patches, images, lambda drawn: (mine(drawn[0], patches),
                                                                          mine(drawn[1].flatten(0, 1), patches)))
    if hasattr(method, "boxes"):  # image-major, as PART's pairs
        method.boxes = GlobalDraw(method.boxes, images, lambda drawn: tuple(mine(x, 1) for x in drawn))
        pairs = SAMPLE_PAIRS  # the unpatched one: a worker draws for PART and PART + contrastive
        spatialssl.methods.part.sample_pairs = lambda batch, *rest: mine(pairs(len(images), *rest), 1)


def loss_and_gradients(name: str, per_process: int, rank: int = 0, world: int = 1) -> tuple:
    """(loss as the loop logs it, i.e. the mean over processes; the parameters' gradients) of one step."""
    images = torch.randint(0, 256, (2 * per_process, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    method = build_method(load_config(overrides=MODEL + PAIRED[name]), [0.5] * 3, [0.25] * 3)
    model = method
    if world > 1:
        draw_globally(method, images, rank, world)
        model = torch.nn.parallel.DistributedDataParallel(method)
    loss, _ = model(share(images, 1, rank, world), None, torch.Generator().manual_seed(1))
    loss.backward()
    loss = loss.detach().clone()
    if world > 1:
        torch.distributed.all_reduce(loss)
        loss /= world
    return float(loss), {key: p.grad for key, p in method.named_parameters() if p.grad is not None}


def _paired_worker(rank: int, world: int, port: int, per_process: int, out: str) -> None:
    _join(rank, world, port)
    torch.distributed.init_process_group("gloo")
    results = {name: loss_and_gradients(name, per_process, rank, world) for name, n in CASES if n == per_process}
    if rank == 0:
        torch.save(results, out)
    _leave()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """(name, images per process) -> what two processes computed; one spawn per batch share, so the methods
    that need no gather still answer when the others fail."""
    spawned = {}

    def results(name: str, per_process: int) -> tuple:
        if per_process not in spawned:
            out = tmp_path_factory.mktemp("paired") / "results.pt"
            mp.spawn(_paired_worker, args=(2, _free_port(), per_process, str(out)), nprocs=2, join=True)
            spawned[per_process] = torch.load(out)
        return spawned[per_process][name]
    return results


@pytest.mark.parametrize("name,per_process", CASES, ids=[f"{name}-{n}-per-process" for name, n in CASES])
def test_paired_methods_on_two_processes_equal_one_on_the_global_batch(two_processes, name, per_process):
    one_loss, one = loss_and_gradients(name, per_process)
    two_loss, two = two_processes(name, per_process)
    assert two_loss == pytest.approx(one_loss, rel=1e-5)
    assert one.keys() == two.keys()
    difference = torch.cat([(one[k] - two[k]).flatten() for k in one]).norm()
    assert difference <= 1e-5 * torch.cat([g.flatten() for g in one.values()]).norm()


def test_a_process_may_train_on_one_image_but_not_on_none():
    cpu = torch.device("cpu")
    check_processes(load_config(overrides=["method.name=rr", "train.batch_size=8"]), 8, cpu)
    with pytest.raises(ConfigError, match=r"^train.batch_size 4 \(the global batch\) must be a multiple of the 8 "
                                          r"processes"):
        check_processes(load_config(overrides=["method.name=rr", "train.batch_size=4"]), 8, cpu)


def test_each_process_binds_its_gpu_before_joining_the_group(monkeypatch):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **options: calls.append(("init_process_group", backend, options)))
    ranks, device = distributed.from_environment("auto")
    gpu = torch.device("cuda", 1)
    assert (ranks.rank, ranks.world, device) == (1, 2, gpu)
    assert calls == [("set_device", gpu), ("init_process_group", "nccl", {"device_id": gpu})]


def _detect_worker(rank: int, world: int, port: int, checkpoint: str, shapes: str, out: str, more: list) -> None:
    from spatialssl.commands.detect import detect

    _join(rank, world, port)
    detect(checkpoint, shapes, out, ["train.epochs=1", "train.batch_size=4", "train.device=cpu", "model.depth=1",
                                     "detect.pyramid_channels=16", "detect.representation_size=32",
                                     "detect.box_head_convs=0", "detect.proposals_train=32", "detect.proposals_test=16",
                                     *more], progress=False)
    _leave()


def test_detection_trains_on_two_processes_held_whole_or_streamed(tmp_path):
    """DistributedDataParallel over the detector: every trained weight is used (ViTDet leaves the ViT's final
    norm out, so it is frozen), and one process scores and writes the report; streamed (each process letterboxing
    its share of each batch in a worker), the same steps."""
    from spatialssl.commands.detect import detect_eval
    from spatialssl.detection import write_shapes

    shapes = write_shapes(tmp_path / "shapes", 8, 4, size=32, seed=0)
    cfg = load_config("demo_detection", [f"data.path={shapes / 'train'}", "train.epochs=0", "model.depth=1",
                                         "part.num_pairs=64", "train.batch_size=8"])
    checkpoint = pretrain(cfg, tmp_path / "part", progress=False)
    for name, more in (("det", []), ("streamed", ["data.stream=true", "data.workers=1"])):
        mp.spawn(_detect_worker, args=(2, _free_port(), str(checkpoint), str(shapes), str(tmp_path / name), more),
                 nprocs=2, join=True)
        assert (tmp_path / name / "detect.json").is_file() and len(read_metrics(tmp_path / name)) == 1
    losses = [float(read_metrics(tmp_path / name)[0]["loss"]) for name in ("det", "streamed")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    reports = [json.loads((tmp_path / name / "detect.json").read_text()) for name in ("det", "streamed")]
    assert reports[1]["AP"] == pytest.approx(reports[0]["AP"], abs=1e-6)
    # each process predicted its share and one scored them all: the AP one process gives the same weights
    alone = detect_eval(tmp_path / "det" / "last.ckpt", None)
    assert alone["AP"] == pytest.approx(reports[0]["AP"], abs=1e-6) and alone["images"] == reports[0]["images"] == 4
    assert alone["detections"] == reports[0]["detections"] > 0
