"""Apply endpoint changes from the config file while serving, without failing a request."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from switchyard.server.config import ConfigError, SwitchyardConfig, load_config, routing_table
from switchyard.server.routing import RoutingService

log = logging.getLogger(__name__)


class ConfigReloader:
    """Polls the config file; a changed `endpoints:` section is swapped in atomically.

    Other sections (models, server) need a restart; a change to them is logged, not applied.
    An invalid file is logged and ignored: the routing in force stays.
    """

    def __init__(
        self, path: Path, config: SwitchyardConfig, routing: RoutingService, interval_s: float
    ) -> None:
        self._path = path
        self._config = config
        self._routing = routing
        self._interval_s = interval_s
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def check_once(self) -> bool:
        """Reload if the file changed since the last look; True when routing changed."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            config = load_config(self._path)  # the one parse path: schema, then compile
        except ConfigError as exc:
            log.error("config change ignored, the routing in force stays: %s", exc)
            return False
        if config.model_dump(exclude={"endpoints"}) != self._config.model_dump(
            exclude={"endpoints"}
        ):
            log.warning("config sections other than endpoints changed; they apply on restart")
        changes = self._routing.reload(routing_table(config), f"reload {self._path.name}")
        return bool(changes)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                self.check_once()
            except Exception:  # keep watching: the next edit may fix whatever broke this one
                log.exception("config reload failed")
