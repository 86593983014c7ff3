"""server/access.py as pure logic: the route table, token digests and the tokens file, roles,
certificate identities and the throttle of failed authentications (a hand-driven clock)."""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import pytest

from switchyard.runtimes.errors import AuthThrottled, PermissionDenied, Unauthenticated
from switchyard.server.access import (
    AccessControl,
    AccessSettings,
    CertificateIdentity,
    FailureThrottle,
    MissingCredentials,
    Role,
    hash_token_command,
    peer_host,
    read_token_file,
    required_role,
    token_digest,
)
from switchyard.server.caller import Caller
from switchyard.server.config import ConfigError, parse_config

LEGACY = "legacy-admin-token-0123"
TOKENS = {"viewer": "viewer-token-0123456", "operator": "operator-token-012345"}


def token_file(path: Path, tokens: dict[str, str]) -> Path:
    lines = [
        f"- {{name: {role}-bot, role: {role}, token_sha256: '{token_digest(token)}'}}"
        for role, token in tokens.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def caller(
    token: str | None = None, cert: str | None = None, peer: str = "10.0.0.1:5000", **headers: str
) -> Caller:
    sent = dict(headers)
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    return Caller(peer, sent, cert)


@pytest.fixture
def denied() -> Counter[tuple[str, str]]:
    return Counter()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def access(tmp_path: Path, denied: Counter[tuple[str, str]], clock: Clock) -> AccessControl:
    settings = AccessSettings(
        token=LEGACY,
        tokens_file=token_file(tmp_path / "tokens.yaml", TOKENS),
        certificate_identities=(
            CertificateIdentity(subject="CN=alice,O=ops", name="alice", role="operator"),
            CertificateIdentity(subject="CN=bob,O=ops", role="viewer"),
        ),
        auth_failure_burst=3,
        auth_failures_per_minute=6,  # one try back every 10 s
    )
    return AccessControl(settings, lambda api, reason: denied.update([(api, reason)]), clock)


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/admin/v1/endpoints", Role.VIEWER),
        ("GET", "/admin/v1/audit", Role.VIEWER),
        ("GET", "/admin/v1/lease", Role.VIEWER),
        ("PUT", "/admin/v1/endpoints/recs/weights", Role.OPERATOR),
        ("DELETE", "/admin/v1/endpoints/recs/override", Role.OPERATOR),
        ("POST", "/admin/v1/endpoints/recs/rollout/start", Role.OPERATOR),
        ("POST", "/admin/v1/endpoints/recs/rollout/promote", Role.OPERATOR),
        ("POST", "/v2/repository/models/ranker/load", Role.ADMIN),
        ("POST", "/v2/repository/models/ranker/unload", Role.ADMIN),
        ("GET", "/admin/v1/endpoints/recs/weights", Role.VIEWER),  # wrong method: 405 later
        ("GET", "/admin/v1/nothing", Role.VIEWER),  # unknown route: 404 later
    ],
)
def test_each_route_needs_its_role(method: str, path: str, role: Role) -> None:
    assert required_role(method, path) is role


def test_roles_are_ordered() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN


@pytest.mark.parametrize(
    ("sent", "identity", "role"),
    [
        ({"token": LEGACY}, "admin", "admin"),
        ({"token": TOKENS["viewer"]}, "viewer-bot", "viewer"),
        ({"token": TOKENS["operator"]}, "operator-bot", "operator"),
        ({"cert": "CN=alice,O=ops"}, "alice", "operator"),
        ({"cert": "CN=bob,O=ops"}, "CN=bob,O=ops", "viewer"),  # no name: the subject
    ],
)
def test_identities_come_from_tokens_and_certificates(
    access: AccessControl, sent: dict[str, str], identity: str, role: str
) -> None:
    actor = access.authorize(caller(**sent, **{"x-switchyard-reason": "why"}), "admin", Role.VIEWER)
    assert (actor.identity, actor.role, actor.peer, actor.reason) == (
        identity,
        role,
        "10.0.0.1:5000",
        "why",
    )


