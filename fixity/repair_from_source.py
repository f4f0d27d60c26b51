"""Repair a bag's copies from the original source folder, when no good copy is left.

`strongroom audit --repair-from SOURCE --bag BAG_ID`. The audit repairer (`fixity.repair`) mends
damage from a copy verified in the same run; when every copy of a file is damaged, the only
intact bytes may be the library's original folder. Those bytes are untrusted until proven, so:

1. every copy of the bag is deep-audited and repaired from good copies as usual (the same
   judgement, moves aside, events and copy records as `strongroom audit`);
2. the bag's own payload manifests are read from the copies: a manifest counts only when its
   copy's tag manifest vouches for its bytes, and copies that vouch for different digests of a
   file leave that file undecided (never the catalog alone: it is an index, not the evidence);
3. each file still damaged or missing on some copy is looked up in SOURCE (never following a
   link, regular files only) and hashed with EVERY algorithm those manifests use; it must
   match the manifests exactly, and the catalog's size and digests too, or it is refused and
   listed;
4. a matching file is written with `StorageAdapter.replace_file` (atomic, verified while
   copying, so a source changed since it was hashed is refused), re-read, and recorded in the
   ledger as a `replication` whose detail names the source;
5. the repaired copies are deep-audited again, which records their new state.

The source is only read, never modified.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Set, Tuple

from catalog.catalog import Catalog
from catalog.schema import DIGEST_ALGORITHMS, EventRecord
from fixity import audit as A
from fixity.audit_record import AGENT, DETAIL_MAX
from fixity.judge_payload import _digest_text
from fixity.repair import audit_bag
from strongroom import bagit_spec
from strongroom.bag_id import BagId
from storage_adapters.base import NotFound, OddObject, SourceMismatch, StorageAdapter, StorageError
from strongroom.checksums import MultiHasher
from strongroom.errors import InputError, StrongroomError, UsageError

#: Damage a source file can mend (an unreadable or inconclusive copy is not known to be damaged).
REPAIRABLE = (A.MISSING, A.CORRUPTED, A.TRUNCATED, A.GROWN)
CHUNK = 1 << 20


@dataclass
class Refusal:
    """A file that was not repaired from the source, and why (shown to the operator)."""

    path: str
    targets: List[str]
    reason: str


@dataclass
class SourceRepairResult:
    """What `repair_from_source` did: files written per copy, files refused, what remains."""

    bag_id: str
    source: str
    repaired: Dict[str, List[str]] = field(default_factory=dict)   # target -> paths replaced from the source
    from_copies: Dict[str, List[str]] = field(default_factory=dict)  # target -> paths repaired from good copies
    refused: List[Refusal] = field(default_factory=list)
    remaining: Dict[str, List[str]] = field(default_factory=dict)  # target -> damage left after
    problems: List[str] = field(default_factory=list)              # copies that could not be handled

    @property
    def exit_code(self) -> int:
        return 1 if self.refused or self.problems or any(self.remaining.values()) else 0

    def to_dict(self) -> dict:
        return {"ok": self.exit_code == 0, "exit_code": self.exit_code, "bag": self.bag_id, "source": self.source,
                "repaired": self.repaired, "repaired_from_copies": self.from_copies, "refused": [r.__dict__ for r in self.refused],
                "remaining": self.remaining, "problems": list(self.problems)}

    def text(self) -> str:
        n = sum(len(v) for v in self.repaired.values())
        lines = [f"{self.bag_id}: {n} file(s) repaired from {self.source}"]
        copied = sum(len(v) for v in self.from_copies.values())
        if copied:
            lines.append(f"  {copied} file(s) repaired from good copies first (as `strongroom audit` does)")
        for target, paths in sorted(self.repaired.items()):
            lines += [f"  repaired on {target}: {p}" for p in paths]
        lines += [f"  REFUSED {r.path} (for {', '.join(r.targets)}): {r.reason}" for r in self.refused]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        for target, items in sorted(self.remaining.items()):
            lines += [f"  STILL DAMAGED on {target}: {p}" for p in items]
        lines.append("all copies intact" if self.exit_code == 0 else "damage remains: see above")
        return "\n".join(lines)


def repair_from_source(config, catalog: Catalog, bag_id: str, source: str, *,
                       open_adapter: Optional[Callable] = None, retry: Optional[A.Retry] = None) -> SourceRepairResult:
    """Audit the bag's copies, then repair what no good copy could from `source` (see the module
    docstring). UsageError / InputError (exit 2) for an unknown bag or an unusable source."""
    from storage_adapters.registry import open_target

    BagId.parse(bag_id)
    record = catalog.bag(bag_id)
    if record is None:
        raise UsageError(f"bag {bag_id} is not in the catalog {config.catalog}")
    root = _source_root(source)
    open_adapter = open_adapter or open_target
    retry = retry or A.DEFAULT_RETRY
    policy = config.policies.get(record.policy)
    expected = A.ExpectedBag.from_catalog(catalog, bag_id, policy)
    result = SourceRepairResult(bag_id, str(root))

    first = _audit(config, catalog, expected, open_adapter, retry, None)
    todo: Dict[str, List[str]] = {}          # path -> targets needing it
    for ro in first.replicas:
        for f in ro.remaining:
            if f.path is not None and f.kind in REPAIRABLE and A.is_payload(f.path):
                todo.setdefault(f.path, []).append(ro.target)
            elif f.damage:
                result.problems.append(f"{ro.target}: {f.kind}{' ' + f.path if f.path else ''}: {f.detail} "
                                       f"(not repairable from a source folder; see `strongroom audit`)")
    if any(f.kind == A.DISPUTED for f in first.bag_findings):
        result.problems.append("the bag is disputed (its copies disagree): nothing was repaired from the source")
        todo = {}
    adapters = {t: open_adapter(config.target(t)) for t in {t for ts in todo.values() for t in ts}}
    if todo:
        manifests, why_not = _vouched_manifests(config, expected, first, open_adapter, retry)
        _repair_files(catalog, expected, root, todo, manifests, why_not, adapters, retry, result)
    touched = sorted(result.repaired)
    final = _audit(config, catalog, expected, open_adapter, retry, touched) if touched else first
    for ro in first.replicas:
        done = [a.path for a in ro.repairs if a.outcome == "success" and a.action == "replace"]
        if done:
            result.from_copies[ro.target] = done
    for ro in final.replicas:
        left = [f"{f.kind} {f.path or ''}".strip() for f in ro.remaining if f.damage]
        if left:
            result.remaining[ro.target] = left
    return result


def _source_root(source: str) -> Path:
    """SOURCE as given by the operator: the deposited folder, or a BagIt bag of it (then its data/)."""
    root = Path(source).expanduser()
    if not root.is_dir():
        raise InputError(f"{source}: not a folder (give the original folder the bag was deposited from)")
    root = root.resolve()
    if (root / bagit_spec.BAGIT_TXT).is_file() and (root / "data").is_dir():
        return root / "data"
    return root


def _audit(config, catalog: Catalog, expected: A.ExpectedBag, open_adapter, retry: A.Retry,
           only: Optional[List[str]]):
    """A deep audit (every digest) with repair from good copies, of all the bag's copies or `only` these."""
    current = {r["target"] for r in catalog.replicas(expected.bag_id).to_pylist()}
    policy = config.policies.get(expected.policy)
    targets = [t for t in dict.fromkeys((list(policy.replicas) if policy else []) + sorted(current))
               if t in config.storage and (only is None or t in only)]
    checks: Dict[str, A.ReplicaCheck] = {}
    for t in targets:
        try:
            adapter = open_adapter(config.target(t))
        except StrongroomError:
            continue   # audit_bag names the target that cannot be opened
        checks[t] = A.check_replica(adapter, expected, kind=A.DEEP, all_digests=True, retry=retry,
                                    empty_target_ok=t not in current)
    return audit_bag(config, catalog, expected.bag_id, {t: A.DEEP for t in targets}, checks, repair=True,
                     retry=retry, open_adapter=open_adapter)


