import dataclasses

import numpy as np
import pytest
from conftest import write_class_folders

from spatialssl.cli import main
from spatialssl.data import make_demo_images
from spatialssl.engine.checks import check_against_data
from spatialssl.errors import ConfigError, DataError
from spatialssl.metrics import mean_std, verdict
from spatialssl.studies import reproduce
from spatialssl.studies.reproduce import BUDGETS, plan, run_config, run_suite
from spatialssl.studies.results import FINDINGS, Measure, findings_table, sweep_findings

TINY = dataclasses.replace(
    BUDGETS["cpu"], name="tiny", train_images=None, test_images=None, seeds=(0,),
    resnet=("model.backbone=resnet8", "train.epochs=1", "train.batch_size=32"),
    vit=("model.backbone=vit_tiny", "model.depth=1", "model.drop_path=0", "train.epochs=1", "train.batch_size=32"),
    finetune=("train.epochs=1", "train.batch_size=32"), probe_epochs=2, affine_copies=1, pairs=(16, 64),
    default_pairs=64, position_images=8)


@pytest.mark.parametrize("budget", list(BUDGETS.values()), ids=list(BUDGETS))
def test_every_run_of_a_study_gets_the_same_budget(budget):
    runs = plan(budget)
    assert len({r.key for r in runs}) == len(runs)
    images = make_demo_images(256, seed=0)
    for vit in (False, True):  # the SR study and ResNet baselines; the PART study and ViT baselines
        configs = [run_config(r, budget, 0, "data") for r in runs if r.vit == vit]
        # the same data, backbone, epochs, batch and seed (a method's optimiser is its recipe's)
        shared = {(c.model.backbone, c.model.depth, c.train.epochs, c.train.batch_size, c.train.seed) for c in configs}
        assert len(shared) == 1, shared
        for cfg in configs:  # every geometry is possible at 32 px
            check_against_data(cfg, images)
    sr_plain = {r.key: run_config(r, budget, 0, "data").method for r in runs if r.key.startswith("sr-n")}
    assert sorted(sr_plain) == sorted(f"sr-n{n}-p{size}" for n, size in budget.sr_patches)
    assert all(m.non_overlapping == (2 * m.patch_size <= 32) for m in sr_plain.values())
    pairs = sorted(run_config(r, budget, 0, "data").part.num_pairs for r in runs
                   if r.key == "part-offgrid" or r.key.startswith("part-pairs"))
    assert pairs == sorted({*budget.pairs, budget.default_pairs}) and max(pairs) <= 64 * 63  # distinct ordered pairs
    part = {r.key: run_config(r, budget, 0, "data").part for r in runs if r.study == "part" and r.key != "part-random"}
    assert part["part-offgrid"].sampling == "offgrid" and part["part-scale"].sampling == "scale"
    assert {p.encoder for p in part.values()} == {"cross_attention", "pairwise_mlp", "mlp"}


def test_the_cpu_budget_gives_every_pretraining_at_least_four_times_the_first_budgets_steps():
    budget = BUDGETS["cpu"]
    for run in plan(budget):
        cfg = run_config(run, budget, 0, "data")
        if cfg.method.name != "random":
            assert budget.train_images // cfg.train.batch_size * cfg.train.epochs >= 4 * 92, run.key


def test_verdict_compares_the_gain_with_the_seed_spread():
    assert verdict([60, 62], [50, 52]) == "yes"
    assert verdict([52, 56], [50, 54]) == "direction only (within seed spread)"
    assert verdict([50, 54], [52, 56]) == "no (opposite, within seed spread)"
    assert verdict([40, 42], [50, 52]) == "no"
    assert verdict([1.0, 1.1], [2.0, 2.1], lower_is_better=True) == "yes"
    assert verdict([], [50]) == "not run"
    assert verdict([60], [50, 52]) == "one seed only: expected direction"
    assert verdict([40], [50]) == "one seed only: opposite direction"
    mean, std = mean_std([1.0, 3.0])
    assert (mean, round(std, 6)) == (2.0, round(2 ** 0.5, 6))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_findings_read_the_named_measures():
    results = {"rr": [{"linear": {"0": 0.40}}, {"linear": {"0": 0.42}}],
               "random": [{"linear": {"0": 0.30}}, {"linear": {"0": 0.31}}]}
    rows = findings_table(results)
    first = next(r for r in rows if r.startswith("| random weights < RR"))
    assert "41.0 ± 1.4" in first and "30.5 ± 0.7" in first and first.endswith("| yes |")
    assert len(rows) == 3  # header, rule and the one finding whose two sides both ran
    assert Measure("position_error", lower_is_better=True).values([{"position_error": 1.5}]) == [1.5]
    assert not any(r.startswith("| RR < SR plain") for r in rows)  # one side not run
    assert {k for f in FINDINGS for k in (f.better[0], f.worse[0])} <= {r.key for r in plan(BUDGETS["paper"])}


def test_the_pairs_sweep_finding_compares_the_default_with_both_ends():
    def run(pairs, accuracy):  # two seeds, 1 point apart
        return [{"settings": {"overrides": [f"part.num_pairs={pairs}"]}, "finetune": accuracy + d} for d in (0, 0.01)]

    results = {"part-offgrid": run(256, 0.5), "part-pairs64": run(64, 0.4), "part-pairs1024": run(1024, 0.6),
               "part-pairs128": run(128, 0.45)}
    found = {f.worse[0]: f for f in sweep_findings(results)}
    assert sorted(found) == ["part-pairs1024", "part-pairs64"]
    rows = findings_table(results)
    assert next(r for r in rows if "> 64 pairs" in r).endswith("| yes |")
    assert next(r for r in rows if "> 1024 pairs" in r).endswith("| no |")