def test_the_actor_header_is_only_on_behalf_of(access: AccessControl) -> None:
    sent = caller(TOKENS["operator"], **{"x-switchyard-actor": "carol"})
    assert access.authorize(sent, "admin", Role.OPERATOR).identity == "operator-bot (for carol)"


def test_a_role_too_low_is_forbidden_and_named(
    access: AccessControl, denied: Counter[tuple[str, str]]
) -> None:
    with pytest.raises(
        PermissionDenied, match="'viewer-bot' has the role viewer; this call needs operator"
    ):
        access.authorize(caller(TOKENS["viewer"]), "admin", Role.OPERATOR)
    with pytest.raises(
        PermissionDenied, match="'operator-bot' has the role operator; this call needs admin"
    ):
        access.authorize(caller(TOKENS["operator"]), "repository", Role.ADMIN)
    with pytest.raises(PermissionDenied, match="'alice' has the role operator"):
        access.authorize(caller(cert="CN=alice,O=ops"), "repository", Role.ADMIN)
    assert denied == {("admin", "forbidden"): 1, ("repository", "forbidden"): 2}


def test_missing_and_unknown_credentials_are_unauthenticated(
    access: AccessControl, denied: Counter[tuple[str, str]]
) -> None:
    with pytest.raises(
        MissingCredentials, match="needs 'Authorization: Bearer <token>' or a client certificate"
    ):
        access.authorize(caller(), "admin", Role.VIEWER)
    with pytest.raises(Unauthenticated, match="bearer token is not valid"):
        access.authorize(caller("guessed-token-000000"), "admin", Role.VIEWER)
    with pytest.raises(Unauthenticated, match="must be 'Bearer <token>'"):
        access.authorize(Caller("10.0.0.2:1", {"authorization": "Basic abc"}), "admin", Role.VIEWER)
    with pytest.raises(Unauthenticated, match="'CN=mallory' is not a known identity"):
        access.authorize(caller(cert="CN=mallory", peer="10.0.0.3:1"), "admin", Role.VIEWER)
    assert denied == {("admin", "missing"): 1, ("admin", "invalid"): 3}


def test_a_wrong_token_is_refused_even_with_a_good_certificate(access: AccessControl) -> None:
    with pytest.raises(Unauthenticated, match="not valid"):
        access.authorize(
            caller("guessed-token-000000", cert="CN=alice,O=ops"), "admin", Role.VIEWER
        )
    # A good token with a certificate: the token decides.
    actor = access.authorize(caller(TOKENS["viewer"], cert="CN=alice,O=ops"), "admin", Role.VIEWER)
    assert actor.identity == "viewer-bot"


def test_without_identity_sources_access_is_off(tmp_path: Path) -> None:
    assert not AccessControl(AccessSettings()).enabled
    assert AccessControl(AccessSettings(token=LEGACY)).enabled
    assert AccessControl(AccessSettings(tokens_file=token_file(tmp_path / "t.yaml", {}))).enabled


def test_a_changed_tokens_file_is_re_read(access: AccessControl, tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    access.authorize(caller(TOKENS["viewer"]), "admin", Role.VIEWER)

    def rewrite(text: str, bump_s: int) -> None:
        path.write_text(text)
        stat = path.stat()  # a later mtime, even within the file system's clock grain
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_s * 10**9))

    # The viewer token revoked: refused at once, without a restart; the operator stays.
    digest = token_digest(TOKENS["operator"])
    rewrite(f"- {{name: operator-bot, role: operator, token_sha256: '{digest}'}}\n", 1)
    with pytest.raises(Unauthenticated):
        access.authorize(caller(TOKENS["viewer"], peer="10.0.1.1:1"), "admin", Role.VIEWER)
    access.authorize(caller(TOKENS["operator"]), "admin", Role.OPERATOR)
    # A broken file trusts nobody (a typo must not undo a revocation); the legacy token works.
    rewrite("- {name: x, role: root, token_sha256: nope}\n", 2)
    with pytest.raises(Unauthenticated):
        access.authorize(caller(TOKENS["operator"], peer="10.0.1.2:1"), "admin", Role.VIEWER)
    assert access.authorize(caller(LEGACY), "admin", Role.ADMIN).identity == "admin"
    # Fixed again: back in force.
    rewrite(path.read_text().replace("root", "viewer").replace("nope", token_digest("t" * 16)), 3)
    assert access.authorize(caller("t" * 16), "admin", Role.VIEWER).identity == "x"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{name: a}", "must be a list of {name, role, token_sha256}"),
        ("- {name: a, role: root, token_sha256: 'sha256:" + "0" * 64 + "'}", "role"),
        ("- {name: a, role: admin, token_sha256: 'plain-token'}", "token_sha256"),
        ("- {name: a, role: admin, token_sha256: 'sha256:00'}", "token_sha256"),
        (
            "- {name: a, role: admin, token_sha256: 'sha256:" + "0" * 64 + "'}\n"
            "- {name: b, role: viewer, token_sha256: 'sha256:" + "0" * 64 + "'}",
            "'b' has the same token as 'a'",
        ),
        ("- [unclosed", "tokens file"),
    ],
)
def test_a_bad_tokens_file_names_its_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="tokens file") as refused:
        read_token_file(path)
    assert problem in str(refused.value)


