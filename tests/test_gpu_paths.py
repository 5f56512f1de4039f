"""CUDA code paths proven on the CPU: channels_last + fused optimiser resume, drop-path randomness,
torch.compile of what the methods call, fp16 with a gradient scaler, the meta device."""
import json

import pytest
import torch
from safetensors.torch import load_file

from spatialssl.data import make_demo_images
from spatialssl.engine import optim, train
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain

TINY = {"model": {"backbone": "resnet8"}, "method": {"patch_size": 12},
        "train": {"batch_size": 32, "epochs": 2, "knn_monitor": 0}}


@pytest.fixture(scope="module")
def demo_small():
    return make_demo_images(96, seed=5)


def fused(monkeypatch):
    """The loop asks for fused kernels on CUDA only; torch has them on the CPU too (>= 2.4)."""
    build = optim.build_optimizer
    monkeypatch.setattr(train, "build_optimizer", lambda o, model, fused=False: build(o, model, fused=True))


def assert_same_run(a, b):
    first, second = load_file(a / "last.ckpt"), load_file(b / "last.ckpt")
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert [r["loss"] for r in read_metrics(a)] == [r["loss"] for r in read_metrics(b)]


def test_a_channels_last_run_with_fused_adam_resumes_exactly(tmp_path, demo_small, monkeypatch):
    fused(monkeypatch)
    cfg = load_config(base=TINY, overrides=["train.channels_last=true"])
    pretrain(cfg, tmp_path / "whole", train_set=demo_small, progress=False)
    pretrain(cfg, tmp_path / "split", train_set=demo_small, progress=False, stop_after_epoch=1)
    pretrain(cfg, tmp_path / "split", resume=True, train_set=demo_small, progress=False)
    assert_same_run(tmp_path / "whole", tmp_path / "split")


def test_resumed_moments_take_their_parameters_layout_and_this_machines_kernels(tmp_path, demo_small):
    from spatialssl.engine import build, checkpoint

    cfg = load_config(base=TINY, overrides=["train.channels_last=true", "train.epochs=1"])
    last = pretrain(cfg, tmp_path / "run", train_set=demo_small, progress=False)
    tensors, info = checkpoint.read_checkpoint(last)
    assert all(g.get("fused") in (None, False) for g in info["param_groups"])  # saved unfused (CPU)
    method = build.build_method(load_config(base=info["config"]), info["config"]["data"]["mean"],
                                info["config"]["data"]["std"]).to(memory_format=torch.channels_last)
    optimizer = optim.build_optimizer(load_config(base=info["config"]).optim, method, fused=True)
    checkpoint.restore(tensors, info, method, optimizer, {"order": torch.Generator()})
    assert all(group["fused"] for group in optimizer.param_groups)
    convolutions = [p for p in method.parameters() if p.dim() == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    for param in method.parameters():
        for value in optimizer.state[param].values():
            if torch.is_tensor(value) and value.shape == param.shape:
                assert value.stride() == param.stride()


PART_TINY = ["method.name=part", "model.backbone=vit_tiny", "model.depth=2", "model.patch_size=8", "part.num_pairs=64",
             "model.drop_path=0.3", "train.batch_size=16", "train.epochs=2", "train.knn_monitor=0"]


def test_drop_path_masks_follow_the_runs_generator_so_resume_is_exact(tmp_path, demo_small):
    cfg = load_config(overrides=PART_TINY)
    pretrain(cfg, tmp_path / "whole", train_set=demo_small, progress=False)
    pretrain(cfg, tmp_path / "split", train_set=demo_small, progress=False, stop_after_epoch=1)
    torch.rand(7)  # the global generator moves on, as other code would move it: the masks must not care
    pretrain(cfg, tmp_path / "split", resume=True, train_set=demo_small, progress=False)
    assert_same_run(tmp_path / "whole", tmp_path / "split")


def test_drop_path_masks_are_the_seeds_and_compile_without_a_break():
    from spatialssl.models import create_backbone, use_seed
    from spatialssl.models.vit import hashed_uniform

    model = create_backbone("vit_tiny", depth=2, drop_path=0.5).train()
    x = torch.randn(64, 3, 32, 32)
    seed, outputs = torch.tensor(0), []
    assert use_seed(model, seed)
    for value in (1, 1, 2):
        seed.fill_(value)  # in place, as the loop redraws it
        outputs.append(model.forward_features(x))
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])
    uniforms = hashed_uniform(torch.tensor(7), 3, 100_000)
    assert abs(float(uniforms.mean()) - 0.5) < 0.01 and abs(float((uniforms < 0.1).float().mean()) - 0.1) < 0.01
    assert not torch.equal(uniforms, hashed_uniform(torch.tensor(7), 4, 100_000))  # each layer its own masks
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.forward_features)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


