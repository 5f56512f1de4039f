"""Settings that would quietly spoil a run, caught before it starts: a warm-up as long as the
run, a recipe's normalisation applied to other data (measured there instead, and said once),
DeiT-style regularisation on a run too short for it. Each is corrected or pointed out in one line
(errors.warn)."""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..errors import warn

WARMUP_SHARE = 0.1  # a warm-up that would fill the run is cut to this share of it
SHORT_FINETUNE_EPOCHS = 30  # mixup/cutmix/RandAugment are DeiT's regularisation for 100+ epoch runs


def warmup_epochs(optim, epochs: float) -> float:
    """The warm-up actually used: ``optim.warmup_epochs``, or 10% of the run when it would last
    the whole run (the learning rate would never reach optim.lr, and cosine never decay).
    A pure function of the config, so a resumed run agrees with an uninterrupted one of the
    same length (extending a run's train.epochs on resume can change the cut warm-up)."""
    if epochs > 0 and optim.warmup_epochs >= epochs:
        return WARMUP_SHARE * epochs
    return optim.warmup_epochs


def warn_about_warmup(cfg) -> None:
    used = warmup_epochs(cfg.optim, cfg.train.epochs)
    if used != cfg.optim.warmup_epochs:
        warn(f"optim.warmup_epochs {cfg.optim.warmup_epochs:g} is not shorter than the {cfg.train.epochs}-epoch run; "
             f"warming up for {used:g} epochs ({WARMUP_SHARE:.0%} of the run) instead")


def warn_about_ema(decay: float, total_steps: int) -> None:
    """An average over ~1/(1 - decay) steps needs a run at least that long, or the evaluated
    weights stay close to the initial ones (0.9999 over 368 steps keeps 96% of them)."""
    if total_steps < 1 / (1 - decay):
        kept = decay ** total_steps
        warn(f"train.ema {decay:g} averages over about {1 / (1 - decay):.0f} steps but the run has {total_steps}: "
             f"the averaged weights that evaluation and export use keep {kept:.0%} of the initial ones; "
             f"lower train.ema (e.g. {1 - 10 / max(total_steps, 10):.4g}) or turn it off (0)")


def choose_statistics(cfg, data) -> tuple:
    """(cfg with data.mean/std set, a note saying which, shown once). Given statistics apply to the data
    set they are of (``data.statistics_of``: a recipe's ``data.dataset``), or to any data when they are the
    user's own (null); on other data, and when none are given, they are measured on its training images,
    quietly: that is the default, not a mistake."""
    d = cfg.data
    layout: Optional[str] = getattr(data, "layout", None) or None  # None: data built in memory
    given = d.mean is not None and d.std is not None
    if given and d.statistics_of in (None, layout):
        whose = f"given for {d.statistics_of}" if d.statistics_of else "given (data.mean/std)"
        return cfg, f"normalising with the statistics {whose}: mean {_short(d.mean)}, std {_short(d.std)}"
    mean, std = data.mean_std()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, mean=mean, std=std, statistics_of=layout))
    instead = f", not the recipe's for {d.statistics_of}" if given else ""
    return cfg, (f"normalising with statistics measured on {data.source}{instead}: mean {_short(mean)}, "
                 f"std {_short(std)} (data.mean/data.std set them)")


def _short(values) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def warn_about_short_finetune(cfg) -> None:
    f = cfg.finetune
    heavy = [name for name, on in (("mixup", f.mixup > 0), ("cutmix", f.cutmix > 0),
                                   ("randaugment_ops", f.randaugment_ops > 0)) if on]
    if heavy and cfg.train.epochs < SHORT_FINETUNE_EPOCHS:
        off = " ".join(f"finetune.{name}=0" for name in heavy)
        warn(f"finetuning for {cfg.train.epochs} epochs with {', '.join(heavy)} on: this DeiT-style regularisation "
             f"needs about {SHORT_FINETUNE_EPOCHS}+ epochs and can keep a short run near chance; "
             f"for a short run add {off}")
