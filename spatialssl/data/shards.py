"""WebDataset shards as ``--data``: uncompressed tar files whose members are grouped into samples by their key
(the member's name up to the first dot of its base name, its folder kept): an image (.jpg, .jpeg, .png or
.webp, or another format Pillow reads) and, for labelled data, a .cls holding the class number in ASCII.

The shards are read by index, never in sequence: their tar headers are scanned once (by one process of a
torchrun job) into arrays of each sample's shard, byte offset and size, and a worker reads a sample with one
positioned read. So a stream of shards is a stream like a folder's: each process and worker gets an exact
share, each sample is read once per epoch, in random order, and resuming at an epoch boundary is exact. That
needs a seekable file system (local, NFS, Lustre, a mounted bucket); nothing is ever extracted to disk, and
links inside a tar are refused, never followed.

Labels are the .cls numbers themselves (the classes are 0 .. the largest, named by their numbers): every sample
has one, or none has (unlabelled)."""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingSplit, first_line, warn
from ..files import atomic_write
from .decode import IMAGE_SUFFIXES, cache_folder, one_writer
from .filelist import pack, unpack
from .readers import split_names
from .registry import Reader, register

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", *sorted(s[1:] for s in IMAGE_SUFFIXES - {".jpg", ".jpeg", ".png",
                                                                                           ".webp"}))
COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")  # the compressed ones are refused
BRACES = re.compile(r"\{([^{}]*)\}")
CLASS_NUMBER = re.compile(rb"\s*(\d{1,9})\s*")
WRITE_AGAIN = "copy or write the shard again"
BLOCK, EMPTY_BLOCK = 512, bytes(512)  # tar's block, and its end-of-archive block
READ_AHEAD = 4 * BLOCK  # a label's header and block and the image's header: one read per sample
PLAIN_TYPES = (b"0", b"\0", b"7", b"5")  # regular files (7: contiguous, read as regular) and folders
INDEX_FORMAT = 1  # bump when a scan's result changes, so that kept indexes are not reused
INDEX_ARRAYS = ("shard", "offset", "size", "keys", "key_ends", "labels")
INDEX_DTYPES = [np.dtype(t) for t in ("int32", "int64", "uint32", "uint8", "int64", "int64")]
SCANNERS = 8  # shards scanned at once: on a network file system the reads' latency, not parsing, dominates


@dataclass(frozen=True)
class ShardIndex:
    """The samples of a list of shards as arrays (1.28M samples in 40 to 60 MB, by their keys' length): an
    ItemSource of a stream."""
    shards: tuple  # the shard files, as str
    shard: np.ndarray  # int32: each sample's shard
    offset: np.ndarray  # int64: where its image's bytes start in the shard
    size: np.ndarray  # uint32: how many there are
    keys: np.ndarray  # uint8: every sample's key, one after another (filelist.pack)
    key_ends: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.shard)

    def key(self, index: int) -> str:
        return unpack(self.keys, self.key_ends, index)

    def describe(self, index: int) -> str:
        return f"{self.shards[self.shard[index]]} sample {self.key(index)}"

    def read(self, index: int) -> bytes:
        """The sample's image bytes, by one positioned read of its shard (no shared file position: safe in
        forked workers)."""
        size, offset = int(self.size[index]), int(self.offset[index])
        try:
            data = os.pread(_OPEN.fd(self.shards[self.shard[index]]), size, offset)
        except OSError as err:
            raise DataError(f"cannot read image {self.describe(index)}: {err.strerror or err}") from None
        if len(data) != size:
            raise DataError(f"cannot read image {self.describe(index)}: the shard ends before it (it changed since it "
                            f"was listed); {WRITE_AGAIN}")
        return data

    def take(self, index) -> "ShardIndex":
        index = np.asarray(index, dtype=np.int64)
        return ShardIndex(self.shards, self.shard[index], self.offset[index], self.size[index],
                          *pack([self.key(int(i)) for i in index]))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.shard, self.offset, self.size, self.keys, self.key_ends))


