"""Slow, idle, oversized and crowding HTTP clients against a real gateway: each is cut off
within its bound with a clear status, counted, and every other client (REST, gRPC,
metrics) keeps being served meanwhile.

Raw sockets, because the clients under test misbehave in ways no HTTP library will. No
timing is asserted (a shared, noisy machine): every bound is checked with a wide margin and
the measured figures are printed."""

from __future__ import annotations

import contextlib
import http.client
import resource
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtests.gateway_process import (
    Gateway,
    demo_model_config,
    metric_sum,
    scrape_metrics,
    start_gateway,
)
from switchyard.server.config_sections import ServerSettings
from switchyard.server.http_serving import raise_open_files_limit, rest_limits

# Every bound below is a second or two; a client is given this long before it counts as
# never cut off.
CUT_OFF_WITHIN_S = 15.0
FAST_TIMEOUTS = {
    "http_header_timeout_s": 1.0,
    "http_body_timeout_s": 1.0,
    "http_keep_alive_timeout_s": 1.0,
    "http_max_header_bytes": 16 * 1024,
}
# The gateway of the crowding tests runs with the open-files limit of the probe that found
# the problem; the connection cap is then sized from it.
GATEWAY_OPEN_FILES = 1024
AUTO_MAX_CONNECTIONS = (GATEWAY_OPEN_FILES - 512) // 2  # server/http_serving.py's sizing
AUTO_MAX_OPEN_CONNECTIONS = AUTO_MAX_CONNECTIONS + max(16, AUTO_MAX_CONNECTIONS // 8)
LIMITED_CLI = (
    "import resource, runpy; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({GATEWAY_OPEN_FILES}, {GATEWAY_OPEN_FILES})); "
    "runpy.run_module('switchyard.server.cli', run_name='__main__', alter_sys=True)"
)


@pytest.fixture(scope="module")
def fast_gateway(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = demo_model_config(demo_model_path, **FAST_TIMEOUTS)
    running = start_gateway(config, tmp_path_factory.mktemp("fast"))
    yield running
    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log()


@pytest.fixture(scope="module")
def crowded_gateway(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """Long timeouts (the connections of a test stay open) and 1024 open files at most."""
    config = demo_model_config(
        demo_model_path, http_keep_alive_timeout_s=60.0, http_header_timeout_s=60.0
    )
    running = start_gateway(
        config, tmp_path_factory.mktemp("crowded"), command=[sys.executable, "-c", LIMITED_CLI]
    )
    yield running
    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    """Everything the server sends until it closes (a reset ends it too)."""
    sock.settimeout(timeout_s)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def wait_for_answers(
    socks: list[socket.socket], *, trickle: bytes = b""
) -> dict[int, tuple[float, bytes]]:
    """Until each socket is closed by the server (or CUT_OFF_WITHIN_S): what it answered and
    after how long. `trickle`: sent on every open socket every 0.3 s meanwhile."""
    started = time.monotonic()
    answers: dict[int, tuple[float, bytes]] = {}
    buffers: dict[int, list[bytes]] = {i: [] for i in range(len(socks))}
    while len(answers) < len(socks) and time.monotonic() - started < CUT_OFF_WITHIN_S:
        waiting = [s for i, s in enumerate(socks) if i not in answers]
        readable, _, _ = select.select(waiting, [], [], 0.3)
        for sock in readable:
            i = socks.index(sock)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                buffers[i].append(chunk)
            else:
                answers[i] = (time.monotonic() - started, b"".join(buffers[i]))
        if trickle:
            for i, sock in enumerate(socks):
                if i not in answers:
                    with contextlib.suppress(OSError):  # closed: the next read records it
                        sock.send(trickle)
    return answers


def assert_other_clients_served(gateway: Gateway) -> None:
    """REST (a new connection), gRPC and the metrics port all answer."""
    rest = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
    rest.request("GET", "/v2/health/ready")
    assert rest.getresponse().status == 200
    rest.close()
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
    assert "switchyard_requests_total" in scrape_metrics(gateway)


def shed(gateway: Gateway, reason: str) -> float:
    text = scrape_metrics(gateway)
    return metric_sum(text, "switchyard_shed_requests_total", protocol="rest", reason=reason)


def test_slowloris_clients_are_cut_off_while_others_are_served(fast_gateway: Gateway) -> None:
    socks = [connect(fast_gateway.http_port) for _ in range(20)]
    for sock in socks:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nx-slow: ")
    assert_other_clients_served(fast_gateway)
    answers = wait_for_answers(socks, trickle=b"a")  # one header byte every 0.3 s
    assert_other_clients_served(fast_gateway)
    for sock in socks:
        sock.close()
    after_s = sorted(seconds for seconds, _ in answers.values())
    print(f"slowloris clients cut off after {after_s[0]:.2f}..{after_s[-1]:.2f} s")
    assert len(answers) == len(socks), f"{len(socks) - len(answers)} never cut off"
    for _, answer in answers.values():
        assert status_of(answer) == 408, answer[:200]
        assert b"request headers not complete within 1 s" in answer
    assert shed(fast_gateway, "header_timeout") >= len(socks)


def test_idle_connections_are_closed(fast_gateway: Gateway) -> None:
    silent = [connect(fast_gateway.http_port) for _ in range(20)]
    kept_alive = connect(fast_gateway.http_port)
    kept_alive.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
    answers = wait_for_answers([*silent, kept_alive])
    assert_other_clients_served(fast_gateway)
    after_s = sorted(seconds for seconds, _ in answers.values())
    print(f"idle connections closed after {after_s[0]:.2f}..{after_s[-1]:.2f} s")
    assert len(answers) == len(silent) + 1, "idle connections still open"
    assert all(answers[i][1] == b"" for i in range(len(silent)))  # closed without a word
    assert status_of(answers[len(silent)][1]) == 200  # served, then closed once idle


def test_a_stalled_body_gets_408(fast_gateway: Gateway) -> None:
    sock = connect(fast_gateway.http_port)
    sock.sendall(
        b"POST /v2/models/ranker/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n"
        b'content-type: application/json\r\n\r\n{"inputs": '
    )
    answers = wait_for_answers([sock])
    assert answers, "a request whose body stopped was never cut off"
    seconds, answer = answers[0]
    print(f"stalled body cut off after {seconds:.2f} s")
    assert status_of(answer) == 408, answer[:200]
    assert b"request body stalled: no bytes for 1 s" in answer
    assert shed(fast_gateway, "body_timeout") >= 1
    assert_other_clients_served(fast_gateway)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def send_huge_headers(port: int, header_bytes: int, answers: list[bytes]) -> None:
    """One request whose header is `header_bytes` long, sent until the server answers."""
    sock = connect(port)
    sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nx-big: ")
    chunk = b"a" * 65536
    try:
        for _ in range(header_bytes // len(chunk)):
            if select.select([sock], [], [], 0)[0]:
                break  # answered: stop sending
            sock.sendall(chunk)
        else:
            sock.sendall(b"\r\n\r\n")
    except OSError:
        pass  # closed while sending: its answer, if any, is still to be read
    answers.append(read_until_closed(sock))
    sock.close()


def test_oversized_headers_get_431_and_memory_stays_bounded(fast_gateway: Gateway) -> None:
    rss_before = rss_bytes(fast_gateway.process.pid)
    answers: list[bytes] = []
    senders = [
        threading.Thread(target=send_huge_headers, args=(fast_gateway.http_port, 32 << 20, answers))
        for _ in range(8)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    rss_after = rss_bytes(fast_gateway.process.pid)
    print(f"8 requests with 32 MiB headers: RSS {rss_before >> 20} -> {rss_after >> 20} MiB")
    assert [status_of(answer) for answer in answers] == [431] * 8, [a[:100] for a in answers]
    assert all(b"over the maximum of 16384 bytes" in answer for answer in answers)
    assert rss_after - rss_before < 64 << 20
    assert shed(fast_gateway, "headers_too_large") >= 8
    assert_other_clients_served(fast_gateway)


UPGRADES = {
    "websocket": b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\n"
    b"upgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"sec-websocket-version: 13\r\n\r\n",
    "h2c": b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\n"
    b"upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n",
    "CONNECT": b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
}


@pytest.mark.parametrize("kind", UPGRADES)
def test_upgrade_requests_get_400(fast_gateway: Gateway, kind: str) -> None:
    before = shed(fast_gateway, "upgrade")
    sock = connect(fast_gateway.http_port)
    sock.sendall(UPGRADES[kind])
    answer = read_until_closed(sock)
    sock.close()
    assert status_of(answer) == 400, answer[:200]
    assert kind.encode() in answer and b"not supported" in answer, answer
    assert shed(fast_gateway, "upgrade") == before + 1


def test_a_malformed_request_gets_400(fast_gateway: Gateway) -> None:
    sock = connect(fast_gateway.http_port)
    sock.sendall(b"GET / HTTP/1.1\r\nbad header line\r\n\r\n")
    answer = read_until_closed(sock)
    sock.close()
    assert status_of(answer) == 400, answer[:200]
    assert b"malformed HTTP request" in answer


def raise_own_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the test needs {needed} open files; the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_idle_connections_beyond_the_open_files_limit_starve_no_port(
    crowded_gateway: Gateway,
) -> None:
    """The probe's case: more idle connections than the gateway has file descriptors."""
    raise_own_open_files_limit(1500)
    idle = [connect(crowded_gateway.http_port) for _ in range(1100)]
    try:
        time.sleep(1.5)  # idle long enough to make room for a new client
        assert_other_clients_served(crowded_gateway)
        started = time.monotonic()
        assert_other_clients_served(crowded_gateway)
        print(f"with 1100 idle connections open: REST, gRPC and metrics answered in "
              f"{time.monotonic() - started:.2f} s")  # fmt: skip
    finally:
        for sock in idle:
            sock.close()


def test_busy_connections_over_the_cap_get_503_with_retry_after(crowded_gateway: Gateway) -> None:
    raise_own_open_files_limit(1500)
    before = shed(crowded_gateway, "connection_limit")
    count = AUTO_MAX_CONNECTIONS + 24  # between the cap and the most it keeps open
    socks = []
    for _ in range(count):
        sock = connect(crowded_gateway.http_port)
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n")  # busy: headers coming
        socks.append(sock)
    try:
        time.sleep(0.5)
        with grpc.insecure_channel(crowded_gateway.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
        assert "switchyard_requests_total" in scrape_metrics(crowded_gateway)
        extra = [connect(crowded_gateway.http_port) for _ in range(40)]  # past the most
        time.sleep(0.5)  # accepted (or dropped) while the others are still open
        for sock in socks:
            sock.sendall(b"connection: close\r\n\r\n")
        for sock in extra:
            with contextlib.suppress(OSError):  # dropped already
                sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        socks.extend(extra)
        answers = [read_until_closed(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    statuses = [status_of(answer) for answer in answers[:count]]
    refused = [answer for answer in answers[:count] if status_of(answer) == 503]
    past_the_most = [status_of(answer) for answer in answers[count:]]
    print(f"{count} busy connections: {statuses.count(200)} served, {len(refused)} got 503; "
          f"40 more past the most kept open: {past_the_most}")  # fmt: skip
    assert statuses.count(200) + len(refused) == count
    assert refused, "no connection over the cap was refused"
    for answer in refused:
        assert b"\r\nretry-after: 1\r\n" in answer
        assert b"maximum of 256 connections open" in answer
    # Past the most kept open: dropped at once, or a 503 — never a hang or another answer.
    assert set(past_the_most) <= {None, 503}
    assert shed(crowded_gateway, "connection_limit") - before >= len(refused) + 1
    assert_other_clients_served(crowded_gateway)


def metrics_request(host: str, port: int, method: str, path: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("allow", ""), response.read()
    finally:
        connection.close()


def test_the_metrics_port_serves_get_metrics_only(fast_gateway: Gateway) -> None:
    port = fast_gateway.metrics_port
    status, _, body = metrics_request("127.0.0.1", port, "GET", "/metrics")
    assert status == 200 and b"switchyard_requests_total" in body
    assert metrics_request("127.0.0.1", port, "HEAD", "/metrics")[0] == 200
    for path in ("/", "/v2/health/ready", "/metrics/extra"):
        status, _, body = metrics_request("127.0.0.1", port, "GET", path)
        assert status == 404 and b"the metrics are at /metrics" in body, (path, body)
    status, allow, body = metrics_request("127.0.0.1", port, "POST", "/metrics")
    assert status == 405 and allow == "GET, HEAD", body
    assert b"method POST is not allowed here" in body


def test_the_metrics_port_listens_on_metrics_host(demo_model_path: Path, tmp_path: Path) -> None:
    other_loopback = "127.0.0.2"  # the whole of 127/8 is loopback on Linux
    gateway = start_gateway(
        demo_model_config(demo_model_path, metrics_host=other_loopback), tmp_path
    )
    try:
        status, _, _ = metrics_request(other_loopback, gateway.metrics_port, "GET", "/metrics")
        assert status == 200
        with pytest.raises(ConnectionRefusedError):
            metrics_request("127.0.0.1", gateway.metrics_port, "GET", "/metrics")
    finally:
        assert gateway.stop() == 0, gateway.log()
    assert f"metrics on {other_loopback}:{gateway.metrics_port}" in gateway.log()


def test_the_connection_cap_is_sized_from_the_open_files_limit() -> None:
    limits = rest_limits(ServerSettings(), GATEWAY_OPEN_FILES)
    assert (limits.max_connections, limits.max_open_connections) == (
        AUTO_MAX_CONNECTIONS,
        AUTO_MAX_OPEN_CONNECTIONS,
    )
    assert rest_limits(ServerSettings(), 100_000).max_connections == (100_000 - 512) // 2
    explicit = rest_limits(ServerSettings(http_max_connections=50), GATEWAY_OPEN_FILES)
    assert (explicit.max_connections, explicit.max_open_connections) == (50, 66)


def test_raise_open_files_limit_reaches_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        raised = raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        if hard != resource.RLIM_INFINITY:
            assert raised == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_body_that_keeps_coming_and_pipelined_requests_are_served(fast_gateway: Gateway) -> None:
    """The bounds cut off stalls, not slow but steady clients: a body sent in pieces 0.4 s
    apart for longer than the body timeout, then two requests in one write."""
    body = b'{"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": ['
    body += b", ".join([b"0.5"] * 16) + b"]}]}"
    sock = connect(fast_gateway.http_port)
    sock.sendall(
        b"POST /v2/models/ranker/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    pieces = [body[i : i + 20] for i in range(0, len(body), 20)]
    for piece in pieces:
        time.sleep(0.4)
        sock.sendall(piece)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n" * 2)
    answer = read_until_closed(sock)  # closed by the idle timeout once answered
    sock.close()
    print(f"a body in {len(pieces)} pieces over {0.4 * len(pieces):.1f} s, then 2 pipelined")
    assert answer.count(b"HTTP/1.1 200 OK") == 3, answer[:500]
    assert b'"outputs"' in answer
