"""Faults under load, against real gateways: what callers see while a dependency breaks,
and how fast it comes back. Each scenario prints its figures and returns them with the
invariants it checked; tests/loadtests/test_faults.py runs the quick versions in CI.

  python -m loadtests.faults [--quick] [--scenarios redis-kill redis-freeze triton-kill sigterm]

Scenarios:
  redis-kill, redis-freeze   Recommend over gRPC while the feature store's Redis is killed
                             (then restarted) or frozen with SIGSTOP (then SIGCONT), with
                             `on_unavailable: fail` and `degrade`: fail answers UNAVAILABLE
                             fast, degrade answers every request; both recover.
  triton-kill                ModelInfer on an endpoint split between a local variant and a
                             Triton one while the Triton server is killed: the Triton half
                             fails as UNAVAILABLE, fast once the breaker opens; the local half
                             never fails.
  sigterm                    ModelInfer while the gateway gets SIGTERM: every call it took
                             is answered; later ones find the port closed.
  slow-clients               ModelInfer and REST health checks while hundreds of idle HTTP
                             connections and slowloris clients (a header byte now and then)
                             hold the HTTP port: both keep answering, the slow clients are cut
                             off (408) within the header deadline, memory stays flat.

Elsewhere in the fault suite: overload at 3x capacity (loadtests/overload.py), mutated
requests over both protocols (loadtests/fuzz.py), oversized headers and connection floods
(tests/server/test_http_limits.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadtests.clients import OipClient, RecommendGrpcClient, RequestSpec
from loadtests.fault_traffic import Calls, RecordedTraffic
from loadtests.gateway_process import Gateway, demo_model_config, http_ok, start_gateway
from loadtests.latency import percentile_s
from loadtests.recommend_setup import demo_features, gateway_config, load_features
from loadtests.redis_process import RedisServer
from switchyard.demo.build_model import ensure_built

# Outcomes a caller may see while a dependency is down: ours, never grpc-core's.
DEPENDENCY_DOWN = frozenset({"OK", "UNAVAILABLE"})


@dataclass
class Scenario:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.violations.append(what)

    def print(self) -> None:
        verdict = "ok" if not self.violations else "VIOLATED: " + "; ".join(self.violations)
        print(f"[{self.name}] {verdict}")
        for key, value in self.figures.items():
            print(f"  {key}: {value}")


@dataclass(frozen=True)
class Timing:
    warm_s: float
    fault_s: float
    after_s: float

    @classmethod
    def of(cls, quick: bool) -> Timing:
        return cls(0.5, 1.5, 2.0) if quick else cls(2.0, 5.0, 5.0)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _p50_p99(calls: Calls, outcome: str = "OK") -> str:
    return f"{_ms(calls.latency_ms(0.5, outcome))} / {_ms(calls.latency_ms(0.99, outcome))}"


def _phases(calls: Calls, fault_s: float, restored_s: float) -> dict[str, Any]:
    during = calls.between(fault_s, restored_s)
    after = calls.between(restored_s, float("inf"))
    return {
        "before": dict(calls.between(0, fault_s).outcomes()),
        "during": dict(during.outcomes()),
        "during p50 / p99 (OK)": _p50_p99(during),
        "during p99 (all)": _ms(during.latency_ms(0.99, None)),
        "after": dict(after.outcomes()),
        "recovery (first OK after the restore)": _ms(
            None if (r := calls.first_ok_after(restored_s)) is None else r * 1000
        ),
    }


def redis_outage(kind: str, mode: str, workdir: Path, timing: Timing) -> Scenario:
    """Recommend while Redis is killed (`kind` kill) or frozen (freeze)."""
    scenario = Scenario(f"redis-{kind} on_unavailable={mode}")
    server = RedisServer(workdir, persistent=True)  # a restart keeps the features
    server.start()
    gateway: Gateway | None = None
    try:
        store = {"kind": "redis", "url": server.url, "timeout_s": 0.1, "on_unavailable": mode,
                 "breaker": {"after_failures": 2, "open_s": 0.2}}  # fmt: skip
        config = gateway_config(ensure_built(), demo_features("faults:", store))
        (workdir / "features.yaml").write_text(yaml.safe_dump(config))
        load_features(workdir / "features.yaml")
        gateway = start_gateway(config, workdir)
        spec = RequestSpec(url=gateway.grpc_url, timeout_s=2.0, candidates=50)
        with RecordedTraffic(lambda: RecommendGrpcClient(spec)) as traffic:
            traffic.wait_for_ok(20)
            time.sleep(timing.warm_s)
            fault_s = time.monotonic()
            if kind == "kill":
                server.stop()
            else:
                server.freeze()
            time.sleep(timing.fault_s)
            restored_s = time.monotonic()
            if kind == "kill":
                server.start()
            else:
                server.thaw()
            time.sleep(timing.after_s)
        calls = traffic.calls()
        scenario.figures = _phases(calls, fault_s, restored_s)
        during = calls.between(fault_s, restored_s)
        allowed = {"OK"} if mode == "degrade" else DEPENDENCY_DOWN
        scenario.check(set(calls.outcomes()) <= allowed, f"outcomes within {sorted(allowed)}")
        if mode == "fail":
            scenario.check(during.outcomes()["UNAVAILABLE"] > 0, "the outage was answered")
            p99 = during.latency_ms(0.99, "UNAVAILABLE")
            scenario.check(p99 is not None and p99 < 1000, "refusals fast (p99 < 1 s)")
        recovery = calls.first_ok_after(restored_s)
        scenario.check(recovery is not None and recovery < 3.0, "recovered within 3 s")
        if recovery is not None:  # settled: one second after the first success, only successes
            after = calls.between(restored_s + recovery + 1.0, float("inf")).outcomes()
            scenario.check(set(after) == {"OK"}, "only OK from 1 s after the recovery")
    finally:
        if gateway is not None:
            scenario.check(gateway.stop() == 0, "the gateway stopped cleanly")
        if server.running:
            server.thaw()  # a frozen server would not take the SIGTERM
        server.stop()
    return scenario


def triton_kill(workdir: Path, timing: Timing) -> Scenario:
    from loadtests.triton_process import start_triton

    scenario = Scenario("triton-kill")
    model = ensure_built()
    triton = start_triton(model, workdir / "triton")
    gateway: Gateway | None = None
    try:
        triton_options = {
            "url": triton.grpc_url,
            "model_name": "ranker",
            "timeout_s": 1.0,
            "max_attempts": 1,
            "breaker_failures": 3,
            "breaker_open_s": 5.0,
        }
        config = {
            "models": [
                {"name": "local", "versions": [{"version": "1", "path": str(model)}]},
                {
                    "name": "remote",
                    "runtime": "triton",
                    "versions": [{"version": "1"}],
                    "triton": triton_options,
                },
            ],
            "endpoints": [
                {"name": "local_only", "variants": {"local": {"model": "local"}}},
                {"name": "remote_only", "variants": {"remote": {"model": "remote"}}},
            ],
        }
        (workdir / "gateway").mkdir()
        gateway = start_gateway(config, workdir / "gateway")
        local = RequestSpec(url=gateway.grpc_url, model="local_only", timeout_s=3.0)
        remote = RequestSpec(url=gateway.grpc_url, model="remote_only", timeout_s=3.0)
        with (
            RecordedTraffic(lambda: OipClient(local), callers=2) as local_traffic,
            RecordedTraffic(lambda: OipClient(remote), callers=2) as remote_traffic,
        ):
            remote_traffic.wait_for_ok(20)
            time.sleep(timing.warm_s)
            fault_s = time.monotonic()
            triton.kill()
            time.sleep(timing.fault_s + 1.0)
            end_s = time.monotonic()
        remote_calls = remote_traffic.calls().between(fault_s, end_s)
        local_calls = local_traffic.calls()
        scenario.figures = {
            "remote variant while Triton is down": dict(remote_calls.outcomes()),
            "remote failures p50 / p99": _p50_p99(remote_calls, "UNAVAILABLE"),
            "local variant throughout": dict(local_calls.outcomes()),
            "local p99": _ms(local_calls.latency_ms(0.99)),
        }
        scenario.check(set(local_calls.outcomes()) == {"OK"}, "the local variant never failed")
        scenario.check(set(remote_calls.outcomes()) <= DEPENDENCY_DOWN, "remote: OK/UNAVAILABLE")
        late = remote_calls.between(fault_s + 1.0, end_s)
        p99 = late.latency_ms(0.99, "UNAVAILABLE")
        scenario.check(p99 is not None and p99 < 100, "breaker open: refusals in < 100 ms")
    finally:
        if gateway is not None:
            scenario.check(gateway.stop() == 0, "the gateway stopped cleanly")
        triton.stop()
    return scenario


def sigterm(workdir: Path, timing: Timing) -> Scenario:
    scenario = Scenario("sigterm")
    model = ensure_built()
    config = {"models": [{"name": "ranker", "versions": [{"version": "1", "path": str(model)}],
                          "batching": {"max_queue_delay_s": 0.002}}]}  # fmt: skip
    gateway = start_gateway(config, workdir)
    spec = RequestSpec(url=gateway.grpc_url, timeout_s=5.0)
    with RecordedTraffic(lambda: OipClient(spec), callers=8) as traffic:
        traffic.wait_for_ok(200)
        time.sleep(timing.warm_s)
        signalled_s = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        exit_code = gateway.process.wait(30)
        stopped_s = time.monotonic()
        time.sleep(0.2)
    calls = traffic.calls()
    # Sent before the signal: taken by the gateway, answered, or (still queued in grpc-core,
    # never started) refused UNAVAILABLE with our message. Sent after: refused, the port
    # closed; one sent in the last instant before grpc-core shuts down is cancelled there
    # before the event loop ever sees it (CANCELLED, reported).
    in_flight = Calls([c for c in calls.calls if c.ended_s - c.latency_s < signalled_s])
    in_flight = in_flight.between(signalled_s, float("inf"))
    later = Calls([c for c in calls.calls if c.ended_s - c.latency_s >= signalled_s])
    scenario.figures = {
        "calls in flight at SIGTERM": dict(in_flight.outcomes()),
        "calls sent after SIGTERM": dict(later.outcomes()),
        "exit code": exit_code,
        "drain time": f"{(stopped_s - signalled_s) * 1000:.0f} ms",
    }
    scenario.check(exit_code == 0, "exit code 0")
    scenario.check(set(in_flight.outcomes()) <= DEPENDENCY_DOWN, "in flight: OK or UNAVAILABLE")
    scenario.check(
        set(later.outcomes()) <= {*DEPENDENCY_DOWN, "CANCELLED"},
        "sent after SIGTERM: OK, UNAVAILABLE or (grpc-core's last instant) CANCELLED",
    )
    return scenario


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slow_clients(workdir: Path, timing: Timing) -> Scenario:
    scenario = Scenario("slow-clients")
    model = ensure_built()
    header_timeout_s = 1.0
    config = demo_model_config(model, http_header_timeout_s=header_timeout_s)
    gateway = start_gateway(config, workdir)
    idle: list[socket.socket] = []
    slow: list[socket.socket] = []
    health_failures = 0
    health_latency_s: list[float] = []
    try:
        rss_before = _rss_mib(gateway.process.pid)
        spec = RequestSpec(url=gateway.grpc_url, timeout_s=5.0)
        with RecordedTraffic(lambda: OipClient(spec), callers=2) as traffic:
            traffic.wait_for_ok(50)
            fault_s = time.monotonic()
            for _ in range(200):
                idle.append(socket.create_connection(("127.0.0.1", gateway.http_port)))
            for _ in range(20):  # slowloris: headers that never end
                sock = socket.create_connection(("127.0.0.1", gateway.http_port))
                slow.append(sock)
                sock.sendall(b"POST /v2/models/ranker/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                sock.settimeout(0.05)
            cut_off_s: dict[int, float] = {}
            deadline_s = fault_s + max(timing.fault_s, header_timeout_s * 3)
            while time.monotonic() < deadline_s:
                for n, sock in enumerate(slow):
                    if n in cut_off_s:
                        continue
                    try:
                        sock.sendall(b"a")
                        answer = sock.recv(256)
                        if answer == b"" or answer.startswith(b"HTTP/1.1 408"):
                            cut_off_s[n] = time.monotonic() - fault_s
                    except (TimeoutError, BlockingIOError):
                        pass
                    except OSError:
                        cut_off_s[n] = time.monotonic() - fault_s
                started_s = time.monotonic()
                if http_ok(f"http://{gateway.http_url}/v2/health/ready"):
                    health_latency_s.append(time.monotonic() - started_s)
                else:
                    health_failures += 1
                time.sleep(0.1)
            end_s = time.monotonic()
        rss_after = _rss_mib(gateway.process.pid)
        grpc_calls = traffic.calls().between(fault_s, end_s)
        scenario.figures = {
            "gRPC while held": dict(grpc_calls.outcomes()),
            "gRPC p50 / p99": _p50_p99(grpc_calls),
            "REST health checks ok / failed": f"{len(health_latency_s)} / {health_failures}",
            "REST health p99": _ms(
                percentile_s(health_latency_s, 0.99) * 1000 if health_latency_s else None
            ),
            "slowloris cut off": f"{len(cut_off_s)} of {len(slow)}, the last after "
            f"{max(cut_off_s.values(), default=float('nan')):.2f} s",
            "RSS before / after": f"{rss_before:.0f} / {rss_after:.0f} MiB",
        }
        scenario.check(set(grpc_calls.outcomes()) == {"OK"}, "gRPC only OK")
        scenario.check(health_failures == 0, "every REST health check answered")
        scenario.check(len(cut_off_s) == len(slow), "every slowloris client cut off")
        scenario.check(
            max(cut_off_s.values(), default=0.0) < header_timeout_s + 1.5,
            "cut off within the header deadline (+1.5 s)",
        )
        scenario.check(rss_after < rss_before + 50, "RSS grew by less than 50 MiB")
    finally:
        for sock in idle + slow:
            sock.close()
        scenario.check(gateway.stop() == 0, "the gateway stopped cleanly")
    return scenario


SCENARIOS: dict[str, Callable[[Path, Timing], list[Scenario]]] = {
    "redis-kill": lambda d, t: [
        redis_outage("kill", m, _sub(d, f"kill-{m}"), t) for m in ("fail", "degrade")
    ],
    "redis-freeze": lambda d, t: [
        redis_outage("freeze", m, _sub(d, f"freeze-{m}"), t) for m in ("fail", "degrade")
    ],
    "triton-kill": lambda d, t: [triton_kill(_sub(d, "triton"), t)],
    "sigterm": lambda d, t: [sigterm(_sub(d, "sigterm"), t)],
    "slow-clients": lambda d, t: [slow_clients(_sub(d, "slow-clients"), t)],
}


def _sub(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(names: list[str], quick: bool, workdir: Path) -> list[Scenario]:
    results = []
    for name in names:
        for scenario in SCENARIOS[name](workdir, Timing.of(quick)):
            scenario.print()
            results.append(scenario)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (CI)")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="switchyard-faults-") as tmp:
        results = run(args.scenarios, args.quick, Path(tmp))
    failed = [s.name for s in results if s.violations]
    print("every invariant held" if not failed else f"violated in: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
