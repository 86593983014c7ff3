"""The small sections of the config file: `server`, `routing`, `control`, `ray`, `admin`,
`recommend` and `model_repository`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from switchyard.server.access import AccessSettings, CertificateIdentity, read_token_file
from switchyard.server.config_base import FilePath, StrictModel
from switchyard.server.config_secrets import SecretText, reveal
from switchyard.server.tls import TlsSettings

Port = Annotated[int, Field(ge=0, le=65535)]


def resolve_path(text: str, base_dir: Path) -> str:
    """A FilePath as written (`~` expanded), made absolute against base_dir when relative."""
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def _worker_count_or_auto(value: Any) -> Any:
    # One message instead of one per member of the union (int, "auto").
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError("must be an integer >= 1 or auto")


Workers = Annotated[
    Annotated[int, Field(ge=1)] | Literal["auto"], BeforeValidator(_worker_count_or_auto)
]


class ServerSettings(StrictModel):
    """The listening sockets and process settings; SWITCHYARD_<KEY> variables override them."""

    host: str = Field(default="0.0.0.0", description="Address every port listens on.")
    http_port: Port = Field(default=8000, description="Port of the REST API (and admin API).")
    grpc_port: Port = Field(default=8001, description="Port of the gRPC API.")
    metrics_port: Port = Field(default=8002, description="Port of the Prometheus metrics.")
    metrics_host: str | None = Field(
        default=None,
        description="Address the metrics port listens on; unset: `host`. 127.0.0.1 keeps "
        "the metrics off the network.",
    )
    tls: TlsSettings | None = Field(
        default=None,
        description="TLS (and optionally mutual TLS) on the REST and gRPC ports; unset: "
        "plain. The files are re-read when they change.",
    )
    metrics_tls: TlsSettings | None = Field(
        default=None,
        description="TLS on the metrics port, separately from `tls`; unset: plain HTTP "
        "(`metrics_host: 127.0.0.1` keeps it off the network instead).",
    )
    max_concurrent_rpcs: int = Field(
        default=1024,
        ge=1,
        description="gRPC calls handled at once; more are refused at once with "
        "RESOURCE_EXHAUSTED and counted in switchyard_shed_requests_total (reason "
        "max_concurrent_rpcs). Liveness and readiness calls are never refused.",
    )
    grpc_max_pending_wait_s: float | None = Field(
        default=0.5,
        ge=0,
        description="Seconds a gRPC call may wait inside grpc-core before the server picks "
        "it up (it queues there when the Python front end is the bottleneck); an older call "
        "is refused at once with RESOURCE_EXHAUSTED and counted in "
        "switchyard_shed_requests_total (reason pending_wait). Liveness and readiness calls "
        "are never refused. 0 or null: off.",
    )
    max_request_size_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="Largest request on either protocol; also bounds a tensor's declared size.",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds from a request's first byte until its headers must be complete; "
        "a client still sending them (slowloris) gets 408 and is disconnected.",
    )
    http_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a request body may stall (no byte arriving) before 408 and "
        "disconnection.",
    )
    http_keep_alive_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds an HTTP connection may stay idle (before its first request or "
        "between requests) before it is closed; behind a load balancer, set it above the "
        "balancer's idle timeout.",
    )
    http_max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request line plus headers of an HTTP request; beyond, 431.",
    )
    http_max_connections: int | None = Field(
        default=None,
        ge=1,
        description="HTTP connections open at once; beyond, a connection's request gets 503 "
        "with Retry-After. Unset: sized from the open-files limit (raised to its hard limit "
        "at start) so that the gRPC and metrics ports keep descriptors.",
    )
    http_max_concurrent_requests: int = Field(
        default=1024,
        ge=1,
        description="HTTP requests served at once; more get 503 with Retry-After.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the gateway's own loggers."
    )
    shutdown_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="Seconds shutdown waits for in-flight requests (gRPC and HTTP at the "
        "same time); those still running then are answered 503 / UNAVAILABLE.",
    )
    model_memory_budget_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Bytes of model files loaded at most; a load beyond it is refused "
        "(RESOURCE_EXHAUSTED / 503). Unset: no limit.",
    )
    autoscaling_signal_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between exports of the autoscaling signal of autoscaled models.",
    )
    workers: Workers = Field(
        default=1,
        description="Gateway processes sharing the gRPC and REST ports (SO_REUSEPORT) under "
        "one supervisor; auto: one per usable core. More than 1 needs `control.store: redis`.",
    )

    def worker_count(self) -> int:
        """`workers` as a number: auto is the cores this process may run on."""
        if self.workers != "auto":
            return self.workers
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0)) or 1
        return os.cpu_count() or 1


ModelControlMode = Literal["none", "poll", "explicit"]


class ModelRepositorySettings(StrictModel):
    """Models from a Triton-layout model repository, and how models change while serving
    (Triton's --model-repository, --model-control-mode and --load-model; the `serve` flags
    of the same names set these)."""

    path: FilePath | None = Field(
        default=None,
        description="A Triton-layout model repository (<model>/<version>/model.onnx, an "
        "optional config.pbtxt), served beside `models:`.",
    )
    control_mode: ModelControlMode = Field(
        default="explicit",
        description="explicit: the repository API (and config reloads) load and unload "
        "models while serving; poll: the repository folder is watched, the API refuses; "
        "none: what loads at start stays, the API refuses.",
    )
    load: list[str] | None = Field(
        default=None,
        description="Repository models loaded at start in explicit mode (`*`: all); unset: "
        "all. `serve --model-control-mode explicit` without --load-model loads none, as "
        "Triton does.",
    )
    poll_s: float = Field(
        default=5.0, gt=0, description="Seconds between two scans of the folder (poll mode)."
    )


class RoutingSettings(StrictModel):
    """How the router's background work runs (the endpoints themselves are `endpoints:`)."""

    disagreement_log_path: FilePath | None = Field(
        default=None,
        description="JSONL log of the largest shadow-versus-primary disagreements; none if unset.",
    )
    disagreement_top_n: int = Field(
        default=10, ge=1, description="Disagreement lines kept per window."
    )
    disagreement_window_s: float = Field(
        default=60.0, gt=0, description="Seconds of one disagreement window."
    )
    shadow_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds after which a shadow call still running is cancelled and counted.",
    )
    rollout_tick_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between two judgements of running rollouts; also how often "
        "each replica adds its rollout counts to the control store.",
    )
    config_reload_s: float = Field(
        default=2.0,
        ge=0,
        description="Seconds between checks of the config file for endpoint and model "
        "changes; 0: off.",
    )
    config_settle_s: float = Field(
        default=0.5,
        ge=0,
        description="Seconds a changed config file must stay unchanged before it is read: "
        "an editor still writing it is never caught half-way (write files atomically all "
        "the same: to a temporary file, then rename).",
    )


