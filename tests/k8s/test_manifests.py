"""k8s/: every overlay rendered by `kubectl kustomize`, every object validated against its
schema, and the manifests checked against the config files and a real gateway.

Core kinds validate with kubernetes-validate (strict: unknown fields are errors); the CRDs
(RayService, ScaledObject, ServiceMonitor) against their projects' published OpenAPI schemas,
vendored in crd_schemas/ (SOURCES.md), made strict the same way.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import math
import re
import shutil
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtests.gateway_process import REPO_ROOT, scrape_metrics, start_gateway
from loadtests.redis_process import RedisServer
from switchyard.demo.build_model import ensure_built
from switchyard.server.config import (
    CONTROL_URL_ENV,
    FEATURES_STORE_URL_ENV,
    ConfigError,
    SwitchyardConfig,
    load_config,
)
from switchyard.server.k8s_render import (
    CLUSTER_CONFIG_PATH,
    CONFIG_FILE_NAME,
    TLS_MOUNT_PATH,
    TLS_SECRET_KEYS,
    load_overlay_config,
)
from switchyard.server.ray_host.deployments import fast_path_env
from tests.server.tls_support import CertAuthority

K8S_DIR = REPO_ROOT / "k8s"
OVERLAYS = ("standalone", "standalone-redis", "standalone-tls", "ray")
STANDALONE_OVERLAYS = ("standalone", "standalone-redis", "standalone-tls")
TLS_OVERLAYS = ("standalone-tls",)  # k8s/components/tls
TLS_SECRET_NAME = "switchyard-tls"
SCHEMA_DIR = Path(__file__).resolve().parent / "crd_schemas"
CRD_SCHEMAS = {
    ("ray.io/v1", "RayService"): "ray.io_RayService_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_ScaledObject_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_ServiceMonitor_v1.json",
}
# The oldest Kubernetes the manifests are for (sidecar-free, PDB unhealthyPodEvictionPolicy
# GA in 1.31) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
IMAGE_DEMO_DIR = "/opt/switchyard/demo"  # the Dockerfile's SWITCHYARD_DEMO_DIR
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) not installed")


def kustomize(overlay_dir: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(overlay_dir)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj is not None]


@functools.cache
def _rendered(overlay: str) -> str:
    return json.dumps(kustomize(K8S_DIR / "overlays" / overlay))


def rendered(overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects (a fresh copy each call: tests may change theirs)."""
    objects: list[dict[str, Any]] = json.loads(_rendered(overlay))
    return objects


