"""RESULTS.md from the reproduction suite's per-run results: tables (mean ± std over
seeds), each expected finding with whether it reproduced, the papers' numbers beside
ours, PNG plots, and every run listed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..files import atomic_write
from ..metrics import cell, verdict

# Published numbers to set beside ours. CIFAR-10 linear evaluation, ResNet-32, 200 epochs
# (Patacchiola & Storkey 2020, as the SR paper's baselines); SR Table 1 has no CIFAR-10 column.
PAPER_CIFAR10 = {"random": 27.47, "supervised": 90.87, "rr": 75.99}
# SR Table 1, CIFAR-100 (the closest published column): the ordering the paper reports.
PAPER_SR_CIFAR100 = {"random": 7.65, "supervised": 65.32, "rr": 46.17, "sr-n2-p16": 50.18, "sr-additive": 48.04}
# The baselines' published numbers: CIFAR-10 linear evaluation, ResNet-32 (RR paper, as its notes list them);
# CIFAR-100 linear evaluation (SR Table 1); CIFAR-100 finetuned ViT-S (PART Table 7, 2000 pretraining epochs,
# MP3 without a position embedding as ours; MoCo v3 as the contrastive reference).
PAPER_BASELINES_CIFAR10 = {"simclr": 77.02, "rotation": 62.00}
PAPER_BASELINES_CIFAR100 = {"simclr": 42.13, "rotation": 29.02, "deepcluster": 20.44}
PAPER_VIT_CIFAR100 = {"mae": 84.5, "mp3": 82.6, "part-offgrid": 83.0}
# PART Tables 4-5: CIFAR-100, ViT-S, 1000 pretraining epochs; finetuned accuracy and Euclidean error.
PAPER_PART_CIFAR100 = {"part-offgrid": (83.0, 0.81), "part-grid": (82.1, None), "part-pairwise": (82.52, 1.59),
                       "part-mlp": (82.38, 1.68)}


@dataclass(frozen=True)
class Measure:
    """One number of a run: ``field`` of its result (``count`` picks a patch count)."""
    field: str
    count: Optional[str] = None
    lower_is_better: bool = False

    def values(self, runs: list) -> list:
        out = []
        for r in runs:
            value = r.get(self.field)
            if isinstance(value, dict):
                value = value.get(self.count)
            if value is not None:
                out.append(value * (1 if self.lower_is_better else 100))
        return out


IMAGE, NINE = Measure("linear", "0"), Measure("linear", "9")
NINE_AFFINE = Measure("linear_affine", "9")
FINETUNED, ERROR = Measure("finetune"), Measure("position_error", lower_is_better=True)


@dataclass(frozen=True)
class Finding:
    claim: str
    source: str
    better: tuple  # (run key, Measure) expected higher (or lower error)
    worse: tuple


FINDINGS = [
    Finding("random weights < RR", "SR Table 1; RR paper", ("rr", IMAGE), ("random", IMAGE)),
    Finding("RR < SR plain (image + 9 patch features, the protocol of SR's plain row)", "SR Table 1",
            ("sr-n2-p16", NINE), ("rr", IMAGE)),
    Finding("SR plain > RR, both with image + 9 patch features", "control: same protocol for both",
            ("sr-n2-p16", NINE), ("rr", NINE)),
    Finding("SR with patch features > SR image only", "SR Fig. 4", ("sr-n2-p16", NINE), ("sr-n2-p16", IMAGE)),
    Finding("RR < SR additive (image only)", "SR Table 1", ("sr-additive", IMAGE), ("rr", IMAGE)),
    Finding("SR additive < SR plain (+9 patches)", "SR Table 1", ("sr-n2-p16", NINE), ("sr-additive", IMAGE)),
    Finding("N=3 training patches > N=2", "SR Fig. 3 (tiny-ImageNet)", ("sr-n3-p16", NINE), ("sr-n2-p16", NINE)),
    Finding("affine-augmented probe > plain probe with 9 patches", "SR Fig. 4", ("sr-n2-p16", NINE_AFFINE),
            ("sr-n2-p16", NINE)),
    Finding("supervised > SR plain (upper bound)", "SR Table 1", ("supervised", IMAGE), ("sr-n2-p16", NINE)),
    Finding("PART > random init (linear probe, standardised features)", "PART Sec. 4 (probe of the encoder)",
            ("part-offgrid", IMAGE), ("part-random", IMAGE)),
    Finding("PART finetuned > random init finetuned", "PART Table 7", ("part-offgrid", FINETUNED), ("part-random", FINETUNED)),
    Finding("off-grid >= grid (finetuned)", "PART Table 4", ("part-offgrid", FINETUNED), ("part-grid", FINETUNED)),
    Finding("cross-attention > pairwise MLP (finetuned)", "PART Table 5", ("part-offgrid", FINETUNED),
            ("part-pairwise", FINETUNED)),
    Finding("cross-attention > full MLP (finetuned)", "PART Table 5", ("part-offgrid", FINETUNED), ("part-mlp", FINETUNED)),
    Finding("cross-attention error < pairwise MLP error", "PART Table 5", ("part-offgrid", ERROR), ("part-pairwise", ERROR)),
    Finding("cross-attention error < full MLP error", "PART Table 5", ("part-offgrid", ERROR), ("part-mlp", ERROR)),
    Finding("SR plain (+9 patches) > SimCLR", "SR Table 1 (CIFAR-100)", ("sr-n2-p16", NINE), ("simclr", IMAGE)),
    Finding("RR > RotationNet", "RR paper (CIFAR-10); SR Table 1", ("rr", IMAGE), ("rotation", IMAGE)),
    Finding("RotationNet > DeepCluster", "SR Table 1 (CIFAR-100)", ("rotation", IMAGE), ("deepcluster", IMAGE)),
    Finding("SimCLR > RotationNet", "RR paper (CIFAR-10); SR Table 1", ("simclr", IMAGE), ("rotation", IMAGE)),
    Finding("SR + SimCLR > SimCLR", "SR's future work (a hypothesis, not a result)", ("sr-simclr", IMAGE),
            ("simclr", IMAGE)),
    Finding("PART (no position embedding) > MP3 without one (finetuned)", "PART Table 7", ("part-offgrid", FINETUNED),
            ("mp3", FINETUNED)),
    Finding("MAE > PART (finetuned; MAE has a position embedding)", "PART Table 7", ("mae", FINETUNED),
            ("part-offgrid", FINETUNED)),
    Finding("PART + contrastive > PART (finetuned)", "PART's future work (a hypothesis, not a result)",
            ("part-contrastive", FINETUNED), ("part-offgrid", FINETUNED)),
]


def num_pairs(results: dict, key: str) -> int:
    overrides = results[key][0]["settings"]["overrides"]
    return next(int(o.split("=")[1]) for o in overrides if o.startswith("part.num_pairs="))


def sweep_findings(results: dict) -> list:
    """PART Fig. 8's sweet spot: the default #pairs beats the fewest and the most swept."""
    swept = sorted((num_pairs(results, k), k) for k in results if k.startswith("part-pairs"))
    if "part-offgrid" not in results or not swept:
        return []
    default = num_pairs(results, "part-offgrid")
    return [Finding(f"{default} pairs > {pairs} pairs (finetuned; a sweet spot in between)", "PART Fig. 8",
                    ("part-offgrid", FINETUNED), (key, FINETUNED))
            for pairs, key in sorted({swept[0], swept[-1]}) if pairs != default]


