"""A throwaway CA and a server certificate for TLS test servers, made with the openssl command."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Names the server certificate is valid for. "localhost" is left out on purpose, so a test can
# reach a server by a name its certificate does not carry.
NAMES = ("dns.test", "modules.test")
IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class Certs:
    """Certs are PEM files: ca (to trust), cert and key (for servers)."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """server_context is a TLS server context with the certificate loaded."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """client_context trusts the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca))


def make(directory: Path) -> Certs:
    """make writes a CA and a server certificate signed by it into directory; needs openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=goproxy test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "key.pem", "-out", "server.csr", "-subj", f"/CN={NAMES[0]}")
    san = ",".join([f"DNS:{n}" for n in NAMES] + [f"IP:{ip}" for ip in IPS])
    (directory / "ext.cnf").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")
    return Certs(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
