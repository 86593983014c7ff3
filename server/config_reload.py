"""Apply endpoint changes from the config file while serving, without failing a request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from switchyard.router.table import RoutingTable
from switchyard.runtimes.errors import NotFound
from switchyard.server.config import ConfigError, SwitchyardConfig, load_config, routing_table
from switchyard.server.control.plane import ControlPlane
from switchyard.server.metrics import RoutingMetrics

log = logging.getLogger(__name__)

# NotFound unless the model version (empty: the model's default) is loaded here.
CheckLoaded = Callable[[str, str], None]


class ConfigReloader:
    """Polls the config file; a changed `endpoints:` section becomes the new routing base.

    Other sections (models, server) need a restart; a change to them is logged, not applied.
    Refused whole, the routing in force staying: a file that does not validate, and one whose
    endpoints name a model or version that is not loaded (a reload does not load models).
    """

    def __init__(
        self,
        path: Path,
        config: SwitchyardConfig,
        control: ControlPlane,
        check_loaded: CheckLoaded,
        metrics: RoutingMetrics,
        interval_s: float,
    ) -> None:
        self._path = path
        self._config = config
        self._control = control
        self._check_loaded = check_loaded
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
        unloaded = self._unloaded_targets(table)
        if unloaded:
            self._metrics.config_reloads.labels("refused").inc()
            log.error(
                "config change refused, the routing in force stays: %s (a reload does not "
                "load models; add them to models: and restart)",
                "; ".join(unloaded),
            )
            return False
        if config.model_dump(exclude={"endpoints"}) != self._config.model_dump(
            exclude={"endpoints"}
        ):
            log.warning("config sections other than endpoints changed; they apply on restart")
        changes = await self._control.load_base(table, f"reload {self._path.name}")
        self._metrics.config_reloads.labels("applied" if changes else "unchanged").inc()
        return bool(changes)

    def _unloaded_targets(self, table: RoutingTable) -> list[str]:
        problems = []
        for name, spec in sorted(table.endpoints.items()):
            for variant, target in sorted(spec.variants.items()):
                try:
                    self._check_loaded(target.model, target.version or "")
                except NotFound as exc:
                    problems.append(f"endpoints.{name}.variants.{variant}: {exc}")
        return problems

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check_once()
            except Exception:  # keep watching: the next edit may fix whatever broke this one
                log.exception("config reload failed")
