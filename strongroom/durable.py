"""Writing files so that they are either absent or whole, and stay written.

Every small record Strongroom writes (tag files, PREMIS, markers, catalog files, restored
files) goes through here: a temporary name in the same folder, fsync, rename over the target,
fsync of the folder. A crash or `kill -9` therefore never leaves half a file under its real
name, and a power cut never loses a file that was reported written.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file object on a temp name beside `path`, renamed over it on success only."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_writer(path) as fh:
        fh.write(data)


def atomic_write_json(path: PathLike, data, *, compact: bool = False) -> None:
    """A JSON record (UTF-8, readable), creating its folder if needed. `compact`: one line, for a
    big record only a program reads (indenting takes json's pure-Python encoder, ~10x slower)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    layout = {"separators": (",", ":")} if compact else {"indent": 2}
    text = json.dumps(data, ensure_ascii=False, default=str, **layout)
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(path: PathLike) -> None:
    """Make a rename or link in `path` durable; harmless where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_all(fd: int, data) -> None:
    """os.write until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def unlink_quietly(path: PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
