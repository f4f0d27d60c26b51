import hashlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def archive(tmp_path):
    """A fresh `strongroom init` folder and its loaded config."""
    from policies.config import load_config, write_default_config

    path = write_default_config(tmp_path / "archive")
    return load_config(path)


@pytest.fixture(scope="session", autouse=True)
def clamd(tmp_path_factory):
    """A private clamd (tests/clamav.py) for the whole session. Policies default to virus_check:
    required, so every deposit in every test is really scanned: $STRONGROOM_CLAMAV points
    Strongroom at it (it overrides the config's clamav: key)."""
    from tests.clamav import start_session_clamd

    server = start_session_clamd(tmp_path_factory.mktemp("clamd"))
    old = os.environ.get("STRONGROOM_CLAMAV")
    os.environ["STRONGROOM_CLAMAV"] = server.socket
    try:
        yield server
    finally:
        server.stop()
        if old is None:
            os.environ.pop("STRONGROOM_CLAMAV", None)
        else:
            os.environ["STRONGROOM_CLAMAV"] = old


@pytest.fixture(scope="session")
def identifier():
    """FIDO's signatures load once for the whole test session."""
    from ingest.identify import Identifier

    return Identifier()


def tree_state(root: Path) -> dict:
    """Everything a deposit must leave untouched: names, types, bytes, modes and mtimes."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            state[os.path.relpath(p, os.fsencode(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return state


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One real SeaweedFS server (`weed server -s3`) for the whole session, killed by pid at the end.

    Tests make their own buckets with `seaweed.make_bucket()`; fault tests may stop() and
    start() it on the same data folder (ports and credentials stay the same).
    """
    from tests.seaweed import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    try:
        yield server
    finally:
        server.stop()
