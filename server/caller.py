"""Who is calling the admin and model repository APIs, as the transport saw them, and who
made a change, as the audit trail records it.

A Caller is built once per call from what the transport knows (peer address, headers or
metadata, the subject of a verified client certificate); server/access.py turns it into an
Actor, or refuses it. The Actor travels with the change into the control store's trail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

REASON_HEADER = "x-switchyard-reason"  # why, in the caller's words: kept in the audit trail
MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class Caller:
    peer: str  # "ip:port" as the transport saw it; "unknown" when it cannot tell
    headers: Mapping[str, str]  # HTTP headers or gRPC text metadata, names in lower case
    # The RFC 4514 subject of a verified client certificate, as cryptography's
    # Name.rfc4514_string() writes it on both protocols: most specific RDN first,
    # "CN=alice,O=ops", known attributes by short name, others by dotted OID.
    cert_subject: str | None = None

    @classmethod
    def from_asgi(cls, scope: Mapping[str, Any], headers: Mapping[str, str]) -> Caller:
        """A REST call; the certificate subject from the ASGI TLS extension."""
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "unknown"
        tls = scope.get("extensions", {}).get("tls") or {}
        return cls(peer, headers, tls.get("client_cert_name") or None)

    @classmethod
    def from_grpc(cls, context: object, headers: Mapping[str, str]) -> Caller:
        """A gRPC call; the certificate subject from the call's auth context (mTLS). The
        Ray host's contexts have neither peer nor auth context."""
        peer = getattr(context, "peer", None)
        auth_context = getattr(context, "auth_context", None)
        properties = auth_context() if auth_context else {}
        return cls(
            _grpc_peer(peer() or "") if peer else "unknown", headers, _grpc_subject(properties)
        )

    def reason(self) -> str:
        return clean_reason(self.headers.get(REASON_HEADER, ""))


def clean_reason(text: str) -> str:
    """A caller's reason as the audit trail and the log keep it: bounded, and with control
    characters (a newline would forge a log line) as spaces."""
    return "".join(" " if not c.isprintable() else c for c in text[:MAX_REASON_CHARS])


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: an authenticated identity and its role, the peer the call came
    from, and the caller's reason. The gateway's own decisions (rollout steps, file edits)
    have an identity of their own and no peer."""

    identity: str
    role: str = "admin"
    peer: str = ""
    reason: str = ""


def _grpc_subject(properties: Mapping[str, Any]) -> str | None:
    """grpc-core's x509_subject is OpenSSL's RFC 2253 print: the same as RFC 4514 for the
    usual attributes, but not for others (emailAddress=... where cryptography writes the
    OID). The subject is read from the certificate itself so that both protocols agree."""
    pem = properties.get("x509_pem_cert")
    if pem:
        subject: str = x509.load_pem_x509_certificate(pem[0]).subject.rfc4514_string()
        return subject
    text = properties.get("x509_subject")
    return text[0].decode("utf-8", "replace") if text else None


def _grpc_peer(peer: str) -> str:
    # grpc writes "ipv4:127.0.0.1:5000" / "ipv6:[::1]:5000"; the audit trail wants the address.
    kind, _, address = peer.partition(":")
    return address if kind in ("ipv4", "ipv6") and address else (peer or "unknown")