def test_a_bad_tokens_file_stops_the_config(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text("- {name: a, role: root}\n")
    raw = {"model_repository": {"path": str(tmp_path)}, "admin": {"tokens_file": "tokens.yaml"}}
    with pytest.raises(ConfigError, match=r"admin: tokens file .*tokens.yaml must be a list"):
        parse_config(raw, tmp_path, "test")


def test_repeated_failures_throttle_every_attempt_until_refilled(
    access: AccessControl, denied: Counter[tuple[str, str]], clock: Clock
) -> None:
    for _ in range(5):  # no credentials at all is no guess: not throttled
        with pytest.raises(MissingCredentials):
            access.authorize(caller(), "admin", Role.VIEWER)
    denied.clear()
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            access.authorize(caller("guessed-token-000000"), "admin", Role.VIEWER)
    for token in ("guessed-token-000000", LEGACY, LEGACY):  # a correct token is not checked
        with pytest.raises(
            AuthThrottled, match="too many failed authentications from 10.0.0.1"
        ) as throttled:
            access.authorize(caller(token), "admin", Role.VIEWER)
        assert throttled.value.retry_after_s == 10
    # Another address is not affected.
    access.authorize(caller(LEGACY, peer="10.0.0.9:5000"), "admin", Role.VIEWER)
    assert denied == {("admin", "invalid"): 3, ("admin", "throttled"): 3}
    clock.now_s += 5
    with pytest.raises(AuthThrottled) as throttled:
        access.authorize(caller(LEGACY, peer="10.0.0.1:6000"), "admin", Role.VIEWER)
    assert throttled.value.retry_after_s == 5
    clock.now_s += 5  # one try back: throttled attempts took none
    assert access.authorize(caller(LEGACY), "admin", Role.VIEWER).identity == "admin"


def test_the_throttle_remembers_a_bounded_number_of_peers() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=1, per_minute=1, clock=clock, max_peers=3)
    for host in ("a", "b", "c", "d"):
        assert throttle.failed(host)
    assert throttle.tracked_peers == 3
    assert throttle.retry_after_s("a") is None  # the oldest forgotten
    assert throttle.retry_after_s("d") == 60
    clock.now_s += 60
    assert throttle.retry_after_s("d") is None
    assert throttle.tracked_peers == 2  # a full bucket is forgotten too


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("127.0.0.1:5000", "127.0.0.1"),
        ("[::1]:5000", "::1"),
        ("unknown", "unknown"),
        ("::1", "::1"),
    ],
)
def test_the_throttle_is_per_address(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_hash_token_prints_the_digest_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert hash_token_command(io.StringIO("a-long-enough-token\n")) == 0
    out = capsys.readouterr().out.strip()
    assert out == token_digest("a-long-enough-token") and out.startswith("sha256:")
    assert len(out) == len("sha256:") + 64
    assert hash_token_command(io.StringIO("short\n")) == 2
    assert "16 characters or more" in capsys.readouterr().err
