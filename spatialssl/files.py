"""Atomic file writes: a reader sees the old file or the whole new one, never a torn one."""
from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, DataError


def current_umask() -> int:
    """The process umask. Linux shows it in /proc; elsewhere it can only be read by setting it and
    putting it back, which races with a thread creating a file in between."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


# atomic_write's temporaries: ".<name>.<mkstemp's 8 random characters>.spatialssl-tmp", a suffix no user would
# choose; the sweep also checks the marker mkstemp leaves (a regular file, not a link)
TEMPORARY_SUFFIX = ".spatialssl-tmp"
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(TEMPORARY_SUFFIX))


def sweep_temporaries(folder: Path, idle_for: float = 0.0) -> list:
    """Remove the temporaries that runs killed during a write left in ``folder`` (a checkpoint's each);
    return their names. Call it only while holding the folder's lock, or a live writer's file goes; in a
    folder shared without a lock, pass ``idle_for``: only temporaries unmodified that many seconds go."""
    swept = []
    cutoff = time.time() - idle_for
    for path in Path(folder).iterdir():
        ours = TEMPORARY.fullmatch(path.name) and not path.is_symlink() and path.is_file()
        if ours and (not idle_for or _modified(path) < cutoff):
            path.unlink(missing_ok=True)
            swept.append(path.name)
    return swept


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # its writer renamed or removed it meanwhile
        return float("inf")


def atomic_write(path: Path, write, before_rename=None) -> None:
    """``write(tmp)`` a temporary file in the same folder, fsync it, rename it to ``path`` and fsync the
    folder, with the mode a plain ``open(path, 'w')`` would give it; ``before_rename()`` runs once the new
    file is whole (e.g. to move the old one aside)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        _fsync_file(tmp)  # on disk before it is named: a power cut cannot leave an empty file under the name
        # mkstemp creates 0o600 whatever the umask; a checkpoint or a cache in a shared folder must stay
        # readable by whoever the user's umask lets read it.
        os.chmod(tmp, 0o666 & ~current_umask())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)  # and the rename itself on disk


def refuse_link(path: Path) -> None:
    """No write of ours goes through a symbolic link: in a shared folder it could point anywhere."""
    if Path(path).is_symlink():
        raise DataError(f"{path} is a symbolic link, and spatialssl never writes through one (it could point outside "
                        "the folder); remove the link, or choose another output folder")


def open_to_append(path: Path):
    """``path`` opened to append text (created if missing), never through a symbolic link (O_NOFOLLOW closes
    the race between the check and the open)."""
    refuse_link(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:  # a link appeared after the check
            refuse_link(path)
        raise
    return open(fd, "a", newline="")


def save_figure(figure, path: Path, dpi: int) -> Path:
    """A matplotlib figure written atomically (savefig itself would follow a link standing at ``path``)."""
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))
    return path


@contextmanager
def native_output_captured():
    """What C code inside the block prints to the process's stdout and stderr (file descriptors 1 and 2: a
    library's own messages, e.g. pyedflib's on a damaged header), collected instead of glued to our output;
    yields a list that holds the text, one line, once the block ends."""
    import sys

    said: list = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = " ".join(sink.read(4096).decode("utf-8", "replace").split())
            if text:
                said.append(text[:300])


def write_or_explain(path: Path, write, advice: str) -> None:
    """``write()`` ``path``; a full disk or a lost permission becomes one line naming the file and what
    to do (``advice``) instead of a traceback."""
    try:
        write()
    except OSError as err:
        raise DataError(f"cannot write {path} ({err.strerror or err}); {advice}") from None


def _fsync_file(path) -> None:
    fd = os.open(path, os.O_RDWR)  # Windows fsyncs only what is open for writing; before chmod, which may forbid it
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms (Windows): nothing more to do there
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the file itself is on disk
        pass
    finally:
        os.close(fd)


def refuse_to_replace(path, overwrite: bool, option: str = "--out", resumable: bool = False) -> None:
    """The one overwrite rule of every command that writes: output already at ``path`` (a file, or a
    folder that is not empty) is kept unless the user passed ``--overwrite``. Said in the same words by all;
    ``resumable``: a run folder, which ``--resume`` continues."""
    path = Path(path)
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return  # an empty folder holds nothing to lose
    ways = "--resume to continue it, --overwrite to replace it" if resumable else "--overwrite to replace it"
    raise ConfigError(f"{option} {path} already exists; pass {ways}, or choose another {option}")
