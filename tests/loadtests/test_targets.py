"""Where the comparison sends its load on Serve's fast path: both protocols to the ingress
replica's own ports, as `switchyard serve --engine ray` prints them, never to Serve's proxies
(REST through Serve's HTTP proxy costs Ray round trips per request: issue 13's 500 ms p50)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests import targets

pytest.importorskip("ray.serve")

from switchyard.server.ray_host.app import IngressEndpoint  # needs Ray


def _log(*endpoints: IngressEndpoint) -> str:
    header = "switchyard on Ray Serve: Serve's proxies (the slow path) on 127.0.0.1:8000 ...\n"
    return header + "".join(f"INFO ... {endpoint.line()}\n" for endpoint in endpoints)


def test_direct_urls_are_the_replicas_own_ports_per_protocol() -> None:
    log = _log(
        IngressEndpoint("HTTP", "127.0.0.1", 30000, "SERVE_REPLICA::switchyard#ingress#a"),
        IngressEndpoint("HTTP", "127.0.0.1", 30001, "SERVE_REPLICA::switchyard#ingress#b"),
        IngressEndpoint("gRPC", "10.0.0.5", 40000, "SERVE_REPLICA::switchyard#ingress#a"),
    )
    assert targets.direct_urls(log) == {"HTTP": "127.0.0.1:30000", "gRPC": "127.0.0.1:40000"}


def test_a_log_without_the_replicas_http_port_is_refused(tmp_path: Path) -> None:
    log_path = tmp_path / "ray.log"
    log_path.write_text(_log(IngressEndpoint("gRPC", "127.0.0.1", 40000, "r")))
    with pytest.raises(targets.TargetUnavailable, match="HTTP and gRPC"):
        targets._wait_direct_urls(log_path, timeout_s=0.3)
