# SPDX-License-Identifier: GPL-2.0-or-later
"""x509 credentials for a TLS migration, made with GnuTLS's certtool.

QEMU's ``tls-creds-x509`` reads ``ca-cert.pem``, ``server-cert.pem``/``server-key.pem`` (server endpoint) and
``client-cert.pem``/``client-key.pem`` (client endpoint, and for ``verify-peer=on`` on the server) from one
directory. The server certificate carries the destination's address in its SAN (127.0.0.1, or the destination
namespace's address on a namespace path), matching the source's ``tls-hostname``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .qemus import tool

_CA = "cn = migshark test CA\nca\ncert_signing_key\nexpiration_days = 3650\n"
_SERVER = (
    "organization = migshark\ncn = {host}\nip_address = {host}\ntls_www_server\n"
    "encryption_key\nsigning_key\nexpiration_days = 3650\n"
)
_CLIENT = (
    "organization = migshark\ncn = migshark-source\ntls_www_client\nencryption_key\nsigning_key\n"
    "expiration_days = 3650\n"
)


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def make_x509_creds(directory: Path, host: str = "127.0.0.1") -> Path:
    """Write a CA, a server certificate for the IP ``host`` and a client certificate into ``directory``."""
    certtool = tool("certtool")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.info").write_text(_CA)
    (directory / "server.info").write_text(_SERVER.format(host=host))
    (directory / "client.info").write_text(_CLIENT)
    for key in ("ca-key.pem", "server-key.pem", "client-key.pem"):
        _run(
            [
                certtool,
                "--generate-privkey",
                "--key-type",
                "rsa",
                "--bits",
                "2048",
                "--outfile",
                str(directory / key),
            ]
        )
    _run(
        [
            certtool,
            "--generate-self-signed",
            "--load-privkey",
            str(directory / "ca-key.pem"),
            "--template",
            str(directory / "ca.info"),
            "--outfile",
            str(directory / "ca-cert.pem"),
        ]
    )
    for who in ("server", "client"):
        _run(
            [
                certtool,
                "--generate-certificate",
                "--load-privkey",
                str(directory / f"{who}-key.pem"),
                "--load-ca-certificate",
                str(directory / "ca-cert.pem"),
                "--load-ca-privkey",
                str(directory / "ca-key.pem"),
                "--template",
                str(directory / f"{who}.info"),
                "--outfile",
                str(directory / f"{who}-cert.pem"),
            ]
        )
    return directory