class _OpenShards:
    """This process's open shards, the most recently read LIMIT of them (a worker reading in random order
    meets every shard; a file per shard held open would exhaust the descriptors of a large set)."""
    LIMIT = 64

    def __init__(self):
        self.pid, self.fds = os.getpid(), OrderedDict()

    def fd(self, path: str) -> int:
        if self.pid != os.getpid():  # a forked worker: its copies of the parent's descriptors are closed, not shared
            for fd in self.fds.values():
                os.close(fd)
            self.pid, self.fds = os.getpid(), OrderedDict()
        if path in self.fds:
            self.fds.move_to_end(path)
            return self.fds[path]
        if len(self.fds) >= self.LIMIT:
            os.close(self.fds.popitem(last=False)[1])
        self.fds[path] = os.open(path, os.O_RDONLY)
        return self.fds[path]


_OPEN = _OpenShards()


def expand_braces(pattern: str) -> list:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar (zero-padded as written), ``{a,b}`` -> a, b; several
    braces multiply, as the shell and WebDataset expand them."""
    match = BRACES.search(pattern)
    if match is None:
        return [pattern]
    head, body, rest = pattern[:match.start()], match.group(1), expand_braces(pattern[match.end():])
    numbers = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numbers:
        first, last = numbers.groups()
        width = max(len(first), len(last)) if first.startswith("0") or last.startswith("0") else 0
        step = 1 if int(last) >= int(first) else -1
        options = [str(n).zfill(width) for n in range(int(first), int(last) + step, step)]
    elif "," in body:
        options = body.split(",")
    else:
        options = ["{" + body + "}"]  # not a pattern: braces in a name
    return [head + option + tail for option in options for tail in rest]


def pattern_shards(pattern: str) -> list:
    paths = [Path(p) for p in expand_braces(pattern)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"shard {missing[0]} of --data {pattern} does not exist ({len(missing)} of the pattern's "
                        f"{len(paths)} shards are missing)")
    return paths


def folder_shards(root: Path, split: str) -> list:
    """The shards of ``split`` in a folder: ``SPLIT/*.tar`` when there is a train/ folder of shards, else
    ``SPLIT-*.tar`` when there are train-*.tar shards (what ``spatialssl shard`` writes), else every ``*.tar``,
    the train split. test and val stand for each other where one is missing (``spatialssl shard`` writes an
    ImageNet folder's val/ as test-*.tar, which the ImageNet recipes' data.test_split=val then reads)."""
    names = split_names(split)
    if (root / "train").is_dir():
        for name in names:
            if (root / name).is_dir():
                found = sorted((root / name).glob("*.tar"))
                if not found:
                    raise DataError(f"{root / name} holds no .tar shards")
                return found
        raise MissingSplit(f"{root} has no '{split}' folder of shards", "add it, or name a split it has")
    if any(root.glob("train-*.tar")):
        for name in names:
            found = sorted(root.glob(f"{name}-*.tar"))
            if found:
                return found
        raise MissingSplit(f"{root} has no {split}-*.tar shards", "write them, or name a split it has")
    if split == "train":
        return sorted(root.glob("*.tar"))
    raise MissingSplit(f"{root} holds one set of shards, the train split, and no '{split}' split",
                       "name the shards train-*.tar and test-*.tar (or put them in train/ and test/) to give it both")


def split_shards(path: Path, split: str) -> list:
    if BRACES.search(str(path)) or path.is_file():
        if split != "train":
            raise MissingSplit(f"--data {path} names one set of shards, the train split, and no '{split}' split",
                               "give a folder of train-*.tar and test-*.tar (or of train/ and test/) shards")
        return pattern_shards(str(path)) if BRACES.search(str(path)) else [path]
    return folder_shards(path, split)


def _refuse_compressed(path: Path, head: bytes) -> None:
    for magic, kind in COMPRESSED:
        if head.startswith(magic):
            raise DataError(f"shard {path} is {kind}-compressed; shards are read by seeking into them, so they must be "
                            f"uncompressed tar files: decompress it (e.g. with {kind} -d)")


def _split_name(name: str) -> tuple:
    """(key, extension) of a member's name as WebDataset splits it, or None for a name without an extension."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not (stem and dot and extension):
        return None
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _member_kind(member: tarfile.TarInfo) -> str:
    return ("symbolic link" if member.issym() else "hard link" if member.islnk() else "device" if member.isdev()
            else "FIFO" if member.isfifo() else "special member")


def scan_shard(path: Path) -> list:
    """[(key, image offset, image size, label or None)] of one shard's samples, in order, from its tar headers
    alone; every defect named in one DataError with the shard and the sample's key."""
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise DataError(f"cannot read shard {path}: {err.strerror or err}") from None
    with handle:
        length = os.fstat(handle.fileno()).st_size
        if not length:
            raise DataError(f"shard {path} is empty (0 bytes); {WRITE_AGAIN}")
        _refuse_compressed(path, handle.read(6))
        members = _plain_members(handle.fileno(), length)
        samples: dict = {}
        for member in members if members is not None else _tar_members(handle, path, length):
            _add_member(samples, *member, path, length)
        return [_sample(path, key, found, handle) for key, found in samples.items()]


def _plain_members(fd: int, length: int):
    """[(name, data offset, size, kind)] of a tar holding only regular files and folders in plain headers (what
    ``spatialssl shard`` and WebDataset's writer make), parsed ~8x faster than tarfile parses them; None for
    anything else (extended headers, links, long names, a defect), which tarfile then reads or names."""
    members, offset, chunk, start = [], 0, b"", 0
    while offset + BLOCK <= length:
        if offset + BLOCK > start + len(chunk):  # one read for a header and a small member's data and header after it
            chunk, start = os.pread(fd, READ_AHEAD, offset), offset
        block = chunk[offset - start:offset - start + BLOCK]
        if block == EMPTY_BLOCK:  # tar's end-of-archive block
            return members if members else None
        kind, name, size = _plain_header(block)
        if kind is None:
            return None
        members.append((name, offset + BLOCK, size, kind))
        offset += BLOCK + (-(-size // BLOCK) * BLOCK if kind == "file" else 0)
    return None  # no end-of-archive block: tarfile says where the shard was cut


def _plain_header(block: bytes) -> tuple:
    """(kind, name, size) of a plain header as tarfile reads it, or (None, None, None) where it is not one."""
    flag, magic, prefix = block[156:157], block[257:263], block[345:500].strip(b"\0")
    if flag not in PLAIN_TYPES or (prefix and magic == b"ustar\0") or block[124] & 0x80:
        return None, None, None  # tarfile's cases: other members, ustar's split names, base-256 sizes
    try:
        size, checksum = (int(block[a:b].split(b"\0", 1)[0].strip() or b"0", 8) for a, b in ((124, 136), (148, 156)))
    except ValueError:
        return None, None, None
    if checksum != 256 + sum(block) - sum(block[148:156]):
        return None, None, None
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    folder = flag == b"5" or (flag == b"\0" and name.endswith("/"))
    if folder and size:
        return None, None, None
    return ("folder" if folder else "file"), name.rstrip("/") if folder else name, size


def _tar_members(handle, path: Path, length: int):
    """(name, data offset, size, kind) of each member of a shard, through tarfile, as it reads them (so that a
    member cut short is named before tarfile stumbles past it), its defects named."""
    handle.seek(0)
    try:
        tar = tarfile.open(fileobj=handle, mode="r:")
    except tarfile.ReadError as err:
        raise DataError(f"shard {path} is not a tar file ({first_line(err)}); WebDataset shards are uncompressed "
                        ".tar files") from None
    last = None
    try:
        for member in tar:
            kind = "folder" if member.isdir() else "file" if member.isreg() else _member_kind(member)
            yield member.name, member.offset_data, member.size, kind
            last = last if kind == "folder" else _key(member.name)
    except tarfile.ReadError as err:
        if tar.offset >= length:  # the file ends inside the last member's padding
            raise DataError(f"shard {path} is truncated after sample {last}: it ends without tar's "
                            f"end-of-archive block; {WRITE_AGAIN}") from None
        raise DataError(f"shard {path} has a damaged tar header after sample {last} ({first_line(err)}); "
                        f"{WRITE_AGAIN}") from None
    _check_end(handle, tar.offset, path, last)


def _key(name: str) -> str:
    named = _split_name(name)
    return named[0] if named else name


def _add_member(samples: dict, name: str, offset: int, size: int, kind: str, path: Path, length: int) -> None:
    """Files a member under its sample (a folder is no sample's)."""
    if kind == "folder":
        return
    named = _split_name(name)
    key = named[0] if named else name
    if kind != "file":
        raise DataError(f"shard {path} sample {key}: member {name} is a {kind}; links are never followed and "
                        "shards hold regular files only (write it with the files themselves)")
    if offset + size > length:
        raise DataError(f"shard {path} is truncated: sample {key}'s member {name} claims {size} bytes "
                        f"from byte {offset}, but the file ends at byte {length}; {WRITE_AGAIN}")
    if named is None:  # no extension: no field of any sample (WebDataset skips it too)
        return
    members = samples.setdefault(key, {})
    if named[1] in members:
        raise DataError(f"shard {path} sample {key} has two .{named[1]} members; keys must be unique in a shard")
    members[named[1]] = (offset, size)


def _check_end(handle, offset: int, path: Path, last) -> None:
    """tarfile stops quietly at a header it cannot read past the first: what follows the last member must be
    tar's end-of-archive block, or the shard was cut short or damaged."""
    block = os.pread(handle.fileno(), 512, offset)
    if len(block) < 512:
        raise DataError(f"shard {path} is truncated after sample {last}: it ends without tar's end-of-archive "
                        f"block; {WRITE_AGAIN}")
    if block.strip(b"\0"):
        raise DataError(f"shard {path} has a damaged tar header after sample {last} (byte {offset}); {WRITE_AGAIN}")


def _sample(path: Path, key: str, members: dict, handle) -> tuple:
    image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
    if image is None:
        raise DataError(f"shard {path} sample {key} has no image (it has {', '.join('.' + e for e in members)}); "
                        "every sample needs a .jpg, .jpeg, .png or .webp member")
    label = None
    if "cls" in members:
        offset, size = members["cls"]
        text = os.pread(handle.fileno(), min(size, 64), offset)
        number = CLASS_NUMBER.fullmatch(text) if size <= 64 else None
        if number is None:
            raise DataError(f"shard {path} sample {key}: its .cls holds {text[:20]!r}, not a class number (a "
                            "non-negative integer in ASCII)")
        label = int(number.group(1))
    return key, image[0], image[1], label


def list_shards(paths: list, cache: bool = True) -> tuple:
    """(ShardIndex, int64 labels or None, class names) of the samples of ``paths``, shard by shard in order;
    with ``cache``, the index kept from an earlier scan of the same shards (by names, sizes and modification
    times) in the decode cache's folder, or scanned once and kept there (ImageNet's 1.28M samples: ~50 s)."""
    folder = cache_folder(Path(paths[0]).parent) if cache else None
    if folder is None:
        return _scan(paths)
    cache_file = folder / f"shard-index-{_index_key(paths)}.npz"
    with one_writer(cache_file):
        kept = _read_index(cache_file, paths) if cache_file.is_file() else None
        if kept is not None:
            return kept
        listed = _scan(paths)
        try:
            atomic_write(cache_file, lambda tmp: _write_index(tmp, *listed[:2]))
        except OSError as err:  # the index is good; keeping it only saves the next start its scan
            warn(f"cannot keep the shard index in {cache_file} ({err.strerror or err}); the run goes on without it")
    return listed


def _index_key(paths: list) -> str:
    key = hashlib.blake2b(f"{INDEX_FORMAT}".encode(), digest_size=16)
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as err:
            raise DataError(f"cannot read shard {path}: {err.strerror or err}") from None
        key.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return key.hexdigest()


def _write_index(tmp: Path, index: ShardIndex, labels) -> None:
    with open(tmp, "wb") as out:  # a file object: np.savez would add ".npz" to a bare name
        np.savez(out, shard=index.shard, offset=index.offset, size=index.size, keys=index.keys,
                 key_ends=index.key_ends, labels=np.zeros(0, np.int64) if labels is None else labels)


def _read_index(path: Path, paths: list):
    """The kept index of ``paths``, checked as a file anyone could have written, or None (with a warning) when
    it is not a whole one: the shards are then scanned again."""
    try:
        with np.load(path, allow_pickle=False) as kept:
            arrays = {name: kept[name] for name in INDEX_ARRAYS}
    except Exception as err:  # numpy and zipfile raise many types for a damaged file
        warn(f"ignoring the unreadable shard index {path} ({type(err).__name__}: {first_line(err)}); scanning again")
        return None
    shard, offset, size, keys, key_ends, labels = (arrays[name] for name in INDEX_ARRAYS)
    count = len(shard)
    whole = (count > 0 and [a.dtype for a in (shard, offset, size, keys, key_ends, labels)] == INDEX_DTYPES
             and len(offset) == len(size) == len(key_ends) == count and len(labels) in (0, count)
             and 0 <= shard.min() and shard.max() < len(paths) and offset.min() >= 0
             and key_ends[-1] == len(keys) and np.all(np.diff(key_ends, prepend=0) >= 0)
             and (len(labels) == 0 or labels.min() >= 0))
    if not whole:
        warn(f"ignoring the shard index {path}: it is not an index of these {len(paths)} shards; scanning again")
        return None
    return _listing(ShardIndex(tuple(str(p) for p in paths), shard, offset, size, keys, key_ends),
                    labels if len(labels) else None)


def _listing(index: ShardIndex, labels) -> tuple:
    """(index, labels or None, class names): the classes are 0 .. the largest label, named by their numbers."""
    if labels is None:
        return index, None, []
    return index, labels, [str(c) for c in range(int(labels.max()) + 1)]


def _scan(paths: list) -> tuple:
    shard, offsets, sizes, keys, labels = [], [], [], [], []
    first = {}  # True/False (labelled): the first (shard, key) of each kind, for the error mixing them
    with ThreadPoolExecutor(max_workers=SCANNERS) as pool:
        scanned = list(pool.map(scan_shard, paths))  # in order: the first bad shard is the one named
    for number, (path, samples) in enumerate(zip(paths, scanned)):
        for key, offset, size, label in samples:
            shard.append(number)
            offsets.append(offset)
            sizes.append(size)
            keys.append(key)
            labels.append(-1 if label is None else label)
            first.setdefault(label is not None, (path, key))
    if not shard:
        raise DataError(f"the shards {paths[0]}{' ...' if len(paths) > 1 else ''} hold no samples")
    if len(first) == 2:
        (with_path, with_key), (without_path, without_key) = first[True], first[False]
        raise DataError(f"the shards mix labelled and unlabelled samples: shard {with_path} sample {with_key} has a "
                        f".cls label, shard {without_path} sample {without_key} has none; label every sample or none")
    index = ShardIndex(tuple(str(p) for p in paths), np.asarray(shard, dtype=np.int32),
                       np.asarray(offsets, dtype=np.int64), np.asarray(sizes, dtype=np.uint32), *pack(keys))
    return _listing(index, np.asarray(labels, dtype=np.int64) if True in first else None)


@register
class WebDatasetShards(Reader):
    """A folder of ``*.tar`` shards (train/ and test/ folders of them, or train-*.tar and test-*.tar), one
    ``.tar``, or a brace pattern such as ``/data/train-{000000..000146}.tar``."""
    layout = "shards"

    @classmethod
    def detects(cls, path: Path) -> bool:
        if BRACES.search(str(path)) and str(path).endswith(".tar"):
            return True
        if path.is_file():
            return path.name.lower().endswith(TAR_SUFFIXES)
        if not path.is_dir():
            return False
        if (path / "train").is_dir() and any((path / "train").glob("*.tar")):
            return True
        # only shards: a data set's folder with an archive beside its images (ImageNet's) is not a set of shards
        return any(path.glob("*.tar")) and not any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())

    @classmethod
    def list(cls, path: Path, split: str, cache: bool = True) -> tuple:
        paths = split_shards(path, split)
        index, labels, classes = list_shards(paths, cache)
        return index, labels, classes, f"{path} ({split}, {len(paths)} shards)"
