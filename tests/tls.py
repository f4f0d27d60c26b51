"""A private certificate authority and server certificates made at test time with `openssl`.

Why: every real S3 endpoint a library meets speaks https, often with a campus CA that is not in
the system trust store. Tests need such a CA (to give as `ca_bundle:` / `AWS_CA_BUNDLE`), a
server certificate it signed for 127.0.0.1 (for SeaweedFS's `-s3.cert.file`), and certificates
that must be refused: one from another CA, and one for the wrong host name. Made with the
`openssl` command (always present where Python's ssl module is), so no extra package is needed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


class TLSError(RuntimeError):
    """openssl failed; the message carries its stderr."""


def _openssl(args: Sequence[str], cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TLSError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA: `cert` (PEM, what a client trusts) and its private `key`."""

    folder: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, folder: Path, name: str = "Strongroom Test CA") -> "CertificateAuthority":
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / "ca.pem", folder / "ca.key"
        _openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                  "-days", "2", "-subj", f"/CN={name}",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"], folder)
        return cls(folder, cert, key)

    def issue(self, name: str, *, hosts: Sequence[str] = ("127.0.0.1",)) -> "ServerCertificate":
        """A server certificate for `hosts` (IP addresses or DNS names, as subjectAltName),
        signed by this CA; `name` names its files."""
        cert, key, csr = (self.folder / f"{name}.pem", self.folder / f"{name}.key", self.folder / f"{name}.csr")
        ext = self.folder / f"{name}.ext"
        alt = ",".join(("IP:" if _is_ip(h) else "DNS:") + h for h in hosts)
        ext.write_text(f"subjectAltName={alt}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        _openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                  "-subj", f"/CN={hosts[0]}"], self.folder)
        _openssl(["x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                  "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)], self.folder)
        return ServerCertificate(cert, key)


@dataclass(frozen=True)
class ServerCertificate:
    """A server's certificate (PEM) and private key, as SeaweedFS's -s3.cert.file/-s3.key.file take them."""

    cert: Path
    key: Path


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
