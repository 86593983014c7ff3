"""The audit trail of routing changes: who changed what, when, from what to what."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


class AuditLog:
    """Appends one JSON line per change to a file (when configured) and to the log."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    def record(self, actor: str, action: str, changes: list[str]) -> None:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "actor": actor,
            "action": action,
            "changes": changes,
        }
        log.info("routing change by %s (%s): %s", actor, action, "; ".join(changes) or "none")
        if self._path is None:
            return
        try:
            with self._path.open("a") as file:
                file.write(json.dumps(entry) + "\n")
        except OSError as exc:
            # The change is applied already; losing its line must be loud, not fatal.
            log.error("cannot append to audit log %s: %s", self._path, exc)
