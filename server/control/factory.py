"""The control store the config asks for."""

from __future__ import annotations

from switchyard.server.config_sections import ControlSettings
from switchyard.server.control.memory_store import MemoryControlStore
from switchyard.server.control.redis_store import RedisControlStore
from switchyard.server.control.store import ControlStore


def create_control_store(settings: ControlSettings) -> ControlStore:
    if settings.store == "redis":
        url, options = settings.connection()
        return RedisControlStore(url, settings.prefix, settings.timeout_s, options)
    return MemoryControlStore()
