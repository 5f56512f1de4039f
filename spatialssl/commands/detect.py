"""``spatialssl detect`` and ``detect-eval``: a pretrained checkpoint finetuned for object detection on
COCO-style data by the one training loop (method ``detect``), then scored with COCO's AP."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Optional

from ..data.stream import decode_workers, in_batches
from ..detection.coco import coco_split, read_whole
from ..detection.coco_stream import CocoStream
from ..detection.coco_eval import coco_scores, to_coco_results
from ..engine import checkpoint
from ..engine.build import build_method
from ..engine.config import BUNDLED_RECIPES, Config, load_config, overlay, read_recipe
from ..engine.distributed import Distributed, from_environment, resolve_device
from ..engine.train import pretrain, refuse_existing_run
from ..errors import ConfigError
from ..files import atomic_write, refuse_to_replace
from ..models import modality

OVERLAY = BUNDLED_RECIPES / "overlays" / "detect.yaml"
COCO_OVERLAY = BUNDLED_RECIPES / "overlays" / "detect_coco.yaml"  # ViTDet-B's COCO recipe, on top of OVERLAY
REPORT = "detect.json"
CLASSIFIER = "method.roi_heads.box_predictor.cls_score.weight"  # K + 1 rows: the classes and the background


def detect_config(path, data: Optional[str], overrides: Optional[list] = None, scratch: bool = False,
                  coco: bool = False) -> Config:
    """The pretrained run's config turned into a detection one (overlays/detect.yaml; with ``coco`` ViTDet-B's
    COCO recipe on top, overlays/detect_coco.yaml); ``scratch`` keeps the architecture but not the weights (the
    random-init baseline at the same budget)."""
    _, info = checkpoint.read_checkpoint(path)
    pretrained = load_config(base=info["config"])
    if modality(pretrained.model.backbone) != "images":
        raise ConfigError(f"{path} holds a {pretrained.model.backbone}, which reads signals; detection takes image "
                          "backbones (spatialssl's ViTs and ResNets)")
    base = overlay(pretrained.to_dict(), read_recipe(OVERLAY))
    if coco:
        base = overlay(base, read_recipe(COCO_OVERLAY))
    base["model"]["init_from"] = None if scratch else str(path)
    if data is not None:
        base["data"]["path"] = str(data)
    return load_config(base=base, overrides=overrides)


def read_split(cfg: Config, split: str, targets: bool = True):
    """A split of ``data.path`` letterboxed to detect.image_size, with masks when the heads want them; without
    ``targets`` (a split only scored: its annotation file is the reference) boxes alone. Held whole, or with
    data.stream=true read a batch at a time by data.workers processes (a CocoStream)."""
    if cfg.data.path is None:
        raise ConfigError("detection needs data: --data a COCO-style folder (annotations/instances_<split>.json)")
    if cfg.data.skip_corrupt:
        raise ConfigError("data.skip_corrupt does not apply to detection: an unreadable image stops the run, named "
                          "(its annotations would be scored without it); replace the image or drop it from the json")
    split = coco_split(cfg.data.path, split, cfg.detect.image_size, cfg.detect.masks if targets else False)
    if cfg.data.stream:
        return CocoStream(split, decode_workers(cfg.data.workers))
    return read_whole(split, cfg.train.batch_size)


def fitted_to(cfg: Config, train_set) -> Config:
    """``cfg`` with what the training data decides: detect.masks=null becomes true (Mask R-CNN) when the
    annotations have segmentations; the classes' COCO ids are recorded, so scoring can check its data."""
    if cfg.detect.masks and not train_set.has_masks:
        raise ConfigError(f"detect.masks=true but the annotations of {train_set.source} have no segmentations; "
                          "set detect.masks=false (boxes only)")
    check_categories(cfg, train_set)
    masks = train_set.has_masks if cfg.detect.masks is None else cfg.detect.masks
    return dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, masks=masks,
                                                               category_ids=list(train_set.category_ids)))


def check_categories(cfg: Config, data) -> None:
    """A run predicts the classes it was trained on: data with other categories would be scored as garbage."""
    wanted = cfg.detect.category_ids
    if wanted is not None and list(data.category_ids) != list(wanted):
        raise ConfigError(f"{data.source} has the categories {list(data.category_ids)[:10]}, but the run was trained "
                          f"on {wanted[:10]}: score it on data annotated with the same categories")