def test_the_suite_runs_writes_results_and_reuses_finished_runs(cifar_like, tmp_path, monkeypatch):
    only = ["rr", "sr-n2-p16", "part-offgrid", "part-random"]
    results = run_suite(TINY, cifar_like, tmp_path / "runs", only=only, log=lambda line: None)
    assert sorted(results) == sorted(only)
    sr, part = results["sr-n2-p16"][0], results["part-offgrid"][0]
    assert sorted(sr["linear"]) == ["0", "1", "3", "5", "9"] and sorted(sr["linear_affine"]) == sorted(sr["linear"])
    assert "linear_affine" not in results["rr"][0]
    assert part["position_error"] > 0 and part["position_error_mean_predictor"] > 0 and 0 <= part["finetune"] <= 1
    assert "position_error" not in results["part-random"][0] and "finetune" in results["part-random"][0]

    out = tmp_path / "RESULTS.md"
    out.write_text("# Reproducing the papers\n\nhand-written discussion stays\n")
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    (tmp_path / "results" / "tiny" / "sr_patch_size.png").write_bytes(b"an earlier plan's plot")
    text = reproduce.report(results, TINY, out, "spatialssl reproduce", 1.0)
    written = out.read_text()
    assert "hand-written discussion stays" in written and text in written
    assert "| SR plain > RR, both with image + 9 patch features |" in text and "| RR, K=4 |" in text and "| PART (off-grid), cross-attention |" in text
    for name in ("sr_patch_features.png", "part_variants.png"):
        assert (tmp_path / "results" / "tiny" / name).stat().st_size > 1000
    assert not (tmp_path / "results" / "tiny" / "sr_patch_size.png").exists()  # one size: no sweep to plot

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(reproduce, "pretrain", no_training)
    partial = reproduce.finished_results(TINY, tmp_path / "runs", only=[*only, "supervised"])
    assert partial == results  # the unfinished run is left out, nothing is run
    assert main(["reproduce", "--budget", "cpu", "--report-only", "--out", str(tmp_path / "runs"),
                 "--write", str(out)]) == 2  # the cpu budget's runs are not there
    again = run_suite(TINY, cifar_like, tmp_path / "runs", only=only, log=lambda line: None)
    assert again == results
    changed = dataclasses.replace(TINY, probe_epochs=3)
    with pytest.raises(ConfigError, match="other settings"):
        run_suite(changed, cifar_like, tmp_path / "runs", only=["rr"], log=lambda line: None)
    monkeypatch.setattr(reproduce, "PROTOCOL", reproduce.PROTOCOL - 1)  # results of an older method or probe
    with pytest.raises(ConfigError, match="other settings"):
        run_suite(TINY, cifar_like, tmp_path / "runs", only=["rr"], log=lambda line: None)


def test_bad_input_is_refused_before_any_run(tmp_path, cifar_like, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "pretrain", lambda *a, **k: pytest.fail("trained despite bad input"))
    big = np.random.default_rng(0).integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
    for split in ("train", "test"):
        write_class_folders(tmp_path / "big" / split, big, np.arange(20) % 10)
    with pytest.raises(DataError, match="32 px"):
        run_suite(TINY, tmp_path / "big", tmp_path / "runs", only=["rr"])
    with pytest.raises(ConfigError, match="--only nope"):
        run_suite(TINY, cifar_like, tmp_path / "runs", only=["nope"])
    with pytest.raises(ConfigError, match="no_such_key"):
        run_suite(TINY, cifar_like, tmp_path / "runs", only=["rr"], overrides=["train.no_such_key=1"])
    assert main(["reproduce", "--budget", "cpu"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["reproduce", "--dry-run", "--only", "part"]) == 0
    listed = capsys.readouterr().out
    assert "part-grid" in listed and "sr-n2-p16" not in listed


def test_the_baselines_table_sets_each_method_beside_the_papers_number():
    from spatialssl.studies.results import baselines_tables

    resnet = {"seed": 0, "linear": {"0": 0.40, "9": 0.45}, "knn": 0.3}
    vit = {"seed": 0, "linear": {"0": 0.41}, "finetune": 0.35}
    results = {"simclr": [resnet], "mae": [vit], "rr": [resnet]}
    labels = {"simclr": "SimCLR", "mae": "MAE (position embedding)", "rr": "RR, K=4"}
    studies = {"simclr": "baselines", "mae": "baselines", "rr": "sr"}
    rows = baselines_tables(results, labels, studies)
    assert "| SimCLR | 40.0 ± 0.0 | 45.0 ± 0.0 | 30.0 ± 0.0 | 77.02 | 42.13 |" in rows
    assert "| MAE (position embedding) | 41.0 ± 0.0 | 35.0 ± 0.0 | 84.5 |" in rows
    assert not any("RR, K=4" in row for row in rows)  # the SR study's own table has it
    assert [r.key for r in plan(BUDGETS["cpu"]) if r.study == "baselines"] == [
        "simclr", "rotation", "deepcluster", "sr-simclr", "mae", "mp3", "droppos", "part-contrastive"]
