"""A real `luigid` on loopback for tests and benchmarks: own port, own state file, own log.

Started in its own session and killed by its pid (never by name), so a test leaves no
scheduler behind and never touches another helper's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pipelines.central import SchedulerUnreachable
from tests.seaweed import free_ports


@dataclass
class Luigid:
    folder: Path
    #: lines of luigi.cfg's [scheduler] section, e.g. {"worker_disconnect_delay": "5"}
    scheduler: dict = field(default_factory=dict)
    port: int = 0
    process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "Luigid":
        (self.folder / "log").mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_ports(1)[0]
        cfg = self.folder / "luigi.cfg"
        cfg.write_text("[scheduler]\n" + "".join(f"{k} = {v}\n" for k, v in self.scheduler.items()))
        env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg)}
        binary = Path(sys.executable).parent / "luigid"
        log = open(self.folder / "luigid.out", "ab")
        try:
            self.process = subprocess.Popen(
                [str(binary), "--address", "127.0.0.1", "--port", str(self.port),
                 "--state-path", str(self.folder / "state.pickle"), "--logdir", str(self.folder / "log")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"luigid exited: {(self.folder / 'luigid.out').read_text(errors='replace')}")
            try:
                self.call("task_list", status="RUNNING")
                return self
            except SchedulerUnreachable:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"luigid on {self.url} did not answer within {timeout} s")

    def call(self, method: str, **args):
        """One request to luigid's JSON API, as Strongroom's runner sends it (pipelines.central)."""
        from pipelines.central import call

        return call(self.url, method, **args)

    def raw(self, method: str, **args) -> str:
        """The text luigid's page fetches (what a browser on its port would see)."""
        query = urllib.parse.urlencode({"data": json.dumps(args)})
        with urllib.request.urlopen(f"{self.url}/api/{method}?{query}", timeout=10) as answer:
            return answer.read().decode("utf-8")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def __enter__(self) -> "Luigid":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
