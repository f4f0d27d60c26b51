"""Virus check at ingest: the policy (`virus_check`, `large_files`), scanning while staging,
quarantine, and the evidence (PREMIS event and agent, ledger detail).

One read per byte: `ingest.stage` hands every chunk it reads from the source to a `FileScan`
(an INSTREAM to clamd) while it hashes and copies it, so the scan costs no extra read of the
source or of the staged copy. The verdict travels with the staged file (`StagedFile.virus`).

What each policy value means:

* `virus_check: required` -- every file is scanned by clamd and found clean, or the deposit
  stops (exit 1). clamd unreachable or failing is an error, never "clean", and nothing is
  recorded as checked. With no `clamav:` in the config the deposit is refused (exit 2) before
  any work, naming the key. `--no-virus-check` is refused.
* `virus_check: warn` -- scanned when clamd answers; an infected file, a file clamd could not
  scan or an unreachable clamd is a warning, recorded as such (the event outcome is "warning"
  and says how many files were *not* scanned); nothing is quarantined.
* `virus_check: off` -- no scan, and no virus check event: the records never claim one.

Files longer than clamd's StreamMaxLength (`clamav.stream_max_bytes`, clamd refuses longer
streams): `large_files: scan-in-chunks` (the default) sends them as consecutive streams of at
most that length overlapping by `OVERLAP` bytes, so a signature up to that length is found
wherever it sits (clamd cannot unpack an archive split over two streams: said in the record);
`refuse` refuses the deposit before anything is staged; `skip-and-record` stages them
unscanned and the event lists them ("warning").
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from strongroom.durable import atomic_write_json
from strongroom.errors import ConfigError, PreservationError, UsageError

from .clamd import ClamdError, EngineVersion, Endpoint, InStream, StreamLimitExceeded, split_endpoint, version

MODES = ("required", "warn", "off")
LARGE_FILES = ("scan-in-chunks", "refuse", "skip-and-record")
OVERLAP = 1 << 20  # bytes repeated at the start of the next chunk of a large file
QUARANTINE = "quarantine"
STALE_DAYS = 7  # older definitions are said at every deposit (freshclam updates daily)
ENV_ENDPOINT = "STRONGROOM_CLAMAV"  # overrides `clamav:` (a socket path or host:port)


class ScannerProblem(str):
    """A staging problem that is the scanner's, not the file's (a str, so it travels like one)."""


@dataclass(frozen=True)
class FileVerdict:
    """What the scan of one file found. status: clean | infected | skipped | unscanned."""

    status: str
    signature: str = ""
    chunks: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Scanner:
    """Everything a staging worker needs to scan (picklable)."""

    endpoint: Endpoint
    mode: str
    large_files: str

    def start(self, relpath: str, size: int) -> "FileScan":
        return FileScan(self, relpath, size)


class FileScan:
    """One file's scan, fed the bytes as they are read for staging."""

    def __init__(self, scanner: Scanner, relpath: str, size: int):
        self.scanner = scanner
        self.relpath = relpath
        self.size = size
        self.limit = scanner.endpoint.stream_max_bytes
        self.overlap = min(OVERLAP, self.limit // 4)
        self.skip = size > self.limit and scanner.large_files == "skip-and-record"
        self.stream: Optional[InStream] = None
        self.in_stream = 0
        self.fed = 0
        self.tail = b""
        self.chunks = 0
        self.found = ""
        self.failed = ""

    def _error(self, exc: ClamdError) -> None:
        if isinstance(exc, StreamLimitExceeded):
            exc = ClamdError(f"{exc}; clamav.stream_max_bytes ({self.limit:,}) must not exceed clamd's "
                             f"StreamMaxLength")
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self.scanner.mode == "required":
            raise ClamdError(f"{self.relpath}: virus check failed: {exc}")
        self.failed = str(exc)

    def _close_stream(self) -> None:
        stream, self.stream = self.stream, None
        found = stream.verdict()
        if found and not self.found:
            self.found = found

    def _open_stream(self) -> None:
        self.stream = InStream(self.scanner.endpoint, reuse=True)  # one clamd session per worker
        self.chunks += 1
        self.in_stream = 0
        if self.tail:
            self.stream.send(self.tail)
            self.in_stream = len(self.tail)

    def feed(self, data) -> None:
        if self.skip or self.failed:
            return
        try:
            view = memoryview(data)
            pos = 0
            while pos < len(view):
                if self.stream is None:
                    self._open_stream()
                piece = view[pos:pos + self.limit - self.in_stream]
                self.stream.send(piece)
                self.in_stream += len(piece)
                pos += len(piece)
                self.fed += len(piece)
                if self.size > self.limit:
                    if len(piece) >= self.overlap:
                        self.tail = bytes(piece[len(piece) - self.overlap:])
                    else:
                        self.tail = (self.tail + bytes(piece))[-self.overlap:]
                if self.in_stream >= self.limit and self.fed < self.size:
                    self._close_stream()
        except ClamdError as exc:
            self._error(exc)

    def finish(self) -> FileVerdict:
        if self.skip:
            return FileVerdict("skipped", reason=f"{self.size:,} bytes, longer than clamd's stream limit "
                                                 f"({self.limit:,} bytes)")
        if not self.failed:
            try:
                if self.stream is None and self.chunks == 0:
                    self._open_stream()  # an empty file is scanned too
                if self.stream is not None:
                    self._close_stream()
            except ClamdError as exc:
                self._error(exc)
        if self.failed:
            return FileVerdict("unscanned", chunks=self.chunks, reason=self.failed)
        if self.found:
            return FileVerdict("infected", self.found, self.chunks)
        return FileVerdict("clean", chunks=self.chunks)

    def abort(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


# --- per deposit ------------------------------------------------------------------------------

@dataclass
class VirusSetup:
    """The virus check of one deposit, decided before staging starts."""

    mode: str                       # required | warn | off (off also for --no-virus-check)
    large_files: str
    scanner: Optional[Scanner]      # None: nothing is scanned
    engine: Optional[EngineVersion]
    endpoint: str                   # "clamd at /run/clamav/clamd.ctl", "" when off
    quarantine_dir: Optional[Path]
    source: str = ""
    warnings: List[str] = field(default_factory=list)


def configured_endpoint(config) -> Optional[Endpoint]:
    """The config's `clamav:` endpoint, or the one named by $STRONGROOM_CLAMAV (same keys' defaults)."""
    override = os.environ.get(ENV_ENDPOINT, "").strip()
    base = getattr(config, "clamav", None)
    if override:
        sock, host, port = split_endpoint(override)
        if base is None:
            return Endpoint(socket=sock, host=host, port=port)
        return Endpoint(socket=sock, host=host, port=port, timeout=base.timeout,
                        stream_max_bytes=base.stream_max_bytes)
    return base


def setup(config, policy, *, quarantine_dir: Path, source: str = "", no_virus_check: bool = False) -> VirusSetup:
    """Decide how this deposit is scanned; asks clamd for its version (so reachability is known
    before any byte is staged). Raises ConfigError/PreservationError when the policy cannot be met."""
    mode = getattr(policy, "virus_check", "required")
    large = getattr(policy, "large_files", "scan-in-chunks")
    if no_virus_check:
        refuse_no_check(policy)
        return VirusSetup("off", large, None, None, "", None, source,
                          [f"virus check skipped for this deposit (--no-virus-check; policy {policy.name} says "
                           f"virus_check: {mode})"])
    if mode == "off":
        return VirusSetup("off", large, None, None, "", None, source)
    endpoint = configured_endpoint(config)
    if endpoint is None:
        if mode == "required":
            raise ConfigError(f"policy {policy.name} says virus_check: required, but the config has no clamav: "
                              f"section saying where ClamAV's clamd listens; add e.g. "
                              f"`clamav: {{socket: /run/clamav/clamd.ctl}}` (Debian's clamav-daemon), or set "
                              f"virus_check: warn or off in {getattr(policy, 'source', None) or 'the policy'}",
                              path=str(config.path), key="clamav")
        return VirusSetup("warn", large, None, None, "", None, source,
                          ["not virus-checked: the config has no clamav: section (policy says virus_check: warn)"])
    try:
        engine = version(endpoint)
    except ClamdError as exc:
        if mode == "required":
            raise PreservationError(f"virus check impossible, so nothing was staged: {exc}; start clamd (or fix "
                                    f"clamav: in the config) and run the same command again",
                                    path=str(config.path), key="clamav", rerun_helps=True)
        return VirusSetup("warn", large, None, None, endpoint.describe(), None, source,
                          [f"not virus-checked: {exc} (policy says virus_check: warn)"])
    warnings = []
    built = engine.db_datetime
    if built is None:
        warnings.append(f"{endpoint.describe()} reports no signature database version ({engine.raw}); "
                        f"its definitions' age is unknown")
    elif (datetime.now(timezone.utc) - built).days > STALE_DAYS:
        warnings.append(f"{endpoint.describe()}: signature database {engine.db_version} is "
                        f"{(datetime.now(timezone.utc) - built).days} days old (built {engine.db_date}); "
                        f"is freshclam running?")
    return VirusSetup(mode, large, Scanner(endpoint, mode, large), engine, endpoint.describe(),
                      quarantine_dir, source, warnings)


def refuse_no_check(policy) -> None:
    if getattr(policy, "virus_check", "required") == "required":
        raise UsageError(f"--no-virus-check is refused: policy {policy.name} says virus_check: required "
                         f"(change the policy to warn or off if this collection must not be scanned)",
                         key="--no-virus-check")


def refuse_large(setup: VirusSetup, files: Sequence) -> None:
    """large_files: refuse -- name every file clamd cannot take in one stream, before staging."""
    if setup.scanner is None or setup.large_files != "refuse":
        return
    limit = setup.scanner.endpoint.stream_max_bytes
    big = [f"{f.relpath}: {f.size:,} bytes, longer than clamd's stream limit ({limit:,} bytes)"
           for f in files if f.size > limit]
    if big:
        raise PreservationError(f"{len(big)} file(s) too large to be virus-checked, and policy says large_files: "
                                f"refuse; nothing was staged", path=setup.source, problems=big)


def summarize(setup: VirusSetup, files: Sequence, checked_at: Optional[datetime] = None) -> Optional[dict]:
    """The record of one bag's virus check (stored in bags.json, turned into PREMIS and ledger
    events), or None when no check was asked for."""
    if setup.mode == "off":
        return None
    verdicts = [(f.relpath, getattr(f, "virus", None)) for f in files]
    scanned = [(r, v) for r, v in verdicts if v is not None and v.status in ("clean", "infected")]
    infected = [[r, v.signature] for r, v in scanned if v.status == "infected"]
    skipped = [[r, v.reason] for r, v in verdicts if v is not None and v.status == "skipped"]
    unscanned = [[r, (v.reason if v is not None else "no scanner")] for r, v in verdicts
                 if v is None or v.status == "unscanned"]
    chunked = sum(1 for _, v in scanned if v.chunks > 1)
    outcome = "success" if len(scanned) == len(files) and not infected else "warning"
    engine = setup.engine
    return {
        "mode": setup.mode, "large_files": setup.large_files, "outcome": outcome,
        "files": len(files), "scanned": len(scanned), "infected": infected, "skipped": skipped,
        "unscanned": unscanned[:1000], "unscanned_count": len(unscanned), "chunked": chunked,
        "engine": engine.engine if engine else "", "db_version": engine.db_version if engine else "",
        "db_date": engine.db_date if engine else "", "endpoint": setup.endpoint,
        "stream_max_bytes": setup.scanner.endpoint.stream_max_bytes if setup.scanner else 0,
        "checked_at": (checked_at or datetime.now(timezone.utc)).isoformat(),
    }


def detail_text(record: dict) -> str:
    """One line for the ledger and the PREMIS outcome detail: counts a report can rely on."""
    text = (f"{record['scanned']} of {record['files']} file(s) scanned, {len(record['infected'])} infected, "
            f"{len(record['skipped'])} skipped as too large, {record['unscanned_count']} not scanned")
    if record["chunked"]:
        text += f"; {record['chunked']} large file(s) scanned in overlapping chunks (archives in them not unpacked)"
    if record["infected"]:
        text += "; found: " + ", ".join(f"{r} ({s})" for r, s in record["infected"][:20])
    return text


def agent_note(record: dict) -> str:
    if not record.get("engine"):
        return "ClamAV clamd not reached"
    db = (f"signature database {record['db_version']} of {record['db_date']}" if record.get("db_version")
          else "signature database of unknown version")
    return f"{record['engine']}, {db} ({record['endpoint']})"


def premis_parts(record: dict, bag_id: str, when: str):
    """(event, agent) for the bag's metadata/premis.xml."""
    from . import premis

    agent_id = ("local", "clamav", "executing program")
    agent = premis.Agent("local", "clamav", "ClamAV clamd", "software",
                         version=(record.get("engine") or "ClamAV").replace("ClamAV ", "") or "unknown",
                         note=agent_note(record))
    detail = (f"every payload file streamed to clamd (INSTREAM) while being staged; policy virus_check: "
              f"{record['mode']}, large_files: {record['large_files']}")
    event = premis.Event("UUID", str(uuid.uuid4()), "virus check", when, detail, record["outcome"], detail_text(record),
                         agents=(agent_id, ("local", "strongroom", "executing program")),
                         objects=(("strongroom-bag", bag_id, "source"),))
    return event, agent


# --- infected files ---------------------------------------------------------------------------

def quarantine(setup: VirusSetup, infected: Sequence[Tuple[str, bytes, str, int, Dict[str, str]]]) -> Path:
    """Move infected staged files to staging/quarantine/<deposit>/files/ (mode 0400), with
    quarantine.json saying where each came from. `infected`: (relpath, staged path, signature,
    size, digests). Returns the folder."""
    folder = Path(setup.quarantine_dir)
    files = folder / "files"
    record_path = folder / "quarantine.json"
    entries = json.loads(record_path.read_text("utf-8")) if record_path.is_file() else []
    now = datetime.now(timezone.utc).isoformat()
    for relpath, staged, signature, size, digests in infected:
        dest = os.fsencode(files) + b"/" + relpath.encode("utf-8", "surrogateescape")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.lexists(dest):
            os.chmod(dest, 0o600)
            os.unlink(dest)  # the same file quarantined by an earlier run of this deposit
        os.replace(staged, dest)
        os.chmod(dest, 0o400)
        entries = [e for e in entries if e.get("relpath") != relpath]
        entries.append({"relpath": relpath, "source": os.path.join(setup.source, relpath), "size": size,
                        "digests": digests, "signature": signature, "quarantined_at": now,
                        "scanner": setup.endpoint, "engine": setup.engine.describe() if setup.engine else ""})
    atomic_write_json(record_path, entries)
    return folder


def infected_error(setup: VirusSetup, found: Sequence[Tuple[str, str]], folder: Path) -> PreservationError:
    return PreservationError(
        f"{len(found)} infected file(s) found by {setup.engine.describe() if setup.engine else 'clamd'}; "
        f"the deposit was stopped and nothing of it was replicated; the file(s) are kept in {folder} "
        f"(quarantine.json says where each came from)",
        path=setup.source, problems=[f"{rel}: {sig} FOUND" for rel, sig in found], rerun_helps=False)


def as_dict(verdict: FileVerdict) -> dict:
    return asdict(verdict)


def check_before_work(config, policy, *, no_virus_check: bool = False) -> None:
    """The refusals that need no clamd: --no-virus-check against `required`, and `required`
    with no `clamav:` configured (both exit 2, before anything is scanned or staged)."""
    if no_virus_check:
        refuse_no_check(policy)
        return
    if getattr(policy, "virus_check", "required") == "required" and configured_endpoint(config) is None:
        setup(config, policy, quarantine_dir=Path("."))  # raises the ConfigError naming `clamav`