def counting_backend(graphs: list):
    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward  # run eagerly: no compiler needed on this machine
    return backend


VIT_PARTS = ["model.backbone=vit_tiny", "model.depth=2", "model.patch_size=8", "model.drop_path=0.1"]
EVERY_METHOD = {"rr": ["method.name=rr"], "sr": ["method.name=sr"], "sr additive": ["method.name=sr",
                "method.additive=true"], "simclr": ["method.name=simclr"], "sr_simclr": ["method.name=sr_simclr"],
                "rotation": ["method.name=rotation"], "deepcluster": ["method.name=deepcluster", "deepcluster.clusters=4"],
                "supervised": ["method.name=supervised"], "part": [*VIT_PARTS, "method.name=part", "part.num_pairs=64"],
                "part_contrastive": [*VIT_PARTS, "method.name=part_contrastive", "part.num_pairs=64"],
                "mae": [*VIT_PARTS, "method.name=mae", "model.pos_embed=true"], "mp3": [*VIT_PARTS, "method.name=mp3"],
                "droppos": [*VIT_PARTS, "method.name=droppos", "model.pos_embed=true",
                            "model.class_token=true"]}


@pytest.mark.parametrize("name", list(EVERY_METHOD))
def test_compile_reaches_every_part_of_every_method_without_a_graph_break(name, demo_small):
    from torch._dynamo.utils import counters

    from spatialssl.engine.build import build_method
    from spatialssl.models import compile_method, use_seed

    torch._dynamo.reset()
    counters.clear()
    cfg = load_config(base=TINY, overrides=[*EVERY_METHOD[name], "model.input_size=[32, 32]"])
    method = build_method(cfg, [0.5] * 3, [0.25] * 3, 10).train()
    use_seed(method, torch.tensor(5))
    graphs = []
    compile_method(method, backend=counting_backend(graphs))
    made = method.epoch_labels(demo_small, torch.Generator().manual_seed(0))  # DeepCluster's, as the loop asks
    labels = demo_small.labels if made is None else made
    loss, _ = method.training_step(demo_small.images[:16], labels[:16], torch.Generator().manual_seed(0))
    loss.backward()
    assert not counters["graph_break"], dict(counters["graph_break"])
    compiled_parts = {graph.graph.owning_module.__class__.__name__ for graph in graphs}
    assert len(graphs) >= 1 + sum(1 for n, _ in method.named_children() if n != "backbone"), compiled_parts
    assert set(method.backbone.state_dict()) == set(build_method(cfg, [0.5] * 3, [0.25] * 3, 10).backbone.state_dict())


def test_the_loop_passes_train_compile_mode_and_refuses_it_without_compile(tmp_path, demo_small, monkeypatch):
    from spatialssl.errors import ConfigError

    modes = []
    monkeypatch.setattr(train, "compile_method", lambda method, **options: modes.append(options))
    pretrain(load_config(base=TINY, overrides=["train.compile=true", "train.compile_mode=reduce-overhead",
                                               "train.epochs=1"]), tmp_path / "run", train_set=demo_small,
             progress=False)
    assert modes == [{"mode": "reduce-overhead"}]
    with pytest.raises(ConfigError, match="train.compile_mode must be left at default unless train.compile=true"):
        load_config(overrides=["train.compile_mode=max-autotune"])


