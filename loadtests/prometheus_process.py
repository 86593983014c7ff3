"""A real Prometheus server of a test's own, scraping given targets, and its query API.

The binaries come from Debian's `prometheus` package (`apt-get install prometheus`;
scripts/dev.sh test installs it when missing): `prometheus` and `promtool` on the PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from loadtests.gateway_process import free_port, http_ok

INSTALL_HINT = "install Debian's prometheus package (apt-get install -y prometheus)"


def prometheus_binary(name: str) -> str:
    """The path of `prometheus` or `promtool`; RuntimeError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not on the PATH: {INSTALL_HINT}")
    return path


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query (bad PromQL, or an evaluation error); the text is its own."""


class PrometheusServer:
    """`prometheus` scraping `targets` (host:port of /metrics) every `scrape_interval_s`
    under job `job`, storing into `workdir`, on a free local port."""

    def __init__(
        self,
        targets: list[str],
        workdir: Path,
        *,
        job: str = "switchyard",
        scrape_interval_s: float = 1.0,
        rule_files: list[Path] | None = None,
    ) -> None:
        if not targets:
            raise ValueError("PrometheusServer needs at least one target to scrape")
        self._binary = prometheus_binary("prometheus")
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "prometheus.log"
        interval = f"{round(scrape_interval_s * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files or []],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 30.0) -> None:
        self._process = subprocess.Popen(
            [
                self._binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + ready_timeout_s
        while not http_ok(f"{self.url}/-/ready"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one item) `expr` gives now, from /api/v1/query.

        Raises PrometheusQueryError with Prometheus's own error text when it refuses."""
        body = urllib.parse.urlencode({"query": expr}).encode()
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query", body, timeout=10) as reply:
                answer: dict[str, Any] = json.loads(reply.read())
        except urllib.error.HTTPError as error:  # 400/422 carry the error in the body
            answer = json.loads(error.read())
        if answer.get("status") != "success":
            raise PrometheusQueryError(f"{answer.get('errorType')}: {answer.get('error')}")
        data: dict[str, Any] = answer["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """Queries `expr` until it has data; AssertionError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"no data for {expr} within {timeout_s} s")
            time.sleep(0.25)
