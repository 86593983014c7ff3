"""Stable hashing of routing keys to points in [0, 1).

Sticky assignment must agree across processes, hosts and restarts, so it cannot use Python's
hash() (salted per process). BLAKE2b is in the standard library, fast on short inputs and the
same everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# Versions the scheme: changing it reassigns every key of every endpoint.
_PERSON = b"swy-route-v1"
# A double holds every multiple of 2**-53 in [0, 1) exactly, so the point is exact everywhere.
_BITS = 53


def key_point(*parts: str) -> float:
    """A uniform, deterministic point in [0, 1) for the sequence of strings `parts`."""
    return _point(_hasher(parts))


def key_points(prefix: Iterable[str], last_parts: Iterable[str]) -> list[float]:
    """`key_point(*prefix, last)` for each of `last_parts`, hashing the prefix only once."""
    shared = _hasher(prefix)
    points = []
    for last in last_parts:
        digest = shared.copy()
        _update(digest, last)
        points.append(_point(digest))
    return points


def _hasher(parts: Iterable[str]) -> hashlib.blake2b:
    digest = hashlib.blake2b(digest_size=8, person=_PERSON)
    for part in parts:
        _update(digest, part)
    return digest


def _update(digest: hashlib.blake2b, part: str) -> None:
    data = part.encode()
    # Length-prefixed, so ("ab", "c") and ("a", "bc") hash apart.
    digest.update(len(data).to_bytes(4, "big") + data)


def _point(digest: hashlib.blake2b) -> float:
    return (int.from_bytes(digest.digest(), "big") >> (64 - _BITS)) / (1 << _BITS)