class RedisTlsSettings(StrictModel):
    """TLS towards Redis (a rediss:// URL): the CA that signed the server's certificate and,
    for a server that checks clients (`tls-auth-clients yes`), this client's own."""

    ca_file: FilePath | None = Field(
        default=None,
        description="PEM CA certificate(s) the server's certificate must chain to; unset: "
        "the system's CAs.",
    )
    cert_file: FilePath | None = Field(
        default=None, description="PEM client certificate (mutual TLS); with key_file."
    )
    key_file: FilePath | None = Field(
        default=None, description="PEM private key of cert_file (unencrypted)."
    )
    check_hostname: bool = Field(
        default=True,
        description="The server's certificate must name the URL's host (false: the CA only).",
    )

    @model_validator(mode="after")
    def _cert_with_key(self) -> RedisTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the client certificate)")
        return self

    def redis_options(self) -> dict[str, Any]:
        """redis-py's connection options of these settings."""
        return {
            "ssl_ca_certs": None if self.ca_file is None else str(self.ca_file),
            "ssl_certfile": None if self.cert_file is None else str(self.cert_file),
            "ssl_keyfile": None if self.key_file is None else str(self.key_file),
            "ssl_check_hostname": self.check_hostname,
        }


class RedisConnectionSettings(StrictModel):
    """How to reach a Redis: the control store's and the redis feature store's settings share
    these (each declares its own `url`)."""

    url: str
    password: SecretText | None = Field(
        default=None,
        description="Redis password (AUTH), over one in the URL: {from_env: NAME} or "
        "{from_file: PATH} keeps it out of the file.",
    )
    tls: RedisTlsSettings | None = Field(
        default=None, description="CA and client certificate of a rediss:// URL."
    )

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> RedisConnectionSettings:
        if self.tls is not None and not self.url.startswith("rediss://"):
            raise ValueError("tls is set, but the url is not rediss:// (TLS would not be used)")
        return self

    def connection(self) -> tuple[str, dict[str, Any]]:
        """The URL and redis-py connection options (from_url keywords): the password
        replaces one in the URL (redis-py would let the URL's win)."""
        url = self.url
        options: dict[str, Any] = {} if self.tls is None else self.tls.redis_options()
        if self.password is not None:
            parts = urlsplit(url)
            if parts.password is not None:
                host = parts.netloc.rpartition("@")[2]
                user = quote(unquote(parts.username or ""), safe="")
                url = urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))
            options["password"] = self.password.get_secret_value()
        return url, options


