"""Start a real Triton Inference Server (CPU, via PyTriton) serving the demo model, for tests.

Runs in the main venv. The server itself runs in .venv-triton (made by scripts/triton_env.sh),
because PyTriton needs numpy<2; this module only starts it and talks HTTP to it.

    server = start_triton(model_path, tmp_path)
    ...  # tritonclient.grpc.InferenceServerClient(server.grpc_url) etc.
    server.kill()  # SIGKILL the whole process tree, as a crash would
    server.restart()  # same ports, waits until ready again
    assert server.stop() == 0
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.certificates import CertFiles
from loadtests.gateway_process import REPO_ROOT, free_port, http_ok
from loadtests.side_venv import SideVenvError, make_side_venv

ENV_SCRIPT = REPO_ROOT / "scripts" / "triton_env.sh"
SERVER_SCRIPT = Path(__file__).resolve().parent / "pytriton_server.py"
# The first run of triton_env.sh installs about 450 MB of wheels (about 25 s here).
ENV_SETUP_TIMEOUT_S = 900.0
# Triton is usually ready in 3 to 5 s on 2 cores; the margin is for loaded CI machines.
READY_TIMEOUT_S = 120.0
SHM_DIR = Path("/dev/shm")


class TritonSetupError(RuntimeError):
    """The Triton venv could not be made, or the server did not become ready."""


@functools.cache
def ensure_triton_env() -> Path:
    """The python of .venv-triton, creating the venv first when needed (once per process)."""
    try:
        return make_side_venv(ENV_SCRIPT, ENV_SETUP_TIMEOUT_S)
    except SideVenvError as error:
        raise TritonSetupError(str(error)) from None


@dataclass(frozen=True)
class TritonGrpcTls:
    server: CertFiles
    ca_file: Path
    mutual: bool = False


@dataclass
class TritonProcess:
    """A PyTriton server subprocess; the ports stay fixed across `restart()`."""

    model_path: Path
    workdir: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    model_name: str = "ranker"
    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    ready_timeout_s: float = READY_TIMEOUT_S
    python: Path = field(default_factory=ensure_triton_env)
    process: subprocess.Popen[bytes] | None = None
    # gRPC over TLS: tritonserver's certificate, and the CA of client certificates that it
    # then requires (mutual TLS); None: plaintext.
    grpc_tls: TritonGrpcTls | None = None
    # Seconds from spawning the process to both readiness checks passing, for the last start.
    startup_s: float = 0.0
    starts: int = 0
    _scratch: Path | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "triton.log"

    @property
    def http_url(self) -> str:
        """host:port, as tritonclient.http expects (no scheme)."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Every start's output so far: PyTriton's log and tritonserver's, interleaved."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Spawn the server and wait until it and the model are ready; raises on failure."""
        if self.is_running():
            raise RuntimeError("Triton is already running; stop() or kill() it first")
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        # PyTriton puts unix sockets in its workspace, and AF_UNIX paths are limited to 107
        # bytes: pytest's tmp_path is too deep, so workspace and TMPDIR go in a short fresh
        # folder under the system temp dir. PyTriton also insists on a new workspace each start.
        self._remove_scratch()
        self._scratch = Path(tempfile.mkdtemp(prefix="triton-"))
        workspace = self._scratch / "ws"
        tmpdir = self._scratch / "tmp"
        tmpdir.mkdir()
        env = {
            key: value
            for key, value in os.environ.items()
            # The main venv's paths would shadow .venv-triton's numpy<2.
            if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
        }
        env.update(PYTHONUNBUFFERED="1", TMPDIR=str(tmpdir), OMP_NUM_THREADS="1")
        command = [
            str(self.python),
            str(SERVER_SCRIPT),
            f"--model-path={self.model_path}",
            f"--model-name={self.model_name}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--max-batch-size={self.max_batch_size}",
            f"--max-queue-delay-us={self.max_queue_delay_us}",
            f"--workspace={workspace}",
            "--exit-with-parent",
        ]
        if self.grpc_tls is not None:
            tls = self.grpc_tls
            command += [
                f"--grpc-server-cert={tls.server.cert_file}",
                f"--grpc-server-key={tls.server.key_file}",
                f"--grpc-root-cert={tls.ca_file}",
                *(["--grpc-use-ssl-mutual"] if tls.mutual else []),
            ]
        with self.log_path.open("a") as log_file:
            log_file.write(f"\n===== start {self.starts}: {' '.join(command)}\n")
            log_file.flush()
            started = time.monotonic()
            # Own session, so kill() can reach tritonserver and the backend stubs by group.
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(started)
        self.startup_s = time.monotonic() - started

    def _wait_ready(self, started: float) -> None:
        assert self.process is not None
        urls = (
            f"http://{self.http_url}/v2/health/ready",
            f"http://{self.http_url}/v2/models/{self.model_name}/ready",
        )
        deadline = started + self.ready_timeout_s
        saw_tritonserver = False
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._sweep_group()
                self._remove_scratch()
                raise TritonSetupError(f"Triton exited with {code} while starting:\n{self.log()}")
            if all(http_ok(url) for url in urls):
                return
            # When tritonserver dies while starting (a port taken, a bad model), PyTriton's
            # process still waits out its own 120 s timeout: fail fast instead.
            running = "tritonserver" in self.live_processes().values()
            if saw_tritonserver and not running:
                self.kill()
                raise TritonSetupError(f"tritonserver exited while starting:\n{self.log()}")
            saw_tritonserver |= running
            time.sleep(0.1)
        self.kill()
        raise TritonSetupError(f"Triton not ready in {self.ready_timeout_s:.0f} s:\n{self.log()}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (PyTriton then stops tritonserver cleanly); SIGKILL if it hangs.

        Returns the exit code (0 on a clean stop), or None when it was not running.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        self._sweep_group()
        self._remove_scratch()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the server and every process it started, as a crash of the host would.

        Then removes what PyTriton and Triton would have cleaned up on a normal stop, so that
        repeated crash tests do not fill /dev/shm or /tmp.
        """
        if self.process is None:
            return
        regions = self._shm_regions_in_use()
        self._sweep_group()
        self.process.wait(10)
        # SIGKILL is delivered asynchronously: wait until tritonserver has really gone (and
        # released its ports), so a restart on the same ports does not race it.
        deadline = time.monotonic() + 10
        while self.live_processes() and time.monotonic() < deadline:
            time.sleep(0.02)
        regions.update(SHM_DIR.glob(f"pytrtion{self.process.pid}-*"))
        for region in regions:
            region.unlink(missing_ok=True)
        self._remove_triton_model_copies()
        self._remove_scratch()

    def restart(self) -> None:
        """Stop (or reap a killed) server and start it again on the same ports."""
        if self.is_running():
            self.stop()
        self.start()

    def live_processes(self) -> dict[int, str]:
        """PID to command name for the server's process group, zombies excluded.

        The container's PID 1 may be slow to reap orphans, so a killed tritonserver can linger
        as a zombie: harmless (it holds no ports), but still a member of the group.
        """
        if self.pid is None:
            return {}
        live = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                # /proc/PID/stat is "pid (comm) state ppid pgrp ...", and comm may hold spaces.
                head, tail = (proc / "stat").read_text().rsplit(")", 1)
                state, _ppid, pgrp = tail.split()[:3]
            except (OSError, ValueError):
                continue  # ended meanwhile
            if int(pgrp) == self.pid and state not in {"Z", "X"}:
                live[int(proc.name)] = head.split("(", 1)[1]
        return live

    def _shm_regions_in_use(self) -> set[Path]:
        """/dev/shm files that the server's processes have mapped or open (read from /proc)."""
        regions: set[Path] = set()
        for pid in self.live_processes():
            proc = Path("/proc") / str(pid)
            try:
                for line in (proc / "maps").read_text().splitlines():
                    if "/dev/shm/" in line:
                        regions.add(Path(line[line.index("/dev/shm/") :].split(" (deleted)")[0]))
                for fd in (proc / "fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("/dev/shm/"):
                        regions.add(Path(target.split(" (deleted)")[0]))
            except OSError:
                continue  # ended meanwhile
        return regions

    def _remove_triton_model_copies(self) -> None:
        """tritonserver copies each Python-backend model to /tmp/folderXXXXXX (not TMPDIR) and
        deletes it on unload; after a SIGKILL, find ours by the workspace path in its config."""
        if self._scratch is None:
            return
        marker = str(self._scratch)
        for folder in Path("/tmp").glob("folder??????"):
            try:
                if marker in (folder / "config.pbtxt").read_text():
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue

    def _remove_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _sweep_group(self) -> None:
        # Also reaps stragglers (tritonserver, the backend stub) when the leader died alone.
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_triton(
    model_path: Path,
    workdir: Path,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    *,
    model_name: str = "ranker",
    max_batch_size: int = 64,
    max_queue_delay_us: int = 0,
    ready_timeout_s: float = READY_TIMEOUT_S,
    attempts: int = 3,
    grpc_tls: TritonGrpcTls | None = None,
) -> TritonProcess:
    """Start Triton serving `model_path` on the given ports or on free ones; wait until ready.

    With ports left to it, a start that loses a port race (another process took a port between
    free_port() and Triton binding it) is retried on new ports, up to `attempts` times.
    """
    python = ensure_triton_env()
    fixed_ports = any(port is not None for port in (http_port, grpc_port, metrics_port))
    for attempt in range(1, attempts + 1):
        server = TritonProcess(
            model_path=Path(model_path),
            workdir=Path(workdir),
            http_port=http_port or free_port(),
            grpc_port=grpc_port or free_port(),
            metrics_port=metrics_port or free_port(),
            model_name=model_name,
            max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us,
            ready_timeout_s=ready_timeout_s,
            python=python,
            grpc_tls=grpc_tls,
        )
        try:
            server.start()
            return server
        except TritonSetupError as error:
            port_race = "address already in use" in str(error).lower()
            if fixed_ports or not port_race or attempt == attempts:
                raise
    raise AssertionError("unreachable")
