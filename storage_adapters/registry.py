"""Build the storage adapter for a storage target of the config (`policies.config.StorageTarget`).

One place maps a target's `type` to its adapter, so commands never branch on storage types.
"""

from __future__ import annotations

from .base import StorageAdapter, StorageError
from .filesystem import FilesystemAdapter


def open_target(target, retention=None) -> StorageAdapter:
    """The adapter for `target` (a StorageTarget: name, type, site, root, options).

    Opening touches no storage: errors about a missing folder or bucket come from the first
    operation, naming the target and the place. `retention` (a policy's Retention, a
    (mode, years) pair, or None) is what a writer must apply to every object: S3 targets apply
    it with Object Lock (see S3Adapter.check_retention_supported); folders cannot lock files and
    ignore it. An S3 target's credentials are read from the environment here (ConfigError
    naming a missing variable), never shown.
    """
    if target.type == "filesystem":
        if target.root is None:
            raise StorageError("a filesystem storage target needs a root folder", target=target.name,
                               location=None if getattr(target, "source", None) is None else str(target.source))
        return FilesystemAdapter(target.name, target.site, target.root)
    if target.type == "s3":
        from .s3 import S3Adapter  # boto3 is imported only when an S3 target is used

        return S3Adapter.from_target(target, retention=retention)
    raise StorageError(f"unknown storage type {target.type!r} (known: filesystem, s3)", target=target.name)


def check_retention(targets, retention) -> None:
    """Before any upload of a deposit: StorageError naming the first target that cannot apply
    the policy's `retention` (an S3 bucket without Object Lock, or an S3 target not declared
    with object_lock: true). Folders cannot lock files and are not refused (see policy docs).
    Touches each S3 target's bucket (HEAD, Object Lock and versioning configuration) only when
    a retention is asked for.
    """
    for target in targets:
        adapter = open_target(target, retention=retention)
        check = getattr(adapter, "check_retention_supported", None)
        if check is not None:
            check()


__all__ = ["open_target", "check_retention"]