def the(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of `kind` (named `name`, or a name kustomize generated from it: `name`
    and a content hash)."""
    pattern = re.compile(".*" if name is None else re.escape(name) + "(-[a-z0-9]{10})?")
    found = [o for o in objects if o["kind"] == kind and pattern.fullmatch(o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
    return found[0]


def overlay_config(overlay: str) -> SwitchyardConfig:
    # As `render k8s` checks it: the TLS Secret's files exist in the pod only.
    return load_overlay_config(K8S_DIR / "overlays" / overlay / CONFIG_FILE_NAME)


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


needs_ray = pytest.mark.skipif(not ray_installed(), reason="render ray needs the `ray` extra")


# --- Schemas ---------------------------------------------------------------------------------


def strict_schema(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields where the CRD lists its fields, as the API
    server's strict field validation (`kubectl apply --validate=strict`) does."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: strict_schema(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMA_DIR / CRD_SCHEMAS[api_version, kind]).read_text())
    strict = strict_schema(schema)
    # metadata is the API server's to check (kubernetes-validate does for core kinds).
    strict["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(strict)


def crd_errors(obj: dict[str, Any]) -> list[str]:
    validator = crd_validator(obj["apiVersion"], obj["kind"])
    return [
        f"{obj['kind']}/{obj['metadata']['name']} {'.'.join(map(str, e.absolute_path))}: "
        f"{e.message}"
        for e in validator.iter_errors(obj)
    ]


def is_custom(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in CRD_SCHEMAS


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_object_validates_against_the_kubernetes_schema(
    overlay: str, version: str
) -> None:
    core = [obj for obj in rendered(overlay) if not is_custom(obj)]
    assert core
    for obj in core:
        # Raises with the object's path and the problem; strict: unknown fields too.
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_custom_resource_validates_against_its_crd_schema(overlay: str) -> None:
    objects = rendered(overlay)
    custom = [obj for obj in objects if is_custom(obj)]
    assert custom
    assert [error for obj in custom for error in crd_errors(obj)] == []
    # Nothing rendered escapes both checks: a kind of another CRD would need its schema here.
    for obj in objects:
        if not is_custom(obj):
            assert obj["apiVersion"] in {"v1", "apps/v1", "policy/v1", "autoscaling/v2"} or (
                obj["apiVersion"].endswith(".k8s.io/v1")
            ), obj["kind"]


def test_the_schema_checks_catch_typos_and_wrong_types() -> None:
    deployment = the(rendered("standalone"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    scaled = the(rendered("standalone"), "ScaledObject")
    scaled["spec"]["maxReplicas"] = 10  # the HPA's name, not KEDA's maxReplicaCount
    scaled["spec"]["minReplicaCount"] = "two"
    errors = crd_errors(scaled)
    assert any("maxReplicas" in e for e in errors) and any("minReplicaCount" in e for e in errors)
    ray_service = the(rendered("ray"), "RayService")
    del ray_service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    assert any("template" in e for e in crd_errors(ray_service))


# --- The standalone gateway ------------------------------------------------------------------


def gateway_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["gateway"]
    container: dict[str, Any] = containers[0]
    return container


def config_ports(config: SwitchyardConfig) -> dict[str, int]:
    server = config.server
    return {"http": server.http_port, "grpc": server.grpc_port, "metrics": server.metrics_port}


@pytest.mark.parametrize("overlay", STANDALONE_OVERLAYS)
def test_ports_are_the_configs(overlay: str) -> None:
    objects = rendered(overlay)
    ports = config_ports(overlay_config(overlay))
    container = gateway_container(objects)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == ports
    service = the(objects, "Service")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        name: (port, name) for name, port in ports.items()
    }
    protocols = {p["name"]: p["appProtocol"] for p in service["spec"]["ports"]}
    if overlay in TLS_OVERLAYS:  # TLS ends in the gateway: no plaintext h2c to balance per call
        assert protocols == {"http": "https", "grpc": "https", "metrics": "http"}
    else:
        assert protocols == {"http": "http", "grpc": "kubernetes.io/h2c", "metrics": "http"}
    pod_labels = the(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = the(objects, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    budget = the(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", STANDALONE_OVERLAYS)
def test_the_configmap_is_the_overlays_config_file(overlay: str) -> None:
    objects = rendered(overlay)
    config_map = the(objects, "ConfigMap", "switchyard-config")
    text = (K8S_DIR / "overlays" / overlay / CONFIG_FILE_NAME).read_text()
    assert config_map["data"] == {CONFIG_FILE_NAME: text}
    pod = the(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    mounted = volumes[mounts[str(CLUSTER_CONFIG_PATH.parent)]]
    assert mounted["configMap"]["name"] == config_map["metadata"]["name"]  # the hashed name
    assert pod["containers"][0]["args"] == ["serve", "--config", str(CLUSTER_CONFIG_PATH)]


@pytest.mark.parametrize("overlay", STANDALONE_OVERLAYS)
def test_termination_grace_covers_the_prestop_sleep_and_the_drain(overlay: str) -> None:
    pod = the(rendered(overlay), "Deployment")["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    shutdown_grace_s = overlay_config(overlay).server.shutdown_grace_s
    assert pre_stop_s > 0
    # The margin is the process's exit after the drain (batchers, stores) before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + shutdown_grace_s + 5


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        if obj["kind"] == "Deployment":
            yield obj["spec"]["template"]["spec"]
        if obj["kind"] == "RayService":
            cluster = obj["spec"]["rayClusterConfig"]
            yield cluster["headGroupSpec"]["template"]["spec"]
            for group in cluster["workerGroupSpecs"]:
                yield group["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_locked_down_with_writable_paths_on_empty_dirs(overlay: str) -> None:
    specs = list(pod_specs(rendered(overlay)))
    assert specs
    config = overlay_config(overlay)
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            writable = [
                m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs
            ]
            for path in ("/tmp", str(config.mlflow.cache_dir)):
                assert any(Path(path).is_relative_to(mount) for mount in writable), path


def local_config(overlay: str, tmp_path: Path) -> dict[str, Any]:
    """The overlay's config with the image's demo files replaced by this machine's build."""
    demo_dir = ensure_built().parent
    text = (K8S_DIR / "overlays" / overlay / CONFIG_FILE_NAME).read_text()
    text = text.replace(IMAGE_DEMO_DIR + "/", f"{demo_dir}/")
    config: dict[str, Any] = yaml.safe_load(text)
    config["mlflow"]["cache_dir"] = str(tmp_path / "mlflow")
    return config


SERVING = health_pb2.HealthCheckResponse.SERVING


def get_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        status: int = response.status
        return status


def grpc_health_status(port: int, service: str) -> int:
    """A real grpc.health.v1 Check, what the kubelet's grpc probe sends."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        status: int = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status
        return status


def test_probes_answer_on_a_real_gateway_with_the_overlays_config(tmp_path: Path) -> None:
    container = gateway_container(rendered("standalone"))
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = [container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")]
    gateway = start_gateway(local_config("standalone", tmp_path), tmp_path)
    try:
        by_config_port = {
            port: getattr(gateway, f"{name}_port")
            for name, port in config_ports(overlay_config("standalone")).items()
        }
        http_paths, grpc_services = set(), set()
        for probe in probes:
            if "grpc" in probe:  # Kubernetes' grpc probe: a port number, never a name
                port = probe["grpc"]["port"]
                service = probe["grpc"].get("service", "")
                assert grpc_health_status(by_config_port[port], service) == SERVING
                grpc_services.add(service)
                continue
            http = probe["httpGet"]
            port = port_names[http["port"]]  # named ports resolve to the container's
            assert get_status(f"http://127.0.0.1:{by_config_port[port]}{http['path']}") == 200
            http_paths.add(http["path"])
        assert http_paths == {"/v2/health/live"}
        assert grpc_services == {""}  # the server as a whole
        assert "readinessProbe" in container and "grpc" in container["readinessProbe"]
        # The metrics port the ServiceMonitor scrapes serves the autoscaling signal's family.
        assert "switchyard_requests_total" in scrape_metrics(gateway)
    finally:
        assert gateway.stop() == 0


def raw_overlay_config(overlay: str) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(
        (K8S_DIR / "overlays" / overlay / CONFIG_FILE_NAME).read_text()
    )
    return raw


@pytest.mark.parametrize("overlay", TLS_OVERLAYS)
def test_the_tls_overlay_probes_over_https_and_mounts_the_secret_where_server_tls_points(
    overlay: str,
) -> None:
    objects = rendered(overlay)
    container = gateway_container(objects)
    probes = {name: container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    # The kubelet's grpc probe has no TLS: readiness is the REST port's, over HTTPS.
    assert "grpc" not in probes["readinessProbe"]
    assert probes["readinessProbe"]["httpGet"] == {
        "path": "/v2/health/ready",
        "port": "http",
        "scheme": "HTTPS",
    }
    for name, probe in probes.items():
        assert set(probe) & {"grpc", "tcpSocket", "exec"} == set(), name
        assert probe["httpGet"]["scheme"] == "HTTPS", name
        assert probe["httpGet"]["port"] == "http", name
    pod = the(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    mount = mounts[str(TLS_MOUNT_PATH)]
    assert mount["readOnly"] is True
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == TLS_SECRET_NAME
    assert secret["defaultMode"] == 0o440  # the key: the gateway's group (fsGroup) only
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    # server.tls reads exactly the Secret's files, where the pod mounts them.
    tls = raw_overlay_config(overlay)["server"]["tls"]
    for key in ("cert_file", "key_file"):
        path = Path(tls[key])
        assert path.parent == TLS_MOUNT_PATH and path.name in TLS_SECRET_KEYS, key
    assert tls.get("require_client_cert", False) is False  # the probes have no certificate
    config = overlay_config(overlay)
    assert config.server.tls is not None
    # The metrics port stays plain HTTP for Prometheus: no metrics_tls, no https scrape.
    assert config.server.metrics_tls is None
    [endpoint] = the(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint.get("scheme", "http") == "http"


def kubelet_https_context() -> ssl.SSLContext:
    """What the kubelet's HTTPS probe does: TLS without verifying the server's certificate,
    and no client certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_https_probes_answer_on_a_real_gateway_with_the_tls_overlays_config(
    tmp_path: Path,
) -> None:
    container = gateway_container(rendered("standalone-tls"))
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The Secret's files, as the kubelet writes them: an issuer the probes do not know.
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    issued = CertAuthority("some-cluster-issuer").issue_server()
    (secret_dir / "tls.crt").write_bytes(issued.cert_pem)
    (secret_dir / "tls.key").write_bytes(issued.key_pem)
    config = local_config("standalone-tls", tmp_path)
    for key in ("cert_file", "key_file"):
        path = Path(config["server"]["tls"][key])
        config["server"]["tls"][key] = str(secret_dir / path.relative_to(TLS_MOUNT_PATH))
    probe_context = kubelet_https_context()
    gateway = start_gateway(config, tmp_path, ssl_context=probe_context)
    try:
        by_config_port = {
            port: getattr(gateway, f"{name}_port")
            for name, port in config_ports(overlay_config("standalone-tls")).items()
        }
        for name in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = container[name]["httpGet"]
            port = by_config_port[port_names[http["port"]]]
            url = f"{http['scheme'].lower()}://127.0.0.1:{port}{http['path']}"
            with urllib.request.urlopen(url, timeout=5, context=probe_context) as response:
                assert response.status == 200, name
        # The ports really are TLS: a plaintext request gets no answer.
        with pytest.raises(OSError):
            get_status(f"http://{gateway.http_url}/v2/health/ready")
        # The metrics port the ServiceMonitor scrapes stays plain HTTP.
        assert "switchyard_requests_total" in scrape_metrics(gateway)
    finally:
        assert gateway.stop() == 0


def test_the_redis_overlay_reaches_redis_through_the_secrets_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered("standalone-redis")
    env = {e["name"]: e for e in gateway_container(objects)["env"]}
    for name in (CONTROL_URL_ENV, FEATURES_STORE_URL_ENV):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "switchyard-redis", "key": "url"}
    assert env["SWITCHYARD_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    config = overlay_config("standalone-redis")
    assert config.control.store == "redis" and config.features.store.kind == "redis"
    # A real gateway with the overlay's config: the file's URLs are placeholders that do not
    # resolve here, so reaching Redis means the variables were used.
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        monkeypatch.setenv(CONTROL_URL_ENV, redis_server.url)
        monkeypatch.setenv(FEATURES_STORE_URL_ENV, redis_server.url)
        gateway = start_gateway(local_config("standalone-redis", tmp_path), tmp_path)
        try:
            body = json.dumps({"endpoint": "recs", "user_id": "u1", "candidate_ids": ["i1"]})
            request = urllib.request.Request(
                f"http://{gateway.http_url}/v1/recommend", data=body.encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read())["features_degraded"] is False
            assert "switchyard_control_store_up 1.0" in scrape_metrics(gateway)
        finally:
            assert gateway.stop() == 0
    finally:
        redis_server.stop()


def test_redis_url_variables_override_the_file_and_refuse_a_memory_feature_store() -> None:
    path = K8S_DIR / "overlays" / "standalone-redis" / CONFIG_FILE_NAME
    url = "redis://:secret@redis.example:6380/2"
    config = load_config(path, env={CONTROL_URL_ENV: url, FEATURES_STORE_URL_ENV: url})
    assert config.control.url == url
    assert config.features.store.kind == "redis" and config.features.store.url == url
    memory = K8S_DIR / "overlays" / "standalone" / CONFIG_FILE_NAME
    with pytest.raises(ConfigError, match=f"{FEATURES_STORE_URL_ENV}: is set, but features"):
        load_config(memory, env={FEATURES_STORE_URL_ENV: url})


def test_network_policies_open_the_apis_metrics_dns_and_redis() -> None:
    for overlay in STANDALONE_OVERLAYS:
        objects = rendered(overlay)
        policy = the(objects, "NetworkPolicy", "switchyard")
        pods = the(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pods.items()
        ports = config_ports(overlay_config(overlay))
        api, metrics = policy["spec"]["ingress"]
        # Any pod of the namespace, and labelled clients of any namespace (kustomize's labels
        # must not have narrowed these peers to the gateway's own pods).
        assert api["from"] == [
            {"podSelector": {}},
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"switchyard.io/client": "true"}},
            },
        ]
        assert sorted(p["port"] for p in api["ports"]) == [ports["http"], ports["grpc"]]
        assert metrics["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
        assert [p["port"] for p in metrics["ports"]] == [ports["metrics"]]
        [dns] = policy["spec"]["egress"]
        assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    redis_egress = the(rendered("standalone-redis"), "NetworkPolicy", "switchyard-redis-egress")
    assert redis_egress["spec"]["policyTypes"] == ["Egress"]
    assert [p["port"] for r in redis_egress["spec"]["egress"] for p in r["ports"]] == [6379]
    assert [o for o in rendered("standalone") if o["kind"] == "NetworkPolicy"] == [
        the(rendered("standalone"), "NetworkPolicy", "switchyard")
    ]


def autoscaled_bounds(config: SwitchyardConfig) -> tuple[int, int, float, float]:
    policies = [m.autoscaling for m in config.models if m.autoscaling is not None]
    assert policies, "the overlay's config autoscales no model: no signal to scale on"
    return (
        max(p.min_replicas for p in policies),
        max(p.max_replicas for p in policies),
        min(p.upscale_stabilization_s for p in policies),
        max(p.downscale_stabilization_s for p in policies),
    )


def test_keda_scales_on_the_summed_signal_within_the_configs_bounds() -> None:
    objects = rendered("standalone")
    scaled = the(objects, "ScaledObject")["spec"]
    deployment = the(objects, "Deployment")
    service = the(objects, "Service")
    min_replicas, max_replicas, up_s, down_s = autoscaled_bounds(overlay_config("standalone"))
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (min_replicas, max_replicas)
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == up_s
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == down_s
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == "1"
    query = " ".join(trigger["metadata"]["query"].split())
    namespace = deployment["metadata"]["namespace"]
    assert query == (
        "max(sum by (deployment, variant) (switchyard_autoscaling_replicas_needed"
        f'{{namespace="{namespace}", service="{service["metadata"]["name"]}"}}))'
    )


def test_the_hpa_scales_on_the_adapters_rule_within_the_configs_bounds() -> None:
    objects = rendered("standalone-redis")
    hpa = the(objects, "HorizontalPodAutoscaler")["spec"]
    min_replicas, max_replicas, up_s, down_s = autoscaled_bounds(overlay_config("standalone-redis"))
    assert hpa["scaleTargetRef"]["name"] == the(objects, "Deployment")["metadata"]["name"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (min_replicas, max_replicas)
    assert hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == up_s
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == down_s
    [metric] = hpa["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {
        "service": the(objects, "Service")["metadata"]["name"]
    }
    values = yaml.safe_load((K8S_DIR / "components/hpa/prometheus-adapter-values.yaml").read_text())
    [rule] = values["rules"]["external"]
    assert rule["name"]["as"] == metric["external"]["metric"]["name"]
    assert " ".join(rule["metricsQuery"].split()) == (
        "max(sum by (deployment, variant) "
        "(switchyard_autoscaling_replicas_needed{<<.LabelMatchers>>}))"
    )
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}}


