"""Who may do what on the admin and model repository APIs.

Identities, from three sources (any mix; none configured: the admin API is off):
  - the tokens file (`admin.tokens_file`): YAML, a list of
    `{name, role, token_sha256: "sha256:<64 hex>"}`; `switchyard admin hash-token` writes the
    digest. Re-read when it changes, so a removed token stops working without a restart. A
    file that turns unreadable or invalid is logged and trusted for nothing (fail closed).
  - the single legacy token (`admin.token` / SWITCHYARD_ADMIN_TOKEN): identity "admin",
    role admin. Only its digest is kept here.
  - client certificate subjects (`admin.certificate_identities`), matched exactly against
    the subject of a verified client certificate (mTLS).

A presented bearer token must be valid: a wrong token is refused even with a good
certificate (a client that sends a token means that token). The token's SHA-256 is looked up
among the digests: what a lookup's timing could tell is about a digest nobody can steer.

Failed authentications (a wrong token, an unknown certificate; not a call without any
credentials) are rate limited per peer address (a token bucket of failures): past
the limit every attempt from that address, a correct token too, is refused with
RESOURCE_EXHAUSTED / 429 and Retry-After, unchecked, until the bucket refills. The buckets are
per process: N replicas (or workers) allow N times the rate.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, TypeAdapter, ValidationError

from switchyard.runtimes.errors import AuthThrottled, PermissionDenied, Unauthenticated
from switchyard.server.caller import Actor, Caller
from switchyard.server.config_base import StrictModel
from switchyard.server.config_yaml import load_yaml

log = logging.getLogger(__name__)

ACTOR_HEADER = "x-switchyard-actor"  # optional "on behalf of" text: `identity (for <text>)`
MAX_ON_BEHALF_CHARS = 100
DIGEST_PREFIX = "sha256:"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
LEGACY_IDENTITY = "admin"
# Peers whose failures are remembered at once; past it the longest-untouched is forgotten.
MAX_TRACKED_PEERS = 10_000
SECONDS_PER_MINUTE = 60.0
MIN_TOKEN_CHARS = 16  # as admin.token: short tokens are guessable

RoleName = Literal["viewer", "operator", "admin"]


class Role(IntEnum):
    """Ordered: each role may do all that the roles below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


# The one table of who may do what: route -> the least role it needs. `*` is one path
# segment. The repository index (POST /v2/repository/index) is open, as Triton's, and is
# not listed; gRPC's RepositoryModelLoad / Unload answer as the REST routes below.
ROUTE_ROLES: tuple[tuple[str, str, Role], ...] = (
    ("GET", "/admin/v1/endpoints", Role.VIEWER),
    ("GET", "/admin/v1/audit", Role.VIEWER),
    ("GET", "/admin/v1/lease", Role.VIEWER),
    ("PUT", "/admin/v1/endpoints/*/weights", Role.OPERATOR),
    ("DELETE", "/admin/v1/endpoints/*/override", Role.OPERATOR),
    ("POST", "/admin/v1/endpoints/*/rollout/*", Role.OPERATOR),  # start | abort | promote
    ("POST", "/v2/repository/models/*/load", Role.ADMIN),
    ("POST", "/v2/repository/models/*/unload", Role.ADMIN),
)
# A route not in the table (a typo, a wrong method) needs any identity; its handler then
# answers 404 / 405. Routes added later that change config belong in the table as ADMIN.
UNLISTED_ROUTE_ROLE = Role.VIEWER


def required_role(method: str, path: str) -> Role:
    """The least role that may call `method path`."""
    segments = path.strip("/").split("/")
    for rule_method, pattern, role in ROUTE_ROLES:
        rule = pattern.strip("/").split("/")
        if (
            rule_method == method
            and len(rule) == len(segments)
            and all(r in ("*", s) for r, s in zip(rule, segments, strict=True))
        ):
            return role
    return UNLISTED_ROUTE_ROLE


class MissingCredentials(Unauthenticated):
    """No token and no client certificate at all."""


class TokenEntry(StrictModel):
    """One identity of the tokens file."""

    name: str = Field(min_length=1, max_length=100, description="The identity, as audited.")
    role: RoleName = Field(description="viewer, operator or admin.")
    token_sha256: str = Field(
        pattern=DIGEST_PATTERN,
        description="`sha256:` and the token's SHA-256 in hex (`switchyard admin hash-token`).",
    )


