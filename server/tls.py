"""Server-side TLS material that follows its files: certificate rotation without a restart.

`server.tls` (REST and gRPC ports) and `server.metrics_tls` (metrics port) are TlsSettings.
A TlsFiles holds one of them and hands out what each transport needs:

- gRPC: `grpc_credentials()`, dynamic credentials whose fetcher grpc-core calls before each
  handshake; it stats the files (cheap) and hands over a new certificate configuration
  when their (mtime_ns, size) changed.
- HTTP: `ssl_context()`, the context the listening socket serves with; its `sni_callback`
  (OpenSSL calls it on every ClientHello, with or without SNI) swaps the connection onto a
  freshly loaded context when the files changed, checked at most every RELOAD_CHECK_S.

A changed pair that does not load (half written, key not matching the certificate) keeps
the previous material serving and logs one warning per change; the next change is tried
again. Minimum TLS 1.2 on both.

Client certificate subjects are reported as RFC 4514 strings (most specific RDN first,
"CN=alice,O=ops"): `client_cert_name()` for HTTP (the ASGI TLS extension), and grpc-core's
x509_subject auth property, which OpenSSL prints with XN_FLAG_RFC2253 (the same form).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from pydantic import Field, model_validator

from switchyard.server.config_base import FilePath, StrictModel

log = logging.getLogger(__name__)

RELOAD_CHECK_S = 1.0  # HTTPS: the files are stat'ed at most this often (per port)
# ASGI TLS extension tls_version values (the TLS wire version numbers).
TLS_VERSION_NUMBERS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
HTTP_ALPN = ["http/1.1"]


class TlsSettings(StrictModel):
    """A port's server certificate and, for mutual TLS, the CA its clients' certificates
    must be signed by. The files are re-read when they change (rotation without restart)."""

    cert_file: FilePath = Field(
        description="PEM server certificate, followed by its intermediates (relative: to "
        "the config file's folder)."
    )
    key_file: FilePath = Field(description="PEM private key of `cert_file`.")
    client_ca_file: FilePath | None = Field(
        default=None,
        description="PEM CA certificate(s) that sign client certificates. Set: REST asks "
        "for a client certificate (optional unless `require_client_cert`); gRPC asks only "
        "when `require_client_cert`.",
    )
    require_client_cert: bool = Field(
        default=False,
        description="Mutual TLS: refuse the handshake of a client without a certificate "
        "signed by `client_ca_file`.",
    )

    @model_validator(mode="after")
    def _check(self) -> TlsSettings:
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError("require_client_cert needs client_ca_file (the CA of the clients)")
        for name in ("cert_file", "key_file", "client_ca_file"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {str(path)!r} is not a readable file")
        return self

    def describe(self) -> str:
        """ "TLS" or "mTLS", for the start-up log."""
        return "mTLS" if self.require_client_cert else "TLS"


class TlsError(OSError):
    """The TLS files do not load (at start: the gateway does not start)."""


Stamp = tuple[tuple[int, int] | None, ...]


@dataclass(frozen=True, slots=True)
class _Loaded:
    stamp: Stamp
    context: ssl.SSLContext
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None


class TlsFiles:
    """One TlsSettings' files, loaded at start and again whenever they change."""

    def __init__(self, settings: TlsSettings, port_name: str) -> None:
        self.settings = settings
        self.port_name = port_name
        self._paths = [settings.cert_file, settings.key_file, settings.client_ca_file]
        try:
            loaded = self._load(self._stamp())
        except (OSError, ValueError) as exc:
            raise TlsError(f"TLS files of the {port_name} port do not load: {exc}") from None
        # HTTPS and gRPC follow the files separately (gRPC from grpc-core threads).
        self._http = loaded
        self._http_checked_s = time.monotonic()
        self._http_refused: Stamp | None = None
        self._grpc_stamp = loaded.stamp
        self._grpc_lock = threading.Lock()

    def _stamp(self) -> Stamp:
        stamps: list[tuple[int, int] | None] = []
        for path in self._paths:
            if path is None:
                stamps.append(None)
                continue
            try:
                stat = os.stat(path)
            except OSError:
                stamps.append((-1, -1))
            else:
                stamps.append((stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def _load(self, stamp: Stamp) -> _Loaded:
        """Read the files (stat'ed as `stamp` just before: a change while reading shows as
        a new stamp next time) and check that they make a working server context."""
        settings = self.settings
        cert_pem = settings.cert_file.read_bytes()
        key_pem = settings.key_file.read_bytes()
        ca_pem = None if settings.client_ca_file is None else settings.client_ca_file.read_bytes()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(HTTP_ALPN)
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
            if ca_pem is not None:
                context.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
                required = settings.require_client_cert
                context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
        except ssl.SSLError as exc:
            raise ValueError(
                f"{exc.reason or exc}: the certificate, key and CA files must be PEM and the "
                "key must be the certificate's"
            ) from None
        return _Loaded(stamp, context, cert_pem, key_pem, ca_pem)

    def _reload(self, stamp: Stamp, what: str) -> _Loaded | None:
        try:
            return self._load(stamp)
        except (OSError, ValueError) as exc:
            log.warning(
                "the changed TLS files of the %s port do not load for %s (%s); still serving "
                "the previous certificate",
                self.port_name, what, exc,
            )  # fmt: skip
            return None

    # HTTPS

    def ssl_context(self) -> ssl.SSLContext:
        """The context to serve HTTPS with; connections move to reloaded material."""
        context = self._http.context
        context.sni_callback = self._on_client_hello
        return context

    def _on_client_hello(self, ssl_object: Any, server_name: str | None, _: Any) -> None:
        # An exception here would fail the handshake: nothing may raise.
        try:
            current = self._current_http()
            if ssl_object.context is not current.context:
                ssl_object.context = current.context
        except Exception:  # pragma: no cover - defensive: keep serving what it had
            log.warning("TLS reload check of the %s port failed", self.port_name, exc_info=True)

    def _current_http(self) -> _Loaded:
        now_s = time.monotonic()
        if now_s - self._http_checked_s >= RELOAD_CHECK_S:
            self._http_checked_s = now_s
            stamp = self._stamp()
            if stamp != self._http.stamp and stamp != self._http_refused:
                loaded = self._reload(stamp, "HTTPS")
                if loaded is None:
                    self._http_refused = stamp  # warned once for this change
                else:
                    self._http = loaded
                    log.info("TLS certificate of the %s port reloaded (HTTPS)", self.port_name)
        return self._http

    # gRPC

    def grpc_credentials(self) -> grpc.ServerCredentials:
        initial = self._grpc_configuration(self._http)
        return grpc.dynamic_ssl_server_credentials(
            initial,
            # grpc's stubs leave out the None ("no change") that its docs allow.
            self._fetch_grpc_configuration,  # type: ignore[arg-type]
            require_client_authentication=self.settings.require_client_cert,
        )

    def _grpc_configuration(self, loaded: _Loaded) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(loaded.key_pem, loaded.cert_pem)], root_certificates=loaded.ca_pem
        )

    def _fetch_grpc_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc-core, before a handshake: a new configuration, or None to keep the current."""
        try:
            stamp = self._stamp()
            with self._grpc_lock:
                if stamp == self._grpc_stamp:
                    return None
                self._grpc_stamp = stamp  # a pair that fails is warned about once
                loaded = self._reload(stamp, "gRPC")
                if loaded is None:
                    return None
                log.info("TLS certificate of the %s port reloaded (gRPC)", self.port_name)
                return self._grpc_configuration(loaded)
        except Exception:  # pragma: no cover - defensive: grpc-core would fail the handshake
            log.warning("TLS reload check of the %s port failed", self.port_name, exc_info=True)
            return None


def client_cert_name(ssl_object: Any) -> str | None:
    """The RFC 4514 subject of the verified client certificate of a connection, if any."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    subject: str = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return subject


def asgi_tls_extension(ssl_object: Any) -> dict[str, Any]:
    """The ASGI TLS extension (scope["extensions"]["tls"]) of a connection's SSL object."""
    der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,  # the spec allows None; building the PEM per connection is waste
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": client_cert_name(ssl_object),
        "client_cert_error": None,  # a certificate that fails verification fails the handshake
        "tls_version": TLS_VERSION_NUMBERS.get(ssl_object.version() or ""),
        "cipher_suite": None if cipher is None else _CIPHER_IDS.get(cipher[0]),
    }


# OpenSSL's cipher ids are 0x0300XXXX; the low 16 bits are the IANA number ASGI wants.
_CIPHER_IDS: dict[str, int] = {
    cipher["name"]: cipher["id"] & 0xFFFF
    for cipher in ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).get_ciphers()
}
