"""train.precision=auto: bf16 where the GPU computes it, fp16 (with the scaler) on older CUDA GPUs, fp32 on the
CPU; the run records what ran; TF32 for fp32 leftovers on CUDA unless strict fp32 is asked for."""
import pytest
import torch

from spatialssl.data import make_demo_images
from spatialssl.engine import precision
from spatialssl.engine.checkpoint import read_checkpoint
from spatialssl.engine.config import load_config
from spatialssl.engine.train import pretrain

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("capability, expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"),
                                                  ((7, 0), "fp16")])
def test_auto_is_bf16_from_ampere_on_and_fp16_before(capability, expected, monkeypatch):
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert precision.resolve_precision("auto", CUDA) == expected
    assert precision.resolve_precision("fp32", CUDA) == "fp32"  # what a user names is kept


def test_auto_is_fp32_on_the_cpu_and_mps():
    assert precision.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert precision.resolve_precision("auto", torch.device("mps")) == "fp32"
    assert load_config().train.precision == "auto"


def test_tf32_is_on_for_cuda_runs_except_strict_fp32(monkeypatch):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for name, allowed in (("bf16", True), ("tf32", True), ("fp16", True), ("fp32", False)):
            precision.set_matmul_precision(name, CUDA)
            assert torch.backends.cuda.matmul.allow_tf32 is allowed and torch.backends.cudnn.allow_tf32 is allowed
        torch.backends.cuda.matmul.allow_tf32 = False
        precision.set_matmul_precision("bf16", torch.device("cpu"))  # nothing changes off CUDA
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_a_run_records_what_auto_became(tmp_path):
    cfg = load_config(base={"model": {"backbone": "resnet8"}, "method": {"patch_size": 12},
                            "train": {"batch_size": 16, "epochs": 1, "knn_monitor": 0}})
    run = pretrain(cfg, tmp_path / "run", train_set=make_demo_images(32, seed=1), progress=False).parent
    _, info = read_checkpoint(run / "last.ckpt")
    assert info["config"]["train"]["precision"] == "fp32" and "grad_scaler" not in info