# --- Ray -------------------------------------------------------------------------------------


def ray_containers(ray_service: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for spec in pod_specs([ray_service]) for c in spec["containers"]]


@needs_ray
def test_serve_config_v2_is_render_rays_output_for_the_overlays_config() -> None:
    ray_dir = K8S_DIR / "overlays" / "ray"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "switchyard.server.cli",
            "render",
            "ray",
            "--config",
            CONFIG_FILE_NAME,
            "--cluster-config-path",
            str(CLUSTER_CONFIG_PATH),
        ],
        cwd=ray_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    ray_service = the(rendered("ray"), "RayService")
    assert ray_service["spec"]["serveConfigV2"] == result.stdout
    serve = yaml.safe_load(result.stdout)
    assert serve["applications"][0]["args"] == {"config_path": str(CLUSTER_CONFIG_PATH)}


def test_every_ray_container_has_the_fast_path_and_the_config() -> None:
    objects = rendered("ray")
    ray_service = the(objects, "RayService")
    config = overlay_config("ray")
    config_map = the(objects, "ConfigMap", "switchyard-config")
    assert config_map["data"] == {
        CONFIG_FILE_NAME: (K8S_DIR / "overlays/ray" / CONFIG_FILE_NAME).read_text()
    }
    fast_path = fast_path_env(config, local=False)
    assert fast_path  # the overlay runs Serve's fast path
    for spec in pod_specs([ray_service]):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert {name: env.get(name) for name in fast_path} == fast_path
            assert CONTROL_URL_ENV in env  # control.store: redis, the URL from the Secret
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            mounted = volumes[mounts[str(CLUSTER_CONFIG_PATH.parent)]]
            assert mounted["configMap"]["name"] == config_map["metadata"]["name"]
    head = ray_containers(ray_service)[0]
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert ports["serve"] == config.server.http_port
    assert ports["serve-grpc"] == config.server.grpc_port