def _vouched_manifests(config, expected: A.ExpectedBag, audited, open_adapter, retry: A.Retry
                       ) -> Tuple[Dict[str, Dict[str, Set[str]]], str]:
    """alg -> path -> digests the bag's payload manifests give, from every copy whose tag
    manifest vouches for that manifest's bytes; and why there are none, if so."""
    out: Dict[str, Dict[str, Set[str]]] = {}
    seen: List[str] = []
    present: Set[str] = set()   # algorithms some copy has a payload manifest for
    for ro in audited.replicas:
        try:
            adapter = open_adapter(config.target(ro.target))
        except StrongroomError:
            continue
        look = A.check_replica(adapter, expected, kind=A.TAGS, retry=retry)
        if not look.reachable or not look.bag_present:
            continue
        bag = BagId.parse(expected.bag_id)
        for alg in DIGEST_ALGORITHMS:
            name = f"manifest-{alg}.txt"
            raw = _read_small(adapter, bag, name, retry)
            if raw is None:
                continue
            present.add(alg)
            if not any(entries.get(name) == hashlib.new(talg, raw).hexdigest()
                       for talg, entries in look.tag_manifests.items()):
                seen.append(f"{name} on {ro.target} is not vouched for by its tag manifest")
                continue
            try:
                table, errors = A.parse_manifest(raw, look.bag_version, alg)
            except Exception as exc:  # TagFileError and the like: this copy's manifest proves nothing
                seen.append(f"{name} on {ro.target} cannot be read ({exc})")
                continue
            if errors:
                seen.append(f"{name} on {ro.target}: {errors[0]}")
                continue
            entries = out.setdefault(alg, {})
            for path, digest in zip(table.column("path").to_pylist(), table.column("digest").to_pylist()):
                entries.setdefault(path, set()).add(digest.lower())
    detail = f" ({'; '.join(seen)})" if seen else ""
    unvouched = sorted(present - set(out))
    if unvouched:  # every algorithm the bag uses must be checked: drop none silently
        return {}, (f"no copy holds a {', '.join(f'manifest-{a}.txt' for a in unvouched)} its own tag manifest "
                    f"vouches for{detail}")
    return out, "no copy holds a payload manifest its own tag manifest vouches for" + detail


