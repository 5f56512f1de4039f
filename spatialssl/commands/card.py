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


def model_card(described: dict, repo_id: Optional[str], timm: bool) -> str:
    """README.md for ``described`` (an export's description); ``timm``: timm builds it from config.json."""
    method = described["config"]["method"]["name"]
    front = {"library_name": "timm" if timm else "spatialssl",
             "tags": ["spatialssl", "self-supervised-learning", "image-feature-extraction", method]}
    return "\n".join(["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
                      f"# {described['backbone']} pretrained with {METHODS[method]}", "", summary(described), "",
                      inputs(described), "", *loading(described, repo_id or PLACEHOLDER, timm), "",
                      *configuration(described["config"]), ""])


def summary(described: dict) -> str:
    cfg, epochs = described["config"], described["epoch"]
    method, optim = cfg["method"]["name"], cfg["optim"]
    weights = (f"the moving average of the weights (decay {described['ema_decay']})"
               if described.get("weights") == "ema" else "the final weights")
    return (f"A `{described['backbone']}` backbone trained by spatialssl with **{METHODS[method]}** "
            f"(`method.name={method}`) on **{data_name(cfg['data'])}** (split `{cfg['data']['split']}`) for "
            f"**{epochs} epoch{'s' if epochs != 1 else ''}** (batch {cfg['train']['batch_size']}, {optim['name']} at "
            f"learning rate {optim['lr']}); these are {weights}.")


def data_name(data: dict) -> str:
    """The data set's name, never a local path (the card is public)."""
    if data.get("dataset"):
        return data["dataset"]
    return Path(data["path"]).name if data.get("path") else "data given in memory"


def inputs(described: dict) -> str:
    model = described["config"]["model"]
    shape = f"{model['in_chans']} x {'x'.join(map(str, model['input_size']))}"
    if described["mean"] is None:  # signals: normalised per epoch and channel as they are read
        return f"Inputs: {shape}, each epoch and channel normalised to zero mean and unit variance."
    mean, std = ([round(v, 4) for v in described[k]] for k in ("mean", "std"))
    return f"Inputs: {shape}, scaled to [0, 1] and normalised with mean {mean} and std {std}."


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
