"""A redis-server of a test's or benchmark's own, to stop, freeze and start at will."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from loadtests.gateway_process import free_port

if TYPE_CHECKING:
    from loadtests.certificates import CertFiles


@dataclass(frozen=True)
class RedisTls:
    """A TLS-only redis-server: its certificate, the CA it trusts for clients, and whether
    clients must present a certificate (`tls-auth-clients`)."""

    server: CertFiles
    ca_file: Path
    auth_clients: bool = False


class RedisServer:
    """A redis-server of this test's own, to stop and start at will: without persistence,
    or, `persistent`, with an append-only file in `workdir` that keeps the data across a
    stop and a start (same port, same folder)."""

    def __init__(
        self,
        workdir: Path,
        *,
        persistent: bool = False,
        tls: RedisTls | None = None,
        password: str | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self._binary = binary
        self._workdir = workdir
        self._persistent = persistent
        self._tls = tls
        self._password = password
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL to reach it: rediss:// when it serves TLS (then only TLS); no password."""
        scheme = "redis" if self._tls is None else "rediss"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _client(self) -> redis.Redis:
        options: dict[str, Any] = {"socket_timeout": 0.2, "password": self._password}
        if self._tls is not None:
            options |= {
                "ssl_ca_certs": str(self._tls.ca_file),
                "ssl_certfile": str(self._tls.server.cert_file),
                "ssl_keyfile": str(self._tls.server.key_file),
            }
        return redis.Redis.from_url(self.url, **options)

    def start(self, ready_timeout_s: float = 10.0) -> None:
        options = ["--bind", "127.0.0.1", "--save", ""]
        if self._persistent:
            options += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            options += ["--appendonly", "no"]
        if self._password is not None:
            options += ["--requirepass", self._password]
        ports = ["--port", str(self.port)]
        if self._tls is not None:
            ports = ["--port", "0", "--tls-port", str(self.port)]
            options += [
                "--tls-cert-file",
                str(self._tls.server.cert_file),
                "--tls-key-file",
                str(self._tls.server.key_file),
                "--tls-ca-cert-file",
                str(self._tls.ca_file),
                "--tls-auth-clients",
                "yes" if self._tls.auth_clients else "no",
            ]
        self._process = subprocess.Popen(
            [self._binary, *ports, *options, "--dir", str(self._workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self._client()
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: the port stays open and nothing answers (a hung server)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)
