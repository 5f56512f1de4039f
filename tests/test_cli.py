import json

import numpy as np
import pytest

import spatialssl
from spatialssl.cli import main
from spatialssl.engine.runlog import read_metrics


def test_pretrain_resume_and_linear_eval_from_the_command_line(tmp_path, cifar_like, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--config", "recipes/sr_cifar10.yaml", "--data", str(cifar_like), "--out", str(out),
            "--no-progress", "model.backbone=resnet8", "train.epochs=1", "train.batch_size=32"]
    assert main(args) == 0
    assert main(["pretrain", "--out", str(out), "--resume", "--no-progress", "train.epochs=2"]) == 0
    assert json.loads((out / "last.json").read_text())["epoch"] == 2
    metrics = read_metrics(out)
    assert float(metrics[-1]["knn_acc"]) >= 0  # the test split is monitored
    assert metrics[-1]["knn_k"].isdigit()  # a count, not 10.0
    assert main(["linear-eval", "--checkpoint", str(out / "last.ckpt"), "--data", str(cifar_like),
                 "--patches", "0,3", "--epochs", "2"]) == 0
    table = capsys.readouterr().out
    assert "lin+3p" in table
    report = json.loads((out / f"linear_eval-{cifar_like.name}.json").read_text())
    assert set(report["linear"]) == {"0", "3"} and 0 <= report["linear"]["3"]["test_acc"] <= 1


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--config", "recipes/sr_cifar10.yaml", "--data", "/no/such/folder", "--out", "{tmp}"], "does not exist"),
    (["pretrain", "--config", "recipes/nope.yaml", "--out", "{tmp}"], "recipe recipes/nope.yaml does not exist"),
    (["pretrain", "--config", "recipes/sr_cifar10.yaml", "--out", "{tmp}", "method.patches=3"], "unknown config key 'method.patches'"),
    (["pretrain", "--config", "recipes/sr_cifar10.yaml", "--out", "{tmp}", "method.num_patches=1"], "num_patches must be >= 2"),
    (["pretrain", "--config", "recipes/sr_cifar10.yaml", "--out", "{tmp}", "train.epochs=many"], "expects int"),
    (["pretrain", "--config", "recipes/sr_cifar10.yaml", "--out", "{tmp}", "method.name=byol"], "method.name 'byol' is unknown"),
    (["pretrain", "--config", "recipes/sr_cifar10.yaml", "--out", "{tmp}"], "no data: pass --data"),
    (["pretrain", "--out", "{tmp}", "--resume"], "last.ckpt does not exist"),
    (["linear-eval", "--checkpoint", "{tmp}/missing.ckpt", "--data", "{tmp}"], "missing.ckpt does not exist"),
])
def test_bad_input_gives_one_clear_error(tmp_path, capsys, args, message):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


DATA_SETS = ("cifar100_20", "cifar100", "cifar10", "stl10", "tiny_imagenet", "imagenet", "sleep")
RECIPES = {  # family (a recipe's name before its data set) -> how many data sets it has a recipe for
    **{method: 5 for method in ("sr_additive", "supervised", "random")},  # the SR paper's data sets
    **{method: 6 for method in ("rr", "sr")},  # and ImageNet
    "part": 3, "part1d": 1, "demo": 1, "demo_timeseries": 1, "demo_detection": 1,
    **{method: 5 for method in ("simclr", "rotation", "deepcluster")},  # the SR paper's Table 1 baselines
    **{method: 3 for method in ("mae", "mp3", "droppos")},  # CIFAR-10, -100 and ImageNet (PART's Table 6)
    **{method: 2 for method in ("sr_simclr", "part_contrastive")},  # CIFAR-10, -100
}


def recipe_family(name: str) -> str:
    return next((name[:-len(data) - 1] for data in DATA_SETS if name.endswith(f"_{data}")), name)


def test_every_recipe_loads(tmp_path):
    from collections import Counter
    from pathlib import Path

    from spatialssl.engine.config import load_config

    recipes = sorted(Path("recipes").glob("*.yaml"))
    assert Counter(recipe_family(recipe.stem) for recipe in recipes) == RECIPES
    for recipe in recipes:
        cfg = load_config(recipe)
        assert cfg.method.name in recipe.name or recipe.name.startswith(("sr_additive", "demo"))
        if cfg.method.name == "part" and cfg.model.backbone.startswith("vit_"):
            assert not cfg.model.pos_embed  # images: no position embedding in pretraining
        if cfg.model.backbone.startswith("vit1d_") and not recipe.name.startswith("demo"):
            assert cfg.part.pos_embed_mask == 0.2 and cfg.part.num_tokens == 40


FIGURES = ("reconstruct", "symmetry", "uncertainty")


