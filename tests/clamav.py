"""A private ClamAV `clamd` for tests, with a signature database made at test time.

freshclam cannot reach its mirrors here, so the database is built from scratch: an unsigned
container (`sigtool --build=daily.cud --unsigned`, so VERSION reports a database version and
date like a real daily.cvd) holding a body signature (.ndb) for the EICAR test string, plus any
MD5 (.hdb) signatures a test adds later (`add_hash_signature` + `reload`). clamd runs in the
foreground on a unix socket in a temp folder, and is killed by its own pid (SIGKILL).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Strongroom.Test.EICAR"
DB_VERSION = 27500


def clamd_binary() -> str:
    for name in ("clamd", "/usr/sbin/clamd"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("clamd not found: install Debian's clamav-daemon (.ci/run does)")


def _die_with_parent() -> None:
    """In the child: SIGKILL it when the test process dies (a killed pytest leaves no clamd)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Clamd:
    """One clamd process on `self.socket`; stop() kills it, start() brings it back."""

    def __init__(self, folder: Path, stream_max: str = "25M", extra_conf: str = ""):
        self.folder = Path(folder)
        self.db = self.folder / "db"
        # A unix socket path must fit in sun_path (108 bytes): a deep pytest tmp folder does not,
        # so the socket lives in a short folder of its own when it has to.
        sock = self.folder / "clamd.sock"
        if len(os.fsencode(sock)) > 90:
            short = tempfile.mkdtemp(prefix="srclamd-", dir="/tmp")
            atexit.register(shutil.rmtree, short, True)
            sock = Path(short) / "clamd.sock"
        self.socket = str(sock)
        self.stream_max = stream_max
        self.proc: Optional[subprocess.Popen] = None
        self.db.mkdir(parents=True, exist_ok=True)
        self._build_database()
        self.conf = self.folder / "clamd.conf"
        self.conf.write_text(
            "Foreground yes\n"
            f"LocalSocket {self.socket}\n"
            f"DatabaseDirectory {self.db}\n"
            f"StreamMaxLength {stream_max}\n"
            "MaxThreads 8\n"
            "SelfCheck 3600\n"
            f"LogFile {self.folder / 'clamd.log'}\n"
            f"PidFile {self.folder / 'clamd.pid'}\n"
            "ReadTimeout 30\n"
            + extra_conf
        )

    def _build_database(self) -> None:
        build = self.folder / "build"
        build.mkdir(exist_ok=True)
        (build / "COPYING").write_text("test signatures made by tests/clamav.py\n")
        (build / "daily.ndb").write_text(f"{EICAR_SIGNATURE}:0:*:{EICAR[:40].hex()}\n")
        subprocess.run(["sigtool", "--build=daily.cud", "--unsigned", f"--cvd-version={DB_VERSION}"],
                       cwd=build, input=b"strongroom-tests\n", check=True, capture_output=True, timeout=60)
        shutil.copy(build / "daily.cud", self.db / "daily.cud")

    def add_hash_signature(self, data: bytes, name: str) -> None:
        """A new MD5 signature (an .hdb line) for exactly these bytes; takes effect on reload()."""
        line = f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n"
        with open(self.db / "strongroom-extra.hdb", "a") as fh:
            fh.write(line)

    def command(self, cmd: bytes, timeout: float = 10) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(self.socket)
            s.sendall(b"z" + cmd + b"\0")
            data = b""
            while b"\0" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\0")[0].decode()

    def reload(self, probe: bytes) -> None:
        """RELOAD and wait until the new database is in use (`probe` must now be found)."""
        from ingest.clamd import Endpoint, scan_bytes

        self.command(b"RELOAD")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if scan_bytes(Endpoint(socket=self.socket, timeout=5), probe):
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError("clamd did not load the new signatures within 30 s")

    def start(self) -> "Clamd":
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.proc = subprocess.Popen([clamd_binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.folder / "clamd.log").read_text(errors="replace")[-2000:] if (
                    self.folder / "clamd.log").exists() else ""
                raise RuntimeError(f"clamd exited with {self.proc.returncode}: {log}")
            try:
                if self.command(b"VERSION", timeout=2).startswith("ClamAV"):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("clamd did not answer within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def clamav_yaml(self, stream_max_bytes: Optional[str] = None) -> str:
        extra = f", stream_max_bytes: {stream_max_bytes}" if stream_max_bytes else ""
        return f"clamav: {{socket: {self.socket}, timeout: 20s{extra}}}\n"


def start_session_clamd(folder: Path) -> Clamd:
    """The suite's clamd: every deposit of every test is really scanned (STRONGROOM_CLAMAV)."""
    return Clamd(folder).start()
