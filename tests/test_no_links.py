"""No write of ours goes through a symbolic link (issue 26): a link standing in a run folder (metrics.csv, the
lock, ...) is refused before any work, naming it, and a link elsewhere (a report, a figure, a results file) is
replaced by the new file, never followed; the file it points to is never touched."""
import shutil

import numpy as np
import pytest
from conftest import write_class_folders

from spatialssl.cli import main
from spatialssl.engine import runfolder
from spatialssl.errors import DataError
from spatialssl.files import atomic_write, open_to_append, save_figure


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    return write_class_folders(tmp_path_factory.mktemp("links") / "data",
                               rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8), np.arange(16) % 2)


def pretrain_into(out, folder, *flags, epochs=1):
    return main(["pretrain", "--data", str(folder), "--out", str(out), "--no-progress", *flags, "method.name=rotation",
                 "model.backbone=resnet8", f"train.epochs={epochs}", "train.batch_size=8", "train.knn_monitor=0"])


@pytest.mark.parametrize("name", runfolder.WRITTEN)
@pytest.mark.parametrize("dangling", [True, False])
def test_a_link_in_a_resumed_run_folder_is_refused_before_any_work(name, dangling, folder, tmp_path, capsys):
    run, outside = tmp_path / "run", tmp_path / "outside"
    assert pretrain_into(run, folder) == 0
    capsys.readouterr()
    if (run / name).exists() and not dangling:
        (run / name).rename(outside)  # the link points where the run's own file now lies
    else:
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink(missing_ok=True)
    before = snapshot(outside)
    (run / name).symlink_to(outside)
    assert pretrain_into(run, folder, "--resume", epochs=2) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run / name} is a symbolic link"), err
    assert snapshot(outside) == before  # not written through, and a dangling link created nothing


def test_overwrite_removes_the_links_with_the_run(folder, tmp_path):
    run, outside = tmp_path / "run", tmp_path / "outside.csv"
    assert pretrain_into(run, folder) == 0
    outside.write_text("kept\n")
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").symlink_to(outside)
    assert pretrain_into(run, folder, "--overwrite") == 0
    assert not (run / "metrics.csv").is_symlink() and outside.read_text() == "kept\n"


def snapshot(path):
    """What lies at ``path``: None, a file's bytes, or a folder's names and bytes."""
    if not path.exists():
        return None
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return path.read_bytes()


def test_a_link_planted_during_a_run_is_not_appended_through(tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text("kept\n")
    (tmp_path / "metrics.csv").symlink_to(outside)
    with pytest.raises(DataError, match="is a symbolic link"):
        open_to_append(tmp_path / "metrics.csv")
    assert outside.read_text() == "kept\n"
    with open_to_append(tmp_path / "new.csv") as f:  # a plain file is created and appended to
        f.write("a\n")
    with open_to_append(tmp_path / "new.csv") as f:
        f.write("b\n")
    assert (tmp_path / "new.csv").read_text() == "a\nb\n"


def test_reports_and_figures_replace_a_link_instead_of_following_it(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outside = tmp_path / "outside"
    outside.write_text("kept")
    for name in ("report.json", "figure.png"):
        (tmp_path / name).symlink_to(outside)
    atomic_write(tmp_path / "report.json", lambda tmp: open(tmp, "w").write("{}"))
    figure = plt.figure()
    save_figure(figure, tmp_path / "figure.png", dpi=20)
    plt.close(figure)
    assert outside.read_text() == "kept"
    assert not (tmp_path / "report.json").is_symlink() and (tmp_path / "report.json").read_text() == "{}"
    assert not (tmp_path / "figure.png").is_symlink()
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