class CertificateIdentity(StrictModel):
    """A client certificate subject and the identity it is."""

    subject: str = Field(
        min_length=1,
        description='The RFC 4514 subject, matched exactly (for example "CN=alice,O=ops").',
    )
    name: str | None = Field(
        default=None, max_length=100, description="The identity as audited; default: subject."
    )
    role: RoleName = Field(description="viewer, operator or admin.")


_TOKEN_FILE = TypeAdapter(list[TokenEntry])


def token_digest(token: str) -> str:
    """`sha256:<hex>` of a token, as the tokens file holds it."""
    return DIGEST_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_token_file(path: Path) -> dict[str, tuple[str, Role]]:
    """digest -> (identity, role); ValueError with a message naming the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"tokens file {path} cannot be read: {exc.strerror}") from None
    try:
        raw = load_yaml(text, str(path))
    except Exception as exc:  # the YAML loader's own error, message written for users
        raise ValueError(f"tokens file {path}: {exc}") from None
    try:
        entries = _TOKEN_FILE.validate_python(raw if raw is not None else [])
    except ValidationError as exc:
        problems = "; ".join(
            f"[{'.'.join(str(p) for p in e['loc'])}] {e['msg']}" for e in exc.errors()
        )
        raise ValueError(
            f"tokens file {path} must be a list of {{name, role, token_sha256}}: {problems}"
        ) from None
    digests: dict[str, tuple[str, Role]] = {}
    for entry in entries:
        if entry.token_sha256 in digests:
            raise ValueError(
                f"tokens file {path}: '{entry.name}' has the same token as "
                f"'{digests[entry.token_sha256][0]}'; give each identity its own token"
            )
        digests[entry.token_sha256] = (entry.name, Role[entry.role.upper()])
    return digests


class FailureThrottle:
    """Per peer host, a token bucket of failed authentications: `burst` failures at once,
    refilled at `per_minute`. Bounded: at most MAX_TRACKED_PEERS hosts remembered."""

    def __init__(
        self,
        burst: int,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        max_peers: int = MAX_TRACKED_PEERS,
    ) -> None:
        self._burst = float(burst)
        self._refill_per_s = per_minute / SECONDS_PER_MINUTE
        self._clock = clock
        self._max_peers = max_peers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # level, at_s

    def _level(self, host: str) -> float:
        entry = self._buckets.get(host)
        if entry is None:
            return self._burst
        level, at_s = entry
        refilled = min(self._burst, level + (self._clock() - at_s) * self._refill_per_s)
        if refilled >= self._burst:
            del self._buckets[host]  # full again: nothing to remember
        return refilled

    def retry_after_s(self, host: str) -> int | None:
        """None while `host` may try; else whole seconds until its next try."""
        level = self._level(host)
        if level >= 1.0:
            return None
        return max(1, math.ceil((1.0 - level) / self._refill_per_s))

    def failed(self, host: str) -> bool:
        """Count one failure; True when it used the host's last try."""
        level = max(0.0, self._level(host) - 1.0)
        self._buckets[host] = (level, self._clock())
        self._buckets.move_to_end(host)
        while len(self._buckets) > self._max_peers:
            self._buckets.popitem(last=False)
        return level < 1.0

    @property
    def tracked_peers(self) -> int:
        return len(self._buckets)


