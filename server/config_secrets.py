"""Secret-valued config fields: written literally, or read from the environment or a file.

    admin:
      token: {from_env: SWITCHYARD_ADMIN_TOKEN_V2}
    control:
      password: {from_file: secrets/redis-password}   # relative to the config file's folder

A secret is a pydantic SecretStr once validated: reprs, dumps, `config check` and error
messages print `**********`; `.get_secret_value()` (or a section's accessor) gives the text.
The environment and base folder come from the validation context (`secret_context`); a field
validated without one reads os.environ and resolves relative files against the working folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr, ValidationInfo
from typing_extensions import TypedDict

SOURCES = ("from_env", "from_file")

# Every secret field by key path ("*" a list index), for the inline-secret warning of
# `config check`; tests check it against the schema's SecretText fields.
SECRET_KEY_PATHS: tuple[tuple[str, ...], ...] = (
    ("admin", "token"),
    ("control", "password"),
    ("features", "store", "password"),
)


def secret_context(base_dir: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The validation context that from_env / from_file values resolve in."""
    return {"base_dir": base_dir, "env": os.environ if env is None else env}


class FromEnv(TypedDict):
    """The secret is this environment variable's value."""

    from_env: Annotated[str, Field(description="The environment variable's name.")]


class FromFile(TypedDict):
    """The secret is this file's text (less a trailing newline), relative to the config's
    folder."""

    from_file: Annotated[
        str, Field(description="The file's path, relative to the config file's folder.")
    ]


def _resolve(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, Mapping):
        return value  # a literal: SecretStr's own (strict) validation takes it or refuses it
    keys = sorted(str(key) for key in value)
    if len(keys) != 1 or keys[0] not in SOURCES:
        raise ValueError(
            f"a secret is a string or a mapping with one key, from_env or from_file (got {keys})"
        )
    source, reference = keys[0], value[keys[0]]
    if not isinstance(reference, str) or not reference:
        raise ValueError(f"{source}: must be a non-empty string")
    context = info.context if isinstance(info.context, Mapping) else {}
    if source == "from_env":
        env: Mapping[str, str] = context.get("env", os.environ)
        text = env.get(reference)
        if text is None:
            raise ValueError(f"from_env: the environment variable {reference} is not set")
        if not text:
            raise ValueError(f"from_env: the environment variable {reference} is empty")
        return text
    path = Path(reference).expanduser()
    if not path.is_absolute():
        path = Path(context.get("base_dir", Path.cwd())) / path
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"from_file: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"from_file: {path} is not UTF-8 text") from None
    # Editors and `echo` end the file with a newline that is no part of the secret.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"from_file: {path} is empty")
    return text


SecretText = Annotated[
    SecretStr,
    BeforeValidator(_resolve, json_schema_input_type=str | FromEnv | FromFile),
]


def reveal(secret: SecretStr | None) -> str | None:
    """The text of an optional secret."""
    return None if secret is None else secret.get_secret_value()


def inline_secrets(raw: Any) -> list[str]:
    """The key paths of secrets written literally in a raw (YAML-read) config document."""
    found: list[str] = []

    def walk(node: Any, path: tuple[str, ...], done: tuple[str, ...]) -> None:
        if not path:
            if isinstance(node, str):
                found.append(".".join(done))
            return
        head, rest = path[0], path[1:]
        if head == "*":
            for index, item in enumerate(node if isinstance(node, list) else []):
                walk(item, rest, (*done, str(index)))
        elif isinstance(node, Mapping) and head in node:
            walk(node[head], rest, (*done, head))

    for key_path in SECRET_KEY_PATHS:
        walk(raw, key_path, ())
    return found
