"""`switchyard config check` warnings: an admin API reachable in clear, secrets in the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchyard.server.config import parse_config
from switchyard.server.config_warnings import config_notes, config_warnings
from tests.server.test_config_cli import switchyard

TOKEN = "inline-admin-token-3c9e1f"
MODEL = {"name": "m", "versions": [{"version": "1", "path": "m.onnx"}]}
LOCAL = {"admin": {"token": {"from_env": "T"}}}
ADMIN_IN_CLEAR = (
    "the admin API on 0.0.0.0:8000 (and model load/unload on gRPC 8001) without TLS: tokens "
    "travel in clear; set server.tls or bind to 127.0.0.1"
)
TOKEN_INLINE = "admin.token is written in the file: read it with {from_env: NAME} or " + (
    "{from_file: PATH} instead"
)


def warnings_of(raw: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    config = parse_config({"models": [MODEL], **raw}, Path("/tmp"), "test", env=env or {})
    return config_warnings(config, raw)


@pytest.mark.parametrize(
    ("raw", "env", "expected"),
    [
        ({"admin": {"token": TOKEN}}, None, [ADMIN_IN_CLEAR, TOKEN_INLINE]),
        ({"admin": {"token": {"from_env": "T"}}}, {"T": TOKEN}, [ADMIN_IN_CLEAR]),
        # The environment's token enables the admin API as well; it is not in the file.
        ({}, {"SWITCHYARD_ADMIN_TOKEN": TOKEN}, [ADMIN_IN_CLEAR]),
        # On loopback, in clear is fine.
        ({"server": {"host": "127.0.0.1"}, **LOCAL}, {"T": TOKEN}, []),
        ({"server": {"host": "::1"}, **LOCAL}, {"T": TOKEN}, []),
        ({"server": {"host": "localhost"}, **LOCAL}, {"T": TOKEN}, []),
        # No admin API, nothing to warn about.
        ({}, None, []),
        (
            {"control": {"store": "redis", "url": "redis://:hunter2@10.0.0.5:6379/0"}},
            None,
            [
                "control.url holds a password: set control.password with {from_env: NAME} or "
                "{from_file: PATH} instead"
            ],
        ),
        (
            {"control": {"store": "redis", "password": "hunter2"}},
            None,
            [
                "control.password is written in the file: read it with {from_env: NAME} or "
                "{from_file: PATH} instead"
            ],
        ),
        ({"control": {"store": "redis", "password": {"from_env": "P"}}}, {"P": "x"}, []),
    ],
)  # fmt: skip
def test_warnings(raw: dict[str, Any], env: dict[str, str] | None, expected: list[str]) -> None:
    assert warnings_of(raw, env) == expected


def test_a_feature_store_password_in_its_url_is_warned_about() -> None:
    store = {"kind": "redis", "url": "rediss://user:pw@redis.internal:6380/0"}
    raw = {"features": {"store": store}}
    assert warnings_of(raw) == [
        "features.store.url holds a password: set features.store.password with "
        "{from_env: NAME} or {from_file: PATH} instead"
    ]


def test_metrics_on_the_network_are_a_note_unless_on_loopback() -> None:
    open_config = parse_config({"models": [MODEL]}, Path("/tmp"), "test", env={})
    assert config_notes(open_config) == [
        "the metrics on 0.0.0.0:8002 are served in clear to the network; set "
        "server.metrics_host: 127.0.0.1 if only local scrapers read them"
    ]
    local = {"models": [MODEL], "server": {"metrics_host": "127.0.0.1"}}
    assert config_notes(parse_config(local, Path("/tmp"), "test", env={})) == []


def test_check_prints_warnings_exits_0_and_never_the_secret(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    path = tmp_path / "config.yaml"
    path.write_text(
        "models:\n"
        "  - {name: m, versions: [{version: '1', path: m.onnx}]}\n"
        f"admin: {{token: {TOKEN}}}\n"
        "control: {store: redis, password: hunter2-secret}\n"
    )
    result = switchyard("check", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {ADMIN_IN_CLEAR}",
        f"warning: {TOKEN_INLINE}",
        "warning: control.password is written in the file: read it with {from_env: NAME} or "
        "{from_file: PATH} instead",
    ]
    assert TOKEN not in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr
