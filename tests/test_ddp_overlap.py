"""DDP that overlaps: on 2 gloo processes, gradients are all-reduced in several buckets during the backward
pass (the first before the first layer's gradient exists), eager and with the backbone compiled (dynamo's DDP
optimiser then splits it at the buckets); train.grad_compression=fp16 sends half the bytes; the results equal
one process's on the same global batch."""
import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from test_distributed import SETTINGS, _free_port, _join, _leave

from spatialssl.data import make_demo_images
from spatialssl.engine.checks import check_processes
from spatialssl.engine.config import load_config
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError

OVERLAP = [*SETTINGS, "model.depth=2", "train.ddp_bucket_mb=1"]  # ViT-tiny, 2 blocks: ~1.4M weights, ~6 MB


def _worker(rank: int, world: int, port: int, out: str, extra: list) -> None:
    """One process's run, recording the order of bucket reductions and of the first layer's gradient."""
    import torch.distributed as dist
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from spatialssl.engine import train
    from spatialssl.models import compile_method

    _join(rank, world, port)
    events, counter = [], CompileCounterWithBackend("aot_eager")  # counts the graphs dynamo hands a backend
    wrap, hooks = train.wrap_for_processes, {"none": None, "fp16": default_hooks.fp16_compress_hook}

    def recorded(method, device, bucket_mb, compression):
        model = wrap(method, device, bucket_mb, compression)
        registered = [hook for hook, _ in model._comm_hooks]
        events.append(["hook", registered[0].__name__ if registered else None])
        assert registered == ([hooks[compression]] if hooks[compression] else [])
        if not registered:  # record each bucket as it is sent (DDP takes one hook: not with compression)
            def sent(group, bucket):
                events.append(["bucket", bucket.index()])
                return default_hooks.allreduce_hook(group, bucket)
            model.register_comm_hook(dist.group.WORLD, sent)
        first = next(m for m in method.backbone.modules() if isinstance(m, torch.nn.Conv2d)).weight
        first.register_post_accumulate_grad_hook(lambda p: events.append(["first layer"]))
        return model

    train.wrap_for_processes = recorded
    train.compile_method = lambda method: compile_method(method, backend=counter)
    pretrain(load_config(overrides=[*OVERLAP, *extra]), Path(out), train_set=make_demo_images(32, seed=4),
             progress=False)
    if rank == 0:
        (Path(out) / "events.json").write_text(json.dumps({"events": events, "graphs": counter.frame_count}))
    _leave()


def two_processes(out: Path, *extra) -> dict:
    mp.spawn(_worker, args=(2, _free_port(), str(out), list(extra)), nprocs=2, join=True)
    return json.loads((out / "events.json").read_text())


def assert_equal_to_one_process(tmp_path, run: Path, atol: float, *extra) -> int:
    """Checks the two processes' weights against one process's; returns the graphs compiled in that one."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from spatialssl.engine import train
    from spatialssl.models import compile_method

    counter, compile_as_configured = CompileCounterWithBackend("aot_eager"), train.compile_method
    train.compile_method = lambda method: compile_method(method, backend=counter)
    try:
        single = pretrain(load_config(overrides=[*OVERLAP, *extra]), tmp_path / "one",
                          train_set=make_demo_images(32, seed=4), progress=False)
    finally:
        train.compile_method = compile_as_configured
    one, two = load_file(single), load_file(run / "last.ckpt")
    weights = [k for k in one if k.startswith("method.") and one[k].is_floating_point()]
    assert weights and all(torch.allclose(one[k], two[k], atol=atol) for k in weights)
    return counter.frame_count


@pytest.mark.parametrize("compiled", [False, True])
def test_buckets_are_reduced_during_the_backward_pass(compiled, tmp_path):
    extra = ["train.compile=true"] if compiled else []
    recorded = two_processes(tmp_path / "two", *extra)
    events = [e for e in recorded["events"] if e[0] != "hook"]
    ends = [i for i, e in enumerate(events) if e == ["first layer"]]
    assert len(ends) == 2, events  # 32 images, batch 16: two steps
    second = events[ends[0] + 1:]  # DDP sizes its buckets in the first step, by the order gradients came in
    assert sum(e[0] == "bucket" for e in second) >= 3, events  # ~6 MB of gradients in buckets of 1 MB
    assert second[0][0] == "bucket", events  # the first sent before the backward pass reached the first layer
    alone = assert_equal_to_one_process(tmp_path, tmp_path / "two", 1e-5, *extra)
    if compiled:  # alone, each compiled entry point is one graph; under DDP the backbone's is split at the buckets
        assert alone >= 1 and recorded["graphs"] > alone


def test_fp16_gradient_compression_is_ddps_hook_and_keeps_the_result(tmp_path):
    recorded = two_processes(tmp_path / "two", "train.grad_compression=fp16")
    assert recorded["events"][0] == ["hook", "fp16_compress_hook"]
    assert_equal_to_one_process(tmp_path, tmp_path / "two", 1e-3)


def test_bf16_compression_on_cpu_processes_is_refused_before_work():
    with pytest.raises(ConfigError, match="grad_compression=bf16 needs CUDA"):
        check_processes(load_config(overrides=["train.grad_compression=bf16"]), 2, torch.device("cpu"))