@pytest.mark.parametrize("arrays, missing", [
    ({"images": np.zeros((4, 8, 8, 3), np.uint8)}, "has no 'test_images' array (it has images)"),
    ({"train_images": np.zeros((4, 8, 8, 3), np.uint8), "test_images": np.zeros((4, 8, 8, 3), np.uint8)},
     "[train] has no labels"),
])
def test_linear_eval_says_it_needs_labelled_splits_and_how_to_give_them(tmp_path, capsys, arrays, missing):
    np.savez(tmp_path / "x.npz", **arrays)
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--data", str(tmp_path / "x.npz"), "--no-progress",
                 "method.name=random", "model.backbone=resnet8"]) == 0
    assert main(["linear-eval", "--checkpoint", str(out / "last.ckpt"), "--data", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: linear evaluation needs labelled train and test splits, but ") and missing in err
    assert "a .npz of train_images, train_labels, test_images and test_labels, or a folder of train/ and test/" in err


def test_a_timm_vit_s_token_size_is_explained_for_the_method_that_uses_it(tmp_path, capsys, timm):
    np.savez(tmp_path / "x.npz", images=np.zeros((8, 32, 32, 3), np.uint8))
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "x.npz"), "--no-progress",
                 "method.name=sr", "model.backbone=timm/vit_tiny_patch16_224", "model.patch_size=8",
                 "method.patch_size=16", "train.batch_size=4"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: timm/vit_tiny_patch16_224 embeds 16x16-pixel tokens but model.patch_size is 8; set "
                   "model.patch_size=16 (the token size of the ViT, which methods that cut patches for it also use), "
                   "or choose a timm ViT with that token size\n")
    assert not (tmp_path / "run").exists()  # refused before its first checkpoint: nothing left behind


def test_the_figures_draw_from_an_unlabelled_folder(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i, image in enumerate(np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)):
        Image.fromarray(image).save(folder / f"{i}.png")
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--data", str(folder), "--no-progress", "method.name=part",
                 "model.backbone=vit_tiny", "model.depth=1", "part.num_pairs=8", "train.epochs=0", "train.batch_size=4"]) == 0
    for kind in FIGURES:
        png = tmp_path / f"{kind}.png"
        assert main([kind, "--checkpoint", str(out / "last.ckpt"), "--data", str(folder), "--out", str(png)]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["symmetry", "--checkpoint", str(out / "last.ckpt"), "--data", str(folder), "--split", "test",
                 "--out", str(tmp_path / "asked.png")]) == 2  # a split asked for by name must exist
    assert "has no 'test' split" in capsys.readouterr().err


@pytest.fixture
def random_run(tmp_path):
    """An untrained checkpoint and a small labelled .npz: the quickest linear evaluation."""
    rng = np.random.default_rng(0)
    data = tmp_path / "small.npz"
    np.savez(data, train_images=rng.integers(0, 255, (16, 8, 8, 3), dtype=np.uint8), train_labels=np.arange(16) % 2,
             test_images=rng.integers(0, 255, (8, 8, 8, 3), dtype=np.uint8), test_labels=np.arange(8) % 2)
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--data", str(data), "--no-progress", "method.name=random",
                 "model.backbone=resnet8", "train.knn_monitor=0"]) == 0
    return out / "last.ckpt", data


def linear_eval(checkpoint, data, *extra):
    return main(["linear-eval", "--checkpoint", str(checkpoint), "--data", str(data), "--patches", "0",
                 "--epochs", "1", *extra])


def test_linear_eval_refuses_an_unwritable_report_folder_before_evaluating(tmp_path, random_run, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    capsys.readouterr()
    assert linear_eval(*random_run, "--report", str(blocker / "report.json")) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"cannot write in the report's folder {blocker}" in captured.err and "--report PATH" in captured.err


def test_linear_eval_prints_its_results_before_a_failing_report_write(random_run, capsys, monkeypatch):
    import errno

    from spatialssl.commands import linear_eval as command

    def disk_full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(command, "atomic_write", disk_full)
    capsys.readouterr()
    assert linear_eval(*random_run) == 2
    captured = capsys.readouterr()
    assert "linear" in captured.out and "macro-F1" in captured.out  # the results are not lost
    assert captured.err.count("\n") == 1 and "(No space left on device); the results are printed above" in captured.err


def test_a_run_folder_stands_for_its_checkpoint(random_run, capsys):
    checkpoint, data = random_run
    assert main(["linear-eval", "--checkpoint", str(checkpoint.parent), "--data", str(data), "--patches", "0",
                 "--epochs", "1"]) == 0
    assert f"report: {checkpoint.with_name('linear_eval-small.json')}" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(checkpoint.parent), "--out", str(checkpoint.with_name("x"))]) == 0
    empty = checkpoint.parent / "empty"
    empty.mkdir()
    assert main(["export", "--checkpoint", str(empty), "--out", str(checkpoint.with_name("y"))]) == 2
    assert f"checkpoint {empty} is a folder without a last.ckpt" in capsys.readouterr().err


