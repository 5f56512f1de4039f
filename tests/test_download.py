"""--download under torchrun: the first process of a machine downloads, the others wait for it."""
import sys
import threading
import types

import pytest

from spatialssl.data import download as downloading
from spatialssl.errors import ConfigError


def fake_torchvision(monkeypatch, calls):
    class CIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))

    module = types.ModuleType("torchvision.datasets")
    module.CIFAR10 = CIFAR10
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", module)


def test_the_first_process_of_a_machine_downloads_and_marks_it_done(tmp_path, monkeypatch):
    calls = []
    fake_torchvision(monkeypatch, calls)
    monkeypatch.setenv("LOCAL_RANK", "0")
    downloading.download("cifar10", tmp_path / "data")
    assert calls == [(str(tmp_path / "data"), True, True)]
    assert downloading.done_marker("cifar10", tmp_path / "data").is_file()


def test_the_other_processes_wait_for_the_download_and_do_not_download(tmp_path, monkeypatch):
    calls = []
    fake_torchvision(monkeypatch, calls)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(downloading, "POLL_S", 0.01)
    finished = threading.Event()
    waiter = threading.Thread(target=lambda: (downloading.download("cifar10", tmp_path), finished.set()))
    waiter.start()
    assert not finished.wait(0.3)  # no marker yet: still waiting
    downloading.done_marker("cifar10", tmp_path).write_text("done")
    assert finished.wait(5) and calls == []
    waiter.join()


def test_only_downloadable_data_sets_are_asked_for():
    with pytest.raises(ConfigError, match="data.dataset set to one of cifar10, cifar100, stl10"):
        downloading.download("imagenet", None)