def _read_small(adapter: StorageAdapter, bag: BagId, name: str, retry: A.Retry) -> Optional[bytes]:
    try:
        with A.with_retry(retry, lambda: adapter.open_file(bag, name)) as fh:
            return fh.read()
    except (NotFound, OddObject):
        return None
    except Exception as exc:
        if isinstance(exc, (StorageError, OSError)) or A.is_transient(exc):
            return None
        raise


def _wanted(path: str, manifests: Mapping[str, Mapping[str, Set[str]]], catalog_row: Mapping[str, str],
            why_not: str) -> Tuple[Optional[Dict[str, str]], str]:
    """The digests a source file must have (every manifest algorithm), or None and why not."""
    if not manifests:
        return None, why_not
    wanted: Dict[str, str] = {}
    for alg, entries in sorted(manifests.items()):
        digests = entries.get(path)
        if not digests:
            return None, f"manifest-{alg}.txt of the copies does not list it"
        if len(digests) > 1:
            return None, f"the copies' manifest-{alg}.txt disagree about it ({', '.join(sorted(digests))})"
        wanted[alg] = next(iter(digests))
    for alg, digest in catalog_row.items():
        if alg in wanted and wanted[alg] != digest:
            return None, (f"the bag's manifest gives {alg} {wanted[alg]} but the catalog {digest}: run "
                          f"`strongroom audit --bag` and settle that first")
    return wanted, ""


