"""Folder trees without recursion: `rm -r` and `mkdir -p` for trees of any depth.

Why: shutil.rmtree, os.makedirs and Path.mkdir(parents=True) recurse once per folder level on
Python 3.11, so a source (or a bag, a staged copy, a restore) nested ~1,000 folders deep dies
with RecursionError half way through. RFC 8493 sets no depth limit, and file systems allow
such paths (PATH_MAX is 4096 bytes: 1,100 one-letter levels are ~2,200). Lives at the bottom
of the import order so that ingest (staging), fixity (restore) and the tests share one copy.
"""

from __future__ import annotations

import os
import stat
from typing import List, Tuple

from strongroom.durable import unlink_quietly


def remove_tree(path, *, strict: bool = False) -> None:
    """Remove a folder and everything in it, never following links, without recursion.

    A symbolic link is removed, never followed; a path that is not a folder is unlinked. With
    `strict=False` (cleaning up after a restore or a discarded bag) folders that cannot be
    listed or removed are left; with `strict=True` the first error other than "already gone"
    is raised (the caller must know the tree is gone before it rebuilds in its place).
    """
    stack: List[Tuple[str, bool]] = [(os.fspath(path), False)]
    while stack:
        p, emptied = stack.pop()
        if emptied:
            try:
                os.rmdir(p)
            except FileNotFoundError:
                pass
            except OSError:
                if strict:
                    raise
            continue
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError:
            if strict:
                raise
            continue
        if not stat.S_ISDIR(st.st_mode):
            unlink_quietly(p)
            continue
        stack.append((p, True))
        try:
            with os.scandir(p) as it:
                stack.extend((e.path, False) for e in it)
        except FileNotFoundError:
            pass
        except OSError:
            if strict:
                raise


def make_dirs(path) -> None:
    """`mkdir -p` without recursion (Path.mkdir(parents=True) recurses once per missing level).

    Like `os.makedirs(path, exist_ok=True)`: a folder that exists already is fine (also one made
    by a concurrent process in between); a non-folder in the way raises FileExistsError.
    """
    missing = []
    p = os.fspath(path)  # str or bytes (staging works on the bytes the OS gave for a name)
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if not parent or parent == p:
            break
        p = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise


__all__ = ["remove_tree", "make_dirs"]
