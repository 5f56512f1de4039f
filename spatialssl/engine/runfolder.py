"""A run folder for one run at a time: checked writable before any work, locked against a second
run on the same ``--out``, cleared of the temporaries that killed runs left behind, and left as it
was found by a run that fails before its first checkpoint."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

from ..errors import ConfigError, warn
from ..files import refuse_link, sweep_temporaries

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected from one another
    fcntl = None

LOCK_NAME = ".lock"
CHECKPOINT_NAME = "last.ckpt"  # a folder holding one holds a run
WRITTEN = (CHECKPOINT_NAME, "last.json", "backbone.safetensors", "metrics.csv", "steps.csv", "tensorboard",
           "wandb-id.txt", LOCK_NAME)  # what a run writes in its folder: never through a link standing there


def check_writable(folder: Path, what: str, advice: str) -> None:
    """Create ``folder`` if needed and create a file in it, so a folder we cannot write fails now, in one
    line, not at the first checkpoint after an epoch of training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write in {what} {folder} ({err.strerror or err}); {advice}") from None


def refuse_links_in(folder: Path) -> None:
    """A symbolic link standing where a run writes one of its files is refused (it could point anywhere)."""
    for name in WRITTEN:
        refuse_link(Path(folder) / name)
    if Path(folder).is_dir():
        for older in Path(folder).glob("last-*.ckpt"):  # the checkpoints kept before last.ckpt
            refuse_link(older)


@contextmanager
def locked(folder: Path):
    """Hold an OS lock on ``folder/.lock`` while the block runs; yields whether it is held. The kernel
    releases a flock when its holder dies, so a crashed or killed run never leaves the folder locked."""
    if fcntl is None:
        yield False
        return
    lock = folder / LOCK_NAME
    try:  # read-only is enough for flock: a lock file left by another user with mode 0644 still serves
        handle = open(os.open(lock, os.O_RDONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666))
    except OSError as err:
        raise ConfigError(f"cannot open the lock file {lock} ({err.strerror or err}); fix its permissions, or "
                          "remove it while no run uses the folder") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another spatialssl run is using {folder}; wait for it or choose another --out") from None
        except OSError as err:  # a file system without locks (some network mounts)
            warn(f"cannot lock {folder} ({err.strerror}); a second run on the same --out would not be stopped")
            yield False
            return
        yield True  # closing the file releases the lock


@contextmanager
def claimed(folder: Path, writer: bool, overwrite: bool = False):
    """``folder`` for the length of a run. Only the writing process (rank 0 under torchrun) checks,
    locks and sweeps it; the others only read what rank 0 wrote. With ``overwrite``, a run already
    there is removed first. A run that fails before it commits a checkpoint removes what it added
    (the folder too, if it made it): nothing is left that looks like a run but cannot be resumed."""
    if not writer:
        yield
        return
    existed = folder.is_dir()
    found = set(os.listdir(folder)) if existed else set()
    check_writable(folder, "the run folder", "choose another --out or fix its permissions")
    with locked(folder) as held:
        if held:  # otherwise a live writer's temporary could be swept from under it
            sweep_temporaries(folder)
        if overwrite and (folder / CHECKPOINT_NAME).exists():
            _remove(folder, set(os.listdir(folder)) - {LOCK_NAME})
            found = set()
        refuse_links_in(folder)  # after --overwrite removed a run's links with it
        try:
            yield
        except BaseException:
            if not (folder / CHECKPOINT_NAME).exists():
                _remove(folder, set(os.listdir(folder)) - found)
                if not existed:
                    with suppress(OSError):  # something else wrote there meanwhile: it stays
                        folder.rmdir()
            raise


def _remove(folder: Path, names: set) -> None:
    """Remove ``names`` in ``folder``; a link is removed, never followed."""
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