class ControlSettings(RedisConnectionSettings):
    """Where the routing state every replica must agree on is kept: the weights set while
    serving, running rollouts, the audit trail (docs/architecture.md, "Control store")."""

    store: Literal["memory", "redis"] = Field(
        default="memory",
        description="memory: this process only, gone on restart; redis: shared by every "
        "replica and kept across restarts.",
    )
    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        pattern=r"^rediss?://",
        description="The Redis of the redis store (it may be the feature store's).",
    )
    prefix: str = Field(
        default="switchyard:",
        min_length=1,
        description="Start of every key the store writes: one per gateway deployment.",
    )
    timeout_s: float = Field(
        default=0.5, gt=0, description="Seconds one store call may take before it fails."
    )
    resync_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between full reads of the store, on top of its change "
        "notifications; also the retry pace while it is unreachable.",
    )
    lease_ttl_s: float = Field(
        default=3.0,
        gt=0,
        description="Seconds the replica judging rollouts holds its lease without renewing "
        "it; then another takes over.",
    )
    audit_max_records: int = Field(
        default=10_000,
        ge=1,
        description="Records the shared audit trail keeps, about; older ones are trimmed "
        "(export the trail regularly: `switchyard audit export`).",
    )


class RayHostSettings(StrictModel):
    """The Ray host's ingress deployment (per-model settings are `models.N.ray`); the
    standalone host ignores it."""

    ingress_replicas: int = Field(
        default=1,
        ge=1,
        description="Ingress replicas, each with the data plane, router, control plane and "
        "co-located models; fixed unless a co-located model autoscales.",
    )
    ingress_num_cpus: float = Field(
        default=1.0, ge=0, description="CPUs reserved per ingress replica."
    )
    fast_path: bool = Field(
        default=True,
        description="Run Serve with RAY_SERVE_THROUGHPUT_OPTIMIZED (README, Ray Serve).",
    )


MIN_TOKEN_CHARS = 16