def findings_table(results: dict) -> list:
    lines = ["| expected finding | paper | ours: better side | ours: worse side | reproduced? |", "|---|---|---|---|---|"]
    for f in FINDINGS + sweep_findings(results):
        (bk, bm), (wk, wm) = f.better, f.worse
        if bk not in results or wk not in results:  # a side not in this budget's plan (see the budget's note)
            continue
        better, worse = bm.values(results.get(bk, [])), wm.values(results.get(wk, []))
        digits = 3 if bm.lower_is_better else 1
        lines.append(f"| {f.claim} | {f.source} | {cell(better, digits)} | {cell(worse, digits)} | "
                     f"{verdict(better, worse, bm.lower_is_better)} |")
    return lines


def sr_tables(results: dict, labels: dict, studies: dict) -> list:
    keys = [k for k in labels if k in results and studies.get(k) == "sr"]
    lines = ["| run | linear, image | + 1 patch | + 3 | + 5 | + 9 | probe train acc., image / + 9 | "
             "+ 9, affine-augmented probe | kNN | paper CIFAR-10 (ResNet-32) | paper CIFAR-100 (SR Table 1) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in keys:
        runs = results[k]
        counts = [cell(Measure("linear", str(n)).values(runs)) for n in (0, 1, 3, 5, 9)]
        fitted = " / ".join(cell(Measure("linear_train", n).values(runs)) for n in ("0", "9"))
        lines.append(f"| {labels[k]} | {' | '.join(counts)} | {fitted} | {cell(NINE_AFFINE.values(runs))} | "
                     f"{cell(Measure('knn').values(runs))} | {PAPER_CIFAR10.get(k, '-')} | "
                     f"{PAPER_SR_CIFAR100.get(k, '-')} |")
    return lines


def baselines_tables(results: dict, labels: dict, studies: dict) -> list:
    """The comparison methods beside ours, at the same budget: ResNets by linear evaluation, ViTs by
    probe and finetuning, with the papers' numbers for them (other data, epochs and backbones)."""
    keys = [k for k in labels if k in results and studies.get(k) == "baselines"]
    resnets, vits = [k for k in keys if "finetune" not in results[k][0]], [k for k in keys if "finetune" in results[k][0]]
    lines = ["| run (ResNet) | linear, image | + 9 patches | kNN | paper CIFAR-10 (ResNet-32) | paper CIFAR-100 "
             "(SR Table 1) |", "|---|---|---|---|---|---|"]
    lines += [f"| {labels[k]} | {cell(IMAGE.values(results[k]))} | {cell(NINE.values(results[k]))} | "
              f"{cell(Measure('knn').values(results[k]))} | {PAPER_BASELINES_CIFAR10.get(k, '-')} | "
              f"{PAPER_BASELINES_CIFAR100.get(k, '-')} |" for k in resnets]
    lines += ["", "| run (ViT) | linear probe | finetuned | paper finetuned (CIFAR-100, ViT-S, PART Table 7) |",
              "|---|---|---|---|"]
    lines += [f"| {labels[k]} | {cell(IMAGE.values(results[k]))} | {cell(FINETUNED.values(results[k]))} | "
              f"{PAPER_VIT_CIFAR100.get(k, '-')} |" for k in vits]
    return lines


def part_table(results: dict, labels: dict, studies: dict) -> list:
    lines = ["| run | position error, off-grid boxes | mean predictor | error, own sampling (mean predictor) | "
             "linear probe | probe train acc. | finetuned | paper finetuned / error (CIFAR-100, ViT-S, 1000 ep) |",
             "|---|---|---|---|---|---|---|---|"]
    for k in [k for k in labels if k in results and studies.get(k) == "part"]:
        runs = results[k]
        own = f"{cell(Measure('position_error_own', lower_is_better=True).values(runs), 3)} " \
              f"({cell(Measure('position_error_own_mean_predictor', lower_is_better=True).values(runs), 3)})"
        paper = PAPER_PART_CIFAR100.get(k)
        paper_cell = "-" if paper is None else f"{paper[0]} / {paper[1] if paper[1] is not None else '-'}"
        lines.append(f"| {labels[k]} | {cell(ERROR.values(runs), 3)} | "
                     f"{cell(Measure('position_error_mean_predictor', lower_is_better=True).values(runs), 3)} | "
                     f"{own if 'position_error_own' in runs[0] else '-'} | {cell(IMAGE.values(runs))} | "
                     f"{cell(Measure('linear_train', '0').values(runs))} | "
                     f"{cell(FINETUNED.values(runs))} | {paper_cell} |")
    return lines


def runs_table(results: dict, labels: dict) -> list:
    """Every run and seed, so nothing is hidden."""
    lines = ["| run | seed | pretraining s | run s | scores |", "|---|---|---|---|---|"]
    for k, runs in results.items():
        for r in runs:
            lines.append(f"| {labels.get(k, k)} | {r['seed']} | {r['pretrain_s']:.0f} | {r['total_s']:.0f} | "
                         f"{headline(r)} |")
    return lines


def write_markdown(path: Path, budget_name: str, header: list, results: dict, labels: dict, figures: list,
                   studies: dict) -> str:
    """The budget's section of RESULTS.md (between markers, so other budgets' sections stay)."""
    from .bench import write_section
    begin, end = f"<!-- reproduce-{budget_name}:begin -->", f"<!-- reproduce-{budget_name}:end -->"
    rel = [f.relative_to(path.parent).as_posix() for f in figures]
    lines = [begin, f"## Budget `{budget_name}`", "", *header, "",
             "### Expected findings", "",
             "\"yes\": the expected side wins by more than the larger of the two seed standard deviations; "
             "\"direction only\": it wins by less; \"no\": it loses; \"one seed only\": a side has no spread yet, "
             "so no verdict. Findings about runs outside this budget's plan are left out. "
             "Accuracies in %, errors in reference-patch units.",
             "", *findings_table(results), "",
             "### Spatial Reasoning study (linear evaluation, test accuracy %)", "", *sr_tables(results, labels, studies), "",
             "### PART study", "", *part_table(results, labels, studies), "",
             "### Baselines (the papers' comparison methods, and spatial reasoning inside contrastive learning)", "",
             *baselines_tables(results, labels, studies), "",
             "### Plots", "", *[f"![{Path(r).stem}]({r})" for r in rel], "",
             "### Every run", "", *runs_table(results, labels), "", end]
    text = "\n".join(lines)
    if not path.is_file():
        atomic_write(path, lambda tmp: Path(tmp).write_text("# Reproducing the papers\n"))
    write_section(path, text, begin, end)
    return text


def headline(result: dict) -> str:
    parts = [f"linear {100 * result['linear']['0']:.1f}%"]
    if "9" in result["linear"]:
        parts.append(f"+9 patches {100 * result['linear']['9']:.1f}%")
    if "finetune" in result:
        parts.append(f"finetuned {100 * result['finetune']:.1f}%")
    if "position_error" in result:
        parts.append(f"position error {result['position_error']:.3f}")
    return ", ".join(parts)
