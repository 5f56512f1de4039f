"""The scripts in examples/ run as a user would run them, on tiny generated data, and learn something."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spatialssl.data import make_demo_images
from spatialssl.data.demo_signals import demo_signal_splits

EXAMPLES = Path(__file__).parents[1] / "examples"


def run(script: str, *args: str, cwd: Path) -> list:
    """The losses the script printed."""
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [float(x) for x in re.findall(r"loss (\d+\.\d+)", done.stdout)]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "demo.npz"
    demo = make_demo_images(128, seed=2)
    np.savez(path, images=demo.images.numpy(), labels=demo.labels.numpy())
    return path


def test_sr_in_your_loop(images, tmp_path):
    losses = run("sr_in_your_loop.py", "--data", str(images), "--steps", "12", "--batch", "16", "--image-size", "16",
                 cwd=tmp_path)
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert (tmp_path / "sr_backbone.safetensors").is_file()


def test_part_in_your_loop(images, tmp_path):
    losses = run("part_in_your_loop.py", "--data", str(images), "--steps", "21", "--batch", "16", "--patch", "8",
                 "--pairs", "64", "--depth", "1", cwd=tmp_path)
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert (tmp_path / "part_vit.safetensors").is_file()


def test_part1d_in_your_loop(tmp_path):
    train, _ = demo_signal_splits(4, 1, 16)
    data = tmp_path / "signals.npz"
    np.savez(data, signals=train.signals.numpy(), labels=train.labels.numpy(), subjects=train.subjects.numpy())
    losses = run("part1d_in_your_loop.py", "--data", str(data), "--steps", "21", "--batch", "16", "--windows", "12",
                 "--pairs", "64", "--depth", "1", cwd=tmp_path)
    assert len(losses) == 2 and losses[-1] < losses[0]


def test_timm_from_an_export(tmp_path, capsys, monkeypatch, timm):
    """Run in this process: timm needs the CPU-torch import workaround of conftest's fixture."""
    import runpy
    import sys

    from spatialssl.cli import main
    from spatialssl.engine.config import load_config
    from spatialssl.engine.train import pretrain

    cfg = load_config(overrides=["method.name=part", "model.backbone=vit_tiny", "model.depth=1", "part.num_pairs=64",
                                 "train.epochs=1", "train.batch_size=8", "train.knn_monitor=0"])
    last = pretrain(cfg, tmp_path / "run", train_set=make_demo_images(16, seed=3), progress=False)
    assert main(["export", "--checkpoint", str(last), "--out", str(tmp_path / "exported"), "--format", "timm"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["timm_from_an_export.py", str(tmp_path / "exported"), "--classes", "7"])
    runpy.run_path(str(EXAMPLES / "timm_from_an_export.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "features (2, 192) for 32x32 images" in out and "out_features=7" in out
