"""The control store the config asks for."""

from __future__ import annotations

from switchyard.server.config_sections import ControlSettings
from switchyard.server.control.memory_store import MemoryControlStore
from switchyard.server.control.redis_store import RedisControlStore
from switchyard.server.control.store import ControlStore


def create_control_store(settings: ControlSettings, audit_key: bytes | None = None) -> ControlStore:
    """`audit_key`: the HMAC key of the audit chain (audit_chain.load_key), None for sha256."""
    if settings.store == "redis":
        url, options = settings.connection()
        return RedisControlStore(
            url,
            settings.prefix,
            settings.timeout_s,
            connection_options=options,
            audit_key=audit_key,
            audit_max_records=settings.audit_max_records,
        )
    return MemoryControlStore(audit_key=audit_key, audit_max_records=settings.audit_max_records)