def detect(path, data: Optional[str], out_dir, overrides: Optional[list] = None, resume: bool = False,
           progress: bool = True, scratch: bool = False, train_set=None, val_set=None, overwrite: bool = False,
           coco: bool = False) -> dict:
    """Finetune the checkpoint at ``path`` for detection on ``data`` into ``out_dir``, then score the
    validation split; returns the report, also written to ``out_dir/detect.json``. A run already in
    ``out_dir`` is continued (``resume``) or replaced (``overwrite``)."""
    out_dir = Path(out_dir)
    refuse_existing_run(out_dir, resume, overwrite)
    if resume:
        _, info = checkpoint.read_resumable(out_dir)
        moved = [f"data.path={data}"] if data is not None else []  # the data may have moved since
        cfg = load_config(base=info["config"], overrides=[*moved, *(overrides or [])])
    else:
        cfg = detect_config(path, data, overrides, scratch, coco)
    train_set = train_set if train_set is not None else read_split(cfg, cfg.data.split)
    val_set = val_set if val_set is not None else read_split(cfg, cfg.data.test_split, targets=False)
    cfg = fitted_to(cfg, train_set)
    check_categories(cfg, val_set)
    last = pretrain(cfg, out_dir, resume=resume, train_set=train_set, progress=progress, overwrite=overwrite)
    report = {"pretrained": cfg.model.init_from, "data": str(cfg.data.path), "epochs": cfg.train.epochs,
              "checkpoint": str(last)}
    scores = evaluate_checkpoint(last, val_set)  # under torchrun each process predicts its share
    if scores is None:  # and one scores them and writes
        return report
    report = without_nan({**report, **scores})
    atomic_write(out_dir / REPORT, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return report


def without_nan(report: dict) -> dict:
    """NaN (pycocotools' "nothing to score", e.g. no large objects) as null: JSON has no NaN."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in report.items()}


def load_detector(path) -> tuple:
    """(the Detection method holding a detection checkpoint's evaluated weights, its Config)."""
    tensors, info = checkpoint.read_checkpoint(path)
    cfg = load_config(base=info["config"])
    if cfg.method.name != "detect" or CLASSIFIER not in tensors:
        raise ConfigError(f"{path} is not a detection run (method {cfg.method.name}); detect-eval takes the "
                          "last.ckpt that `spatialssl detect` wrote")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=None))
    method = build_method(cfg, cfg.data.mean, cfg.data.std, tensors[CLASSIFIER].shape[0] - 1)
    state = checkpoint.evaluated_state(tensors)
    checkpoint.check_finite(state, path)
    checkpoint.load_exactly(method, state, path)
    return method, cfg


def evaluate_checkpoint(path, val_set) -> Optional[dict]:
    """COCO AP of a detection checkpoint on ``val_set`` (a DetectionSet or CocoStream read with its annotation
    file); under torchrun every process predicts its share and rank 0 scores (the others get None)."""
    method, cfg = load_detector(path)
    ranks, device = from_environment(cfg.train.device)
    return evaluate(method.to(device), val_set, cfg.detect.eval_batch_size, ranks)


def evaluate(method, val_set, batch_size: int, ranks: Optional[Distributed] = None) -> Optional[dict]:
    """Predict the canvases of ``val_set`` (this process's share of them under torchrun), map the detections back
    to its images and score them all, once, against its annotation file: box AP (and mask AP with a mask head), in
    percent, in rank 0; None in the others. Detections travel between processes as JSON, masks as RLE."""
    device, ranks = next(method.parameters()).device, ranks or Distributed()
    mine, results = ranks.share(len(val_set)), []
    starts = range(mine.start, mine.stop, batch_size)
    for start, images in zip(starts, in_batches(val_set, batch_size, start=mine.start, stop=mine.stop)):
        index = slice(start, min(start + batch_size, mine.stop))
        found = method.predict(images.to(device))
        results += to_coco_results(found, val_set.image_ids[index], val_set.scales[index], val_set.category_ids,
                                   sizes=val_set.sizes[index])
    gathered = ranks.gather_text(json.dumps(results), device)
    if not ranks.main:
        return None
    results = [result for text in gathered for result in json.loads(text)]
    kinds = ("bbox", "segm") if method.roi_heads.has_mask() else ("bbox",)
    scores = coco_scores(results, val_set.annotations, kinds)
    return {"images": len(val_set), "detections": len(results), **scores}


def detect_eval(path, data: Optional[str], split: Optional[str] = None, out: Optional[str] = None,
                overwrite: bool = False) -> dict:
    """``detect-eval``: the AP of a detection checkpoint on a split (its run's validation split by default)
    of ``data`` (its run's data by default); written to ``out`` when given (an existing file only with
    ``overwrite``)."""
    if out is not None:
        refuse_to_replace(out, overwrite, "--report")
    method, cfg = load_detector(path)
    if data is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(data)))
    val_set = read_split(cfg, split or cfg.data.test_split, targets=False)
    check_categories(cfg, val_set)
    device = resolve_device(cfg.train.device)
    report = {"checkpoint": str(path), "data": str(cfg.data.path), "split": split or cfg.data.test_split,
              **evaluate(method.to(device), val_set, cfg.detect.eval_batch_size)}
    report = without_nan(report)
    if out is not None:
        atomic_write(Path(out), lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return report


def summary(report: dict) -> str:
    """One line of a report's scores."""
    score = lambda key: "n/a" if report.get(key) is None else f"{report[key]:.1f}"  # noqa: E731 (null: none to score)
    line = f"box AP {score('AP')} (AP50 {score('AP50')}, AP75 {score('AP75')})"
    if "mask_AP" in report:
        line += f", mask AP {score('mask_AP')}"
    return f"{line} on {report['images']} images"
