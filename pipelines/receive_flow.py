"""`strongroom receive`: deposit each complete upload of a library's receiving area exactly once.

One batch goes through these steps, each safe to interrupt (kill -9 included) and to run twice:

1. lock: an exclusive, non-blocking flock on a file in the receiving work folder (a sibling of
   staging: a deposit's source may not lie inside staging). A second `receive` on this machine
   skips a batch another run is working on; the kernel drops the lock of a killed run.
2. claim: `COLLECTION/BATCH.claim` put into the area with `If-None-Match: *` (a folder: a
   rename that never replaces), naming this installation. A claim of ours with no run holding
   the lock is a killed run: resumed. A claim of another installation is left alone.
3. download: every object under `COLLECTION/BATCH/`, streamed to `<work>/.../content.part`
   (a single `.tar` read once as a stream and unpacked, a single `.zip` stored then unpacked,
   both refusing hostile members), renamed to `content` when whole, with the list of objects
   taken (key, size, ETag).
4. deposit: `pipelines.commands.deposit.deposit` (so `flow.open_deposit`, the library checks,
   every supplied checksum and bag manifest verified); its own state resumes a killed deposit,
   and a deposit that finished before the answer was written is found by its source folder,
   never deposited twice.
5. answer: `COLLECTION/BATCH.done` or `.failed` (never replacing one already there), then the
   objects taken are removed (only if unchanged since they were taken, and only after the
   deposit is preserved; kept when configured), then `.ready`, then the claim, then the work
   folder. A rerun that finds our answer and our claim finishes this step.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

from ingest.receive_archive import ArchiveRefused, is_archive, unpack_tar, unpack_zip
from ingest.receive_markers import (CLAIM, DONE, FAILED, MARKER_LIMIT, READY, Batch, Problem, ReadyError,
                                    done_document, failed_document, find_batches, now_text, parse_ready)
from storage_adapters.base import NotFound, StorageError, check_relpath
from storage_adapters.receiving import AreaObject, ReceivingArea
from strongroom import durable
from strongroom.errors import ConfigError, StagingError, StrongroomError
from strongroom.fstree import remove_tree

#: The most an upload may unpack to unless `--max-batch-bytes` says otherwise (and never more
#: than the work folder's free space).
DEFAULT_MAX_BATCH_BYTES = 1 << 40
DOWNLOADS_IN_FLIGHT = 8
_CHUNK = 1 << 20


@dataclass
class BatchOutcome:
    """What one batch came to: preserved, failed (answered .failed), incomplete (to be resumed
    by the next run), busy (another run has it) or skipped (already answered)."""

    library: str
    batch: str
    state: str
    detail: str = ""
    bags: List[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    problems: List[str] = field(default_factory=list)
    exit_code: int = 0


@dataclass
class ReceiveOptions:
    """Per run: keep uploads after preserving them, and the unpacked size cap."""

    keep_uploads: bool = False
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES


def work_root(config) -> Path:
    """Where batches are downloaded: beside staging, not in it (a source inside staging is refused)."""
    staging = Path(config.staging)
    return staging.parent / f"{staging.name}-receiving"


def installation_id(work: Path) -> str:
    """This archive's id in claims, made once (O_EXCL: two first runs agree on one)."""
    path = work / "installation-id"
    work.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        for _ in range(50):
            text = path.read_text("ascii").strip()
            if text:
                return text
            import time

            time.sleep(0.01)  # the first run is writing it right now
        raise StagingError(f"{path} is empty; remove it and run receive again", path=str(path))
    with os.fdopen(fd, "w") as fh:
        fh.write(uuid.uuid4().hex + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path.read_text("ascii").strip()


def receive_library(config, args, area: ReceivingArea, options: ReceiveOptions) -> List[BatchOutcome]:
    """Every complete batch of one library's area, in key order."""
    work = work_root(config)
    me = installation_id(work)
    found = find_batches(marker_keys(area))
    outcomes = [BatchOutcome(area.library, key.split(":", 1)[0], "ignored", detail=key) for key in found.ignored]
    for batch in found.batches:
        outcomes.append(receive_batch(config, args, area, batch, work, me, options))
    return outcomes


def marker_keys(area: ReceivingArea) -> List[str]:
    """The keys at COLLECTION/NAME depth (markers) and any `.ready`/`.claim` at the top, listed
    one level at a time: the uploaded files themselves are not listed here."""
    top, collections = area.shallow("")
    keys = [o.key for o in top]
    for folder in collections:
        if folder != "reports/":
            keys.extend(o.key for o in area.shallow(folder)[0])
    return keys


def receive_batch(config, args, area: ReceivingArea, batch: Batch, work: Path, me: str,
                  options: ReceiveOptions) -> BatchOutcome:
    code = area.library
    lock_name = hashlib.sha256(f"{code}/{batch}".encode()).hexdigest()[:32]
    (work / ".locks").mkdir(parents=True, exist_ok=True)
    fd = os.open(work / ".locks" / f"{lock_name}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return BatchOutcome(code, str(batch), "busy", detail="another receive run is working on it")
        try:
            return _locked(config, args, area, batch, work / code / batch.collection, me, options)
        except StorageError as exc:
            # the area or a target failed mid-way (network, server): the claim stays ours and
            # the next run resumes; the other batches are still received
            return BatchOutcome(code, str(batch), "incomplete", detail=f"{exc}; the next receive resumes it",
                                problems=list(exc.problems), exit_code=1)
    finally:
        os.close(fd)


def _claim_of(area: ReceivingArea, batch: Batch) -> Optional[dict]:
    data = area.read_small(batch.marker(CLAIM), MARKER_LIMIT)
    if data is None:
        return None
    try:
        claim = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {"installation": "(unreadable claim)"}
    return claim if isinstance(claim, dict) else {"installation": "(unreadable claim)"}


def _locked(config, args, area: ReceivingArea, batch: Batch, folder: Path, me: str,
            options: ReceiveOptions) -> BatchOutcome:
    code = area.library
    answered = [s for s in (DONE, FAILED) if area.exists(batch.marker(s))]
    claim = _claim_of(area, batch)
    ours = claim is not None and claim.get("installation") == me
    if answered:
        if ours:  # a run killed while cleaning up after its answer
            if answered[0] == FAILED:
                _abandon_failed(config, area, batch, folder / f"{batch.name}.{claim.get('claim')}")
            _clean_up(area, batch, folder / f"{batch.name}.{claim.get('claim')}", answered[0] == DONE, options)
            return BatchOutcome(code, str(batch), "cleaned", detail=f"answered {answered[0]} earlier; cleaned up")
        for stale in folder.glob(f"{batch.name}.*"):
            remove_tree(stale)
        return BatchOutcome(code, str(batch), "skipped", detail=f"already answered ({batch.marker(answered[0])})")
    if claim is None:
        claim = {"installation": me, "claim": uuid.uuid4().hex, "claimed_at": now_text(), "host": socket.gethostname()}
        if not area.put_bytes(batch.marker(CLAIM), json.dumps(claim).encode()):
            claim = _claim_of(area, batch) or {}
        ours = claim.get("installation") == me
    if not ours:
        return BatchOutcome(code, str(batch), "busy",
                            detail=f"claimed by another Strongroom installation ({claim.get('host', '?')})")
    here = folder / f"{batch.name}.{claim['claim']}"
    try:
        note = parse_ready(_ready_bytes(area, batch), batch, code)
        content, taken = _download(area, batch, here, options.max_batch_bytes)
    except ReadyError as exc:
        return _fail(area, batch, here, Problem("The .ready file of this batch cannot be used",
                                                "本批次的 .ready 文件无法使用"), exc.problems)
    except _Refused as exc:
        return _fail(area, batch, here, exc.what, exc.problems)
    return _deposit(config, args, area, batch, here, content, taken, note, options)


def _ready_bytes(area: ReceivingArea, batch: Batch) -> bytes:
    """The `.ready` text; a huge one is the library's mistake (ReadyError), never read whole."""
    try:
        with area.open_read(batch.marker(READY)) as fh:
            data = fh.read(MARKER_LIMIT + 1)
    except NotFound:
        return b""
    if len(data) > MARKER_LIMIT:
        raise ReadyError([Problem(f"{batch.marker(READY)} is larger than {MARKER_LIMIT:,} bytes; it should be a "
                                  f"few lines of YAML", f"{batch.marker(READY)} 超过 {MARKER_LIMIT:,} 字节；"
                                  f"它应当只是几行 YAML")])
    return data


class _Refused(Exception):
    """The upload cannot be taken as it is: the library must fix it (answered with .failed)."""

    def __init__(self, what: Problem, problems: List[Problem]):
        self.what, self.problems = what, problems
        super().__init__(what.en)


def _download(area: ReceivingArea, batch: Batch, here: Path, max_bytes: int):
    """(content folder, objects taken); reuses a download a killed run finished."""
    content, manifest = here / "content", here / "taken.json"
    if manifest.is_file() and content.is_dir():
        return content, [AreaObject(**o) for o in json.loads(manifest.read_text("utf-8"))]
    here.mkdir(parents=True, exist_ok=True)
    part = here / "content.part"
    if part.exists():
        remove_tree(part, strict=True)  # half-downloaded by a killed run: download again
    part.mkdir()
    fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY)
    try:
        objects = _fetch(area, batch, here, part, max_bytes)
        _make_durable(part, fd)
    finally:
        os.close(fd)
    os.rename(part, content)
    durable.atomic_write_json(manifest, [asdict(o) for o in objects])
    return content, objects


def _fetch(area: ReceivingArea, batch: Batch, here: Path, part: Path, max_bytes: int) -> List[AreaObject]:
    """Download (or unpack) every object of the batch into `part`; _Refused for what the
    library must fix."""
    max_bytes = min(max_bytes, shutil.disk_usage(here).free)
    objects, bad = [], []
    for obj in area.list(batch.prefix):
        rel = obj.key[len(batch.prefix):]
        if rel.endswith("/") and obj.size == 0:
            continue  # a "folder" object some S3 clients make
        try:
            check_relpath(rel)
        except ValueError as exc:
            bad.append(Problem(f"uploaded name {obj.key}: {exc}", f"上传的名称 {obj.key} 不安全：{exc}"))
            continue
        if obj.odd:
            bad.append(Problem(f"{obj.key} is {obj.odd}, not a file: only files and folders are taken",
                               f"{obj.key} 不是普通文件（{obj.odd}）：只接收文件和文件夹"))
            continue
        objects.append(obj)
    if bad:
        raise _Refused(Problem("Some uploaded file names cannot be stored safely", "部分上传文件的名称无法安全保存"), bad)
    if not objects:
        raise _Refused(Problem(f"Nothing was uploaded under {batch.prefix}", f"{batch.prefix} 下没有上传任何文件"),
                       [Problem(f"upload the batch's files under {batch.prefix} before its .ready",
                                f"请先把批次文件上传到 {batch.prefix}，再上传 .ready")])
    try:
        if len(objects) == 1 and is_archive(objects[0].key):
            _unpack(area, objects[0], part, here, max_bytes)
        else:
            _copy_loose(area, batch, objects, part, max_bytes)
    except ArchiveRefused as exc:
        raise _Refused(Problem(f"The uploaded archive {objects[0].key} was refused",
                               f"上传的压缩包 {objects[0].key} 被拒收"),
                       [Problem(p, f"压缩包中的问题：{p}") for p in (exc.problems or [exc.message])]) from None
    return objects


def _make_durable(folder: Path, fd: int) -> None:
    """Every downloaded file on disk before the folder counts as whole: after a power cut the
    deposit must not take a truncated file for the upload. One syncfs of `fd` (opened before the
    first file was written, so it reports their write-back errors) where the kernel makes that
    as good as an fsync of each; elsewhere each file is fsynced."""
    from storage_adapters.fs_durability import syncfs, syncfs_is_durable

    if syncfs_is_durable(fd):
        syncfs(fd)
        return
    for dirpath, _, names in os.walk(folder):
        for name in names:
            ffd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(ffd)
            finally:
                os.close(ffd)
        durable.fsync_dir(dirpath)


def _unpack(area: ReceivingArea, obj: AreaObject, part: Path, here: Path, max_bytes: int) -> None:
    if obj.size > max_bytes:
        raise ArchiveRefused(f"{obj.key} is {obj.size:,} bytes, more than the {max_bytes:,} allowed",
                             problems=[f"{obj.key} is {obj.size:,} bytes, more than the {max_bytes:,} allowed"])
    if not obj.key.lower().endswith(".zip"):
        with area.open_read(obj.key) as fh:
            unpack_tar(fh, part, max_bytes=max_bytes, label=obj.key)
        return
    local = here / "upload.zip"
    try:
        _stream_to(area, obj, local)
        unpack_zip(local, part, max_bytes=max_bytes, label=obj.key)
    finally:
        local.unlink(missing_ok=True)


def _copy_loose(area: ReceivingArea, batch: Batch, objects: List[AreaObject], part: Path, max_bytes: int) -> None:
    total = sum(o.size for o in objects)
    if total > max_bytes:
        raise _Refused(Problem("The batch is too large", "批次过大"),
                       [Problem(f"{total:,} bytes uploaded, more than the {max_bytes:,} allowed",
                                f"上传了 {total:,} 字节，超过允许的 {max_bytes:,} 字节")])
    jobs = []
    for obj in objects:
        target = part / obj.key[len(batch.prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((obj, target))
    # small objects cost a round trip each: several in flight (the S3 client is thread-safe)
    with ThreadPoolExecutor(DOWNLOADS_IN_FLIGHT) as pool:
        for _ in pool.map(lambda job: _stream_to(area, *job), jobs):
            pass


def _stream_to(area: ReceivingArea, obj: AreaObject, target: Path) -> None:
    """Copy one object to a new local file, checking its size and (single-part S3 uploads) its
    MD5 ETag: a transfer that went wrong is a failure to retry, not content to preserve."""
    md5 = hashlib.md5() if obj.etag and len(obj.etag) == 32 and "-" not in obj.etag else None
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with area.open_read(obj.key) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if md5 is not None:
                    md5.update(chunk)
                durable.write_all(fd, chunk)
    finally:
        os.close(fd)
    if size != obj.size or (md5 is not None and md5.hexdigest() != obj.etag):
        raise StorageError(f"downloaded {size:,} bytes that do not match the listing ({obj.size:,} bytes, "
                           f"ETag {obj.etag}); run receive again", target=f"receiving-{area.library}",
                           location=area.location(obj.key))


def _deposit(config, args, area, batch, here, content, taken, note, options) -> BatchOutcome:
    from pipelines.commands.deposit import deposit

    code = area.library
    bags = _finished(config, content)
    if bags is None:
        try:
            outcome = deposit(config, args, source=str(content), library=code, collection=batch.collection,
                              collection_type=note.collection_type, policy_name=note.policy, title=note.title)
        except (ConfigError, StagingError) as exc:
            # the archive's own configuration or disk: the operator's to fix, not the library's
            return BatchOutcome(code, str(batch), "incomplete", detail=str(exc), problems=list(exc.problems),
                                exit_code=exc.exit_code)
        except StrongroomError as exc:
            if exc.rerun_helps:
                return BatchOutcome(code, str(batch), "incomplete", detail=str(exc), problems=exc.problems,
                                    exit_code=exc.exit_code)
            said = [str(exc)] + [str(p) for p in exc.problems]
            return _fail(area, batch, here, Problem("The batch could not be deposited", "本批次无法提交保存"),
                         [Problem(t, f"问题：{t}") for t in _as_uploaded(said, content, batch)], config=config)
        if outcome["state"] != "preserved":
            problems = [f"{f['step']}: {f['message']}" for f in outcome["failures"]] + \
                       [str(p) for f in outcome["failures"] for p in f.get("problems", [])]
            if outcome.get("rerun_helps", True):
                return BatchOutcome(code, str(batch), "incomplete", detail="the deposit is not complete; the next "
                                    "receive resumes it", problems=problems, exit_code=outcome["exit_code"] or 1)
            return _fail(area, batch, here, Problem("The batch could not be preserved", "本批次未能保存"),
                         [Problem(t, f"问题：{t}") for t in _as_uploaded(problems, content, batch)], config=config)
        bags = [{"id": b["id"], "files": b["files"], "bytes": b["bytes"]} for b in outcome["bags"]]
    area.put_bytes(batch.marker(DONE), done_document(batch, code, bags, kept=options.keep_uploads))
    _clean_up(area, batch, here, True, options, taken)
    return BatchOutcome(code, str(batch), "preserved", bags=[b["id"] for b in bags],
                        files=sum(b["files"] for b in bags), bytes=sum(b["bytes"] for b in bags),
                        detail=f"answered {batch.marker(DONE)}")


def _as_uploaded(texts: List[str], content: Path, batch: Batch) -> List[str]:
    """The deposit's messages with the download folder on this machine written as the batch's
    place in the area (COLLECTION/BATCH/...): the library knows its files by those names, and
    the archive machine's folders are none of its business."""
    local = [os.path.realpath(content), str(content)]
    out = []
    for text in texts:
        for folder in local:
            text = text.replace(folder + os.sep, batch.prefix).replace(folder, batch.prefix.rstrip("/"))
        out.append(text)
    return out


def _finished(config, content: Path) -> Optional[List[dict]]:
    """The bags of a finished deposit of `content` (a run killed after the deposit, before its
    answer), or None: the deposit's own state says so, so the batch is never deposited twice."""
    from pipelines import flow

    root = Path(config.staging) / flow.STATE_DIR
    real = os.path.realpath(content)
    if not root.is_dir():
        return None
    for entry in root.iterdir():
        if not (entry / "done.json").is_file() or not (entry / "deposit.json").is_file():
            continue
        if flow.read_json(entry / "deposit.json").get("source") == real:
            built = flow.read_json(entry / "bags.json")
            return [{"id": b["id"], "files": b["files"], "bytes": b["bytes"]} for b in built["bags"]]
    return None


def _fail(area: ReceivingArea, batch: Batch, here: Path, what: Problem, problems: List[Problem],
          config=None) -> BatchOutcome:
    """Answer `.failed`; with `config` (the deposit was started and failed on the library's input),
    give that deposit up too, before the work folder (its source) goes."""
    area.put_bytes(batch.marker(FAILED), failed_document(batch, area.library, what, problems))
    if config is not None:
        _abandon_failed(config, area, batch, here)
    _clean_up(area, batch, here, False, ReceiveOptions(keep_uploads=True))
    return BatchOutcome(area.library, str(batch), "failed", detail=what.en, problems=[p.en for p in problems],
                        exit_code=1)


def _abandon_failed(config, area: ReceivingArea, batch: Batch, here: Path) -> None:
    """Abandon the deposit of a batch answered `.failed` (flow.abandon_deposit: abandoned.json and a
    ledger event): the library's corrected upload comes under a new batch name, a new deposit, so
    this one would otherwise stay a FAILED problem in `status` for ever. Run after the answer, so
    a deposit is only given up once the library has been told; a rerun after a kill does it again
    (a no-op once abandoned; nothing to do when no deposit was started)."""
    from pipelines import flow

    key = flow.unfinished_key(config, here / "content", area.library, batch.collection)
    if key is not None:
        flow.abandon_deposit(config, key, f"received batch {batch} failed: answered with {batch.marker(FAILED)}")


def _clean_up(area: ReceivingArea, batch: Batch, here: Path, preserved: bool, options: ReceiveOptions,
              taken: Optional[List[AreaObject]] = None) -> None:
    """After the answer: the uploads taken (only those, only unchanged, only when preserved and not
    kept), then `.ready`, then the local work folder, then the claim."""
    if preserved and not options.keep_uploads:
        if taken is None:
            manifest = here / "taken.json"
            taken = [AreaObject(**o) for o in json.loads(manifest.read_text("utf-8"))] if manifest.is_file() else []
        now = {o.key: o for o in area.list(batch.prefix)}
        area.delete_many([obj.key for obj in taken if now.get(obj.key) == obj])
    area.delete(batch.marker(READY))
    if here.exists():
        remove_tree(here)
    area.delete(batch.marker(CLAIM))  # last: while it is there, the next run finds and finishes this