def test_the_loop_compiles_with_train_compile(tmp_path, demo_small, monkeypatch):
    compiled = []
    monkeypatch.setattr(train, "compile_method", lambda method: compiled.append(method))
    pretrain(load_config(base=TINY, overrides=["train.compile=true", "train.epochs=1"]), tmp_path / "run",
             train_set=demo_small, progress=False)
    assert len(compiled) == 1


def test_fp16_trains_with_a_gradient_scaler_and_resumes_exactly(tmp_path, demo_small):
    from spatialssl.engine import checkpoint

    cfg = load_config(base=TINY, overrides=["train.precision=fp16", "method.name=supervised", "train.batch_size=16"])
    few = demo_small.subset(32)  # fp16 kernels are slow on a CPU
    pretrain(cfg, tmp_path / "whole", train_set=few, progress=False)
    pretrain(cfg, tmp_path / "split", train_set=few, progress=False, stop_after_epoch=1)
    _, info = checkpoint.read_checkpoint(tmp_path / "split" / "last.ckpt")
    assert info["grad_scaler"]["scale"] > 0  # the scale travels with the checkpoint
    assert "grad_scaler" not in json.loads((tmp_path / "split" / "last.json").read_text())
    pretrain(cfg, tmp_path / "split", resume=True, train_set=few, progress=False)
    assert_same_run(tmp_path / "whole", tmp_path / "split")
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in read_metrics(tmp_path / "whole"))


def test_signals_stay_in_host_memory_and_travel_a_batch_at_a_time():
    """On a GPU a PhysioNet-scale signal set would not fit: only images go to the device whole."""
    from spatialssl.data.demo_signals import demo_signal_splits
    from spatialssl.engine.train import place, to_device

    device = torch.device("meta")  # stands in for a GPU: tensors there are not on the CPU
    signals, _ = demo_signal_splits(2, 1, 4)
    inputs, labels = place(signals, device)
    assert inputs.device.type == "cpu" and labels.device.type == "cpu"
    assert to_device(inputs[:3], device).device == device
    images, image_labels = place(make_demo_images(8, seed=0), device)
    assert images.device == device and image_labels.device == device


def test_a_stream_keeps_its_worker_processes_across_epochs(tmp_path):
    import numpy as np
    from conftest import random_images, write_class_folders

    from spatialssl.data.stream import stream_images

    folder = write_class_folders(tmp_path / "data", random_images(12, 16, seed=3), np.arange(12) % 2)
    stream = stream_images(folder, "train", 16, workers=1)
    orders = ([*range(12)], [*range(12)][::-1])
    epochs = [[index.tolist() for _, index in stream.batches(order, 4, False)] for order in orders]
    loader = stream._loader[2]
    assert loader.persistent_workers and loader._iterator is not None  # one set of workers, kept
    for order, batches in zip(orders, epochs):  # each epoch in its own order
        assert batches == [order[k:k + 4] for k in (0, 4, 8)]
    list(stream.batches([*range(8)], 4, False))
    assert stream._loader[2] is loader  # the next epoch reuses it


def test_streaming_workers_are_the_usable_cpus_shared_among_the_processes_of_a_machine(monkeypatch, tmp_path):
    from spatialssl.data import stream

    monkeypatch.setattr(stream.os, "sched_getaffinity", lambda pid: set(range(16)))  # taskset / Slurm's binding
    monkeypatch.setattr(stream, "CGROUP_CPU_MAX", str(tmp_path / "none"))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert stream.decode_workers(None) == 4 and stream.decode_workers(2) == 2
    (tmp_path / "cpu.max").write_text("600000 100000\n")  # a container's quota: 6 CPUs of the 16
    monkeypatch.setattr(stream, "CGROUP_CPU_MAX", str(tmp_path / "cpu.max"))
    assert stream.usable_cpus() == 6 and stream.decode_workers(None) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert stream.usable_cpus() == 16
