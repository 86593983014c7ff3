"""The standalone host on every core: a supervisor process and N worker processes.

With `server.workers` > 1, `switchyard serve` becomes a supervisor. It starts each worker by
running the CLI again (a fresh interpreter: no fork of a process that has threads), with
SWITCHYARD_WORKER_INDEX set. Every worker is a full gateway (StandaloneServer) listening on
the same gRPC and REST ports through SO_REUSEPORT; the kernel spreads new connections over
them, and a connection (HTTP keep-alive, a gRPC channel) stays with the worker that took it.

- Ports: the supervisor binds the gRPC and REST ports first, without listening, and holds
  them: a taken port fails the start as with one process, port 0 is resolved once for all
  workers, and the ports stay reserved while a worker restarts.
- Metrics: workers write prometheus_client multiprocess files into a fresh folder; the
  supervisor serves the metrics port and adds them up (server/metrics.py: gauge modes).
- Readiness: each worker writes one line to a pipe once it serves; the supervisor logs
  "switchyard ready" once every worker has.
- Supervision: a worker that exits is started again after a backoff; one that keeps dying
  before it is ready stops the supervisor. SIGTERM or SIGINT drains every worker.
- Routing state: each worker is a replica of the control plane, so the config must use the
  redis control store (the config refuses memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from switchyard.server.app import bind_socket, serve_until_signalled, transport_security
from switchyard.server.config import SwitchyardConfig
from switchyard.server.event_wait import wait_for_event
from switchyard.server.http_serving import HttpServer, metrics_limits
from switchyard.server.metrics_endpoint import MetricsEndpoint
from switchyard.server.tls import TlsFiles

log = logging.getLogger(__name__)

WORKER_INDEX_ENV = "SWITCHYARD_WORKER_INDEX"
READY_FD_ENV = "SWITCHYARD_WORKER_READY_FD"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_LINE = b"ready\n"

RESTART_BACKOFF_S = 0.5  # doubled after each exit before ready, up to the maximum
MAX_RESTART_BACKOFF_S = 10.0
CRASH_LOOP_LIMIT = 5  # exits in a row before ready: the worker cannot start, give up
# Within the grace period a worker drains gRPC calls and HTTP requests together, then its
# batchers: the supervisor waits twice the grace plus a margin before SIGKILL.
STOP_MARGIN_S = 10.0


def worker_index() -> int | None:
    """This process's worker number when a supervisor started it, else None."""
    value = os.environ.get(WORKER_INDEX_ENV)
    return None if value is None else int(value)


def _die_with_parent() -> None:
    # A SIGKILLed supervisor must not leave workers holding its ports (Linux only).
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def run_worker(config: SwitchyardConfig, config_path: Path | None, index: int) -> None:
    """One worker: the standalone gateway on the shared ports, telling the supervisor when
    it serves."""
    _die_with_parent()
    ready_fd = int(os.environ[READY_FD_ENV])

    def ready() -> None:
        os.write(ready_fd, READY_LINE)  # the fd stays open: the supervisor reads EOF at exit

    uvloop.run(serve_until_signalled(config, config_path, worker=index, on_ready=ready))


