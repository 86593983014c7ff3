"""Secret fields: from_env / from_file, never printed, and every one known to config check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchyard.server.config import ConfigError, parse_config
from switchyard.server.config_cli import config_json_schema
from switchyard.server.config_secrets import SECRET_KEY_PATHS

MODEL = {"name": "m", "versions": [{"version": "1", "path": "m.onnx"}]}
TOKEN = "admin-token-from-a-file-77"


def secret_paths(schema: dict[str, Any]) -> set[tuple[str, ...]]:
    """Key paths of every property that accepts {from_env: ...} ("*": a list item)."""
    defs = schema["$defs"]
    found: set[tuple[str, ...]] = set()

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        if node.get("title") == "FromEnv":
            found.add(path)
            return
        for choice in node.get("anyOf", []) + node.get("oneOf", []):
            walk(choice, path)
        if "items" in node:
            walk(node["items"], (*path, "*"))
        for name, child in node.get("properties", {}).items():
            walk(child, (*path, name))

    walk(schema, ())
    return found


def test_every_secret_field_is_known_to_the_inline_warning() -> None:
    assert secret_paths(config_json_schema()) == set(SECRET_KEY_PATHS)


def test_a_token_from_a_file_is_stripped_and_never_printed(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin").write_text(TOKEN + "\n")
    raw = {"models": [MODEL], "admin": {"token": {"from_file": "secrets/admin"}}}
    config = parse_config(raw, tmp_path, "test", env={})
    assert config.admin.token_value == TOKEN
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())
    assert TOKEN not in config.model_dump_json()


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ({"from_env": "NOPE"}, "admin.token: from_env: the environment variable NOPE is not set"),
        ({"from_file": "/nonexistent/t"}, "admin.token: from_file: cannot read /nonexistent/t: "
         "No such file or directory"),
        ({"from_env": "A", "from_file": "b"}, "admin.token: a secret is a string or a mapping "
         "with one key, from_env or from_file (got ['from_env', 'from_file'])"),
        ({"from_env": "SHORT"}, "admin.token: the admin token must be 16 "
         "characters at least"),
    ],
)  # fmt: skip
def test_unresolvable_secrets_are_config_errors_naming_the_key(
    token: dict[str, str], expected: str, tmp_path: Path
) -> None:
    raw = {"models": [MODEL], "admin": {"token": token}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, tmp_path, "test", env={"SHORT": "12345"})
    assert caught.value.errors == (expected,)
    assert "12345" not in str(caught.value)


def test_the_password_replaces_the_urls_and_keeps_its_user() -> None:
    raw = {
        "models": [MODEL],
        "control": {"url": "redis://bob:old@h:6379/2", "password": {"from_env": "P"}},
    }
    config = parse_config(raw, Path("/tmp"), "test", env={"P": "n3w"})
    url, options = config.control.connection()
    assert (url, options) == ("redis://bob@h:6379/2", {"password": "n3w"})