def _repair_files(catalog: Catalog, expected: A.ExpectedBag, root: Path, todo: Mapping[str, List[str]],
                  manifests, why_not: str, adapters: Mapping[str, StorageAdapter], retry: A.Retry,
                  result: SourceRepairResult) -> None:
    own = expected.digests_of(todo)
    bag = BagId.parse(expected.bag_id)
    events: List[EventRecord] = []
    for path in sorted(todo):
        targets = sorted(todo[path])
        size, catalog_row = own.get(path, (None, {}))
        wanted, why = _wanted(path, manifests, catalog_row, why_not)
        if wanted is None or size is None:
            result.refused.append(Refusal(path, targets, why or "not a file of this bag in the catalog"))
            continue
        try:
            fd = open_source_file(root, path)
        except (OSError, InputError) as exc:
            result.refused.append(Refusal(path, targets, f"cannot be read from the source: {_os_text(exc)}"))
            continue
        with os.fdopen(fd, "rb", buffering=0) as fh:
            got_size, got = _hash(fh, wanted)
            bad = [f"{alg} {got[alg]} (the bag's manifest says {d})" for alg, d in wanted.items() if got[alg] != d]
            if got_size != size or bad:
                what = f"{got_size} bytes (the bag's manifests and catalog say {size})" if got_size != size else \
                    "; ".join(bad)
                result.refused.append(Refusal(path, targets, f"the source file differs: {what}"))
                continue
            for target in targets:
                fh.seek(0)
                outcome, detail = _replace(adapters[target], bag, path, fh, size, wanted, retry, root)
                events.append(EventRecord(type="replication", outcome=outcome, detail=detail[:DETAIL_MAX], agent=AGENT,
                                          object_type="file", bag_id=expected.bag_id, target=target, path=path))
                if outcome == "success":
                    result.repaired.setdefault(target, []).append(path)
                else:
                    result.refused.append(Refusal(path, [target], detail))
    if events:
        catalog.append_events(events)


def _replace(dst: StorageAdapter, bag: BagId, path: str, fh, size: int, digests: Dict[str, str],
             retry: A.Retry, root: Path) -> Tuple[str, str]:
    """Write one verified source file over the damaged copy, then re-read it: (outcome, detail)."""
    where = f"the original source {root}/{path[len('data/'):]}"
    try:
        dst.replace_file(bag, path, fh, size=size, digests=digests)
    except SourceMismatch as exc:
        return "failure", f"repair: not replaced from {where}: it changed while being copied ({exc.message})"
    except OddObject as exc:
        return "failure", (f"repair: not replaced from {where}: {exc.message} (run `strongroom audit --bag` "
                           f"first: it moves odd objects aside)")
    except (StorageError, OSError) as exc:
        return "failure", f"repair: not replaced from {where}: {A.describe(exc)}"
    read = A.read_copy(dst, str(bag), path, sorted(digests), retry)
    if read.status == "ok" and read.size == size and all(read.digests.get(a) == d for a, d in digests.items()):
        return "success", (f"repair: replaced with {where} ({size} bytes, {_digest_text(digests)}, every digest "
                           f"of the bag's manifests), verified while copying and re-verified after")
    return "failure", f"repair: the file written from {where} did not re-verify ({read.status} {read.detail})"


def _hash(fh, wanted: Mapping[str, str]) -> Tuple[int, Dict[str, str]]:
    hasher = MultiHasher(sorted(wanted), foreign_ok=True)
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            break
        hasher.update(chunk)
    return hasher.size, hasher.hexdigests()


def open_source_file(root: Path, bag_path: str) -> int:
    """A read-only descriptor of the source file for `bag_path` ("data/a/b.txt" -> ROOT/a/b.txt),
    opened one folder at a time without following any link, and only if it is a regular file:
    a source folder is not trusted to hold what it seems to."""
    if not bag_path.startswith("data/"):
        raise InputError(f"{bag_path}: not a payload path")
    parts = bag_path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        raise InputError(f"{bag_path}: unsafe path")
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(str(root), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open(parts[-1], os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(leaf).st_mode):
        os.close(leaf)
        raise InputError(f"{bag_path}: not a regular file in the source")
    return leaf


def _os_text(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return str(exc)
    import errno
    if getattr(exc, "errno", None) == errno.ELOOP:
        return "a symbolic link (never followed)"
    if getattr(exc, "errno", None) == errno.ENOTDIR:
        return "a folder on its path is a link or a file"
    return getattr(exc, "strerror", None) or str(exc)


__all__ = ["Refusal", "SourceRepairResult", "repair_from_source", "open_source_file"]
