"""GPU paths proven on the CPU: a training step that never waits for the device, samplers that
ignore autocast, and a lint of the code a step runs (device-less factories, host reads)."""
import ast
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile

import spatialssl
from spatialssl.engine.build import build_method
from spatialssl.engine.config import FinetuneConfig, load_config
from spatialssl.methods import Finetune
from spatialssl.models import create_backbone
from spatialssl.samplers import BoxSampler, PatchSampler, ViewSampler, grid_patches
from spatialssl.samplers.rotations import RotationSampler
from spatialssl.samplers.windows import WindowSampler

# Operators that read a device value on the host (each a CUDA stream synchronisation), and
# lift_fresh: a tensor made from Python data, whose copy to a CUDA device waits for the stream.
SYNC_OPERATORS = ("aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero", "aten::lift_fresh")
# Whole-tensor reads the CPU profiler cannot show (on the CPU nothing is copied).
HOST_READS = ("tolist", "numpy", "cpu")

RESNET = ["model.backbone=resnet8", "method.patch_size=12", "method.augmentations=3"]
VIT = ["model.backbone=vit_tiny", "model.depth=1", "model.input_size=[32,32]", "part.num_tokens=16",
       "part.num_pairs=32"]
STEPS = {
    "rr": ["method.name=rr", *RESNET],
    "sr": ["method.name=sr", *RESNET],
    "sr_additive": ["method.name=sr", "method.additive=true", *RESNET],
    "part": ["method.name=part", *VIT],
    "part_scale": ["method.name=part", "part.sampling=scale", *VIT],
    "part_1d": ["method.name=part", "model.backbone=vit1d_tiny", "model.depth=1", "model.patch_size=25",
                "model.input_size=[500]", "model.in_chans=2", "part.num_tokens=12", "part.num_pairs=32"],
    "supervised": ["method.name=supervised", *RESNET],
    "finetune": ["method.name=finetune", *RESNET, "finetune.random_erasing=0.5"],
    "finetune_no_jitter": ["method.name=finetune", *RESNET, "augment.jitter_p=0", "finetune.cutmix=0"],
    # baselines (DeepCluster's k-means at the epoch's start may wait; its steps may not)
    "mae": ["method.name=mae", "model.pos_embed=true", "model.class_token=true", *VIT],
    "mp3": ["method.name=mp3", *VIT],
    "droppos": ["method.name=droppos", "model.pos_embed=true", "model.class_token=true", *VIT],
    "deepcluster": ["method.name=deepcluster", "deepcluster.clusters=4", *RESNET],
    "simclr": ["method.name=simclr", *RESNET],
    "rotation": ["method.name=rotation", *RESNET],
    "sr_simclr": ["method.name=sr_simclr", *RESNET],
    "part_contrastive": ["method.name=part_contrastive", *VIT],
}


