"""The package as PyPI and a user's fresh environment see it: wheel and sdist build, pass
``twine check``, carry what they must, and the wheel installs into a new venv whose
``spatialssl`` command runs."""
import site
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import spatialssl

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dist")
    # no isolation: the build backend comes from the test extra, not from the network
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT))
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_twine_check_passes_strictly(dists):
    run(sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]), str(dists["sdist"]))


def test_wheel_carries_recipes_and_types_but_no_tests(dists):
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    bundled = {Path(n).name for n in names if n.startswith("spatialssl/recipes/")}
    assert {p.name for p in (ROOT / "spatialssl" / "recipes").rglob("*.yaml")} <= bundled
    assert "spatialssl/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]
    metadata_file = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(zipfile.ZipFile(dists["wheel"]).read(metadata_file).decode())
    assert metadata["Version"] == spatialssl.__version__
    assert metadata["License-Expression"] == "MIT"
    torch = [r for r in metadata.get_all("Requires-Dist") if r.startswith("torch") and "extra" not in r]
    assert torch == ["torch>=2.3"], torch  # never pinned: users bring their own (CUDA) torch


def test_sdist_carries_what_rebuilds_and_tests_it(dists):
    names = {n.split("/", 1)[1] for n in tarfile.open(dists["sdist"]).getnames() if "/" in n}
    for needed in ("LICENSE", "CHANGELOG.md", "constraints.txt", "pyproject.toml", "README.md",
                   "examples/part_in_your_loop.py", "tests/conftest.py", "spatialssl/py.typed",
                   "spatialssl/recipes/overlays/finetune.yaml"):
        assert needed in names, needed


def test_wheel_installs_into_a_fresh_venv_and_runs(dists, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    # The packages of the interpreter running the tests (a venv's own, not its base's) give the new venv
    # torch without a download. A .pth only adds their folders: the checkout's editable install, itself a
    # .pth there, is not followed, and the wheel installed into the venv comes first.
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (purelib / "running-interpreter.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall", str(dists["wheel"]))
    where = run(python, "-c", "import spatialssl; print(spatialssl.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel's copy, not the checkout
    assert "pretrain" in run(venv / "bin" / "spatialssl", "--help", cwd=tmp_path)
    version = run(venv / "bin" / "spatialssl", "--version", cwd=tmp_path)
    assert version.startswith(f"spatialssl {spatialssl.__version__} (torch ")
    recipe = run(python, "-c", "from spatialssl.engine.config import load_config; "
                 "print(load_config('sr_cifar10').method.name)", cwd=tmp_path)
    assert recipe.strip() == "sr"  # bundled recipes are found from the installed package
