"""This replica's copy of the audit entries it wrote: the log, and a JSONL file if set.

The shared trail, every replica's decisions once each, is the control store's
(GET /admin/v1/audit); this file keeps the ones this replica made, for its own logs. The
file is a hash chain of its own (server/control/audit_chain.py): each append continues
from the file's last record, read under an exclusive lock (the workers of server.workers
share the file), so `switchyard audit verify FILE` checks all of it. Each record is
appended as one whole line, in one write.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from switchyard.runtimes.errors import FailedPrecondition
from switchyard.server.config_sections import AdminSettings
from switchyard.server.control.audit_chain import ChainHead, load_key, seal
from switchyard.server.control.state import AuditEntry

log = logging.getLogger(__name__)

_TAIL_BYTES = 1 << 16  # enough for the last record: an audit line is a few hundred bytes


def configured_audit_key(admin: AdminSettings) -> bytes | None:
    """The audit chain's HMAC key: admin.audit_key_file, else SWITCHYARD_AUDIT_KEY, else
    None (plain sha256)."""
    try:
        return load_key(admin.audit_key_file)
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(
            f"admin.audit_key_file: cannot read the audit key ({exc}); fix the file or unset "
            "it (SWITCHYARD_AUDIT_KEY, or no key: plain sha256)"
        ) from None


class AuditLog:
    def __init__(self, path: Path | None, key: bytes | None = None) -> None:
        self._path = path
        self._key = key

    def write(self, entry: AuditEntry) -> None:
        changes = "; ".join(entry.changes) or "none"
        log.info(
            "routing change by %s from %s (%s%s): %s",
            entry.identity, entry.peer or entry.replica, entry.action,
            f", reason: {entry.reason}" if entry.reason else "", changes,
        )  # fmt: skip
        if self._path is None:
            return
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                # Every worker of server.workers appends to the same file: the head is read
                # under the lock, each time, so that they all extend one chain.
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(
                    fd, self._lines(fd, self._path, entry).encode("utf-8")
                )  # one write: whole lines
            finally:
                os.close(fd)  # and the lock with it
        except OSError as exc:
            # The change is applied already; losing its line must be loud, not fatal.
            log.error("cannot append to audit log %s: %s", self._path, exc)

    def _lines(self, fd: int, path: Path, entry: AuditEntry) -> str:
        """`entry` sealed after the file's last record (after a restart marker, if its chain
        cannot be continued; after a newline, if it ends inside a line)."""
        head, restart_reason, cut_short = _last_head(fd, path)
        lines = ["\n"] if cut_short else []
        if restart_reason:
            # The file's chain cannot be continued: a new segment, saying why, from seq 1.
            marker = AuditEntry(
                "audit-log",
                f"audit chain restarted: {restart_reason}",
                (),
                entry.replica,
                role="gateway",
            )
            record = seal(marker.body(), head, self._key)
            head = ChainHead(record["seq"], record["hash"])
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        record = seal(entry.body(), head, self._key)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        return "".join(lines)


def _last_head(fd: int, path: Path) -> tuple[ChainHead, str, bool]:
    """The chain head of the file's last record, why the chain must restart ("" if it need
    not: the file's last line unreadable as a chained record), and whether the file ends
    inside a line."""
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, _TAIL_BYTES, max(0, size - _TAIL_BYTES))
    except OSError as exc:
        log.error("cannot read audit log %s: %s; its chain starts again", path, exc)
        return ChainHead(), f"the file could not be read ({exc})", False
    cut_short = bool(tail) and not tail.endswith(b"\n")
    lines = tail.split(b"\n")
    last = next((line for line in reversed(lines) if line.strip()), b"")
    if not last:
        return ChainHead(), "", cut_short
    try:
        record = json.loads(last)
        head = ChainHead(int(record["seq"]), str(record["hash"]))
    except (ValueError, KeyError, TypeError):
        log.error(
            "audit log %s: its last line is not a chained record (cut short, or from before "
            "the chain); a new chain segment starts, recorded as such",
            path,
        )
        return ChainHead(), "the file's last line was not a readable chained record", cut_short
    return head, "", cut_short
