"""Reading JSON request bodies with errors a caller can act on (all REST routes)."""

from __future__ import annotations

from typing import Any

import orjson

from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument

REQUIRED = ...


def parse_object(body: bytes | memoryview) -> dict[str, Any]:
    """The body as a JSON object; InvalidArgument for anything else."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {client_text(exc)}") from None
    if not isinstance(document, dict):
        raise InvalidArgument("request body must be a JSON object")
    return document


def field(
    document: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    default: Any = REQUIRED,
) -> Any:
    """document[key] checked to be of `kind` (JSON true/false is never a number here)."""
    value = document.get(key, default)
    if value is REQUIRED:
        raise InvalidArgument(f"{where}: '{key}' is required")
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise InvalidArgument(f"{where}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
