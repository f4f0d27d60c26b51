"""Check an approver's SSH signature over a request, with OpenSSH's own `ssh-keygen -Y`.

Approvals are signed with the approvers' ordinary SSH keys (`ssh-keygen -Y sign -n strongroom`),
so nothing here is cryptography of our own: the verdict is `ssh-keygen -Y verify`'s, which is
also what anyone checking the ledger years later runs. Python only reads the signature's
envelope (the SSHSIG armour: public key and namespace, never trusted for the verdict) so a
refusal can say *why* in words: a signature in another namespace, a key that is not in the
allowed_signers file or outside its validity window, or bytes that are not this request's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from strongroom.errors import InputError

NAMESPACE = "strongroom"
MAX_SIGNATURE_BYTES = 64 * 1024
_BEGIN, _END = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"
_TIMEOUT = 60


class SignatureRefused(InputError):
    """A signature that cannot count as an approval (exit 2: the approver's input is wrong)."""


@dataclass(frozen=True)
class Envelope:
    """What a signature says about itself (unverified): its key and its namespace."""

    key_type: str
    key_base64: str     # the public key blob, as in allowed_signers / authorized_keys
    namespace: str

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(base64.b64decode(self.key_base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Verified:
    principal: str
    fingerprint: str


def _string(blob: bytes, at: int) -> Tuple[bytes, int]:
    if at + 4 > len(blob):
        raise ValueError("truncated")
    (size,) = struct.unpack(">I", blob[at:at + 4])
    end = at + 4 + size
    if end > len(blob):
        raise ValueError("truncated")
    return blob[at + 4:end], end


def read_envelope(text: str, where: str) -> Envelope:
    """Parse the SSHSIG armour (PROTOCOL.sshsig); SignatureRefused naming `where` if it is not one."""
    body = text.strip()
    if not (body.startswith(_BEGIN) and body.endswith(_END)):
        raise SignatureRefused("is not an SSH signature (made with `ssh-keygen -Y sign -n strongroom`)", path=where)
    try:
        blob = base64.b64decode("".join(body[len(_BEGIN):-len(_END)].split()), validate=True)
        if blob[:6] != b"SSHSIG":
            raise ValueError("no SSHSIG magic")
        key, at = _string(blob, 10)
        namespace, _ = _string(blob, at)
        key_type, _ = _string(key, 0)
        return Envelope(key_type.decode("ascii"), base64.b64encode(key).decode("ascii"),
                        namespace.decode("utf-8"))
    except (ValueError, UnicodeError, struct.error):
        raise SignatureRefused("is not a readable SSH signature (damaged or truncated)", path=where) from None


def read_signature_file(path: str) -> str:
    """The armoured text of a signature file (regular file, bounded size)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise SignatureRefused(f"cannot be read: {exc.strerror}", path=path) from None
    if not stat.S_ISREG(st.st_mode):
        raise SignatureRefused("is not a regular file (links and special files are refused)", path=path)
    if st.st_size > MAX_SIGNATURE_BYTES:
        raise SignatureRefused(f"is {st.st_size} bytes, too big for an SSH signature", path=path)
    with open(path, "rb") as fh:
        try:
            return fh.read().decode("ascii")
        except UnicodeError:
            raise SignatureRefused("is not an SSH signature (not ASCII armour)", path=path) from None


def _keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise InputError("ssh-keygen (OpenSSH >= 8.1) is needed to check signatures but is not installed")
    return found


def _run(args: List[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([_keygen(), *args], input=stdin, capture_output=True, timeout=_TIMEOUT)


def verify(allowed_signers: Path, signature: str, data: bytes, where: str) -> Verified:
    """Who signed `data` (a request's signable bytes) in namespace strongroom, by allowed_signers.

    SignatureRefused with the reason otherwise. The steps follow `ssh-keygen`'s own: find the
    principals the key is allowed for (`-Y find-principals`, which applies valid-after/before),
    then `-Y verify` as that principal."""
    env = read_envelope(signature, where)
    if env.namespace != NAMESPACE:
        raise SignatureRefused(f"was made in namespace {env.namespace!r}, not {NAMESPACE!r}; sign with "
                               f"`ssh-keygen -Y sign -f KEY -n {NAMESPACE} REQ.txt`", path=where)
    with tempfile.TemporaryDirectory(prefix="strongroom-sig-") as tmp:
        sig_path = os.path.join(tmp, "request.sig")
        with open(sig_path, "w", encoding="ascii") as fh:
            fh.write(signature)
        found = _run(["-Y", "find-principals", "-s", sig_path, "-f", str(allowed_signers)])
        principals = [p for p in found.stdout.decode("utf-8", "replace").split() if p] if found.returncode == 0 else []
        if not principals:
            if _listed(allowed_signers, env.key_base64):
                raise SignatureRefused(f"key {env.fingerprint} is in {allowed_signers} but not valid now "
                                       f"(outside its valid-after/valid-before window)", path=where)
            raise SignatureRefused(f"key {env.fingerprint} is not an approver: it is not in {allowed_signers}",
                                   path=where)
        for principal in principals:
            done = _run(["-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", NAMESPACE,
                         "-s", sig_path], stdin=data)
            if done.returncode == 0:
                return Verified(principal, env.fingerprint)
    raise SignatureRefused(f"signature by {principals[0]} ({env.fingerprint}) does not match this request's "
                           f"text: the request was altered, or the signature was made for another request",
                           path=where)


def _listed(allowed_signers: Path, key_base64: str) -> bool:
    try:
        return key_base64 in allowed_signers.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False


__all__ = ["NAMESPACE", "Envelope", "SignatureRefused", "Verified", "read_envelope", "read_signature_file",
           "verify"]