class _TokenFile:
    """The tokens file's digests, re-read when its mtime, size or inode changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._digests: dict[str, tuple[str, Role]] = read_token_file(path)  # start: fail fast
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def digests(self) -> Mapping[str, tuple[str, Role]]:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._digests = read_token_file(self._path)
                log.info("tokens file %s re-read: %d identities", self._path, len(self._digests))
            except ValueError as exc:
                self._digests = {}  # fail closed: a revocation must not be undone by a typo
                log.error("%s; its tokens are refused until it is fixed", exc)
        return self._digests


@dataclass(frozen=True, slots=True)
class AccessSettings:
    """What AccessControl needs of the admin settings (server/config_sections.py)."""

    token: str | None = None
    tokens_file: Path | None = None
    certificate_identities: tuple[CertificateIdentity, ...] = ()
    auth_failure_burst: int = 10
    auth_failures_per_minute: float = 10.0


DeniedCounter = Callable[[str, str], None]  # (api, reason)


class AccessControl:
    """Turns a Caller into an Actor allowed `needs`, or refuses it (and counts why)."""

    def __init__(
        self,
        settings: AccessSettings,
        count_denied: DeniedCounter = lambda api, reason: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._legacy = token_digest(settings.token) if settings.token is not None else None
        self._file = _TokenFile(settings.tokens_file) if settings.tokens_file else None
        self._certificates = {
            c.subject: (c.name or c.subject, Role[c.role.upper()])
            for c in settings.certificate_identities
        }
        self._throttle = FailureThrottle(
            settings.auth_failure_burst, settings.auth_failures_per_minute, clock
        )
        self._count_denied = count_denied

    @property
    def enabled(self) -> bool:
        """Whether any identity source is configured (else the admin API is off)."""
        return self._legacy is not None or self._file is not None or bool(self._certificates)

    def authorize(self, caller: Caller, api: str, needs: Role) -> Actor:
        """The caller as an Actor with a role of at least `needs`. Raises Unauthenticated
        (401: no or unknown credentials), PermissionDenied (403: role too low) or
        AuthThrottled (429: too many failures from this address)."""
        host = peer_host(caller.peer)
        retry_after_s = self._throttle.retry_after_s(host)
        if retry_after_s is not None:
            self._deny(caller, api, "throttled", log_it=False)
            raise AuthThrottled(
                f"too many failed authentications from {host}; retry in {retry_after_s} s",
                retry_after_s,
            )
        try:
            identity, role = self._identify(caller)
        except MissingCredentials:
            self._deny(caller, api, "missing")  # no guess at all: not throttled
            raise
        except Unauthenticated:
            self._deny(caller, api, "invalid")
            if self._throttle.failed(host):
                log.info("authentication from %s throttled after repeated failures", host)
            raise
        if role < needs:
            self._deny(caller, api, "forbidden")
            raise PermissionDenied(
                f"'{identity}' has the role {role.label}; this call needs {needs.label} or above"
            )
        on_behalf = caller.headers.get(ACTOR_HEADER, "")[:MAX_ON_BEHALF_CHARS]
        name = f"{identity} (for {on_behalf})" if on_behalf else identity
        return Actor(name, role.label, caller.peer, caller.reason())

    def _identify(self, caller: Caller) -> tuple[str, Role]:
        authorization = caller.headers.get("authorization")
        if authorization is not None:
            scheme, _, given = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                raise Unauthenticated(
                    "the Authorization header must be 'Bearer <token>' (the token is not valid)"
                )
            digest = token_digest(given.strip())
            if self._legacy is not None and digest == self._legacy:
                return LEGACY_IDENTITY, Role.ADMIN
            found = self._file.digests().get(digest) if self._file is not None else None
            if found is None:
                raise Unauthenticated("the bearer token is not valid (no identity has it)")
            return found
        if caller.cert_subject is not None:
            known = self._certificates.get(caller.cert_subject)
            if known is None:
                raise Unauthenticated(
                    f"the client certificate subject '{caller.cert_subject[:200]}' is not a "
                    "known identity (admin.certificate_identities)"
                )
            return known
        raise MissingCredentials(
            "this call needs 'Authorization: Bearer <token>' or a client certificate of a "
            "known identity"
        )

    def _deny(self, caller: Caller, api: str, reason: str, log_it: bool = True) -> None:
        self._count_denied(api, reason)
        if log_it:  # never the token nor its digest
            log.info("%s API call from %s denied: %s", api, caller.peer, reason)


def peer_host(peer: str) -> str:
    """The address part of "ip:port" / "[v6]:port" (the throttle is per address)."""
    if peer.startswith("["):
        return peer[1 : peer.find("]")] if "]" in peer else peer
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else peer


def add_admin_subcommand(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = commands.add_parser("admin", help="admin API identities")
    actions = admin.add_subparsers(dest="admin_command", required=True)
    hash_token = actions.add_parser(
        "hash-token",
        help="read a token on stdin, print its tokens-file digest (sha256:<hex>)",
    )
    hash_token.set_defaults(handler=lambda args: hash_token_command(sys.stdin))


def hash_token_command(stdin: Iterable[str]) -> int:
    """`switchyard admin hash-token`: the token from stdin (first line), its digest line out."""
    token = next(iter(stdin), "").strip()
    if len(token) < MIN_TOKEN_CHARS:
        print(
            f"switchyard: give a token of {MIN_TOKEN_CHARS} characters or more on stdin "
            "(for example: openssl rand -hex 32 | tee token.txt | switchyard admin hash-token)",
            file=sys.stderr,
        )
        return 2
    print(token_digest(token))
    return 0
