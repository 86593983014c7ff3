"""TLS and mutual TLS on the gateway's ports, with certificates made at test time: real
gateway processes called with the real tritonclient clients, and the client certificate
subject as the REST and gRPC sides report it."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import redis
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from cryptography import x509
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, demo_model_config, start_gateway
from switchyard.server.caller import Caller
from switchyard.server.config import parse_config_text
from switchyard.server.config_base import ConfigError
from switchyard.server.http_connections import HttpLimits
from switchyard.server.http_serving import HttpServer
from switchyard.server.tls import TlsFiles, TlsSettings
from tests.server.test_cli import run_cli
from tests.server.tls_support import CertAuthority, Issued

REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT_S = 15.0  # longest wait for a rotation to show (the HTTPS check runs once a second)


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return CertAuthority("switchyard test CA")


@pytest.fixture(scope="module")
def pki(ca: CertAuthority, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    server_cert, server_key = ca.issue_server().write(folder, "server")
    alice_cert, alice_key = ca.issue_client("alice", "ops").write(folder, "alice")
    carol = ca.issue_client("carol", "ops", email="carol@example.org")
    carol_cert, carol_key = carol.write(folder, "carol")
    rogue = CertAuthority("rogue CA")
    rogue_cert, rogue_key = rogue.issue_client("mallory", "ops").write(folder, "mallory")
    return {
        "ca": ca.write(folder),
        "server_cert": server_cert,
        "server_key": server_key,
        "alice_cert": alice_cert,
        "alice_key": alice_key,
        "carol_cert": carol_cert,
        "carol_key": carol_key,
        "rogue_cert": rogue_cert,
        "rogue_key": rogue_key,
    }


def client_context(
    ca_path: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_path))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def features_grpc(data: np.ndarray) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("features", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return tensor


def features_http(data: np.ndarray) -> triton_http.InferInput:
    tensor = triton_http.InferInput("features", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return tensor


def tls_gateway(model_path: Path, workdir: Path, pki: dict[str, Path], **server: Any) -> Gateway:
    tls = {"cert_file": str(pki["server_cert"]), "key_file": str(pki["server_key"])}
    config = demo_model_config(model_path, tls={**tls, **server.pop("tls", {})}, **server)
    return start_gateway(
        config,
        workdir,
        ssl_context=client_context(pki["ca"], pki["alice_cert"], pki["alice_key"]),
    )


def assert_clean_log(gateway: Gateway) -> None:
    """No traceback and nothing at error level from refused connections."""
    log = gateway.log()
    assert "Traceback" not in log, log
    assert " ERROR " not in log and "ERROR:" not in log, log


def peer_certificate(port: int, ca_path: Path, alpn: list[str]) -> x509.Certificate:
    """The certificate a new TLS connection to 127.0.0.1:`port` is shown."""
    context = client_context(ca_path)
    context.set_alpn_protocols(alpn)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        # An IP address: the client sends no SNI, and the swap must happen all the same.
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


# Config


def test_config_refuses_mtls_without_ca_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "s.crt").write_text("x")
    (tmp_path / "s.key").write_text("x")
    text = "server:\n  tls: {cert_file: s.crt, key_file: s.key, require_client_cert: true}\n"
    with pytest.raises(ConfigError, match="require_client_cert needs client_ca_file"):
        parse_config_text(text, tmp_path / "c.yaml")
    text = "server:\n  metrics_tls: {cert_file: s.crt, key_file: nope.key}\n"
    with pytest.raises(ConfigError, match=r"server\.metrics_tls.*key_file .*nope\.key"):
        parse_config_text(text, tmp_path / "c.yaml")


def test_config_paths_resolve_against_the_config_folder_and_env_overrides(
    tmp_path: Path, demo_model_path: Path
) -> None:
    (tmp_path / "s.crt").write_text("x")
    (tmp_path / "s.key").write_text("x")
    tls = {"cert_file": "s.crt", "key_file": "s.key"}
    text = yaml.safe_dump(demo_model_config(demo_model_path, tls=tls))
    config = parse_config_text(text, tmp_path / "c.yaml", env={})
    assert config.server.tls is not None
    assert config.server.tls.cert_file == tmp_path / "s.crt"
    # A nested setting from the environment is YAML: a flow mapping.
    env = {"SWITCHYARD_METRICS_TLS": f"{{cert_file: {tmp_path}/s.crt, key_file: s.key}}"}
    text = yaml.safe_dump(demo_model_config(demo_model_path))
    config = parse_config_text(text, tmp_path / "c.yaml", env=env)
    assert config.server.metrics_tls is not None
    assert config.server.metrics_tls.key_file == tmp_path / "s.key"


def test_a_key_that_does_not_match_fails_the_start(ca: CertAuthority, tmp_path: Path) -> None:
    cert, _ = ca.issue_server().write(tmp_path, "one")
    _, other_key = ca.issue_server().write(tmp_path, "two")
    with pytest.raises(OSError, match="TLS files of the REST/gRPC port do not load"):
        TlsFiles(TlsSettings(cert_file=cert, key_file=other_key), "REST/gRPC")


def test_tls_is_refused_on_the_ray_engine(
    demo_model_path: Path, tmp_path: Path, pki: dict[str, Path]
) -> None:
    tls = {"cert_file": str(pki["server_cert"]), "key_file": str(pki["server_key"])}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(demo_model_config(demo_model_path, tls=tls)))
    result = run_cli("serve", "--config", str(config), "--engine", "ray")
    assert result.returncode == 2
    assert "server.tls and server.metrics_tls are for the standalone engine" in result.stderr


# TLS on a real gateway


@pytest.fixture(scope="module")
def tls_only(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]
) -> Iterator[Gateway]:
    metrics_tls = {"cert_file": str(pki["server_cert"]), "key_file": str(pki["server_key"])}
    running = tls_gateway(
        demo_model_path, tmp_path_factory.mktemp("tls"), pki, metrics_tls=metrics_tls
    )
    yield running
    assert running.stop() == 0, running.log()
    assert_clean_log(running)


def test_tritonclient_grpc_over_tls(
    tls_only: Gateway,
    pki: dict[str, Path],
    direct_session: ort.InferenceSession,
    features: np.ndarray,
) -> None:
    client = triton_grpc.InferenceServerClient(
        tls_only.grpc_url, ssl=True, root_certificates=str(pki["ca"])
    )
    result = client.infer("ranker", [features_grpc(features)])
    (score,) = direct_session.run(["score"], {"features": features})
    np.testing.assert_array_equal(result.as_numpy("score"), score)


def test_tritonclient_http_over_tls(
    tls_only: Gateway,
    pki: dict[str, Path],
    direct_session: ort.InferenceSession,
    features: np.ndarray,
) -> None:
    client = triton_http.InferenceServerClient(
        tls_only.http_url, ssl=True, ssl_options={"ca_certs": str(pki["ca"])}
    )
    result = client.infer("ranker", [features_http(features)])
    (score,) = direct_session.run(["score"], {"features": features})
    np.testing.assert_array_equal(result.as_numpy("score"), score)


def test_plaintext_clients_fail_cleanly_and_the_server_keeps_serving(
    tls_only: Gateway, pki: dict[str, Path]
) -> None:
    with pytest.raises(InferenceServerException):
        triton_grpc.InferenceServerClient(tls_only.grpc_url).is_server_live(client_timeout=5)
    with pytest.raises(OSError):  # the server answers the plaintext with a TLS alert / reset
        urllib.request.urlopen(f"http://{tls_only.http_url}/v2/health/live", timeout=5)
    # A client that does not trust the server's CA is refused by its own side.
    with pytest.raises(ssl.SSLCertVerificationError):
        peer_certificate_untrusted(tls_only.http_port)
    secure = triton_http.InferenceServerClient(
        tls_only.http_url, ssl=True, ssl_options={"ca_certs": str(pki["ca"])}
    )
    assert secure.is_server_live()
    grpc_client = triton_grpc.InferenceServerClient(
        tls_only.grpc_url, ssl=True, root_certificates=str(pki["ca"])
    )
    assert grpc_client.is_server_live()
    assert_clean_log(tls_only)


def peer_certificate_untrusted(port: int) -> None:
    context = ssl.create_default_context()  # the system CAs: not ours
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass


def test_metrics_port_serves_tls(tls_only: Gateway, pki: dict[str, Path]) -> None:
    url = f"https://localhost:{tls_only.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5, context=client_context(pki["ca"])) as response:
        assert response.status == 200
        assert b"switchyard_" in response.read()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://localhost:{tls_only.metrics_port}/metrics", timeout=5)


def test_start_log_names_the_tls_ports(tls_only: Gateway) -> None:
    log = tls_only.log()
    assert f"REST on 127.0.0.1:{tls_only.http_port} (TLS)" in log
    assert f"gRPC on 127.0.0.1:{tls_only.grpc_port} (TLS)" in log
    assert f"metrics on 127.0.0.1:{tls_only.metrics_port} (TLS)" in log


# Mutual TLS


@pytest.fixture(scope="module")
def mtls(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]
) -> Iterator[Gateway]:
    tls = {"client_ca_file": str(pki["ca"]), "require_client_cert": True}
    running = tls_gateway(demo_model_path, tmp_path_factory.mktemp("mtls"), pki, tls=tls)
    yield running
    assert running.stop() == 0, running.log()
    assert_clean_log(running)


def grpc_status(client: triton_grpc.InferenceServerClient) -> str | None:
    try:
        client.is_server_live(client_timeout=5)
    except InferenceServerException as exc:
        return str(exc.status())
    return "OK"


def test_mtls_grpc_refuses_missing_and_foreign_client_certs(
    mtls: Gateway, pki: dict[str, Path]
) -> None:
    ca = str(pki["ca"])
    missing = triton_grpc.InferenceServerClient(mtls.grpc_url, ssl=True, root_certificates=ca)
    assert grpc_status(missing) == "StatusCode.UNAVAILABLE"
    foreign = triton_grpc.InferenceServerClient(
        mtls.grpc_url, ssl=True, root_certificates=ca,
        private_key=str(pki["rogue_key"]), certificate_chain=str(pki["rogue_cert"]),
    )  # fmt: skip
    assert grpc_status(foreign) == "StatusCode.UNAVAILABLE"
    good = triton_grpc.InferenceServerClient(
        mtls.grpc_url, ssl=True, root_certificates=ca,
        private_key=str(pki["alice_key"]), certificate_chain=str(pki["alice_cert"]),
    )  # fmt: skip
    assert grpc_status(good) == "OK"
    assert "(mTLS)" in mtls.log()


def test_mtls_http_refuses_missing_and_foreign_client_certs(
    mtls: Gateway,
    pki: dict[str, Path],
    direct_session: ort.InferenceSession,
    features: np.ndarray,
) -> None:
    url = f"https://{mtls.http_url}/v2/health/live"
    for context in (
        client_context(pki["ca"]),
        client_context(pki["ca"], pki["rogue_cert"], pki["rogue_key"]),
    ):
        with pytest.raises(OSError):  # ssl.SSLError or a reset, as the TLS version has it
            urllib.request.urlopen(url, timeout=5, context=context)
    client = triton_http.InferenceServerClient(
        mtls.http_url,
        ssl=True,
        ssl_options={
            "ca_certs": str(pki["ca"]),
            "certfile": str(pki["alice_cert"]),
            "keyfile": str(pki["alice_key"]),
        },
    )
    result = client.infer("ranker", [features_http(features)])
    (score,) = direct_session.run(["score"], {"features": features})
    np.testing.assert_array_equal(result.as_numpy("score"), score)


# The client certificate subject, as Caller sees it on both protocols


def carol_subject(pki: dict[str, Path]) -> str:
    """The one form both protocols report; an emailAddress attribute is where OpenSSL's
    print (grpc-core's x509_subject) and RFC 4514 differ."""
    cert = x509.load_pem_x509_certificate(pki["carol_cert"].read_bytes())
    subject: str = cert.subject.rfc4514_string()
    assert subject == "CN=carol,1.2.840.113549.1.9.1=carol@example.org,O=ops"
    return subject


def mtls_files(pki: dict[str, Path]) -> TlsFiles:
    settings = TlsSettings(
        cert_file=pki["server_cert"], key_file=pki["server_key"],
        client_ca_file=pki["ca"], require_client_cert=True,
    )  # fmt: skip
    return TlsFiles(settings, "test")


def test_rest_caller_sees_the_client_cert_subject(pki: dict[str, Path]) -> None:
    seen: list[Caller] = []
    body = asyncio.run(serve_one_https_request(pki, seen))
    assert [caller.cert_subject for caller in seen] == [carol_subject(pki)]
    version, cipher = body.decode().split()
    assert version in ("0x303", "0x304")
    assert cipher != "None"


async def serve_one_https_request(pki: dict[str, Path], seen: list[Caller]) -> bytes:
    """Our HttpServer with an app that records the Caller; what it answered."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(Caller.from_asgi(scope, {}))
        tls = scope["extensions"]["tls"]
        body = f"{tls['tls_version']:#x} {tls['cipher_suite']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    limits = HttpLimits(10, 10, 5, 65536, 16, 32, 16)
    context = mtls_files(pki).ssl_context()
    server = HttpServer(app, sock, limits, log_level="warning", ssl_context=context)
    await server.start()
    try:
        context = client_context(pki["ca"], pki["carol_cert"], pki["carol_key"])
        url = f"https://localhost:{server.port}/"

        def get() -> bytes:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                body: bytes = response.read()
                return body

        return await asyncio.to_thread(get)
    finally:
        await server.stop(1.0)


def test_grpc_caller_sees_the_client_cert_subject(pki: dict[str, Path]) -> None:
    seen: list[Caller] = []
    asyncio.run(call_grpc_once(pki, seen))
    assert [caller.cert_subject for caller in seen] == [carol_subject(pki)]


async def call_grpc_once(pki: dict[str, Path], seen: list[Caller]) -> None:
    """A grpc.aio server on TlsFiles' credentials whose method records the Caller."""

    async def whoami(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.append(Caller.from_grpc(context, {}))
        return b"ok"

    handler = grpc.method_handlers_generic_handler(
        "test.Who", {"Am": grpc.unary_unary_rpc_method_handler(whoami)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", mtls_files(pki).grpc_credentials())
    await server.start()
    try:
        credentials = grpc.ssl_channel_credentials(
            pki["ca"].read_bytes(), pki["carol_key"].read_bytes(), pki["carol_cert"].read_bytes()
        )
        async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
            call: Any = channel.unary_unary("/test.Who/Am")
            assert await call(b"") == b"ok"
    finally:
        await server.stop(None)


# Rotation


@pytest.fixture
def rotating(
    demo_model_path: Path, tmp_path: Path, ca: CertAuthority, pki: dict[str, Path]
) -> Iterator[tuple[Gateway, dict[str, Path]]]:
    own = dict(pki)
    own["server_cert"], own["server_key"] = ca.issue_server("before").write(tmp_path, "rot")
    (tmp_path / "gw").mkdir()
    running = tls_gateway(demo_model_path, tmp_path / "gw", own)
    yield running, own
    assert running.stop() == 0, running.log()
    assert_clean_log(running)


def wait_for_common_name(port: int, ca_path: Path, alpn: list[str], name: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while True:
        cert = peer_certificate(port, ca_path, alpn)
        (common_name,) = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        if common_name.value == name or time.monotonic() > deadline:
            return str(common_name.value)
        time.sleep(0.2)


def test_rotated_files_reach_new_connections(
    rotating: tuple[Gateway, dict[str, Path]], ca: CertAuthority, pki: dict[str, Path]
) -> None:
    gateway, files = rotating
    ca_path = files["ca"]
    assert wait_for_common_name(gateway.http_port, ca_path, ["http/1.1"], "before") == "before"
    assert wait_for_common_name(gateway.grpc_port, ca_path, ["h2"], "before") == "before"
    # A half-written pair (the new certificate, the old key) keeps the old one serving.
    after: Issued = ca.issue_server("after")
    files["server_cert"].write_bytes(after.cert_pem)
    time.sleep(1.5)  # past the HTTPS check interval, so that the mismatch is seen
    assert peer_certificate(gateway.http_port, ca_path, ["http/1.1"]).serial_number != after.serial
    client = triton_grpc.InferenceServerClient(
        gateway.grpc_url, ssl=True, root_certificates=str(ca_path)
    )
    assert client.is_server_live()
    files["server_key"].write_bytes(after.key_pem)
    assert wait_for_common_name(gateway.http_port, ca_path, ["http/1.1"], "after") == "after"
    assert wait_for_common_name(gateway.grpc_port, ca_path, ["h2"], "after") == "after"
    assert peer_certificate(gateway.grpc_port, ca_path, ["h2"]).serial_number == after.serial
    # New clients work against the new certificate, on both protocols.
    fresh = triton_grpc.InferenceServerClient(
        gateway.grpc_url, ssl=True, root_certificates=str(ca_path)
    )
    assert fresh.is_server_live()
    http_client = triton_http.InferenceServerClient(
        gateway.http_url, ssl=True, ssl_options={"ca_certs": str(ca_path)}
    )
    assert http_client.is_server_live()
    assert "do not load" in gateway.log()  # the half-written pair was warned about


# Worker processes


def test_every_worker_serves_tls_and_the_supervisor_metrics_tls(
    demo_model_path: Path, tmp_path: Path, pki: dict[str, Path]
) -> None:
    prefix = f"switchyard-tls:{uuid.uuid4().hex[:8]}:"
    tls = {"cert_file": str(pki["server_cert"]), "key_file": str(pki["server_key"])}
    config = demo_model_config(demo_model_path, workers=2, tls=tls, metrics_tls=tls)
    config["control"] = {"store": "redis", "url": REDIS_URL, "prefix": prefix}
    context = client_context(pki["ca"])
    gateway = start_gateway(config, tmp_path, ssl_context=context)
    try:
        deadline = time.monotonic() + 60
        while "switchyard ready: 2 workers" not in gateway.log():
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.05)
        seen: set[str] = set()
        for _ in range(200):  # new connections: the kernel spreads them over the workers
            url = f"https://{gateway.http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                seen.add(response.headers["x-switchyard-worker"])
            if len(seen) == 2:
                break
        assert seen == {"0", "1"}
        client = triton_grpc.InferenceServerClient(
            gateway.grpc_url, ssl=True, root_certificates=str(pki["ca"])
        )
        assert client.is_server_live()
        url = f"https://localhost:{gateway.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            assert response.status == 200
        assert f"metrics on 127.0.0.1:{gateway.metrics_port} (TLS)" in gateway.log()
    finally:
        assert gateway.stop() == 0, gateway.log()
        store = redis.Redis.from_url(REDIS_URL)
        keys = list(store.scan_iter(match=prefix + "*", count=1000))
        if keys:
            store.delete(*keys)
        store.close()
    assert_clean_log(gateway)
