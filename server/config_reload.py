"""Apply config file changes (endpoints and models) while serving, without failing a request."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from switchyard.runtimes.errors import SwitchyardError
from switchyard.server.config import ConfigError, SwitchyardConfig, load_config, routing_table
from switchyard.server.control.plane import ControlPlane
from switchyard.server.metrics import RoutingMetrics
from switchyard.server.model_control import ModelControl

log = logging.getLogger(__name__)
LIVE_SECTIONS = {"endpoints", "models"}  # what a reload applies; the rest on restart


class ConfigReloader:
    """Polls the config file; a changed `endpoints:` section becomes the new routing base
    and a changed `models:` section loads and unloads models, both in one change
    (ModelControl.reload_config). Other sections need a restart: a change to them is
    logged, not applied. Refused whole, what is served staying: a file that does not
    validate, a model that fails to load, and endpoints that name a model or version the
    new models would not serve.
    """

    def __init__(
        self,
        path: Path,
        config: SwitchyardConfig,
        control: ControlPlane,
        models: ModelControl,
        metrics: RoutingMetrics,
        interval_s: float,
    ) -> None:
        self._path = path
        self._config = config
        self._control = control
        self._models = models
        self._metrics = metrics
        self._interval_s = interval_s
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    async def check_once(self) -> bool:
        """Reload if the file changed since the last look; True when routing changed."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            config = load_config(self._path)  # the one parse path: schema, then compile
        except ConfigError as exc:
            self._metrics.config_reloads.labels("invalid").inc()
            log.error("config change ignored, the routing in force stays: %s", exc)
            return False
        table = routing_table(config)
        reason = f"reload {self._path.name}"
        try:
            changes = await self._models.reload_config(
                config.models, table, lambda: self._control.load_base(table, reason), reason
            )
        except SwitchyardError as exc:
            self._metrics.config_reloads.labels("refused").inc()
            log.error("config change refused, what is served stays: %s", exc)
            return False
        if config.model_dump(exclude=LIVE_SECTIONS) != self._config.model_dump(
            exclude=LIVE_SECTIONS
        ):
            log.warning(
                "config sections other than endpoints and models changed; they apply on restart"
            )
        self._config = config
        self._metrics.config_reloads.labels("applied" if changes else "unchanged").inc()
        return bool(changes)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check_once()
            except Exception:  # keep watching: the next edit may fix whatever broke this one
                log.exception("config reload failed")
