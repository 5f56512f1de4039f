"""Every method's step on the meta device, under a guard that fails when a tensor lands off the
batch's device or CPU and device tensors meet in one operation: what would crash or crawl on a GPU
(a draw made on the CPU, an index table built without ``device=``) shows up here without one."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from spatialssl.engine.build import build_method
from spatialssl.engine.config import load_config

META = torch.device("meta")


class DeviceGuard(TorchDispatchMode):
    """Records every operation whose tensors are not all on ``device`` (CPU 0-dim scalars, which
    PyTorch moves for free, excepted)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device, self.strays = device, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        elsewhere = {str(t.device) for t in tensors if t.device != self.device and not (t.device.type == "cpu" and t.dim() == 0)}
        if elsewhere:
            self.strays.append(f"{func}: {sorted(elsewhere)}")
        return out


IMAGES = ["model.backbone=resnet8", "method.patch_size=12", "model.input_size=[32, 32]", "train.batch_size=4"]
VIT = ["model.backbone=vit_tiny", "model.depth=1", "model.patch_size=8", "model.input_size=[32, 32]",
       "part.num_pairs=32", "model.drop_path=0.1"]
CASES = {
    "rr": [*IMAGES, "method.name=rr"],
    "sr": [*IMAGES, "method.name=sr"],
    "sr additive": [*IMAGES, "method.name=sr", "method.additive=true"],
    "supervised": [*IMAGES, "method.name=supervised"],
    "part": [*VIT, "method.name=part"],
    "part + scale": [*VIT, "method.name=part", "part.sampling=scale"],
    "part grid": [*VIT, "method.name=part", "part.sampling=grid"],
    "part stratified": [*VIT, "method.name=part", "part.sampling=stratified"],
    "part full-MLP encoder": [*VIT, "method.name=part", "part.encoder=mlp"],
    "part 1-D": ["model.backbone=vit1d_tiny", "model.depth=1", "model.patch_size=25", "model.input_size=[500]",
                 "model.in_chans=2", "method.name=part", "part.num_tokens=12", "part.num_pairs=32"],
    "finetune": [*VIT, "method.name=finetune", "model.init_from=x", "model.pos_embed=true", "model.class_token=true",
                 "model.global_pool=token"],
    # baselines
    "mae": [*VIT, "method.name=mae", "model.pos_embed=true", "model.class_token=true"],
    "mp3": [*VIT, "method.name=mp3"],
    "mp3 without masking": [*VIT, "method.name=mp3", "mp3.mask_ratio=0"],
    "droppos": [*VIT, "method.name=droppos", "model.pos_embed=true", "model.class_token=true"],
    "deepcluster": [*IMAGES, "method.name=deepcluster", "deepcluster.clusters=10"],
    "simclr": [*IMAGES, "method.name=simclr"],
    "rotation": [*IMAGES, "method.name=rotation"],
    "sr_simclr": [*IMAGES, "method.name=sr_simclr"],
    "part_contrastive": [*VIT, "method.name=part_contrastive"],
}


def batch_of(cfg) -> tuple:
    if cfg.model.backbone.startswith("vit1d_"):
        return torch.randn(4, 2, 500, device=META), torch.zeros(4, dtype=torch.long, device=META)
    return (torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, device=META),
            torch.zeros(4, dtype=torch.long, device=META))


@pytest.mark.parametrize("case", CASES)
def test_a_training_step_stays_on_the_batchs_device(case, monkeypatch):
    from spatialssl.engine import build

    from spatialssl import regularize

    monkeypatch.setattr(build, "load_pretrained", lambda backbone, path: None)  # finetune: no checkpoint here
    # torch's Dirichlet sampler (mixup's Beta draw) has no meta kernel: a stand-in draws where it would.
    monkeypatch.setattr(regularize, "_beta", lambda alpha, generator: torch.rand((), generator=generator,
                                                                                device=alpha.device))
    cfg = load_config(overrides=CASES[case])
    method = build_method(cfg, [0.5] * 3, [0.25] * 3, num_classes=10).to(META).train()
    images, labels = batch_of(cfg)
    guard = DeviceGuard(META)
    with guard:
        # A CPU generator stands in for the device's (meta has none); draws must still land on the device.
        loss, metrics = method.training_step(images, labels, torch.Generator())
        loss.backward()
    assert loss.device == META and all(m.device == META for m in metrics.values())
    assert not guard.strays, "\n".join(guard.strays[:10])


def test_the_part_figures_stay_on_the_models_device():
    from spatialssl.commands.analysis import predict_pairs

    method = build_method(load_config(overrides=[*VIT, "method.name=part"]), [0.5] * 3, [0.25] * 3).to(META).eval()
    guard = DeviceGuard(META)
    with guard, torch.no_grad():
        found = predict_pairs(method, torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, device=META),
                              torch.Generator())
    assert all(t.device == META for t in found)
    assert not guard.strays, "\n".join(guard.strays[:10])


def test_the_guard_sees_a_tensor_made_off_the_device():
    guard = DeviceGuard(META)
    with guard:
        torch.zeros(3, device=META)
        torch.arange(3)  # forgot device=: an index table made on the CPU
    assert guard.strays == ["aten.arange.default: ['cpu']"]