class HostReadSpy(TorchFunctionMode):
    """Counts the Tensor methods in HOST_READS called while active."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def host_syncs(step) -> Counter:
    """What ``step()`` would make the host wait for on a GPU, by operator or method name."""
    with HostReadSpy() as spy, profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return Counter(e.name for e in prof.events() if e.name in SYNC_OPERATORS) + spy.calls


def batch_for(cfg, batch: int = 8):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(batch) % 4
    if cfg.model.backbone.startswith("vit1d_"):
        return torch.randn(batch, cfg.model.in_chans, *cfg.model.input_size, generator=generator), labels
    return torch.randint(0, 256, (batch, 3, 32, 32), generator=generator, dtype=torch.uint8), labels


@pytest.fixture(scope="module")
def resnet8_weights(tmp_path_factory):
    """Pretrained weights for finetuning to start from."""
    path = tmp_path_factory.mktemp("weights") / "backbone.safetensors"
    save_file(create_backbone("resnet8").state_dict(), str(path))
    return path


@pytest.mark.parametrize("name", STEPS)
def test_a_training_step_never_waits_for_the_device(name, resnet8_weights):
    start = [f"model.init_from={resnet8_weights}"] if name.startswith("finetune") else []
    cfg = load_config(overrides=[*STEPS[name], *start])
    method = build_method(cfg, [0.5] * 3, [0.25] * 3, num_classes=4).train()
    images, labels = batch_for(cfg)
    generator = torch.Generator().manual_seed(1)

    def step():
        loss, _ = method.training_step(images, labels, generator)
        loss.backward()

    step()  # fills the caches (pair indices, device constants) a run fills once
    assert dict(host_syncs(step)) == {}


def test_evaluation_patches_are_cut_without_waiting_for_the_device():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    grid_patches(images, 12, 9, [0.5] * 3, [0.25] * 3)  # fills the cache of grid corners
    assert dict(host_syncs(lambda: grid_patches(images, 12, 9, [0.5] * 3, [0.25] * 3))) == {}


MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
IMAGES = torch.randint(0, 256, (2, 3, 224, 224), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
SIGNALS = torch.randn(2, 2, 3000, generator=torch.Generator().manual_seed(0))
SAMPLERS = {
    "views": lambda g: ViewSampler(2, MEAN, STD)(IMAGES, g),
    "patches": lambda g: PatchSampler(3, 64, MEAN, STD)(IMAGES, g),
    "additive_patches": lambda g: PatchSampler(3, 64, MEAN, STD, additive=True)(IMAGES, g),
    "grid_patches": lambda g: grid_patches(IMAGES, 96, 9, MEAN, STD),
    "offgrid_boxes": lambda g: BoxSampler("offgrid", 16, 32, MEAN, STD)(IMAGES, g),
    "scale_boxes": lambda g: BoxSampler("scale", 16, 32, MEAN, STD)(IMAGES, g),
    "offgrid_windows": lambda g: WindowSampler("offgrid", 25, 12)(SIGNALS, g),
    "scale_windows": lambda g: WindowSampler("scale", 25, 12)(SIGNALS, g),
    "rotations": lambda g: RotationSampler(MEAN, STD)(IMAGES, g)[0],  # and the labels 0-3
    "finetune": lambda g: Finetune(torch.nn.Identity(), ViewSampler(1, MEAN, STD), 10,
                                   FinetuneConfig()).augment(IMAGES, g),
}


def outputs(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("name", SAMPLERS)
def test_samplers_ignore_autocast(name):
    """Under bf16 autocast affine_grid and grid_sample would move sample positions by up to 0.41 px at 224 px."""
    plain = SAMPLERS[name](torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = SAMPLERS[name](torch.Generator().manual_seed(2))
    for ours, theirs in zip(outputs(plain), outputs(autocast), strict=True):
        assert theirs.dtype == torch.float32
        assert torch.equal(ours, theirs), f"moved by autocast up to {(ours - theirs).abs().max():.3g}"


# The code a training step runs, linted for what would make it wait for the device or work on the CPU.
LINTED = ("samplers/*.py", "augment.py", "regularize.py", "losses.py", "methods/*.py", "models/*.py")
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "arange", "rand", "randn", "randint", "empty",
             "linspace", "eye"}  # without device= they make CPU tensors (their *_like follow their input)
HOST_READ_FUNCTIONS = {"nonzero", "multinomial"}
HOST_READ_METHODS = {"item", "tolist", "nonzero", "cpu", "numpy"}
CONSTRUCTION = {None, "__init__", "reset_parameters"}  # module constants and module set-up: moved to the device later
ALLOWED = {
    ("models/vit.py", "__init__"): "DropPath rates, read once on the CPU when the model is built",
    ("methods/deepcluster.py", "reseed_empty"): "k-means at the epoch's start (epoch_labels), not in a step",
    ("methods/deepcluster.py", "kmeans_plus_plus"): "k-means at the epoch's start (epoch_labels), not in a step",
}


def offence(call: ast.Call, function) -> str:
    """What is wrong with ``call`` inside ``function`` (None at module level), or ''."""
    if not isinstance(call.func, ast.Attribute):
        return ""
    name = call.func.attr
    if isinstance(call.func.value, ast.Name) and call.func.value.id == "torch":
        if name in HOST_READ_FUNCTIONS:
            return f"torch.{name}"
        device_given = any(keyword.arg == "device" for keyword in call.keywords)
        if name in FACTORIES and not device_given and function not in CONSTRUCTION:
            return f"torch.{name} without device="
        return ""
    return f".{name}()" if name in HOST_READ_METHODS else ""


def lint(source: str) -> list:
    """(enclosing function, offence) for every offending call in ``source``."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call) and offence(child, function):
                found.append((function, offence(child, function)))
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            visit(child, inner)
    visit(ast.parse(source), None)
    return found


def test_the_code_a_step_runs_makes_tensors_on_the_device_and_reads_nothing_back():
    root = Path(spatialssl.__file__).parent
    findings = []
    for pattern in LINTED:
        for path in sorted(root.glob(pattern)):
            relative = path.relative_to(root).as_posix()
            findings += [f"{relative}:{function}: {problem}" for function, problem in lint(path.read_text())
                         if (relative, function) not in ALLOWED]
    assert not findings, "\n".join(findings)


def test_the_lint_catches_what_it_is_for():
    source = ("SCALE = torch.tensor([1.0])\n"
              "class M:\n"
              "    def __init__(self):\n        self.w = torch.zeros(3)\n"
              "    def step(self, x):\n"
              "        a = torch.arange(4)\n        b = torch.ones(2, device=x.device)\n"
              "        c = x.sum().item() + x.tolist()[0]\n"
              "        return torch.multinomial(x, 1), x.nonzero(), torch.zeros_like(x)\n")
    assert lint(source) == [("step", "torch.arange without device="), ("step", ".item()"), ("step", ".tolist()"),
                            ("step", "torch.multinomial"), ("step", ".nonzero()")]
