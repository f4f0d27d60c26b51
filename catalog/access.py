"""Open the catalog a config names, wherever it is: a local folder or `s3://bucket/prefix`.

Every command goes through `open_catalog(config)`, so a catalog in object storage needs nothing
more than `catalog: s3://bucket/prefix` in strongroom.yaml (and, if no S3 target uses that
bucket, `catalog_access: TARGET` naming the target whose endpoint and credentials reach it).
Workers on different machines then share one catalog: each write adds a new object, and the
ledger's next segment is claimed with a conditional PUT (`If-None-Match: *`) that pyarrow
cannot send, so it goes through boto3 with the same endpoint and credentials.
"""

from __future__ import annotations

from catalog.anchors import noted
from catalog.catalog import Catalog
from catalog.store import Store
from strongroom.errors import ConfigError


def open_store(config, *, must_exist: bool = False) -> Store:
    """The catalog's Store. `must_exist`: ConfigError if a local catalog folder is missing (a
    mistyped path must not look like an empty archive) or an S3 catalog's bucket does not exist."""
    if not config.catalog_is_s3:
        store = Store(config.catalog)
        if must_exist and not store.exists():
            raise ConfigError(f"catalog folder {config.catalog} does not exist (run `strongroom init`, "
                              f"or fix `catalog`)", path=str(config.path), key="catalog")
        return noted(config, store)
    from storage_adapters.s3 import BucketMissing, open_catalog_s3

    access = open_catalog_s3(config.catalog, config.catalog_target)
    try:
        access.adapter.ensure_bucket()  # one HEAD: SeaweedFS would create a mistyped bucket on write
    except BucketMissing as exc:
        via = f" (reached with storage target {config.catalog_access!r})" if config.catalog_access else ""
        raise ConfigError(f"the catalog's bucket does not exist{via}: {exc.message}",
                          path=str(config.path), key="catalog") from None
    return noted(config, Store(config.catalog, filesystem=access.filesystem, put_if_absent=access.put_if_absent))


def open_catalog(config, *, must_exist: bool = False, check: bool = True) -> Catalog:
    """The config's catalog, ready to read and write (see `open_store` for `must_exist`).

    `check` (the default): the catalog checks itself first (`catalog.integrity.check_catalog`:
    table files readable, every bag's file rows adding up to its Payload-Oxum, ledger and tables
    agreeing) and a catalog in doubt raises `CatalogDamaged` (exit 1, "run `strongroom catalog
    rebuild`"), so no command acts on a lying index: an audit never repairs "extra" files that a
    lost files-table file merely hid. Only `catalog rebuild` (which mends the catalog) and commands
    that give their own better diagnosis (`status`, `ledger verify`) open with check=False."""
    catalog = Catalog.from_store(open_store(config, must_exist=must_exist))
    if check:
        from catalog.integrity import check_catalog

        check_catalog(catalog).raise_if_damaged()
    return catalog


__all__ = ["open_catalog", "open_store"]