def test_linear_eval_writes_its_report_where_asked(tmp_path, random_run):
    report = tmp_path / "reports" / "mine.json"
    assert linear_eval(*random_run, "--report", str(report)) == 0
    assert set(json.loads(report.read_text())["linear"]) == {"0"}


def test_linear_eval_keeps_earlier_reports(tmp_path, random_run, capsys):
    checkpoint, data = random_run
    first = checkpoint.with_name("linear_eval-small.json")  # small.npz: the file's name without its suffix
    assert linear_eval(*random_run) == 0 and linear_eval(*random_run, "--patches", "0") == 0
    second = checkpoint.with_name("linear_eval-small-2.json")
    assert first.exists() and second.exists() and f"report: {second}" in capsys.readouterr().out
    first.write_text("mine")
    assert linear_eval(*random_run, "--report", str(first)) == 2  # refused before any work
    assert f"--report {first} already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert first.read_text() == "mine"
    assert linear_eval(*random_run, "--report", str(first), "--overwrite") == 0
    assert set(json.loads(first.read_text())["linear"]) == {"0"}


@pytest.mark.parametrize("command", ["pretrain", "finetune", "detect", "linear-eval", "detect-eval", *FIGURES])
def test_every_command_that_writes_keeps_what_is_there_unless_overwrite(tmp_path, random_run, capsys, command):
    checkpoint, data = random_run
    run = checkpoint.parent  # holds a run
    mine = tmp_path / "mine.json"
    mine.write_text("mine")
    args = {"pretrain": ["--data", str(data), "--out", str(run), "method.name=random", "model.backbone=resnet8"],
            "finetune": ["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(run)],
            "detect": ["--checkpoint", str(checkpoint), "--data", str(tmp_path), "--out", str(run)],
            "linear-eval": ["--checkpoint", str(checkpoint), "--data", str(data), "--report", str(mine)],
            "detect-eval": ["--checkpoint", str(checkpoint), "--report", str(mine)]}
    kept = {p: p.stat().st_mtime_ns for p in [mine, *run.iterdir()]}
    capsys.readouterr()
    assert main([command, *args.get(command, ["--checkpoint", str(checkpoint), "--data", str(data), "--out",
                                              str(mine)])]) == 2
    err = capsys.readouterr().err
    replaced = run if command in ("pretrain", "finetune", "detect") else mine
    option = "--report" if "--report" in args.get(command, []) else "--out"
    resume = "--resume to continue it, " if replaced == run else ""
    assert err == f"error: {option} {replaced} already exists; pass {resume}--overwrite to replace it, or choose " \
                  f"another {option}\n"
    assert {p: p.stat().st_mtime_ns for p in [mine, *run.iterdir()]} == kept


def test_pretrain_overwrite_replaces_the_run_from_the_command_line(random_run, capsys):
    checkpoint, data = random_run
    before = json.loads(checkpoint.with_name("last.json").read_text())
    assert main(["pretrain", "--data", str(data), "--out", str(checkpoint.parent), "--overwrite", "--no-progress",
                 "method.name=random", "model.backbone=resnet8", "train.seed=7"]) == 0
    assert json.loads(checkpoint.with_name("last.json").read_text()) != before


def test_pretrain_refuses_an_out_it_cannot_write(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["pretrain", "--out", str(blocker / "run"), "--no-progress", "method.name=random"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write in the run folder {blocker / 'run'}" in err


def test_import_spatialssl_stays_light_and_a_missing_extra_is_named(monkeypatch):
    import subprocess
    import sys

    from spatialssl.errors import ConfigError, optional_import

    loaded = subprocess.run([sys.executable, "-c", "import sys, spatialssl; print(sorted(m for m in "
                             "('scipy', 'matplotlib', 'timm', 'torchvision', 'tensorboard') if m in sys.modules))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"drawing figures needs the 'matplotlib' package: pip install "
                                          r"'spatialssl\[plots\]'"):
        optional_import("matplotlib", "plots", "drawing figures")


def help_of(capsys, *command) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # unwrapped


def test_figure_commands_describe_their_own_options(capsys):
    pngs = {name: help_of(capsys, name) for name in ("reconstruct", "symmetry", "uncertainty")}
    assert ["--images" in text for text in pngs.values()] == [True, False, False]  # only reconstruct shows several
    assert "draws the image and its boxes" in pngs["symmetry"] and "the target patch" in pngs["uncertainty"]
    assert all("WFDB" not in text for text in pngs.values())  # figures are of images


def test_data_help_names_every_input_kind_and_version_names_torch(capsys):
    text = help_of(capsys, "pretrain")
    for kind in ("CIFAR-10/100", "STL-10", "tiny-imagenet-200", ".npz of images", ".npz of epochs", "WFDB", "EDF"):
        assert kind in text, kind
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith(f"spatialssl {spatialssl.__version__} (torch ")
