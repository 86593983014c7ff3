"""This replica's copy of the audit entries it wrote: the log, and a JSONL file if set.

The shared trail, every replica's decisions once each, is the control store's
(GET /admin/v1/audit); this file keeps the ones this replica made, for its own logs. The
file is a hash chain of its own (server/control/audit_chain.py): it continues from the
file's last record at start, so `switchyard audit verify FILE` checks all of it. Each
record is appended as one whole line, in one write, flushed.
"""

from __future__ import annotations

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
        self._head = ChainHead()
        self._restart_reason = ""
        self._cut_short = False  # the file ends inside a line: end it before appending
        if path is not None:
            self._head, self._restart_reason, self._cut_short = _last_head(path)

    def write(self, entry: AuditEntry) -> None:
        changes = "; ".join(entry.changes) or "none"
        log.info(
            "routing change by %s from %s (%s%s): %s",
            entry.identity, entry.peer or entry.replica, entry.action,
            f", reason: {entry.reason}" if entry.reason else "", changes,
        )  # fmt: skip
        if self._path is None:
            return
        lines = ["\n"] if self._cut_short else []
        if self._restart_reason:
            # The file's chain cannot be continued: a new segment, saying why, from seq 1.
            marker = AuditEntry(
                "audit-log",
                f"audit chain restarted: {self._restart_reason}",
                (),
                entry.replica,
                role="gateway",
            )
            lines.append(self._sealed(marker))
        lines.append(self._sealed(entry))
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, "".join(lines).encode("utf-8"))  # one write: whole lines
            finally:
                os.close(fd)
        except OSError as exc:
            # The change is applied already; losing its line must be loud, not fatal.
            log.error("cannot append to audit log %s: %s", self._path, exc)
            return
        self._restart_reason, self._cut_short = "", False

    def _sealed(self, entry: AuditEntry) -> str:
        record = seal(entry.body(), self._head, self._key)
        self._head = ChainHead(record["seq"], record["hash"])
        return json.dumps(record, ensure_ascii=False) + "\n"


def _last_head(path: Path) -> tuple[ChainHead, str, bool]:
    """The chain head of the file's last record, why the chain must restart ("" if it need
    not: the file's last line unreadable as a chained record), and whether the file ends
    inside a line."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read()
    except FileNotFoundError:
        return ChainHead(), "", False
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
