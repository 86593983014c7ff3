"""Identities from client certificates through a real mTLS gateway: a listed subject has its
role, an unlisted one is unknown (401), and a presented bearer token decides over the
certificate."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509

from loadtests.gateway_process import demo_model_config, start_gateway
from tests.server.tls_support import CertAuthority

ADMIN_TOKEN = "tls-admin-token-0123456789"


def subject_of(cert: Path) -> str:
    return x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string()


def https(
    url: str, context: ssl.SSLContext, method: str = "GET", token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_client_certificates_are_identities_with_roles(
    demo_model_path: Path, tmp_path: Path
) -> None:
    ca = CertAuthority("access test CA")
    pki = tmp_path / "pki"
    pki.mkdir()
    server_cert, server_key = ca.issue_server().write(pki, "server")
    alice = ca.issue_client("alice", "ops").write(pki, "alice")
    carol = ca.issue_client("carol", "ops").write(pki, "carol")
    ca_path = ca.write(pki)
    tls = {
        "cert_file": str(server_cert),
        "key_file": str(server_key),
        "client_ca_file": str(ca_path),
        "require_client_cert": True,
    }
    config = demo_model_config(demo_model_path, tls=tls)
    config["admin"] = {
        "token": ADMIN_TOKEN,
        "certificate_identities": [
            {"subject": subject_of(alice[0]), "name": "alice", "role": "operator"}
        ],
    }

    def context(pair: tuple[Path, Path]) -> ssl.SSLContext:
        made = ssl.create_default_context(cafile=str(ca_path))
        made.load_cert_chain(*pair)
        return made

    gateway = start_gateway(config, tmp_path, ssl_context=context(alice))
    try:
        base = f"https://{gateway.http_url}"
        status, _ = https(f"{base}/admin/v1/endpoints", context(alice))
        assert status == 200
        status, answer = https(f"{base}/v2/repository/models/ranker/load", context(alice), "POST")
        assert status == 403
        assert answer["error"] == "'alice' has the role operator; this call needs admin or above"
        status, answer = https(f"{base}/admin/v1/endpoints", context(carol))
        assert status == 401 and "is not a known identity" in answer["error"]
        # A token sent decides: a wrong one is refused even with alice's certificate ...
        status, _ = https(f"{base}/admin/v1/endpoints", context(alice), token="wrong-token-xyz")
        assert status == 401
        # ... and a good one gives its own identity to carol's connection.
        status, answer = https(
            f"{base}/v2/repository/models/ranker/unload", context(carol), "POST", ADMIN_TOKEN
        )
        assert status == 200, answer
    finally:
        assert gateway.stop() == 0, gateway.log()
