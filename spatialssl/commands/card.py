"""The model card (README.md) of a Hugging Face export: what the backbone is, how it was trained, how to load it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

METHODS = {"rr": "Relational Reasoning (Patacchiola & Storkey 2020)", "sr": "Spatial Reasoning (Albert et al. 2024)",
           "part": "PART (Ayoughi et al.)", "supervised": "supervised training", "finetune": "supervised finetuning",
           "random": "no training (random weights)",
           "mae": "MAE (He et al. 2022)", "mp3": "MP3 (Zhai et al. 2022)",
           "droppos": "DropPos (Wang et al. 2023)", "deepcluster": "DeepCluster (Caron et al. 2018)"}
METHODS.update({"simclr": "SimCLR (Chen et al. 2020)", "rotation": "RotationNet (Gidaris et al. 2018)",
                "sr_simclr": "SimCLR with Spatial Reasoning's patch positions",
                "part_contrastive": "PART with a contrastive (NT-Xent) term"})
SECTIONS = {"part": ("part",), "finetune": ("finetune",), "mae": ("mae",), "mp3": ("mp3",), "droppos": ("droppos",),
            "deepcluster": ("deepcluster",), "simclr": ("simclr",), "sr_simclr": ("simclr", "combined"),
            "part_contrastive": ("part", "simclr", "combined")}  # a method's own config sections
PLACEHOLDER = "<user>/<model>"  # the repository, until one is pushed to
LAYOUTS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10", "tiny": "tiny-ImageNet-200",
           "split-folder": "train/ and test/ class folders", "class-folder": "class folders",
           "unlabelled": "a folder of unlabelled images", "npz": "an .npz file",  # readers.detect_layout's names
           "shards": "WebDataset shards", "hf-datasets": "a Hugging Face dataset"}  # registered readers' names


def model_card(described: dict, repo_id: Optional[str], timm: bool) -> str:
    """README.md for ``described`` (an export's description); ``timm``: timm builds it from config.json."""
    method = described["config"]["method"]["name"]
    front = {"library_name": "timm" if timm else "spatialssl",
             "tags": ["spatialssl", "self-supervised-learning", "image-feature-extraction", method]}
    return "\n".join(["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
                      f"# {described['backbone']} pretrained with {METHODS[method]}", "", summary(described), "",
                      inputs(described), "", *results(described["results"]),
                      *loading(described, repo_id or PLACEHOLDER, timm), "", *configuration(described["config"]), ""])


def summary(described: dict) -> str:
    cfg, epochs = described["config"], described["epoch"]
    method, optim = cfg["method"]["name"], cfg["optim"]
    weights = (f"the moving average of the weights (decay {described['ema_decay']})"
               if described.get("weights") == "ema" else "the final weights")
    return (f"A `{described['backbone']}` backbone trained by spatialssl with **{METHODS[method]}** "
            f"(`method.name={method}`) for **{epochs} epoch{'s' if epochs != 1 else ''}** (batch "
            f"{cfg['train']['batch_size']}, {optim['name']} at learning rate {optim['lr']}) on "
            f"{trained_on(described['data'], cfg)}; these are {weights}.")


def trained_on(data: Optional[dict], cfg: dict) -> str:
    """The data the run read, by name and size, never by a local path (the card is public). A checkpoint from
    before runs recorded it has only its config's ``data.path``: a recipe's ``data.dataset`` names the data it
    was written for, not what was read."""
    split = f"split `{cfg['data']['split']}`"
    if data is None:
        if not cfg["data"].get("path"):
            return "data given in memory"
        return (f"**{Path(cfg['data']['path']).name}** ({split}; the config's `data.path`: this checkpoint is older "
                "than spatialssl's record of the data a run read)")
    size = "x".join(map(str, data["input_size"]))
    examples = (f"{data['examples']} training images of {size} pixels" if len(data["input_size"]) == 2
                else f"{data['examples']} training epochs of {size} samples")
    kind = f"{LAYOUTS.get(data['layout'], data['layout'])}: " if data["layout"] else ""
    if data["name"] is None:
        return f"**data given in memory** ({examples})"
    return f"**{data['name']}** ({kind}{examples}, {split})"


def inputs(described: dict) -> str:
    model = described["config"]["model"]
    shape = f"{model['in_chans']} x {'x'.join(map(str, model['input_size']))}"
    if described["mean"] is None:  # signals: normalised per epoch and channel as they are read
        return f"Inputs: {shape}, each epoch and channel normalised to zero mean and unit variance."
    mean, std = ([round(v, 4) for v in described[k]] for k in ("mean", "std"))
    return (f"Inputs: {shape}, scaled to [0, 1] and normalised with mean {mean} and std {std} (the run's "
            "`data.mean`, `data.std`).")


def results(measured: dict) -> list:
    """What the run folder measured (``export.run_results``), those that exist."""
    lines = []
    if "loss" in measured:
        loss = measured["loss"]
        since = f" (from {loss['first']:.4g} after epoch {loss['first_epoch']})" if "first" in loss else ""
        lines.append(f"- Pretraining loss: {loss['final']:.4g} after epoch {loss['epoch']}{since}.")
    if "knn" in measured:
        knn = measured["knn"]
        lines.append(f"- kNN monitor accuracy after epoch {knn['epoch']}: {knn['accuracy']:.4f} (k={knn['k']}).")
    for report in measured.get("linear_eval", ()):
        probes = ", ".join(f"{acc:.4f} with {n} patches" if n != "0" else f"{acc:.4f} on the image"
                           for n, acc in report["test_acc"].items())
        knn = f"; kNN {report['knn']:.4f}" if report.get("knn") is not None else ""
        lines.append(f"- Linear evaluation on {report['data'] or 'data given in memory'}: test accuracy "
                     f"{probes}{knn} (`{report['report']}`).")
    if "finetune" in measured:
        tuned = measured["finetune"]
        lines.append(f"- Finetuning on {tuned['data'] or 'data given in memory'}: test accuracy "
                     f"{tuned['test_acc']:.4f}, macro-F1 {tuned['macro_f1']:.4f}, kappa {tuned['kappa']:.4f} "
                     "(`finetune.json`).")
    return ["## Results", "", *lines, ""] if lines else []


def loading(described: dict, repo: str, timm: bool) -> list:
    lines = ["## Load it", "", "With spatialssl:", "", "```python", "from huggingface_hub import snapshot_download",
             "import spatialssl", "", f'backbone, cfg = spatialssl.load_backbone(snapshot_download("{repo}"))',
             "features = spatialssl.embed(backbone.eval(), inputs)  # B x num_features", "```"]
    if timm:
        lines += ["", "With timm:", "", "```python", "import timm", "",
                  f'model = timm.create_model("hf-hub:{repo}", pretrained=True)', "```"]
    return lines + ["", f"Or build it with `{described['class']}(**kwargs)` (`spatialssl.kwargs` in config.json) and "
                    "load `model.safetensors` with `load_state_dict`."]


def configuration(cfg: dict) -> list:
    """The options that made these weights."""
    method = cfg["method"]["name"]
    sections = ["method", *SECTIONS.get(method, ()), "augment", "optim", "train"]
    shown = {k: cfg[k] for k in ("model", *sections)}
    return ["## Training configuration", "", "```yaml", yaml.safe_dump(shown, sort_keys=False).strip(), "```"]
