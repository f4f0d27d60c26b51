"""The `governance:` section of strongroom.yaml: who approves decisions no single operator may take.

Releasing a dark (purchased) collection, withdrawing a bag, and putting or lifting a legal hold
are requests that a quorum of named approvers sign with their own SSH keys (DESIGN.md,
"Governance"). The config names the approvers in an OpenSSH `allowed_signers` file (so anyone
can check a signature later with `ssh-keygen -Y verify` alone, nothing Strongroom-specific), the
quorum per kind, and the consortium operators who may restore a dark collection for
preservation work (`restore --for-preservation`). Read strictly, like the rest of the config:
unknown keys and bad values are errors naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from policies.model import Reader, type_name
from policies.targets import _read_path
from strongroom.errors import ConfigError

KINDS = ("trigger", "withdraw", "legal-hold", "release-hold")
BYPASS = "governance-bypass"   # a withdrawal of copies under S3 Object Lock governance-mode retention
QUORUM_KEYS = KINDS + (BYPASS,)
GOVERNANCE_KEYS = ("allowed_signers", "quorum", "operators", "expiry_days")
DEFAULT_QUORUM: Dict[str, int] = {"trigger": 3, "withdraw": 2, "legal-hold": 2, "release-hold": 2}
DEFAULT_EXPIRY_DAYS = 30
MAX_EXPIRY_DAYS = 3660

EXAMPLE = ("governance:\n  allowed_signers: ./governance/allowed_signers   # OpenSSH allowed_signers file\n"
           "  quorum: {trigger: 3, withdraw: 2, legal-hold: 2, release-hold: 2}\n"
           "  operators: [alice]   # who may `restore --for-preservation`")


@dataclass(frozen=True)
class Governance:
    """The validated `governance:` section."""

    allowed_signers: Path                  # absolute; relative in the YAML to the config's folder
    quorum: Dict[str, int]                 # every kind of QUORUM_KEYS
    operators: Optional[Tuple[str, ...]]   # None: no `operators:` key, nobody may --for-preservation
    expiry_days: int = DEFAULT_EXPIRY_DAYS

    def may_restore_for_preservation(self, operator: str) -> bool:
        return operator in (self.operators or ())


def read_governance(reader: Reader, value: Any, base: Path) -> Optional[Governance]:
    """Parse `governance:`; problems go to `reader` (None when the section is unusable)."""
    data = reader.mapping(value, "governance", GOVERNANCE_KEYS, ("allowed_signers",),
                          describe="a mapping (allowed_signers, quorum, operators, expiry_days)")
    if data is None or "allowed_signers" not in data:
        return None
    signers = _read_path(reader, data["allowed_signers"], "governance.allowed_signers", base)
    if signers is not None and not signers.is_file():
        reader.problem("governance.allowed_signers",
                       f"file {signers} does not exist (or is not a regular file); it must be an OpenSSH "
                       f"allowed_signers file, one line per approver: `PRINCIPAL ssh-ed25519 AAAA...`")
        signers = None
    quorum = _read_quorum(reader, data.get("quorum", {}))
    operators = _read_operators(reader, data["operators"]) if "operators" in data else None
    expiry = reader.integer(data.get("expiry_days", DEFAULT_EXPIRY_DAYS), "governance.expiry_days",
                            minimum=1, maximum=MAX_EXPIRY_DAYS)
    if signers is None or quorum is None or expiry is None or ("operators" in data and operators is None):
        return None
    return Governance(allowed_signers=signers, quorum=quorum, operators=operators, expiry_days=expiry)


def _read_quorum(reader: Reader, value: Any) -> Optional[Dict[str, int]]:
    data = reader.mapping(value, "governance.quorum", QUORUM_KEYS, describe="a mapping of request kinds to counts")
    if data is None:
        return None
    quorum = dict(DEFAULT_QUORUM)
    ok = True
    for kind, count in data.items():
        number = reader.integer(count, f"governance.quorum.{kind}", minimum=1, maximum=100)
        if number is None:
            ok = False
        else:
            quorum[kind] = number
    quorum.setdefault(BYPASS, max(quorum["withdraw"], 3))
    return quorum if ok else None


def _read_operators(reader: Reader, value: Any) -> Optional[Tuple[str, ...]]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        reader.problem("governance.operators", f"must be a list of operator names (STRONGROOM_OPERATOR, else "
                                               f"the OS user); got {type_name(value)}")
        return None
    return tuple(v.strip() for v in value)


def require_governance(config) -> Governance:
    """The config's governance section, or ConfigError (exit 2) saying what to add."""
    found = getattr(config, "governance", None)
    if found is None:
        raise ConfigError(f"this archive has no `governance:` section, which requests, approvals and "
                          f"entitlements need; add one such as\n{EXAMPLE}\n(see docs/governance.md)",
                          path=str(config.path), key="governance")
    return found


__all__ = ["BYPASS", "DEFAULT_QUORUM", "Governance", "KINDS", "QUORUM_KEYS", "read_governance",
           "require_governance"]
