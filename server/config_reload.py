"""Apply config file changes (endpoints and models) while serving, without failing a request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from switchyard.runtimes.errors import SwitchyardError
from switchyard.server.config import (
    ConfigError,
    SwitchyardConfig,
    parse_config_text,
    routing_table,
)
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

    A changed file is read only once it has stayed unchanged for `settle_s`, and applied
    only if it did not change while being read: an editor that writes in place (truncate,
    then write) is never caught with half a file, which may well be valid YAML that lacks
    a section.
    """

    def __init__(
        self,
        path: Path,
        config: SwitchyardConfig,
        control: ControlPlane,
        models: ModelControl,
        metrics: RoutingMetrics,
        interval_s: float,
        settle_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._config = config
        self._control = control
        self._models = models
        self._metrics = metrics
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._clock = clock
        self._stamp = self._file_stamp()  # of the file last read
        self._changed: tuple[tuple[int, int], float] | None = None  # stamp, first seen

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _settled_text(self) -> str | None:
        """The file's text once a change to it has settled; None while there is none."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            self._changed = None
            return None
        now_s = self._clock()
        if self._changed is None or self._changed[0] != stamp:
            self._changed = (stamp, now_s)
        if now_s - self._changed[1] < self._settle_s:
            return None
        try:
            text = self._path.read_text()
        except OSError:
            return None  # gone for a moment (an editor's rename): look again next time
        if self._file_stamp() != stamp:
            return None  # written to while read: wait for it to settle again
        self._stamp, self._changed = stamp, None
        return text

    async def check_once(self) -> bool:
        """Reload if the file changed and settled since the last look; True when routing
        changed."""
        text = self._settled_text()
        if text is None:
            return False
        try:
            config = parse_config_text(text, self._path)  # the one parse path
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
