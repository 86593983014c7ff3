"""The servers of the comparison, each started on free loopback ports and stopped after.

Every server runs in its own process group (its own session), so that stopping it reaches
what it started (Ray's raylet and workers, tritonserver's stubs); its CPU is read over that
process tree. A server counts as ready once a ModelInfer through the benchmark's own client
is answered correctly, the same test for every target.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop
import yaml

from loadtests.clients import RequestSpec, check_once
from loadtests.gateway_process import REPO_ROOT, demo_model_config, free_port, start_gateway
from loadtests.procstat import tree_cpu_s
from switchyard.demo.paths import DEMO_CONFIG_PATH, artifacts_dir

READY_TIMEOUT_S = 60.0
RAY_READY_TIMEOUT_S = 180.0  # a local Ray, Serve's controller, proxies and replicas
STOP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 3000
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"  # what the test command starts


class TargetUnavailable(RuntimeError):
    """The target could not be started here; the comparison reports it and goes on."""


@dataclass
class Server:
    grpc_url: str
    http_url: str | None
    pid: int
    startup_s: float
    check: str  # the answer to the readiness request
    stop: Callable[[], Any]
    serves_recommend: bool = False

    def cpu_s(self) -> float:
        return tree_cpu_s(self.pid)


def demo_serving_config(model_path: Path) -> dict[str, Any]:
    """The demo ranker as in tests.support, plus the demo's `recs` endpoint and its in-memory
    feature store (seed files by absolute path), so one process serves ModelInfer and
    Recommend."""
    demo = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    features = copy.deepcopy(demo["features"])
    seed_files = features["store"]["seed_files"]
    for entity, path in seed_files.items():
        seed_files[entity] = str(artifacts_dir() / path)
    return {**demo_model_config(model_path), "endpoints": demo["endpoints"], "features": features}


def _log_tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-LOG_TAIL_CHARS:]


def _wait_ready(
    process: subprocess.Popen[bytes], grpc_url: str, timeout_s: float, log_path: Path
) -> str:
    request = RequestSpec(url=grpc_url, timeout_s=2.0)
    deadline_s = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline_s:
        if process.poll() is not None:
            raise TargetUnavailable(
                f"exited with {process.returncode} while starting; log tail:\n{_log_tail(log_path)}"
            )
        try:
            return uvloop.run(check_once(request))
        except Exception as exc:  # not listening yet, or not ready: try again
            last_error = exc
            time.sleep(0.5)
    raise TargetUnavailable(
        f"not ready in {timeout_s:.0f} s (last: {last_error!r}); log tail:\n{_log_tail(log_path)}"
    )


def _stop_group(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, so the server drains and shuts its children down; then SIGKILL whatever of
    its process group is left (the group is the one this module created for it)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    return process.returncode


def _spawn(
    name: str,
    command: list[str],
    workdir: Path,
    grpc_port: int,
    http_port: int | None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    serves_recommend: bool = False,
    env: dict[str, str] | None = None,
    direct_ingress: bool = False,
) -> Server:
    """Run `command` until its gRPC port answers. `direct_ingress`: a Ray Serve app on Serve's
    fast path, whose load goes to the ingress replica's own gRPC port, as it prints it."""
    log_path = workdir / f"{name}.log"
    started_s = time.monotonic()
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
    try:
        grpc_url = f"127.0.0.1:{grpc_port}"
        http_url = None if http_port is None else f"127.0.0.1:{http_port}"
        check = _wait_ready(process, grpc_url, ready_timeout_s, log_path)
        if direct_ingress:
            urls = _wait_direct_urls(log_path)
            grpc_url, http_url = urls["gRPC"], urls["HTTP"]
            check = _wait_ready(process, grpc_url, ready_timeout_s, log_path)
    except BaseException:
        _stop_group(process)
        raise
    return Server(
        grpc_url=grpc_url,
        http_url=http_url,
        pid=process.pid,
        startup_s=time.monotonic() - started_s,
        check=check,
        stop=lambda: _stop_group(process),
        serves_recommend=serves_recommend,
    )


# Serve's fast path: the app's ingress replicas serve on ports of their own, printed at start
# (IngressEndpoint.line). Both protocols' load goes there: Serve's proxies on the config's
# ports are its slow path (REST through the HTTP proxy costs Ray round trips per request).
RAY_FAST_PATH_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
}
DIRECT_PROTOCOLS = ("HTTP", "gRPC")
_DIRECT_LINE = re.compile(r"ingress replica \S+: (HTTP|gRPC) on [\d.]+:(\d+)")


def direct_urls(log_text: str) -> dict[str, str]:
    """Per protocol, the loopback host:port of the first ingress replica port printed."""
    urls: dict[str, str] = {}
    for protocol, port in _DIRECT_LINE.findall(log_text):
        urls.setdefault(protocol, f"127.0.0.1:{port}")
    return urls


