"""What `switchyard config check` warns about in a valid config: settings that work but
expose secrets (an admin API reachable in clear, secrets written in the file)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from switchyard.server.config import SwitchyardConfig
from switchyard.server.config_secrets import inline_secrets

# Redis URLs of the file, by key path, that may carry a password.
REDIS_URL_KEYS: tuple[tuple[str, ...], ...] = (("control", "url"), ("features", "store", "url"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _at(raw: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(raw, Mapping):
            return None
        raw = raw.get(key)
    return raw


def config_warnings(config: SwitchyardConfig, raw: Any) -> list[str]:
    """Warnings about `config`, validated from the raw document `raw` (the file as read,
    before the environment's overrides: what the environment sets is not in the file)."""
    warnings: list[str] = []
    server = config.server
    admin_on = config.admin.token is not None or config.admin.tokens_file is not None
    if admin_on and server.tls is None and not is_loopback(server.host):
        warnings.append(
            f"the admin API on {server.host}:{server.http_port} (and model load/unload on "
            f"gRPC {server.grpc_port}) without TLS: tokens travel in clear; set server.tls "
            "or bind to 127.0.0.1"
        )
    for key in inline_secrets(raw):
        warnings.append(
            f"{key} is written in the file: read it with {{from_env: NAME}} or "
            "{from_file: PATH} instead"
        )
    for path in REDIS_URL_KEYS:
        url = _at(raw, path)
        if isinstance(url, str) and urlsplit(url).password:
            section = ".".join(path[:-1])
            warnings.append(
                f"{'.'.join(path)} holds a password: set {section}.password with "
                "{from_env: NAME} or {from_file: PATH} instead"
            )
    return warnings


def config_notes(config: SwitchyardConfig) -> list[str]:
    """Lesser remarks: exposures that are often intended (metrics scraped over the network)."""
    server = config.server
    metrics_host = server.metrics_host or server.host
    if getattr(server, "tls", None) is None and not is_loopback(metrics_host):
        return [
            f"the metrics on {metrics_host}:{server.metrics_port} are served in clear to the "
            "network; set server.metrics_host: 127.0.0.1 if only local scrapers read them"
        ]
    return []