def run_supervisor(config: SwitchyardConfig, config_path: Path) -> int:
    """Serve with `server.workers` processes until SIGTERM or SIGINT; the exit status."""
    return asyncio.run(Supervisor(config, config_path).run())


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    failures: int = 0  # exits in a row before it was ready
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, config: SwitchyardConfig, config_path: Path) -> None:
        self.config = config
        self.config_path = config_path
        self.count = config.server.worker_count()
        self._workers = [_Worker(i) for i in range(self.count)]
        self._metrics_dir = ""
        self._stopping = asyncio.Event()
        self._status = 0  # the exit status, once something failed
        self._all_ready_once = False
        self._registry = CollectorRegistry()
        self._restarts = Counter(
            "switchyard_worker_restarts",
            "Worker processes the supervisor started again after they exited, by worker.",
            ["worker"],
            registry=self._registry,
        )
        self.http_port = self.grpc_port = self.metrics_port = 0

    async def run(self) -> int:
        settings = self.config.server
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        held: list[socket.socket] = []
        metrics_server: HttpServer | None = None
        self._metrics_dir = tempfile.mkdtemp(prefix="switchyard-metrics-")
        try:
            try:
                # The workers load `tls` themselves; the supervisor serves metrics_tls.
                metrics_tls = None
                if settings.metrics_tls is not None:
                    metrics_tls = TlsFiles(settings.metrics_tls, "metrics")
                for port in (settings.http_port, settings.grpc_port):
                    held.append(bind_socket(settings.host, port, share_port=True, listen=False))
                metrics_socket = bind_socket(
                    settings.metrics_host or settings.host, settings.metrics_port
                )
            except OSError as exc:
                print(f"switchyard: {exc}", file=sys.stderr)
                return 1
            self.http_port, self.grpc_port = (sock.getsockname()[1] for sock in held)
            self.metrics_port = metrics_socket.getsockname()[1]
            MultiProcessCollector(self._registry, path=self._metrics_dir)  # type: ignore[no-untyped-call]
            # Its refusals are not counted: the workers' files are this registry's metrics.
            metrics_server = HttpServer(
                MetricsEndpoint(self._registry),
                metrics_socket,
                metrics_limits(settings),
                log_level=settings.log_level,
                ssl_context=None if metrics_tls is None else metrics_tls.ssl_context(),
            )
            await metrics_server.start()
            for worker in self._workers:
                worker.task = asyncio.create_task(self._supervise(worker))
            await self._stopping.wait()
            if self._status == 0:
                log.info("signal received, stopping %d workers", self.count)
            await self._stop_workers()
        finally:
            if metrics_server is not None:
                await metrics_server.stop(settings.shutdown_grace_s)
            for sock in held:
                sock.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        log.info("switchyard stopped")
        return self._status

    def _fail(self, status: int) -> None:
        if self._status == 0:
            self._status = status
        self._stopping.set()

    async def _supervise(self, worker: _Worker) -> None:
        """Start the worker, and start it again each time it exits, until stopping."""
        while not self._stopping.is_set():
            started_s = time.monotonic()
            returncode = await self._run_once(worker)
            if self._stopping.is_set():
                return
            if not self._all_ready_once:
                # A worker that cannot start (port, model file, ...) fails the whole start.
                log.error("worker %d exited with %s during start-up", worker.index, returncode)
                self._fail(returncode if returncode > 0 else 1)
                return
            worker.failures = 0 if worker.ready else worker.failures + 1
            if worker.failures >= CRASH_LOOP_LIMIT:
                log.error(
                    "worker %d exited %d times in a row before it was ready; stopping",
                    worker.index, worker.failures,
                )  # fmt: skip
                self._fail(1)
                return
            backoff_s = min(RESTART_BACKOFF_S * 2**worker.failures, MAX_RESTART_BACKOFF_S)
            log.warning(
                "worker %d exited with %s after %.1f s; starting it again in %.1f s",
                worker.index, returncode, time.monotonic() - started_s, backoff_s,
            )  # fmt: skip
            worker.ready = False
            await wait_for_event(self._stopping, backoff_s)
            if not self._stopping.is_set():
                self._restarts.labels(str(worker.index)).inc()

    async def _run_once(self, worker: _Worker) -> int:
        """Run the worker process until it exits; its exit status (negative: a signal)."""
        worker.ready = False
        read_fd, write_fd = os.pipe()
        env = {
            **os.environ,
            WORKER_INDEX_ENV: str(worker.index),
            READY_FD_ENV: str(write_fd),
            MULTIPROC_DIR_ENV: self._metrics_dir,
            # Every worker serves the ports the supervisor resolved and holds.
            "SWITCHYARD_HTTP_PORT": str(self.http_port),
            "SWITCHYARD_GRPC_PORT": str(self.grpc_port),
        }
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "switchyard.server.cli",
                "serve", "--config", str(self.config_path),
                env=env, pass_fds=(write_fd,),
            )  # fmt: skip
        finally:
            os.close(write_fd)
        worker.process = process
        log.info("worker %d started: pid %d", worker.index, process.pid)
        if self._stopping.is_set():  # started while the others were told to stop
            process.send_signal(signal.SIGTERM)
        with open(read_fd, "rb", buffering=0) as ready_pipe:
            line = await asyncio.to_thread(ready_pipe.readline)  # b"" if it exits first
        if line == READY_LINE:
            worker.ready = True
            self._on_ready(worker)
        returncode = await process.wait()
        # Its live gauges (in flight, queue depth) go; its counters stay in the sums.
        mark_process_dead(process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        return returncode

    def _on_ready(self, worker: _Worker) -> None:
        if self._all_ready_once:
            log.info("worker %d ready again", worker.index)
        elif all(w.ready for w in self._workers):
            self._all_ready_once = True
            settings = self.config.server
            host, metrics_host = settings.host, settings.metrics_host or settings.host
            log.info(
                "switchyard ready: %d workers, REST on %s:%d (%s), gRPC on %s:%d (%s), "
                "metrics on %s:%d (%s)",
                self.count, host, self.http_port, transport_security(settings.tls),
                host, self.grpc_port, transport_security(settings.tls),
                metrics_host, self.metrics_port, transport_security(settings.metrics_tls),
            )  # fmt: skip

    async def _stop_workers(self) -> None:
        """SIGTERM to every worker, then wait for their drains; SIGKILL past the limit."""
        processes = [w.process for w in self._workers if w.process and w.process.returncode is None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        limit_s = 2 * self.config.server.shutdown_grace_s + STOP_MARGIN_S
        tasks = [w.task for w in self._workers if w.task is not None]
        _, pending = await asyncio.wait(tasks, timeout=limit_s) if tasks else (set(), set())
        if pending:
            log.error("workers still running %.0f s after SIGTERM: killed", limit_s)
            for worker in self._workers:
                if worker.process is not None and worker.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            await asyncio.wait(pending)
            self._fail(1)
        for process in processes:
            # -SIGTERM: it had not set up its handler yet (still importing), nothing to drain.
            if process.returncode not in (0, -signal.SIGTERM) and self._status == 0:
                log.error("worker pid %d exited with %s", process.pid, process.returncode)
                self._status = 1
