"""Build the storage adapter for a storage target of the config (`policies.config.StorageTarget`).

One place maps a target's `type` to its adapter, so commands never branch on storage types.
"""

from __future__ import annotations

from .base import StorageAdapter, StorageError
from .filesystem import FilesystemAdapter


def open_target(target) -> StorageAdapter:
    """The adapter for `target` (a StorageTarget: name, type, site, root, options).

    Opening touches no storage: errors about a missing folder or bucket come from the first
    operation, naming the target and the place.
    """
    if target.type == "filesystem":
        if target.root is None:
            raise StorageError("a filesystem storage target needs a root folder", target=target.name,
                               location=None if getattr(target, "source", None) is None else str(target.source))
        return FilesystemAdapter(target.name, target.site, target.root)
    if target.type == "s3":
        raise StorageError("S3 storage targets are not available yet in this version of Strongroom; "
                           "use filesystem targets (type: filesystem) for now", target=target.name,
                           location=None if getattr(target, "source", None) is None else str(target.source))
    raise StorageError(f"unknown storage type {target.type!r} (known: filesystem, s3)", target=target.name)


__all__ = ["open_target"]
