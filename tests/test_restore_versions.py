"""Restore of a collection version: a chain of 3 versions, each restored byte-identical.

Three real deposits of one collection (the source changed between them). Versions 2 and 3 are
then turned into version bags as contract C4 (/work/coord/api-versions.md) describes them, on
every replica: each file unchanged since an earlier deposit is removed from the bag's data/
and listed in its fetch.txt (written by ingest.fetch, the deposit's own writer) as the earliest
bag holding it, fetch.txt added to the tag manifests; the catalog rows (the complete version)
stay as registered. So restoring version 3 must read files from the bags of versions 1 and 2.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from catalog.catalog import Catalog
from ingest.fetch import FETCH_TXT, FetchEntry, fetch_bytes
from ingest.validate import validate_bag
from pipelines.cli import main
from policies.config import load_config, write_default_config
from tests.test_restore import _leftovers, tree

T0 = 1_600_000_000_000_000_000
V1 = {"a.txt": b"alpha v1\n", "b.txt": b"bravo v1\n" * 100, "中文/丙.txt": "丙 第一版\n".encode() * 30,
      "sp ace/d%41.txt": b"delta, unchanged throughout\n"}
V2 = {**V1, "b.txt": b"bravo v2, changed\n", "e/new.bin": bytes(range(256)) * 40}
V3 = {k: v for k, v in V2.items() if k != "中文/丙.txt"}
V3["a.txt"] = b"alpha v3, changed again\n"
VERSIONS = [V1, V2, V3]


def _write_source(root: Path, files: dict) -> None:
    for n, (rel, data) in enumerate(sorted(files.items())):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, ns=(T0 + n * 1_000_000_007, T0 + n * 1_000_000_007))


def _make_version_bag(config, catalog: Catalog, bag: str, earlier: list) -> int:
    """Turn registered bag `bag` into a version bag of the bags in `earlier` (oldest first)."""
    held = {}
    for e in earlier:
        for path, digests in catalog.file_digests(e).items():
            held.setdefault((path, digests["sha256"]), e)      # the earliest bag holding those bytes
    entries = [FetchEntry(held[(f.path, f.sha256)], f.path, f.size) for f in catalog.file_records(bag)
               if (f.path, f.sha256) in held]
    raw = fetch_bytes(entries)
    for target in ("site-a", "site-b"):
        root = Path(config.target(target).root).joinpath(*bag.split("/"))
        for e in entries:
            (root / e.path).unlink()
        (root / FETCH_TXT).write_bytes(raw)
        for alg in ("sha256", "md5"):
            m = root / f"tagmanifest-{alg}.txt"
            if m.exists():
                m.chmod(0o644)
                m.write_text(m.read_text("utf-8") + f"{hashlib.new(alg, raw).hexdigest()}  {FETCH_TXT}\n", "utf-8")
    return len(entries)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("versions")
    cfg = write_default_config(base / "archive")
    config = load_config(cfg)
    bags = []
    for n, files in enumerate(VERSIONS, start=1):
        src = base / f"v{n}"
        _write_source(src, files)
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["--config", str(cfg), "deposit", str(src), "--library", "LIB", "--collection", "COLL",
                         "--type", "self-built"])
        assert code == 0
        catalog = Catalog(config.catalog)
        bags.append(sorted(set(catalog.bags().column("bag_id").to_pylist()) - set(bags))[0])
    catalog = Catalog(config.catalog)
    fetched = [0] + [_make_version_bag(config, catalog, bags[i], bags[:i]) for i in (1, 2)]
    assert fetched == [0, 3, 3]   # v2: a, 丙, d from v1; v3: d from v1, b and e/new.bin from v2
    return base, bags


@pytest.fixture
def archive(chain, tmp_path):
    base, bags = chain
    copy = tmp_path / "archive"
    shutil.copytree(base / "archive", copy, symlinks=True)
    return base, copy / "strongroom.yaml", bags


def _restore(capsys, cfg, *argv, json_out=True):
    code = main(["--config", str(cfg)] + (["--json"] if json_out else []) + ["restore", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if json_out and out.strip() else out), err


def test_every_version_of_the_chain_is_restored_byte_identical(archive, tmp_path, capsys):
    base, cfg, bags = archive
    for n in (1, 2, 3):
        dest = tmp_path / f"v{n}"
        code, out, err = _restore(capsys, cfg, "--collection", "LIB/COLL", "--version", n, dest, "--payload-only")
        assert code == 0, err
        assert out["bags"] == [bags[n - 1]] and f"version {n} of 3" in out["what"]
        assert tree(dest) == tree(base / f"v{n}")     # names, bytes, modification times
        assert _leftovers(tmp_path, f"v{n}") == []
    code, out, err = _restore(capsys, cfg, "--collection", "LIB/COLL", tmp_path / "latest", "--payload-only")
    assert code == 0 and tree(tmp_path / "latest") == tree(base / "v3")
    code, out, err = _restore(capsys, cfg, "--collection", "LIB/COLL", "--version", bags[1], tmp_path / "by-id",
                              "--payload-only")
    assert code == 0 and tree(tmp_path / "by-id") == tree(base / "v2")


def test_a_version_bag_restored_by_its_id_is_a_whole_valid_bag_with_its_fetch_txt(archive, tmp_path, capsys):
    base, cfg, bags = archive
    config = load_config(cfg)
    stored = Path(config.target("site-a").root).joinpath(*bags[2].split("/"))
    assert not (stored / "data" / "sp ace" / "d%41.txt").exists()      # really held elsewhere
    dest = tmp_path / "bag"
    code, out, err = _restore(capsys, cfg, bags[2], dest)
    assert code == 0, err
    assert out["fetched_files"] == 3
    report = validate_bag(dest)                                    # every digest recomputed
    assert report.valid, report.problems
    assert (dest / FETCH_TXT).read_bytes() == (stored / FETCH_TXT).read_bytes()
    restored = {k[len("data/"):]: v for k, v in tree(dest).items() if k.startswith("data/") and v != "dir"}
    assert restored == {k: v for k, v in tree(base / "v3").items() if v != "dir"}


def test_a_damaged_earlier_copy_is_taken_from_the_other_replica_and_marked_on_the_earlier_bag(archive, tmp_path,
                                                                                           capsys):
    base, cfg, bags = archive
    config = load_config(cfg)
    p = Path(config.target("site-a").root).joinpath(*bags[0].split("/"), "data", "sp ace", "d%41.txt")
    p.chmod(0o644)
    p.write_bytes(b"delta, unchanged throughouT\n")               # same size, different bytes
    dest = tmp_path / "v3"
    code, out, err = _restore(capsys, cfg, "--collection", "LIB/COLL", dest, "--payload-only")
    assert code == 0, err
    assert tree(dest) == tree(base / "v3")
    catalog = Catalog(config.catalog)
    assert catalog.replica(bags[0], "site-a").state == "damaged"   # the bag that holds the bad copy
    assert catalog.replica(bags[2], "site-a").state == "verified"  # not the version bag restored
    failures = [e for e in catalog.events(bag_id=bags[0], type="fixity check").to_pylist() if e["outcome"] == "failure"]
    assert [(e["target"], e["path"]) for e in failures] == [("site-a", "data/sp ace/d%41.txt")]


def test_an_earlier_file_with_no_good_copy_is_listed_by_partial(archive, tmp_path, capsys):
    base, cfg, bags = archive
    config = load_config(cfg)
    for target in ("site-a", "site-b"):
        Path(config.target(target).root).joinpath(*bags[1].split("/"), "data", "e", "new.bin").unlink()
    dest = tmp_path / "v3"
    code, out, err = _restore(capsys, cfg, "--collection", "LIB/COLL", dest, "--payload-only", "--partial")
    assert code == 1 and out["missing"] == [f"{bags[2]}/data/e/new.bin"]
    assert tree(dest) == {k: v for k, v in tree(base / "v3").items() if k != "e/new.bin"}   # its folder stays
    code, out, err = _restore(capsys, cfg, bags[2], tmp_path / "never", json_out=False)
    assert code == 1 and "data/e/new.bin" in err and bags[1] in err and not (tmp_path / "never").exists()


def test_unknown_version_or_collection_is_a_usage_error(archive, tmp_path, capsys):
    base, cfg, bags = archive
    code, _, err = _restore(capsys, cfg, "--collection", "LIB/COLL", "--version", "4", tmp_path / "x", json_out=False)
    assert code == 2 and "3 version(s)" in err and bags[0].rsplit("-", 1)[0] in err
    code, _, err = _restore(capsys, cfg, "--collection", "LIB/NOPE", tmp_path / "x", json_out=False)
    assert code == 2 and "no bag of that collection" in err
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------
# The same chain made by the deposit itself (`deposit --new-version`, helper B's version bags)


@pytest.fixture(scope="module")
def deposited_chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("new-version")
    cfg = write_default_config(base / "archive")
    for n, files in enumerate(VERSIONS, start=1):
        src = base / f"v{n}"
        _write_source(src, files)
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["--config", str(cfg), "deposit", str(src), "--library", "LIB", "--collection", "COLL",
                         "--type", "self-built"] + (["--new-version"] if n > 1 else []))
        assert code == 0
    return base, cfg


def test_versions_made_by_deposit_new_version_are_restored_byte_identical(deposited_chain, tmp_path, capsys):
    base, cfg = deposited_chain
    config = load_config(cfg)
    bags = sorted(Catalog(config.catalog).bags().column("bag_id").to_pylist())
    assert len(bags) == 3
    stored = Path(config.target("site-a").root).joinpath(*bags[2].split("/"))
    assert (stored / FETCH_TXT).is_file() and not (stored / "data" / "sp ace" / "d%41.txt").exists()
    for n in (1, 2, 3):
        dest = tmp_path / f"v{n}"
        code, out, err = _restore(capsys, cfg, "--collection", "LIB/COLL", "--version", n, dest, "--payload-only")
        assert code == 0, err
        assert tree(dest) == tree(base / f"v{n}")
    code, out, err = _restore(capsys, cfg, bags[2], tmp_path / "bag")
    assert code == 0, err
    assert out["fetched_files"] == 3 and validate_bag(tmp_path / "bag").valid
