"""Virus check at ingest with a real clamd (tests/clamav.py) and a test-made signature database.

The session's clamd (conftest `clamd`, reached through $STRONGROOM_CLAMAV) scans every deposit
of the suite; tests that stop a daemon start their own (`private_clamd`), never the session's.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import struct
import threading
import time
import zipfile
from pathlib import Path

import pytest

from tests.clamav import EICAR, EICAR_SIGNATURE, Clamd

LIB = "PKU"
FOUND = f"{EICAR_SIGNATURE}.UNOFFICIAL"


# --- helpers -----------------------------------------------------------------------------------

def make_archive(tmp_path: Path, clamd, *, virus_check: str = "required", large_files: str = "scan-in-chunks",
                 stream_max: str = "", env: bool = False, monkeypatch=None) -> Path:
    """A `strongroom init` archive whose config points at `clamd` (or, env=True, has no clamav:)."""
    from policies.config import write_default_config

    config = Path(write_default_config(tmp_path / "archive"))
    text = config.read_text("utf-8")
    start = text.index("\nclamav:\n")
    end = text.index("\n\n", start + 1)
    clamav = "\n" + clamd.clamav_yaml(stream_max or None).rstrip("\n") if clamd is not None else ""
    config.write_text(text[:start] + clamav + text[end:], "utf-8")
    for name in ("self-built.yaml", "at-risk-purchased.yaml"):
        p = config.parent / "policies" / name
        p.write_text(p.read_text("utf-8").replace("virus_check: required", f"virus_check: {virus_check}")
                     .replace("large_files: scan-in-chunks", f"large_files: {large_files}"), "utf-8")
    if monkeypatch is not None and not env:
        monkeypatch.delenv("STRONGROOM_CLAMAV", raising=False)  # the config's clamav: is what is used
    return config


def run(capsys, *argv) -> tuple:
    from pipelines.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def deposit(capsys, config: Path, source: Path, collection: str = "c1", *extra) -> tuple:
    code, out, err = run(capsys, "--config", config, "--json", "deposit", source, "--library", LIB,
                         "--collection", collection, "--type", "self-built", *extra)
    return code, (json.loads(out) if out.strip().startswith("{") else {}), err


def source_tree(folder: Path, files: dict) -> Path:
    for rel, data in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return folder


def zip_with_eicar() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner/readme.txt", "harmless\n")
        z.writestr("inner/eicar.com", EICAR)
    return buf.getvalue()


def catalog_of(config: Path):
    from catalog.access import open_catalog
    from policies.config import load_config

    return open_catalog(load_config(config))


def replica_files(config: Path) -> list:
    root = config.parent / "archive" / "replicas"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
def private_clamd(tmp_path):
    server = Clamd(tmp_path / "clamd-private", stream_max="4M").start()
    try:
        yield server
    finally:
        server.stop()


# --- the protocol ------------------------------------------------------------------------------

def fake_clamd(tmp_path: Path, reply: bytes, *, read_all: bool = True, close_after: int = 0):
    """A one-connection server on a unix socket; returns (path, received bytes holder, thread)."""
    path = str(tmp_path / "fake.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    got = {"data": b""}

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                got["data"] += chunk
                if close_after and len(got["data"]) >= close_after:
                    return  # closes without a reply, like a daemon killed mid-stream
                if not read_all or got["data"].endswith(b"\0\0\0\0"):
                    break
            if reply is None:
                time.sleep(3)  # holds the connection open without answering
            elif reply:
                conn.sendall(reply)
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return path, got, t


def test_instream_framing_and_replies(tmp_path):
    from ingest.clamd import Endpoint, InStream, parse_scan_reply

    path, got, t = fake_clamd(tmp_path, b"stream: OK\0")
    data = os.urandom((1 << 20) + 5)  # more than one frame
    with InStream(Endpoint(socket=path, timeout=5)) as s:
        s.send(data[:10])
        s.send(data[10:])
        assert s.verdict() is None
    t.join(5)
    raw = got["data"]
    assert raw.startswith(b"zINSTREAM\0")
    body, pos, frames = b"", len(b"zINSTREAM\0"), []
    while True:
        (n,) = struct.unpack(">I", raw[pos:pos + 4])
        pos += 4
        if n == 0:
            break
        frames.append(n)
        body += raw[pos:pos + n]
        pos += n
    assert body == data and pos == len(raw) and max(frames) <= 1 << 20

    assert parse_scan_reply("stream: Eicar-Test-Signature FOUND") == "Eicar-Test-Signature"
    for bad in ("INSTREAM size limit exceeded. ERROR", "stream: lstat() failed. ERROR", "garbage", ""):
        with pytest.raises(Exception) as exc:
            parse_scan_reply(bad)
        assert type(exc.value).__name__ in ("ClamdError", "StreamLimitExceeded")


def test_clamd_failures_are_never_clean(tmp_path):
    from ingest.clamd import ClamdError, Endpoint, scan_bytes, version

    with pytest.raises(ClamdError, match="unreachable"):
        scan_bytes(Endpoint(socket=str(tmp_path / "none.sock"), timeout=1), b"x")
    path, _, t = fake_clamd(tmp_path, b"", close_after=100)  # closes mid-stream, no reply
    with pytest.raises(ClamdError):
        scan_bytes(Endpoint(socket=path, timeout=2), os.urandom(1 << 16))
    t.join(5)
    os.unlink(path)
    path, _, t = fake_clamd(tmp_path, None)  # never answers
    with pytest.raises(ClamdError, match="no reply within"):
        scan_bytes(Endpoint(socket=path, timeout=0.5), b"abc")
    os.unlink(path)
    path, _, t = fake_clamd(tmp_path, b"Welcome\0", read_all=False)
    with pytest.raises(ClamdError, match="unexpected VERSION reply"):
        version(Endpoint(socket=path, timeout=2))


def session_clamd(tmp_path: Path, script):
    """A fake clamd speaking IDSESSION on a unix socket. `script(conn, request)` (both counted
    from 1) gives each INSTREAM's reply bytes, or "close" to hang up instead (after reading the
    stream), or "close-mid" to hang up halfway through the stream. Returns (path, log) with log
    listing (conn, request, body) per stream received."""
    path = str(tmp_path / "session.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    log = []

    def read_exact(conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def handle(conn, number):
        with conn:
            conn.settimeout(5)
            try:
                assert read_exact(conn, 11) == b"zIDSESSION\0"
                request = 0
                while True:
                    try:
                        command = read_exact(conn, 10)
                    except EOFError:
                        return
                    assert command == b"zINSTREAM\0", command
                    request += 1
                    action = script(number, request)
                    body = b""
                    while True:
                        (n,) = struct.unpack(">I", read_exact(conn, 4))
                        if n == 0:
                            break
                        body += read_exact(conn, n)
                        if action == "close-mid":
                            return
                    log.append((number, request, body))
                    if action == "close":
                        return
                    conn.sendall(action)
            except (EOFError, OSError):
                return

    def serve():
        number = 0
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            number += 1
            threading.Thread(target=handle, args=(conn, number), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return path, log


def _scan(ep, data: bytes):
    from ingest.clamd import InStream

    with InStream(ep, reuse=True) as s:
        s.send(data)
        return s.verdict()


def test_scans_share_one_clamd_session_and_replies_are_matched_by_id(tmp_path):
    from ingest.clamd import ClamdError, Endpoint, close_sessions

    def script(conn, request):
        if conn == 1 and request == 3:
            return b"2: stream: OK\0"  # the reply of another request: never taken for this one
        return f"{request}: stream: {'Bad.Sig FOUND' if request == 2 else 'OK'}\0".encode()

    path, log = session_clamd(tmp_path, script)
    ep = Endpoint(socket=path, timeout=5)
    close_sessions()
    try:
        assert _scan(ep, b"a") is None
        assert _scan(ep, b"b") == "Bad.Sig"  # an infected verdict keeps the session
        with pytest.raises(ClamdError, match="not for request 3"):
            _scan(ep, b"c")
        assert _scan(ep, b"d") is None  # after an error: a new session, ids from 1 again
        assert [(c, r, b) for c, r, b in log] == [(1, 1, b"a"), (1, 2, b"b"), (1, 3, b"c"), (2, 1, b"d")]
    finally:
        close_sessions()


def test_a_session_dropped_mid_stream_is_an_error_never_clean(tmp_path):
    from ingest.clamd import ClamdError, Endpoint, close_sessions
    from ingest.virus import Scanner

    def script(conn, request):
        if request == 2:
            return "close-mid" if conn == 1 else "close"
        return f"{request}: stream: OK\0".encode()

    path, log = session_clamd(tmp_path, script)
    ep = Endpoint(socket=path, timeout=5)
    close_sessions()
    try:
        assert _scan(ep, b"first") is None
        scan = Scanner(ep, "required", "scan-in-chunks").start("big.bin", 3 << 20)
        with pytest.raises(ClamdError):
            for _ in range(3):
                scan.feed(os.urandom(1 << 20))
            scan.finish()
        scan.abort()
        assert _scan(ep, b"again") is None  # a new session (conn 2), its request 1
        with pytest.raises(ClamdError):  # hung up after the whole stream, before its verdict
            _scan(ep, b"no verdict")
        warn = Scanner(ep, "warn", "scan-in-chunks").start("w.bin", 5)
        warn.feed(b"hello")
        assert warn.finish().status == "clean"  # conn 3, request 1
        assert [(c, r) for c, r, _ in log] == [(1, 1), (2, 1), (2, 2), (3, 1)]
    finally:
        close_sessions()


def test_a_session_clamd_closed_while_idle_is_replaced_before_any_byte_is_sent(tmp_path, monkeypatch):
    import ingest.clamd as clamd_mod

    path, log = session_clamd(tmp_path, lambda conn, request: f"{request}: stream: OK\0".encode())
    ep = clamd_mod.Endpoint(socket=path, timeout=5)
    clamd_mod.close_sessions()
    try:
        assert _scan(ep, b"one") is None
        (session,) = clamd_mod._idle.sessions.values()
        session.sock.shutdown(socket.SHUT_RD)  # as if clamd had closed it (IdleTimeout): readable, EOF
        assert _scan(ep, b"two") is None
        monkeypatch.setattr(clamd_mod, "REUSE_IDLE", 0.0)  # idle too long: never reused
        assert _scan(ep, b"three") is None
        assert [(c, r, b) for c, r, b in log] == [(1, 1, b"one"), (2, 1, b"two"), (3, 1, b"three")]
    finally:
        clamd_mod.close_sessions()


def test_real_clamd_in_a_session(clamd):
    from ingest.clamd import Endpoint, close_sessions

    ep = Endpoint(socket=clamd.socket, timeout=20)
    close_sessions()
    try:
        verdicts = [_scan(ep, data) for data in (b"text", EICAR, zip_with_eicar(), b"more text")]
        assert verdicts == [None, FOUND, FOUND, None]
    finally:
        close_sessions()


def test_real_clamd_verdicts_and_limit(clamd, tmp_path):
    from ingest.clamd import ClamdError, Endpoint, scan_bytes, version

    ep = Endpoint(socket=clamd.socket, timeout=20)
    v = version(ep)
    assert v.engine.startswith("ClamAV ") and v.db_version == "27500" and v.db_datetime is not None
    assert scan_bytes(ep, b"just text\n") is None
    assert scan_bytes(ep, EICAR) == FOUND
    assert scan_bytes(ep, zip_with_eicar()) == FOUND  # clamd unpacks archives
    small = Clamd(tmp_path / "small", stream_max="64K").start()
    try:
        with pytest.raises(ClamdError, match="size limit exceeded"):
            scan_bytes(Endpoint(socket=small.socket, timeout=20), os.urandom(200_000))
        # chunks of exactly StreamMaxLength (64K = 65,536 bytes) are accepted; EICAR across a boundary found
        from ingest.virus import Scanner

        limit_ep = Endpoint(socket=small.socket, timeout=20, stream_max_bytes=65536)
        data = bytearray(os.urandom(200_000))
        scan = Scanner(limit_ep, "required", "scan-in-chunks").start("x.bin", len(data))
        for i in range(0, len(data), 7000):
            scan.feed(data[i:i + 7000])
        verdict = scan.finish()
        assert verdict.status == "clean" and verdict.chunks == 4
        data[65536 - 20:65536 - 20 + len(EICAR)] = EICAR
        scan = Scanner(limit_ep, "required", "scan-in-chunks").start("x.bin", len(data))
        scan.feed(data)
        assert scan.finish().signature == FOUND
    finally:
        small.stop()


# --- deposits ----------------------------------------------------------------------------------

def test_clean_deposit_records_virus_check(clamd, tmp_path, capsys, monkeypatch):
    from tests.schema import assert_valid

    config = make_archive(tmp_path, clamd, monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"a.txt": b"hello\n", "sub/b.bin": os.urandom(3000), "empty": b""})
    code, out, err = deposit(capsys, config, src)
    assert code == 0, (out, err)
    bag = out["bags"][0]
    assert bag["virus_check"]["scanned"] == 3 and bag["virus_check"]["outcome"] == "success"
    cat = catalog_of(config)
    events = [e for e in cat.events(bag_id=bag["id"]).to_pylist() if e["type"] == "virus check"]
    assert len(events) == 1 and events[0]["outcome"] == "success"
    assert "3 of 3 file(s) scanned, 0 infected" in events[0]["detail"]
    assert "ClamAV 1.4" in events[0]["agent"] and "signature database 27500 of" in events[0]["agent"]
    # the bag's premis.xml, read from a replica
    premis = next(p for p in replica_files(config) if p.name == "premis.xml").read_text("utf-8")
    assert_valid(premis)
    assert "virus check" in premis and "3 of 3 file(s) scanned, 0 infected" in premis
    assert "ClamAV clamd" in premis and "signature database 27500" in premis


@pytest.mark.parametrize("layout", ["top", "folder", "zip"])
def test_infected_deposit_quarantined_and_stopped(clamd, tmp_path, capsys, monkeypatch, layout):
    config = make_archive(tmp_path, clamd, monkeypatch=monkeypatch)
    bad = {"top": ("eicar.com", EICAR), "folder": ("古籍/deep/er/test file.txt", b"pre " + EICAR + b" post"),
           "zip": ("packages/p.zip", zip_with_eicar())}[layout]
    src = source_tree(tmp_path / "src", {"ok.txt": b"fine\n", bad[0]: bad[1], "also/ok2.txt": b"ok\n"})
    code, out, err = deposit(capsys, config, src)
    assert code == 1
    fail = out["failures"][0]
    assert f"{bad[0]}: {FOUND} FOUND" in fail["problems"] and "quarantine" in fail["message"]
    assert not replica_files(config), "nothing of the deposit may be replicated"
    assert catalog_of(config).bags().num_rows == 0
    qdir = config.parent / "archive" / "staging" / "quarantine" / out["deposit"]
    kept = qdir / "files" / bad[0]
    assert kept.read_bytes() == bad[1] and stat.S_IMODE(kept.stat().st_mode) == 0o400
    record = json.loads((qdir / "quarantine.json").read_text("utf-8"))
    assert record[0]["source"] == str(src / bad[0]) and record[0]["signature"] == FOUND
    assert record[0]["digests"]["sha256"]
    assert (src / bad[0]).read_bytes() == bad[1], "the source is never touched"
    # the same command again fails the same way (no rerun advice), and keeps one record
    code2, out2, _ = deposit(capsys, config, src)
    assert code2 == 1 and out2["rerun_helps"] is False
    assert len(json.loads((qdir / "quarantine.json").read_text("utf-8"))) == 1


def test_clamd_killed_mid_deposit_stops_it(private_clamd, tmp_path, capsys, monkeypatch):
    import ingest.virus as virus

    config = make_archive(tmp_path, private_clamd, monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {f"f{i:02d}.bin": os.urandom(3 << 20 if i == 3 else 1000)
                                         for i in range(8)})
    real_feed = virus.FileScan.feed

    def feed(self, data):
        real_feed(self, data)
        if self.relpath == "f03.bin" and private_clamd.running:
            private_clamd.stop()  # SIGKILL while this file's stream is open
    monkeypatch.setattr(virus.FileScan, "feed", feed)
    code, out, err = deposit(capsys, config, src)
    assert code == 1, out
    fail = out["failures"][0]
    assert "virus check failed" in fail["message"] and "nothing was recorded as checked" in fail["message"]
    assert any(p.startswith("f03.bin: virus check failed") for p in fail["problems"])
    assert not replica_files(config) and catalog_of(config).events().num_rows == 0
    assert out["rerun_helps"] is True
    monkeypatch.setattr(virus.FileScan, "feed", real_feed)
    private_clamd.start()
    code, out, err = deposit(capsys, config, src)  # the same command resumes and completes
    assert code == 0, out
    assert out["bags"][0]["virus_check"]["scanned"] == 8


def test_clamd_unreachable_stops_before_staging(tmp_path, capsys, monkeypatch):
    class Gone:
        socket = str(tmp_path / "no-clamd.sock")

        def clamav_yaml(self, stream_max=None):
            return f"clamav: {{socket: {self.socket}, timeout: 2s}}\n"

    config = make_archive(tmp_path, Gone(), monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"a.txt": b"a"})
    code, out, err = deposit(capsys, config, src)
    assert code == 1
    assert "unreachable" in out["failures"][0]["message"] and "nothing was staged" in out["failures"][0]["message"]
    assert not replica_files(config)


def test_required_without_clamav_config_is_a_config_error(tmp_path, capsys, monkeypatch):
    config = make_archive(tmp_path, None, monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"a.txt": b"a"})
    code, out, err = deposit(capsys, config, src)
    assert code == 2 and "clamav" in err and "virus_check: required" in err
    assert not (config.parent / "archive" / "staging" / ".state").exists()


def test_no_virus_check_refused_when_required_allowed_when_warn(clamd, tmp_path, capsys, monkeypatch):
    config = make_archive(tmp_path, clamd, monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"a.txt": b"a"})
    code, _, err = deposit(capsys, config, src, "c1", "--no-virus-check")
    assert code == 2 and "--no-virus-check" in err and "required" in err
    config2 = make_archive(tmp_path / "w", clamd, virus_check="warn", monkeypatch=monkeypatch)
    code, out, err = deposit(capsys, config2, src, "c1", "--no-virus-check")
    assert code == 0 and "virus_check" not in out["bags"][0]
    assert "virus check skipped" in err
    types = catalog_of(config2).events().column("type").to_pylist()
    assert "virus check" not in types, "nothing claims a check that was not made"


def test_warn_keeps_infected_file_with_a_warning(clamd, tmp_path, capsys, monkeypatch):
    config = make_archive(tmp_path, clamd, virus_check="warn", monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"a.txt": b"a", "x/eicar.com": EICAR})
    code, out, err = deposit(capsys, config, src)
    assert code == 0 and f"x/eicar.com: infected ({FOUND})" in err
    ev = [e for e in catalog_of(config).events().to_pylist() if e["type"] == "virus check"][0]
    assert ev["outcome"] == "warning" and "1 infected" in ev["detail"]


def test_warn_with_clamd_down_records_not_scanned(tmp_path, capsys, monkeypatch):
    class Gone:
        socket = str(tmp_path / "no-clamd.sock")

        def clamav_yaml(self, stream_max=None):
            return f"clamav: {{socket: {self.socket}, timeout: 2s}}\n"

    config = make_archive(tmp_path, Gone(), virus_check="warn", monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"a.txt": b"a", "b.txt": b"b"})
    code, out, err = deposit(capsys, config, src)
    assert code == 0 and "not virus-checked" in err
    ev = [e for e in catalog_of(config).events().to_pylist() if e["type"] == "virus check"][0]
    assert ev["outcome"] == "warning" and "0 of 2 file(s) scanned" in ev["detail"]


# --- files larger than the stream limit --------------------------------------------------------

LIMIT = 64 * 1024


def big_with_eicar_across_boundary() -> bytes:
    data = bytearray(os.urandom(5 * LIMIT))
    at = 2 * LIMIT - 30  # straddles the end of the second 64 KiB stream
    data[at:at + len(EICAR)] = EICAR
    return bytes(data)


def test_large_scan_in_chunks_finds_signature_across_a_chunk_boundary(clamd, tmp_path, capsys, monkeypatch):
    config = make_archive(tmp_path, clamd, stream_max="64KiB", monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"clean-big.bin": os.urandom(5 * LIMIT), "small.txt": b"s"})
    code, out, err = deposit(capsys, config, src)
    assert code == 0, out
    rec = out["bags"][0]["virus_check"]
    assert rec["scanned"] == 2 and rec["chunked"] == 1 and rec["outcome"] == "success"
    src2 = source_tree(tmp_path / "src2", {"infected-big.bin": big_with_eicar_across_boundary()})
    code, out, err = deposit(capsys, config, src2, "c2")
    assert code == 1 and f"infected-big.bin: {FOUND} FOUND" in out["failures"][0]["problems"]


def test_large_refuse_names_the_file_before_staging(clamd, tmp_path, capsys, monkeypatch):
    config = make_archive(tmp_path, clamd, large_files="refuse", stream_max="64KiB", monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"big.bin": os.urandom(LIMIT + 1), "small.txt": b"s"})
    code, out, err = deposit(capsys, config, src)
    assert code == 1
    fail = out["failures"][0]
    assert "large_files" in fail["message"] and fail["problems"][0].startswith("big.bin: 65,537 bytes")
    assert not replica_files(config)


def test_large_skip_and_record(clamd, tmp_path, capsys, monkeypatch):
    config = make_archive(tmp_path, clamd, large_files="skip-and-record", stream_max="64KiB",
                          monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"big.bin": big_with_eicar_across_boundary(), "small.txt": b"s"})
    code, out, err = deposit(capsys, config, src)
    assert code == 0 and "1 file(s) not virus-checked, longer than clamd's stream limit" in err
    rec = out["bags"][0]["virus_check"]
    assert rec["outcome"] == "warning" and rec["skipped"][0][0] == "big.bin" and rec["scanned"] == 1
    ev = [e for e in catalog_of(config).events().to_pylist() if e["type"] == "virus check"][0]
    assert ev["outcome"] == "warning" and "1 skipped as too large" in ev["detail"]


# --- evidence: NDSA, reports, audit --virus ----------------------------------------------------

def integrity(config: Path) -> dict:
    from policies.config import load_config
    from reports.preservation import build_preservation

    report = build_preservation(load_config(config))
    c = report.ndsa[0]
    area = next(a for a in c.areas if a.area == "integrity")
    return {"level": area.level, "evidence": [r.key for r in area.evidence], "missing": [r.key for r in area.missing],
            "facts": report.facts[0]}


def test_ndsa_virus_check_is_integrity_level_1_and_audit_virus_rescans(clamd, tmp_path, capsys, monkeypatch):
    from reports import ndsa

    assert any(r.key == "integrity.virus_check" and r.level == 1 for r in ndsa.RULES)
    assert "ndsa.integrity.virus" not in ndsa.NOT_EVIDENCED["integrity"]
    config = make_archive(tmp_path, clamd, monkeypatch=monkeypatch)
    sneaky = b"an old file no signature knew of at ingest " + os.urandom(64)
    src = source_tree(tmp_path / "src", {"a.txt": b"a", "later/sneaky.bin": sneaky})
    code, out, _ = deposit(capsys, config, src)
    assert code == 0
    before = integrity(config)
    assert before["level"] >= 1 and "integrity.virus_check" in before["evidence"]
    assert before["facts"].virus_checked_bags == 1 and before["facts"].virus_scanned_files == 2
    assert before["facts"].virus_db.startswith("27500 of ") and before["facts"].virus_db_age_days == 0

    code, text, _ = run(capsys, "--config", config, "audit", "--virus")
    assert code == 0 and "No infection found" in text

    clamd.add_hash_signature(sneaky, "Strongroom.Test.Sneaky")
    clamd.reload(sneaky)
    code, text, _ = run(capsys, "--config", config, "--json", "audit", "--virus")
    data = json.loads(text)
    assert code == 1
    assert {(i["target"], i["path"]) for i in data["infected"]} == {
        ("site-a", "data/later/sneaky.bin"), ("site-b", "data/later/sneaky.bin")}
    assert all(i["signature"] == "Strongroom.Test.Sneaky.UNOFFICIAL" for i in data["infected"])
    after = integrity(config)
    assert after["level"] == 0 and "integrity.virus_check" in [r for r in after["missing"]]
    assert after["facts"].virus_infected_bags == 1
    events = [e for e in catalog_of(config).events().to_pylist() if e["type"] == "virus check"]
    assert sorted((e["object_type"], e["outcome"]) for e in events) == [
        ("bag", "success"), ("replica", "failure"), ("replica", "failure"), ("replica", "success"),
        ("replica", "success")]


def test_report_shows_virus_counts_and_definitions_age(clamd, tmp_path, capsys, monkeypatch):
    from reports.i18n import Translator

    config = make_archive(tmp_path, clamd, monkeypatch=monkeypatch)
    src = source_tree(tmp_path / "src", {"a.txt": b"a", "b.txt": b"b"})
    assert deposit(capsys, config, src)[0] == 0
    facts = integrity(config)["facts"]
    rule = next(r for r in __import__("reports.ndsa", fromlist=["RULES"]).RULES if r.key == "integrity.virus_check")
    params = rule.finding(facts)
    en = Translator("en").t("ndsa.integrity.virus_check.finding", **params)
    zh = Translator("zh").t("ndsa.integrity.virus_check.finding", **params)
    assert "1 of 1 bags virus-checked clean (2 files scanned); 0 infected" in en and "0 day(s) old" in en
    assert "扫描 2 个文件" in zh and "已有 0 天" in zh
    import reports
    from policies.config import load_config

    for lang, text in (("en", "1 of 1 bags virus-checked clean (2 files scanned)"), ("zh", "扫描 2 个文件")):
        written = reports.write_all(load_config(config), tmp_path / "reports" / lang, lang=lang)
        html = next(p for p in written if "preservation" in str(p) and str(p).endswith(".html"))
        assert text in Path(html).read_text("utf-8"), lang


def test_policy_values_and_errors(tmp_path):
    from policies.model import load_policy
    from strongroom.errors import ConfigError

    def policy(text):
        p = tmp_path / "p.yaml"
        p.write_text("name: p\nchecksums: [sha256]\nreplicas: [a]\n" + text)
        return load_policy(p)

    assert (policy("").virus_check, policy("").large_files) == ("required", "scan-in-chunks")
    assert policy("virus_check: off\n").virus_check == "off"  # YAML's false, as written
    assert policy("virus_check: warn\nlarge_files: refuse\n").large_files == "refuse"
    with pytest.raises(ConfigError, match="virus_check: must be one of required, warn, off"):
        policy("virus_check: maybe\n")
    with pytest.raises(ConfigError, match="large_files: must be one of scan-in-chunks, refuse, skip-and-record"):
        policy("large_files: split\n")


def test_clamav_config_errors(tmp_path):
    from policies.config import load_config, write_default_config
    from strongroom.errors import ConfigError

    config = Path(write_default_config(tmp_path / "a"))
    text = config.read_text("utf-8")
    loaded = load_config(config)
    assert loaded.clamav.socket == "/run/clamav/clamd.ctl" and loaded.clamav.stream_max_bytes == 25 * 2**20
    for bad, message in [("clamav: {socket: /x, port: 3310}", "not both"), ("clamav: {host: av}", "go together"),
                         ("clamav: {}", "needs socket"), ("clamav: {sock: /x}", "unknown key")]:
        start = text.index("\nclamav:\n")
        end = text.index("\n\n", start + 1)
        config.write_text(text[:start] + "\n" + bad + text[end:], "utf-8")
        with pytest.raises(ConfigError, match=message):
            load_config(config)


def test_tcp_endpoint(tmp_path):
    from ingest.clamd import Endpoint, scan_bytes, split_endpoint

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        with conn:
            data = b""
            while not data.endswith(b"\0\0\0\0"):
                data += conn.recv(4096)
            conn.sendall(b"stream: Test.Sig FOUND\0")
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    assert scan_bytes(Endpoint(host="127.0.0.1", port=port, timeout=5), b"abc") == "Test.Sig"
    assert split_endpoint("av.example.org:3310") == (None, "av.example.org", 3310)
    assert split_endpoint("/run/clamav/clamd.ctl") == ("/run/clamav/clamd.ctl", None, None)


def test_stale_definitions_are_said_at_deposit(clamd, tmp_path, capsys, monkeypatch):
    import ingest.virus as virus
    from ingest.clamd import EngineVersion

    monkeypatch.setattr(virus, "version", lambda ep: EngineVersion(
        "ClamAV 1.4.6", "27000", "Mon Jan  5 09:00:00 2026", "ClamAV 1.4.6/27000/Mon Jan  5 09:00:00 2026"))
    config = make_archive(tmp_path, clamd, monkeypatch=monkeypatch)
    code, out, err = deposit(capsys, config, source_tree(tmp_path / "src", {"a.txt": b"a"}))
    assert code == 0 and "signature database 27000 is" in err and "days old" in err and "freshclam" in err