def _wait_direct_urls(log_path: Path, timeout_s: float = 30.0) -> dict[str, str]:
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        urls = direct_urls(log_path.read_text(errors="replace"))
        if all(protocol in urls for protocol in DIRECT_PROTOCOLS):
            return urls
        time.sleep(0.2)
    raise TargetUnavailable(
        f"no ingress replica HTTP and gRPC ports in the log:\n{_log_tail(log_path)}"
    )


def start_echo(model_path: Path, workdir: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "loadtests.echo_server", "--port", str(port)]
    return _spawn("echo", command, workdir, port, None)


def start_standalone(
    model_path: Path,
    workdir: Path,
    workers: int | str = 1,
    command: list[str] | None = None,
) -> Server:
    """`switchyard serve` on the demo; `workers` > 1 (or auto) shares the routing state in a
    Redis control store on the local Redis, under a prefix of its own. `command`: how to run
    `switchyard` instead (start_gateway's)."""
    started_s = time.monotonic()
    config = demo_serving_config(model_path)
    if workers != 1:
        config["server"] = {**config.get("server", {}), "workers": workers}
        prefix = f"switchyard-compare:{uuid.uuid4().hex[:8]}:"
        config["control"] = {"store": "redis", "url": LOCAL_REDIS_URL, "prefix": prefix}
    try:
        gateway = start_gateway(config, workdir, command=command)
    except RuntimeError as exc:
        raise TargetUnavailable(str(exc)[-LOG_TAIL_CHARS:]) from exc
    try:
        check = _wait_ready(
            gateway.process, f"127.0.0.1:{gateway.grpc_port}", 10.0, gateway.log_path
        )
    except BaseException:
        gateway.stop()
        raise
    return Server(
        grpc_url=f"127.0.0.1:{gateway.grpc_port}",
        http_url=f"127.0.0.1:{gateway.http_port}",
        pid=gateway.process.pid,
        startup_s=time.monotonic() - started_s,
        check=check,
        stop=gateway.stop,
        serves_recommend=True,
    )


def start_switchyard_ray(model_path: Path, workdir: Path, placement: str = "ingress") -> Server:
    """`switchyard serve --engine ray` on the same config as the standalone target, on Serve's
    fast path (its default): load goes to the ingress replica's own gRPC and HTTP ports.
    `placement`: the ranker co-located in the ingress (the default for CPU models) or a
    deployment."""
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    config = demo_serving_config(model_path)
    config["server"] = {**config.get("server", {}), "host": "127.0.0.1", **ports}
    for model in config["models"]:
        model["ray"] = {**model.get("ray", {}), "placement": placement}
    config_path = workdir / f"switchyard-ray-{placement}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "switchyard.server.cli", "serve", "--engine", "ray"]
    command += ["--config", str(config_path)]
    return _spawn(
        f"switchyard-ray-{placement}",
        command,
        workdir,
        ports["grpc_port"],
        ports["http_port"],
        RAY_READY_TIMEOUT_S,
        serves_recommend=True,
        direct_ingress=True,
    )


def start_plain_ray(
    model_path: Path, workdir: Path, batch_wait_timeout_s: float, fast_path: bool = False
) -> Server:
    """Plain Ray Serve around the same model: through Serve's gRPC proxy, or (`fast_path`)
    in Serve's throughput-optimized mode, on the replica's own gRPC port."""
    grpc_port, http_port = free_port(), free_port()
    command = [sys.executable, "-m", "loadtests.plain_ray_serve", "--model-path", str(model_path)]
    command += ["--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    command += ["--batch-wait-timeout-s", str(batch_wait_timeout_s)]
    return _spawn(
        "plain-ray-fast" if fast_path else "plain-ray",
        command,
        workdir,
        grpc_port,
        http_port,
        RAY_READY_TIMEOUT_S,
        env=RAY_FAST_PATH_ENV if fast_path else None,
        direct_ingress=fast_path,
    )


def start_triton_server(model_path: Path, workdir: Path) -> Server:
    """PyTriton's Triton (loadtests/triton_process.py), same batcher limits: 64 rows, no delay."""
    from loadtests.triton_process import TritonSetupError, start_triton

    started_s = time.monotonic()
    try:
        triton = start_triton(model_path, workdir)
    except TritonSetupError as exc:
        raise TargetUnavailable(str(exc)[-LOG_TAIL_CHARS:]) from exc
    assert triton.process is not None
    try:
        check = _wait_ready(triton.process, triton.grpc_url, 10.0, triton.log_path)
    except BaseException:
        triton.stop()
        raise
    return Server(
        grpc_url=triton.grpc_url,
        http_url=triton.http_url,
        pid=triton.process.pid,
        startup_s=time.monotonic() - started_s,
        check=check,
        stop=triton.stop,
    )
