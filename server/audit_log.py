"""This replica's copy of the audit entries it wrote: the log, and a JSONL file if set.

The shared trail, every replica's decisions once each, is the control store's
(GET /admin/v1/audit); this file keeps the ones this replica made, for its own logs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from switchyard.server.control.state import AuditEntry

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self._path = path

    def write(self, entry: AuditEntry) -> None:
        changes = "; ".join(entry.changes) or "none"
        log.info("routing change by %s (%s): %s", entry.actor, entry.action, changes)
        if self._path is None:
            return
        try:
            with self._path.open("a") as file:
                file.write(entry.to_json() + "\n")
        except OSError as exc:
            # The change is applied already; losing its line must be loud, not fatal.
            log.error("cannot append to audit log %s: %s", self._path, exc)