def test_gpu_models_reserve_gpus_that_a_worker_group_has() -> None:
    config = overlay_config("ray")
    gpu_models = [m for m in config.models if m.uses_gpu]
    assert gpu_models, "the Ray overlay's config has no GPU model"
    cluster = the(rendered("ray"), "RayService")["spec"]["rayClusterConfig"]

    def group_gpus(group: dict[str, Any]) -> int:
        limits = [c["resources"].get("limits", {}) for c in group["template"]["spec"]["containers"]]
        return sum(int(limit.get("nvidia.com/gpu", 0)) for limit in limits)

    gpu_groups = [g for g in cluster["workerGroupSpecs"] if group_gpus(g) > 0]
    assert gpu_groups
    for model in gpu_models:
        assert model.ray_placement == "deployment"
        assert model.ray.num_gpus > 0
        # Every fixed replica fits on the GPU groups at their largest.
        needed = len(model.versions) * model.ray.num_replicas * model.ray.num_gpus
        room = sum(g["maxReplicas"] * group_gpus(g) for g in gpu_groups)
        assert room >= math.ceil(needed)
    cpu_groups = [g for g in cluster["workerGroupSpecs"] if group_gpus(g) == 0]
    assert cpu_groups, "no CPU worker group for the ingress replicas"


@needs_ray
def test_gpu_reservations_reach_the_serve_config() -> None:
    from switchyard.server.ray_host.app import serve_config

    config = overlay_config("ray")
    serve = serve_config(config, Path(CONFIG_FILE_NAME), CLUSTER_CONFIG_PATH)
    options = {d["name"]: d["ray_actor_options"] for d in serve["applications"][0]["deployments"]}
    assert options["ranker_gpu:1"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert options["ingress"] == {"num_cpus": config.ray.ingress_num_cpus}


def test_num_gpus_is_refused_for_models_in_the_ingress(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    model = {"name": "m", "versions": [{"version": "1", "path": "m.onnx"}]}
    path.write_text(yaml.safe_dump({"models": [{**model, "ray": {"num_gpus": 1}}]}))
    with pytest.raises(
        ConfigError, match=r"ray.num_gpus \(1.0\) needs `ray.placement: deployment`"
    ):
        load_config(path, env={})


# --- switchyard render k8s -------------------------------------------------------------------


def render_k8s(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard.server.cli", "render", "k8s", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_is_in_step_with_its_config(overlay: str) -> None:
    if overlay == "ray" and not ray_installed():
        pytest.skip("render ray needs the `ray` extra")
    overlay_dir = K8S_DIR / "overlays" / overlay
    result = render_k8s(
        "--config", str(overlay_dir / CONFIG_FILE_NAME), "--overlay", str(overlay_dir), "--check"
    )
    assert result.returncode == 0, result.stderr


@needs_ray
def test_render_k8s_finds_and_fixes_drift(tmp_path: Path) -> None:
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, k8s)
    ray_dir = k8s / "overlays" / "ray"
    edited = yaml.safe_load((ray_dir / CONFIG_FILE_NAME).read_text())
    edited["models"][1]["ray"]["num_replicas"] = 3
    source = tmp_path / "my-config.yaml"
    source.write_text(yaml.safe_dump(edited))
    check = render_k8s("--config", str(source), "--overlay", str(ray_dir), "--check")
    assert check.returncode == 1
    assert "switchyard.yaml is not in step" in check.stderr
    assert "serve-config.yaml is not in step" in check.stderr
    written = render_k8s("--config", str(source), "--overlay", str(ray_dir))
    assert written.returncode == 0, written.stderr
    assert render_k8s("--config", str(source), "--overlay", str(ray_dir), "--check").returncode == 0
    objects = kustomize(ray_dir)
    assert the(objects, "ConfigMap", "switchyard-config")["data"][CONFIG_FILE_NAME] == (
        source.read_text()
    )
    serve = yaml.safe_load(the(objects, "RayService")["spec"]["serveConfigV2"])
    deployments = {d["name"]: d for d in serve["applications"][0]["deployments"]}
    assert deployments["ranker_gpu:1"]["num_replicas"] == 3


def test_render_k8s_writes_a_standalone_overlays_config(tmp_path: Path) -> None:
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, k8s)
    overlay = k8s / "overlays" / "standalone"
    edited = copy.deepcopy(yaml.safe_load((overlay / CONFIG_FILE_NAME).read_text()))
    edited["server"]["log_level"] = "debug"
    source = tmp_path / "my-config.yaml"
    source.write_text(yaml.safe_dump(edited))
    assert render_k8s("--config", str(source), "--overlay", str(overlay), "--check").returncode == 1
    assert render_k8s("--config", str(source), "--overlay", str(overlay)).returncode == 0
    config_map = the(kustomize(overlay), "ConfigMap", "switchyard-config")
    assert yaml.safe_load(config_map["data"][CONFIG_FILE_NAME])["server"]["log_level"] == "debug"


def tls_config(source_overlay: str, tmp_path: Path, **tls: Any) -> Path:
    """The overlay's config with server.tls set to `tls` (None: unset), in tmp_path."""
    edited = raw_overlay_config(source_overlay)
    edited["server"].pop("tls", None)
    if tls:
        edited["server"]["tls"] = tls
    path = tmp_path / f"{source_overlay}-edited.yaml"
    path.write_text(yaml.safe_dump(edited))
    return path


MOUNTED_PAIR = {
    "cert_file": str(TLS_MOUNT_PATH / "tls.crt"),
    "key_file": str(TLS_MOUNT_PATH / "tls.key"),
}


def test_render_k8s_refuses_tls_that_the_overlay_does_not_fit(tmp_path: Path) -> None:
    k8s = tmp_path / "k8s"  # a copy: a refusal that failed would write there, not into k8s/
    shutil.copytree(K8S_DIR, k8s)
    standalone = k8s / "overlays" / "standalone"
    tls_overlay = k8s / "overlays" / "standalone-tls"
    # The Secret's files, but no component that mounts them.
    result = render_k8s(
        "--config",
        str(tls_config("standalone", tmp_path, **MOUNTED_PAIR)),
        "--overlay",
        str(standalone),
        "--check",
    )
    assert result.returncode == 2
    assert "server.tls.cert_file is /etc/switchyard/tls/tls.crt" in result.stderr
    assert "lists no ../../components/tls" in result.stderr
    # The component's HTTPS probes against plaintext ports.
    result = render_k8s(
        "--config", str(tls_config("standalone-tls", tmp_path)), "--overlay", str(tls_overlay)
    )
    assert result.returncode == 2
    assert "sets no server.tls: the probes would fail" in result.stderr
    # Mutual TLS: the kubelet's probes have no client certificate.
    mtls = {
        **MOUNTED_PAIR,
        "client_ca_file": str(TLS_MOUNT_PATH / "ca.crt"),
        "require_client_cert": True,
    }
    result = render_k8s(
        "--config",
        str(tls_config("standalone-tls", tmp_path, **mtls)),
        "--overlay",
        str(tls_overlay),
    )
    assert result.returncode == 2
    assert "does not support mutual TLS" in result.stderr
    # A file in the mount that the Secret does not have.
    odd = {**MOUNTED_PAIR, "cert_file": str(TLS_MOUNT_PATH / "server.crt")}
    result = render_k8s(
        "--config",
        str(tls_config("standalone-tls", tmp_path, **odd)),
        "--overlay",
        str(tls_overlay),
    )
    assert result.returncode == 2
    assert "/etc/switchyard/tls/server.crt is not a file of the TLS Secret's mount" in (
        result.stderr
    )
    # Nothing of that was written.
    for overlay in (standalone, tls_overlay):
        original = K8S_DIR / "overlays" / overlay.name / CONFIG_FILE_NAME
        assert (overlay / CONFIG_FILE_NAME).read_text() == original.read_text()


def test_render_k8s_writes_the_tls_overlays_config(tmp_path: Path) -> None:
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, k8s)
    overlay = k8s / "overlays" / "standalone-tls"
    edited = raw_overlay_config("standalone-tls")
    edited["server"]["tls"]["client_ca_file"] = str(TLS_MOUNT_PATH / "ca.crt")
    source = tmp_path / "my-config.yaml"
    source.write_text(yaml.safe_dump(edited))
    assert render_k8s("--config", str(source), "--overlay", str(overlay), "--check").returncode == 1
    written = render_k8s("--config", str(source), "--overlay", str(overlay))
    assert written.returncode == 0, written.stderr
    config_map = the(kustomize(overlay), "ConfigMap", "switchyard-config")
    tls = yaml.safe_load(config_map["data"][CONFIG_FILE_NAME])["server"]["tls"]
    assert tls["client_ca_file"] == "/etc/switchyard/tls/ca.crt"


def test_render_k8s_refuses_an_invalid_config_and_a_folder_that_is_no_overlay(
    tmp_path: Path,
) -> None:
    overlay = K8S_DIR / "overlays" / "standalone"
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {http_port: '80'}\n")
    result = render_k8s("--config", str(bad), "--overlay", str(overlay))
    assert result.returncode == 2
    assert "server.http_port" in result.stderr
    result = render_k8s("--config", str(overlay / CONFIG_FILE_NAME), "--overlay", str(tmp_path))
    assert result.returncode == 2
    assert "is not a kustomize overlay: no kustomization.yaml" in result.stderr
