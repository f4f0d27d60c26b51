"""A SeaweedFS cluster on loopback: master, two volume servers, filer and S3 gateway, each its
own process, replication 001 (every object on both volume servers, same rack).

Unlike `tests.seaweed.SeaweedServer` (one `weed server` process), one part can be killed with -9
and restarted on its own data: the volume-server failure an operator meets. Used by
bench/bench_cluster.py; each process is started in its own session and killed by its pid.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from tests.seaweed import GRPC_OFFSET, free_ports, weed_binary

PARTS = ("master", "volume1", "volume2", "filer", "s3")


@dataclass
class SeaweedCluster:
    folder: Path
    replication: str = "001"
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    ports: Dict[str, int] = field(default_factory=dict)
    processes: Dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.ports:
            self.ports = dict(zip(PARTS, free_ports(len(PARTS))))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def _args(self, part: str) -> list:
        p, ip = self.ports, ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        master = f"127.0.0.1:{p['master']}.{p['master'] + GRPC_OFFSET}"
        if part == "master":
            return ["master", *ip, f"-port={p['master']}", f"-port.grpc={p['master'] + GRPC_OFFSET}",
                    f"-mdir={self.folder / 'master'}", f"-defaultReplication={self.replication}",
                    "-volumeSizeLimitMB=64", "-electionTimeout=1s", "-telemetry=false"]
        if part.startswith("volume"):
            return ["volume", *ip, f"-port={p[part]}", f"-port.grpc={p[part] + GRPC_OFFSET}",
                    f"-dir={self.folder / part}", f"-mserver={master}", "-max=40", "-rack=rack1"]
        if part == "filer":
            return ["filer", *ip, f"-port={p['filer']}", f"-port.grpc={p['filer'] + GRPC_OFFSET}",
                    f"-master={master}", f"-defaultReplicaPlacement={self.replication}",
                    f"-localSocket={self.folder / 'filer.sock'}"]
        return ["s3", "-ip.bind=127.0.0.1", f"-port={p['s3']}", f"-port.grpc={p['s3'] + GRPC_OFFSET}",
                f"-filer=127.0.0.1:{p['filer']}.{p['filer'] + GRPC_OFFSET}", f"-config={self.folder / 's3.json'}",
                "-port.iceberg=0", "-port.lance=0"]

    def start_part(self, part: str) -> None:
        work = self.folder / part
        work.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / f"{part}.log", "ab")
        try:
            self.processes[part] = subprocess.Popen([str(weed_binary()), *self._args(part)], cwd=work, stdout=log,
                                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                    start_new_session=True)
        finally:
            log.close()

    def kill_part(self, part: str) -> None:
        proc = self.processes.pop(part, None)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def start(self, timeout: float = 90.0) -> "SeaweedCluster":
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "s3.json").write_text(json.dumps({"identities": [{
            "name": "strongroom-bench", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        for part in PARTS:
            self.start_part(part)
            if part == "volume2":
                self.wait_volumes(2, timeout)
        self.wait_s3(timeout)
        return self

    def volume_servers(self) -> int:
        """How many volume servers the master counts as alive."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['master']}/dir/status", timeout=5) as answer:
            topo = json.loads(answer.read())["Topology"]
        return sum(len(rack.get("DataNodes") or []) for dc in topo.get("DataCenters") or []
                   for rack in dc.get("Racks") or [])

    def wait_volumes(self, count: int, timeout: float = 90.0) -> float:
        """Until the master counts `count` live volume servers; returns the seconds it took."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            try:
                if self.volume_servers() == count:
                    return time.monotonic() - began
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"the master never counted {count} volume servers; see {self.folder}/*.log")

    def wait_s3(self, timeout: float = 90.0) -> None:
        client = self.client()
        deadline = time.monotonic() + timeout
        last: Optional[Exception] = None
        while time.monotonic() < deadline:
            try:
                name = "probe-" + secrets.token_hex(6)
                client.create_bucket(Bucket=name)
                client.put_object(Bucket=name, Key="probe", Body=b"ok")
                client.delete_object(Bucket=name, Key="probe")
                client.delete_bucket(Bucket=name)
                return
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = exc
                time.sleep(0.3)
        raise RuntimeError(f"the S3 gateway never answered: {last}")

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
                                          connect_timeout=5, read_timeout=30))

    def stop(self) -> None:
        for part in reversed(PARTS):
            self.kill_part(part)

    def __enter__(self) -> "SeaweedCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
