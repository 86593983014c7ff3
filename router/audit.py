"""Human-readable differences between two routing tables, for the audit log."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from switchyard.router.config import endpoint_to_config
from switchyard.router.table import RoutingTable


def describe_changes(old: RoutingTable, new: RoutingTable) -> list[str]:
    """One line per change, `path: old -> new`, in path order; empty when nothing changed.

    Paths follow the config schema (`endpoints.recs.weights.canary: 5 -> 10`), so a line can
    be read against the config file; added and removed endpoints are one line each.
    """
    lines = []
    for name in sorted(old.endpoints.keys() | new.endpoints.keys()):
        path = f"endpoints.{name}"
        if name not in new.endpoints:
            lines.append(f"{path}: removed")
        elif name not in old.endpoints:
            lines.append(f"{path}: added")
        else:
            before = dict(_flatten(endpoint_to_config(old.endpoints[name]), path))
            after = dict(_flatten(endpoint_to_config(new.endpoints[name]), path))
            for key in sorted(before.keys() | after.keys()):
                was, now = before.get(key, _ABSENT), after.get(key, _ABSENT)
                if was != now:
                    lines.append(f"{key}: {_show(was)} -> {_show(now)}")
    return lines


_ABSENT = object()


def _flatten(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    # Mappings open into dotted paths; lists stay whole, as the config writes them.
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}")
    else:
        yield path, value


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return "null" if value is None else str(value)
