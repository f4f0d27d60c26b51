"""Governance (issue 13 parts 1-4, 6): entitlements, access states, signed requests, trigger release.

Real deposits through the real pipeline (one purchased and one self-built collection, deposited
once per module), real `ssh-keygen -Y sign|verify` with throwaway ed25519 keys; each test works
on its own copy of the archive folder.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from catalog.catalog import Catalog
from catalog.requests import APPROVAL_EVENT, new_request, save_request
from pipelines.cli import main
from policies.config import load_config, write_default_config

PEOPLE = ("alice", "bob", "carol", "mallory", "dave")


def _keygen(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("governance")
    keys = {name: _keygen(root, name) for name in PEOPLE}
    cfg = write_default_config(root / "archive")
    for lib, coll, kind, title in (("PKU", "ejournals", "purchased", "Journal of Examples 2005"),
                                   ("LIB", "own", "self-built", "Our photographs")):
        src = root / f"src-{coll}"
        src.mkdir()
        (src / "a.txt").write_text(f"{coll} content\n")
        assert main(["--config", str(cfg), "deposit", str(src), "--library", lib, "--collection", coll,
                     "--type", kind, "--title", title]) == 0
    return root, keys


class Archive:
    def __init__(self, folder: Path, keys, capsys, monkeypatch):
        self.folder, self.keys, self.capsys, self.monkeypatch = folder, keys, capsys, monkeypatch
        self.cfg = folder / "strongroom.yaml"
        signers = folder / "governance" / "allowed_signers"
        signers.parent.mkdir()
        lines = [f"{n} {keys[n].with_suffix('.pub').read_text().split()[0]} "
                 f"{keys[n].with_suffix('.pub').read_text().split()[1]}" for n in ("alice", "bob", "carol")]
        dave = keys["dave"].with_suffix(".pub").read_text().split()
        lines.append(f'dave valid-before="20200101" {dave[0]} {dave[1]}')
        signers.write_text("\n".join(lines) + "\n")
        with open(self.cfg, "a") as fh:
            fh.write("governance:\n  allowed_signers: ./governance/allowed_signers\n"
                     "  quorum: {trigger: 2, withdraw: 2}\n  operators: [op1]\n")
        self.as_operator("op1")

    def as_operator(self, name: str) -> None:
        self.monkeypatch.setenv("STRONGROOM_OPERATOR", name)

    def run(self, *argv, as_json=False):
        code = main(["--config", str(self.cfg)] + (["--json"] if as_json else []) + list(argv))
        out, err = self.capsys.readouterr()
        return code, (json.loads(out) if as_json and out.strip() else out), err

    @property
    def catalog(self) -> Catalog:
        return Catalog(load_config(self.cfg).catalog)

    def bag(self, lib: str) -> str:
        return next(b for b in self.catalog.bags().column("bag_id").to_pylist() if b.startswith(lib + "/"))

    def events(self, type_: str):
        return self.catalog.events(type=type_).to_pylist()

    def request(self, kind: str, target: str) -> str:
        code, out, err = self.run("request", kind, target, "--reason", "vendor stopped serving it",
                                  "--evidence", "https://example.org/notice", as_json=True)
        assert code == 0, err
        assert set(out) == {"id", "sha256"}
        return out["id"]

    def signable(self, req: str) -> Path:
        code, out, err = self.run("requests", "show", req, "--signable")
        assert code == 0, err
        path = self.folder.parent / f"{req}.txt"
        path.write_text(out)
        return path

    def sign(self, who: str, text: Path, namespace: str = "strongroom") -> Path:
        sig = Path(f"{text}.sig")
        sig.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(self.keys[who]), "-n", namespace, str(text)],
                       check=True, capture_output=True)
        out = self.folder.parent / f"{text.name}.{who}.{namespace}.sig"
        sig.rename(out)
        return out

    def approve(self, req: str, sig: Path, as_json=True):
        return self.run("approve", req, str(sig), as_json=as_json)

    def restore(self, bag: str, dest: Path, *extra):
        return self.run("restore", bag, str(dest), *extra)


@pytest.fixture
def arch(base, tmp_path, capsys, monkeypatch):
    root, keys = base
    copy = tmp_path / "archive"
    shutil.copytree(root / "archive", copy, symlinks=True)
    return Archive(copy, keys, capsys, monkeypatch)


# ------------------------------------------------------------------------------------ config


def test_governance_commands_without_section_say_what_to_add(base, tmp_path, capsys):
    root, _ = base
    copy = tmp_path / "plain"
    shutil.copytree(root / "archive", copy, symlinks=True)
    for argv in (["requests"], ["entitlement", "list"], ["request", "trigger", "PKU/ejournals", "--reason", "x"]):
        assert main(["--config", str(copy / "strongroom.yaml"), *argv]) == 2
        err = capsys.readouterr().err
        assert "no `governance:` section" in err and "allowed_signers:" in err and "Traceback" not in err


def test_without_a_governance_section_a_purchased_restore_says_nothing_decided_it(base, tmp_path, capsys):
    root, _ = base
    copy = tmp_path / "plain"
    shutil.copytree(root / "archive", copy, symlinks=True)
    cfg = str(copy / "strongroom.yaml")
    bags = Catalog(load_config(cfg).catalog).bags().column("bag_id").to_pylist()
    purchased = next(b for b in bags if b.startswith("PKU/"))
    own = next(b for b in bags if b.startswith("LIB/"))
    assert main(["--config", cfg, "restore", purchased, str(tmp_path / "d1")]) == 0
    err = capsys.readouterr().err
    assert "PKU/ejournals is purchased content (dark by default), but access states are not enforced" in err
    assert "no governance: section" in err
    assert main(["--config", cfg, "restore", own, str(tmp_path / "d2")]) == 0
    assert "not enforced" not in capsys.readouterr().err


def test_bad_governance_values_name_file_and_key(arch):
    text = arch.cfg.read_text().replace("quorum: {trigger: 2, withdraw: 2}", "quorum: {trigger: 0, withdrawl: 2}")
    arch.cfg.write_text(text)
    code, _, err = arch.run("requests")
    assert code == 2
    assert "governance.quorum.trigger" in err and "governance.quorum.withdrawl" in err
    assert "strongroom.yaml" in err


# ------------------------------------------------------------------------------------ entitlements


def test_entitlement_changes_are_logged_and_listed(arch):
    code, out, err = arch.run("entitlement", "add", "PKU/ejournals", "--library", "WHU", "--years", "2001-2020",
                              as_json=True)
    assert code == 0, err
    assert out["changed"] and out["years"] == [2001, 2020]
    logged = [e for e in arch.events("policy assignment") if "entitlement added" in (e["detail"] or "")]
    assert len(logged) == 1 and logged[0]["bag_id"] == arch.bag("PKU") and logged[0]["operator"] == "op1"
    code, out, _ = arch.run("entitlement", "list", "PKU/ejournals", as_json=True)
    assert [(e["library"], e["access_state"]) for e in out["entitlements"]] == [("WHU", "dark")]
    assert arch.run("entitlement", "remove", "PKU/ejournals", "--library", "WHU", "--years", "2001-2020")[0] == 0
    assert [e for e in arch.events("policy assignment") if "entitlement removed" in (e["detail"] or "")]
    assert arch.run("entitlement", "list", as_json=True)[1]["entitlements"] == []
    code, _, err = arch.run("entitlement", "add", "LIB/own", "--library", "WHU")
    assert code == 2 and "self-built" in err


# ------------------------------------------------------------------------------------ access states


def test_dark_restore_refused_and_preservation_restore_logged(arch, tmp_path):
    bag = arch.bag("PKU")
    code, _, err = arch.restore(bag, tmp_path / "a")
    assert code == 2 and "dark" in err and "strongroom request trigger PKU/ejournals" in err
    assert not (tmp_path / "a").exists()
    code, _, err = arch.restore(bag, tmp_path / "b", "--library", "PKU")
    assert code == 2 and "dark" in err
    for option, name in (("--collection", "PKU/ejournals"), ("--deposit", bag.rsplit("-", 1)[0])):
        code, _, err = arch.run("restore", option, name, str(tmp_path / "g"))
        assert code == 2 and "dark" in err, err
    arch.as_operator("eve")
    code, _, err = arch.restore(bag, tmp_path / "c", "--for-preservation")
    assert code == 2 and "governance.operators" in err
    arch.as_operator("op1")
    code, _, err = arch.restore(bag, tmp_path / "d", "--for-preservation")
    assert code == 0, err
    assert (tmp_path / "d" / "data" / "a.txt").read_text() == "ejournals content\n"
    done = [e for e in arch.events("dissemination") if e["outcome"] == "success"]
    assert len(done) == 1 and done[0]["operator"] == "op1"
    assert "for preservation by consortium operator op1" in done[0]["detail"]


def test_open_to_owner_restores_for_its_owner_only(arch, tmp_path):
    bag = arch.bag("LIB")
    code, _, err = arch.restore(bag, tmp_path / "a")
    assert code == 2 and "--library LIB" in err
    code, _, err = arch.restore(bag, tmp_path / "b", "--library", "PKU")
    assert code == 2 and "not a bag of library PKU" in err
    code, _, err = arch.restore(bag, tmp_path / "c", "--library", "LIB")
    assert code == 0, err


# ------------------------------------------------------------------------------------ trigger at quorum


def test_trigger_at_quorum_releases_to_the_entitled_library_only_and_executes_once(arch, tmp_path):
    bag = arch.bag("PKU")
    assert arch.run("entitlement", "add", "PKU/ejournals", "--library", "WHU", "--years", "2001-2010")[0] == 0
    assert arch.run("entitlement", "add", "PKU/ejournals", "--library", "SYSU", "--years", "2011-2020")[0] == 0
    req = arch.request("trigger", "PKU/ejournals")
    text = arch.signable(req)
    assert "release-to: WHU years=2001-2010" in text.read_text() and f"id: {req}" in text.read_text()
    code, out, err = arch.approve(req, arch.sign("alice", text))
    assert code == 0, err
    assert out["approvals"] == ["alice"] and not out["executed"]
    assert arch.restore(bag, tmp_path / "early", "--library", "WHU")[0] == 2
    code, out, err = arch.approve(req, arch.sign("bob", text))
    assert code == 0, err
    assert out["executed_now"] and sorted(out["approvals"]) == ["alice", "bob"]
    released = [e for e in arch.events("policy assignment") if "released by trigger" in (e["detail"] or "")]
    assert len(released) == 1 and released[0]["bag_id"] == bag and req in released[0]["detail"]
    code, _, err = arch.restore(bag, tmp_path / "whu", "--library", "WHU")
    assert code == 0, err
    dissem = [e for e in arch.events("dissemination") if e["outcome"] == "success"]
    assert dissem[-1]["agent_library"] == "WHU" and "entitled library WHU" in dissem[-1]["detail"]
    code, _, err = arch.restore(bag, tmp_path / "sysu", "--library", "SYSU")   # entitled, other years
    assert code == 2 and "outside 2011-2020" in err
    code, _, err = arch.restore(bag, tmp_path / "other", "--library", "FDU")
    assert code == 2 and "not a bag of library FDU" in err
    code, _, err = arch.restore(bag, tmp_path / "none")
    assert code == 2 and "entitled libraries only" in err
    # a third approval after quorum does nothing more
    code, out, err = arch.approve(req, arch.sign("carol", text))
    assert code == 0 and out["executed"] and not out["executed_now"]
    assert len([e for e in arch.events("request execution") if e["outcome"] == "success"]) == 1
    assert len(arch.events(APPROVAL_EVENT)) == 2
    code, out, _ = arch.run("requests", as_json=True)
    assert [(r["id"], r["state"]) for r in out["requests"]] == [(req, "executed")]
    assert arch.run("requests", "--pending", as_json=True)[1]["requests"] == []
    # an entitlement added after the release needs a trigger of its own, naming only it
    code, _, err = arch.run("request", "trigger", "PKU/ejournals", "--reason", "again")
    assert code == 2 and "not released yet" in err
    arch.run("entitlement", "add", "PKU/ejournals", "--library", "FDU")
    second = arch.request("trigger", "PKU/ejournals")
    assert [ln for ln in arch.signable(second).read_text().splitlines() if ln.startswith("release-to:")] == \
        ["release-to: FDU"]
    assert arch.restore(bag, tmp_path / "fdu", "--library", "FDU")[0] == 2
    # the preservation report shows access states, entitlements and the executed request with its approvers
    out = tmp_path / "report.json"
    assert arch.run("report", "preservation", "--format", "json", "-o", str(out))[0] == 0
    gov = json.loads(out.read_text())["governance"]
    assert {a["collection"]: a["state"] for a in gov["access"]} == {"PKU/ejournals": "released", "LIB/own": "open-to-owner"}
    assert sorted(e["library"] for e in gov["entitlements"]) == ["FDU", "SYSU", "WHU"]
    assert [(r["id"], r["state"], sorted(r["approvers"])) for r in gov["requests"]] == \
        [(req, "executed", ["alice", "bob"]), (second, "pending", [])]
    html = tmp_path / "report.html"
    assert arch.run("report", "preservation", "--lang", "zh", "-o", str(html))[0] == 0
    page = html.read_text()
    assert "访问与治理" in page and "已开放" in page and "向所属馆开放" in page and req in page


def test_approvals_in_the_ledger_verify_with_ssh_keygen_alone(arch):
    arch.run("entitlement", "add", "PKU/ejournals", "--library", "WHU")
    req = arch.request("trigger", "PKU/ejournals")
    arch.approve(req, arch.sign("alice", arch.signable(req)))
    detail = next(e["detail"] for e in arch.events("request") if req in e["detail"])
    text = detail.split("signable text:\n", 1)[1].encode()
    sig = next(e["detail"] for e in arch.events(APPROVAL_EVENT)).split("signature:\n", 1)[1]
    sig_file = arch.folder.parent / "ledger.sig"
    sig_file.write_text(sig)
    signers = arch.folder / "governance" / "allowed_signers"
    done = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "alice", "-n", "strongroom",
                           "-s", str(sig_file)], input=text, capture_output=True)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------------ refusals


def test_bad_signatures_are_refused_with_a_reason_and_nothing_recorded(arch):
    arch.run("entitlement", "add", "PKU/ejournals", "--library", "WHU")
    req = arch.request("trigger", "PKU/ejournals")
    other = arch.request("withdraw", arch.bag("LIB"))
    text = arch.signable(req)
    altered = arch.folder.parent / "altered.txt"
    altered.write_text(text.read_text().replace("release-to: WHU", "release-to: FDU"))
    forged = arch.folder.parent / "forged.sig"
    good = arch.sign("alice", text).read_text()
    lines = good.splitlines()
    lines[-2] = ("B" if lines[-2][0] != "B" else "C") + lines[-2][1:]   # the signature bytes, not the key
    forged.write_text("\n".join(lines) + "\n")
    garbage = arch.folder.parent / "garbage.sig"
    garbage.write_text("hello\n")
    cases = [
        (arch.sign("alice", text, namespace="file"), "namespace 'file', not 'strongroom'"),
        (arch.sign("mallory", text), "is not an approver: it is not in"),
        (arch.sign("dave", text), "not valid now"),
        (arch.sign("alice", altered), "does not match this request"),
        (forged, "does not match this request"),
        (garbage, "is not an SSH signature"),
    ]
    for sig, reason in cases:
        code, _, err = arch.approve(req, sig, as_json=False)
        assert code == 2, (sig, err)
        assert reason in err and "Traceback" not in err, (reason, err)
    assert arch.events(APPROVAL_EVENT) == []
    # replay: alice's valid signature of one request presented for another
    alice = arch.sign("alice", text)
    assert arch.approve(req, alice)[0] == 0
    code, _, err = arch.approve(other, alice, as_json=False)
    assert code == 2 and f"made for request {req}" in err
    # the same person twice (a fresh signature of the same text)
    code, _, err = arch.approve(req, arch.sign("alice", text), as_json=False)
    assert code == 2 and "already approved" in err
    assert len(arch.events(APPROVAL_EVENT)) == 1


def test_requester_never_approves_and_expired_requests_are_refused(arch):
    arch.as_operator("alice")
    req = arch.request("withdraw", arch.bag("LIB"))
    code, _, err = arch.approve(req, arch.sign("alice", arch.signable(req)), as_json=False)
    assert code == 2 and "requester never approves" in err
    import datetime as dt
    old = new_request("legal-hold", arch.bag("LIB"), [arch.bag("LIB")], "court order", None, "op1", 30,
                      now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=31))
    save_request(arch.catalog, old)
    code, _, err = arch.approve(old.id, arch.sign("bob", arch.signable(old.id)), as_json=False)
    assert code == 2 and "expired" in err
    assert arch.events(APPROVAL_EVENT) == []


def test_a_stored_request_altered_in_the_catalog_is_refused(arch):
    req = arch.request("withdraw", arch.bag("LIB"))
    path = Path(load_config(arch.cfg).catalog) / "governance" / "requests" / f"{req}.json"
    data = json.loads(path.read_text())
    data["reason"] = "something else"
    path.chmod(0o644)
    path.write_text(json.dumps(data))
    code, _, err = arch.run("requests", "show", req)
    assert code == 1 and "altered" in err


def test_a_rebuilt_catalog_keeps_entitlements_requests_approvals_and_releases(arch, tmp_path):
    bag = arch.bag("PKU")
    arch.run("entitlement", "add", "PKU/ejournals", "--library", "WHU")
    req = arch.request("trigger", "PKU/ejournals")
    text = arch.signable(req)
    arch.approve(req, arch.sign("alice", text))
    arch.approve(req, arch.sign("bob", text))
    pending = arch.request("withdraw", arch.bag("LIB"))
    arch.approve(pending, arch.sign("carol", arch.signable(pending)))
    catalog = Path(load_config(arch.cfg).catalog)
    shutil.rmtree(catalog)                                   # the catalog is lost; the targets remain
    code, _, err = arch.run("catalog", "rebuild")
    assert code == 0, err
    code, out, _ = arch.run("requests", as_json=True)
    states = {r["id"]: (r["state"], sorted(r["approvers"])) for r in out["requests"]}
    assert states == {req: ("executed", ["alice", "bob"]), pending: ("pending", ["carol"])}
    assert [e["library"] for e in arch.run("entitlement", "list", as_json=True)[1]["entitlements"]] == ["WHU"]
    code, _, err = arch.restore(bag, tmp_path / "whu", "--library", "WHU")   # still released
    assert code == 0, err
    code, _, err = arch.approve(pending, arch.sign("carol", arch.signable(pending)), as_json=False)
    assert code == 2 and "already approved" in err


def test_titles_and_years_of_a_grant_decide_which_bags_it_covers():
    import datetime as dt

    from catalog.entitlements import grant_covers, parse_years
    from catalog.requests import Grant
    from catalog.schema import BagRecord
    from strongroom.errors import UsageError

    def bag(title):
        return BagRecord(bag_id="PKU/ej/20260101T000000Z-1", library="PKU", collection="ej",
                         collection_type="purchased", title=title, policy="p", external_identifier="x",
                         group_id="PKU/ej/20260101T000000Z", part=1, part_count=1, file_count=0, byte_count=0,
                         created_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))

    assert grant_covers(Grant("WHU"), bag(None)) is None
    assert grant_covers(Grant("WHU", ("Journal of Examples",)), bag("journal of  examples 2005")) is None
    assert "not among the entitled titles" in grant_covers(Grant("WHU", ("Other Review",)), bag("Journal 2005"))
    assert grant_covers(Grant("WHU", years=(2001, 2010)), bag("Journal 2005")) is None
    assert "outside 2001-2010" in grant_covers(Grant("WHU", years=(2001, 2010)), bag("Journal 2015"))
    assert "names no year" in grant_covers(Grant("WHU", years=(2001, 2010)), bag("Journal"))
    assert parse_years("2001-2020") == (2001, 2020) and parse_years("2005") == (2005, 2005)
    for bad in ("2020-2001", "20x1", "2001-"):
        with pytest.raises(UsageError):
            parse_years(bad)