class AdminSettings(StrictModel):
    """The admin REST API (/admin/v1/...) on the HTTP port and model load / unload: who may
    call them (README "Roles"). Off unless an identity source is set: token, tokens_file or
    certificate_identities."""

    token: SecretText | None = Field(
        default=None,
        description="The single legacy bearer token (identity 'admin', role admin), 16 "
        "characters at least: better {from_env: NAME}, {from_file: PATH} or "
        "SWITCHYARD_ADMIN_TOKEN than in the file.",
    )
    tokens_file: FilePath | None = Field(
        default=None,
        description="YAML list of {name, role, token_sha256: 'sha256:<hex>'} (digest from "
        "`switchyard admin hash-token`); re-read when it changes.",
    )
    certificate_identities: list[CertificateIdentity] = Field(
        default=[],
        description="Client certificate subjects (mTLS) and their identity and role, matched "
        "exactly: [{subject: 'CN=alice,O=ops', name: alice, role: operator}].",
    )
    auth_failure_burst: int = Field(
        default=10,
        ge=1,
        description="Failed authentications one address may make at once before its calls "
        "are refused (429) unchecked.",
    )
    auth_failures_per_minute: float = Field(
        default=10.0,
        gt=0,
        description="How fast an address earns back failed authentications (per process).",
    )
    audit_log_path: FilePath | None = Field(
        default=None,
        description="This replica's routing changes, one JSON line each (who, from where, "
        "why, when, old -> new), hash-chained: `switchyard audit verify FILE`.",
    )
    audit_key_file: FilePath | None = Field(
        default=None,
        description="A file holding the HMAC key of the audit trail's hash chain (else "
        "SWITCHYARD_AUDIT_KEY; without either, plain sha256).",
    )

    @field_validator("token")
    @classmethod
    def _token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        # SecretStr's own min_length message counts "items".
        if token is not None and len(token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"the admin token must be {MIN_TOKEN_CHARS} characters at least")
        return token

    @property
    def token_value(self) -> str | None:
        """The admin token's text (`token` itself never prints it)."""
        return reveal(self.token)

    @model_validator(mode="after")
    def _tokens_file_is_valid(self) -> AdminSettings:
        if self.tokens_file is not None:
            read_token_file(self.tokens_file)  # ValueError names the problem; fail at start
        return self

    def access_settings(self) -> AccessSettings:
        return AccessSettings(
            self.token_value,
            self.tokens_file,
            tuple(self.certificate_identities),
            self.auth_failure_burst,
            self.auth_failures_per_minute,
        )


class RecommendSettings(StrictModel):
    """The Recommend API (features in, ranked items out)."""

    max_candidates: int = Field(default=500, ge=1, description="Candidates per request, at most.")
    score_output: str = Field(
        default="score", description="The model output that ranks the candidates."
    )


class DriftSettings(StrictModel):
    """Online drift of each model version's inputs and outputs against its reference profile
    (`switchyard profile build`; docs/architecture.md, Drift)."""

    enabled: bool = Field(
        default=True,
        description="Monitor drift of every model version that has a reference profile "
        "(`models[].drift: false` turns one model off).",
    )
    window_s: float = Field(
        default=60.0, gt=0, description="Seconds of traffic each drift window spans."
    )
    window_slots: int = Field(
        default=6,
        ge=1,
        le=600,
        description="Slots the window is a ring of: data ages out one slot "
        "(window_s / window_slots) at a time.",
    )
    export_interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between computations of the drift gauges."
    )
    psi_threshold: float = Field(
        default=0.2,
        gt=0,
        description="A feature with a population stability index above this has drifted "
        "(0.1: a moderate shift, 0.2: a significant one).",
    )
    min_samples: int = Field(
        default=1000,
        ge=1,
        description="Rows a window needs before its PSI and JS distance are exported and judged.",
    )
    max_rows_per_s: float = Field(
        default=5000.0,
        gt=0,
        description="Rows per second per model version that drift monitoring takes; "
        "requests beyond it are sampled out (counted).",
    )
    queue_size: int = Field(
        default=1024,
        ge=1,
        description="Requests waiting to be binned at most; more are dropped (counted).",
    )


class FeedbackSettings(StrictModel):
    """Feedback on Recommend: predictions kept and joined with reported clicks (quality)."""

    enabled: bool = Field(
        default=True,
        description="Keep Recommend predictions and accept POST /v1/feedback; off: feedback "
        "is answered joined=false, reason unknown_request.",
    )
    ttl_s: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a prediction is kept for joining; feedback up to min(ttl_s, "
        "300) seconds later is counted late, after that unknown_request.",
    )
    max_predictions: int = Field(
        default=200_000,
        ge=1,
        description="Predictions kept at most in memory (about 1 KiB each for 10 items); "
        "the oldest are dropped and counted. With control.store redis the predictions live "
        "in that Redis (shared by the replicas), bounded by ttl_s.",
    )
    redis_queue_max: int = Field(
        default=10_000,
        ge=1,
        description="With control.store redis: predictions queued for the background "
        "writer at most; a full queue (Redis slow or down) drops and counts, never blocks "
        "Recommend.",
    )
    ctr_k: int = Field(
        default=5, ge=1, description="k of CTR@k: the first k items shown count as slots."
    )
