"""The files a copy of a version bag lists in fetch.txt: held by an earlier bag, not by this one.

A version bag (docs/versions.md) stores only new and changed files; its unchanged files are in
its manifests, in the catalog's rows of it, and in fetch.txt, which names the earlier bag that
holds each. An audit must not call those files missing nor try to repair them from other copies
(no copy of this bag holds them). It checks instead what makes them safe: that the catalog
holds the bag named, earlier, of the same collection, with the same path, size and digests
(`ExpectedBag.fetch_problems`); the earlier bag's own audits check its bytes. fetch.txt itself
is a tag file: the tag manifests and the comparison of copies (`fixity.judge_tags`) catch damage
to it like damage to any other tag file.
"""

from __future__ import annotations

from typing import List, Set

from strongroom import bagit_spec
from ingest.fetch import FETCH_TXT, parse_fetch
from strongroom.bag_id import BagId
from storage_adapters.base import NotFound, StorageAdapter

from .check_records import FETCH_UNVERIFIED, UNREADABLE, Finding, ReplicaCheck
from .expected_bag import ExpectedBag
from .retry import Retry, describe, is_transient
from .tag_check import read_tag_file


def fetched_paths(adapter: StorageAdapter, bag_id: BagId, expected: ExpectedBag, tag_paths: List[str],
                  check: ReplicaCheck, retry: Retry) -> Set[str]:
    """Paths this copy's fetch.txt lists (none without one), each checked against the catalog:
    an entry the catalog does not vouch for is a `fetch-unverified` finding, not `missing`."""
    if FETCH_TXT not in tag_paths:
        return set()
    where = adapter.location(bag_id)
    try:
        _, data = read_tag_file(adapter, bag_id, FETCH_TXT, ["sha256"], retry, True, check.linked)
        entries = parse_fetch(data or b"", where, check.bag_version or bagit_spec.BAGIT_VERSION)
    except NotFound:
        return set()
    except bagit_spec.TagFileError as exc:
        check.findings.append(Finding(FETCH_UNVERIFIED, check.target, FETCH_TXT,
                                      f"cannot be read ({exc.message}): the files a version bag takes from "
                                      "earlier bags cannot be accounted for on this copy"))
        return set()
    except Exception as exc:
        if not is_transient(exc):
            raise
        check.findings.append(Finding(UNREADABLE, check.target, FETCH_TXT,
                                      f"tag file cannot be read ({describe(exc)}); inconclusive, not damage"))
        return set()
    for path, why in expected.fetch_problems(entries):
        check.findings.append(Finding(FETCH_UNVERIFIED, check.target, path, why))
    return {e.path for e in entries}
