"""The Kubernetes manifests: every variant builds, validates offline, and agrees with the worker.

Each variant (overlays/cpu, overlays/gpu, and overlays/cpu with components/hpa) is built
with kustomize and fed to streamproc-validate (deploy/tools/validate), which decodes every
object strictly into the Kubernetes, Prometheus Operator and KEDA Go types and applies
their admission checks. The rest are facts that tie the objects to the worker's settings,
probes and scaling rules, checked on the built output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import DEPLOY, K8S, REPO, Tools, load_all

from streamproc.config import env_paths, load_settings

VARIANTS = ("cpu", "gpu", "cpu+hpa")
METRICS_PORT = 9464


def build(tools: Tools, variant: str, tmp_path: Path) -> list[dict]:
    """The objects of a variant, after strict offline validation."""
    if variant == "cpu+hpa":
        # A throwaway overlay using the component, as an operator's overlay would.
        root = tmp_path / "cpu-hpa"
        root.mkdir()
        rel = Path(os.path.relpath(K8S, root))
        (root / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [str(rel / "overlays" / "cpu")],
                    "components": [str(rel / "components" / "hpa")],
                }
            )
        )
    else:
        root = K8S / "overlays" / variant
    built = tools.run("kustomize", "build", root).stdout
    validation = tools.run("validate", stdin=built, check=False)
    assert validation.returncode == 0, f"{variant}: validation failed:\n{validation.stdout}{validation.stderr}"
    return load_all(built)


@pytest.fixture(scope="module")
def variants(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    tmp = tmp_path_factory.mktemp("kustomize")
    return {variant: build(tools, variant, tmp) for variant in VARIANTS}


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def worker_container(objects: list[dict]) -> dict:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def worker_settings(objects: list[dict], tmp_path: Path):
    """The settings a worker pod would load: the ConfigMap's file plus the pod's plain env."""
    config = one(objects, "ConfigMap")
    container = worker_container(objects)
    env = env_of(container)
    path = Path(env["STREAMPROC_CONFIG_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if Path(path).parent == Path(m["mountPath"]))
    volume = next(
        v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert volume["configMap"]["name"] == config["metadata"]["name"], "STREAMPROC_CONFIG_FILE is not the ConfigMap"
    local = tmp_path / path.name
    local.write_text(config["data"][path.name])
    plain = {name: e["value"] for name, e in env.items() if "value" in e and name != "STREAMPROC_CONFIG_FILE"}
    return load_settings(local, environ=plain)


def bundled_plugins() -> set[str]:
    """Entry-point names of the plugin distributions under plugins/."""
    import tomllib

    names = set()
    for pyproject in (REPO / "plugins").glob("*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        names |= set(project.get("entry-points", {}).get("streamproc.plugins", {}))
    return names


def all_variants(variants: dict[str, list[dict]]) -> Iterator[tuple[str, list[dict]]]:
    yield from variants.items()


def test_every_variant_builds_and_validates_strictly(variants: dict[str, list[dict]]) -> None:
    for variant, objects in variants.items():
        kinds = {o["kind"] for o in objects}
        assert {
            "Deployment",
            "ConfigMap",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ServiceMonitor",
            "PrometheusRule",
        } <= kinds, variant


def test_validator_rejects_unknown_fields_and_broken_references(tools: Tools, variants: dict) -> None:
    """The validator is not a rubber stamp: a misspelt field or a probe on an undeclared port fails."""
    deployment = one(variants["cpu"], "Deployment")
    typo = yaml.safe_dump(deployment).replace("readinessProbe:", "readinessProbes:")
    result = tools.run("validate", stdin=typo, check=False)
    assert result.returncode == 1 and "unknown field" in result.stdout, result.stdout
    bad_port = yaml.safe_dump(deployment).replace("port: metrics", "port: metric")
    result = tools.run("validate", stdin=bad_port, check=False)
    assert result.returncode == 1 and "Not found" in result.stdout, result.stdout
    scaled = next(o for o in variants["cpu"] if o["kind"] == "ScaledObject")
    bad_lag = yaml.safe_dump(scaled).replace("lagThreshold: '1000'", "lagThreshold: 'many'")
    result = tools.run("validate", stdin=bad_lag, check=False)
    assert result.returncode == 1 and "lagThreshold" in result.stdout, result.stdout


def test_all_objects_live_in_one_namespace(variants: dict[str, list[dict]]) -> None:
    for variant, objects in variants.items():
        namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
        declared = one(objects, "Namespace")["metadata"]["name"]
        assert namespaces == {declared}, f"{variant}: objects in {namespaces}, namespace object {declared}"


def test_config_map_is_valid_worker_settings_for_bundled_plugins(variants: dict, tmp_path: Path) -> None:
    settings = worker_settings(variants["cpu"], tmp_path)
    assert set(settings.plugins) <= bundled_plugins(), "config names a plugin no distribution provides"
    for name, plugin in settings.plugins.items():
        batch = plugin.batch
        assert None not in (batch.max_batch_size, batch.max_wait_ms, batch.max_queue), f"{name}: batching not set"
        assert batch.max_queue >= batch.max_batch_size, f"{name}: max_queue below max_batch_size"
    assert settings.http.bind == "0.0.0.0" and settings.http.port == METRICS_PORT
    assert settings.kafka.sasl_password is None and settings.redis.password is None, "secrets belong in a Secret"


def test_every_variant_keeps_the_results_page_off(variants: dict, tmp_path: Path) -> None:
    """A pod binds 0.0.0.0, so the page (``http.ui``, docs/ui.md) would show results to anyone
    reaching the metrics port: off in the ConfigMap and not turned on by the pod's env."""
    for variant, objects in variants.items():
        assert worker_settings(objects, tmp_path).http.ui is False, f"{variant}: http.ui is on"


def test_every_env_var_is_a_setting_and_secrets_are_optional_secret_refs(variants: dict) -> None:
    names = set(env_paths()) | {"STREAMPROC_CONFIG_FILE"}
    for variant, objects in variants.items():
        env = env_of(worker_container(objects))
        assert set(env) <= names, f"{variant}: {set(env) - names} match no setting"
        for secret in ("STREAMPROC_KAFKA_SASL_PASSWORD", "STREAMPROC_REDIS_PASSWORD"):
            ref = env[secret]["valueFrom"]["secretKeyRef"]
            assert ref["optional"] is True, f"{variant}: {secret} must be an optional secretKeyRef"


def service_link_env(service: dict, cluster_ip: str = "10.96.0.12") -> dict[str, str]:
    """The variables the kubelet injects into pods of the namespace for ``service`` when
    service links are on (Kubernetes' ``envvars.FromServices``)."""
    name = service["metadata"]["name"].upper().replace("-", "_")
    ports = service["spec"]["ports"]
    first = ports[0]
    env = {
        f"{name}_SERVICE_HOST": cluster_ip,
        f"{name}_SERVICE_PORT": str(first["port"]),
        f"{name}_PORT": f"{first.get('protocol', 'TCP').lower()}://{cluster_ip}:{first['port']}",
    }
    for port in ports:
        protocol = port.get("protocol", "TCP")
        if port.get("name"):
            env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        prefix = f"{name}_PORT_{port['port']}_{protocol}"
        env[prefix] = f"{protocol.lower()}://{cluster_ip}:{port['port']}"
        env[f"{prefix}_PROTO"] = protocol.lower()
        env[f"{prefix}_PORT"] = str(port["port"])
        env[f"{prefix}_ADDR"] = cluster_ip
    return env


def test_settings_load_with_every_service_link_kubernetes_could_inject(variants: dict, tmp_path: Path) -> None:
    """A pod starts even where service links reach it: the worker's env plus the links of
    every Service in the overlay (and of one named like the app) still load as settings."""
    for variant, objects in variants.items():
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        assert pod["enableServiceLinks"] is False, f"{variant}: service links must be off"
        services = [o for o in objects if o["kind"] == "Service"]
        services.append({"metadata": {"name": "streamproc"}, "spec": {"ports": [{"port": 80, "name": "http"}]}})
        links: dict[str, str] = {}
        for service in services:
            links |= service_link_env(service)
        assert any(name.startswith("STREAMPROC_") for name in links), "the links must reach the settings prefix"
        container = worker_container(objects)
        config = one(objects, "ConfigMap")
        config_file = tmp_path / variant / "streamproc.yaml"
        config_file.parent.mkdir()
        config_file.write_text(next(iter(config["data"].values())))
        plain = {n: e["value"] for n, e in env_of(container).items() if "value" in e and n != "STREAMPROC_CONFIG_FILE"}
        settings = load_settings(config_file, environ={**links, **plain})
        assert settings.http.port == METRICS_PORT, variant


def test_workers_spread_over_zones_and_nodes(variants: dict) -> None:
    for variant, objects in variants.items():
        template = one(objects, "Deployment")["spec"]["template"]
        constraints = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
        assert set(constraints) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, variant
        for constraint in constraints.values():
            assert constraint["maxSkew"] == 1
            assert constraint["labelSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_probes_use_the_metrics_port_and_the_health_endpoints(variants: dict) -> None:
    for variant, objects in variants.items():
        container = worker_container(objects)
        assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in container["ports"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, variant
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, variant
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", variant


def test_pod_is_non_root_with_read_only_root_and_writable_tmp(variants: dict) -> None:
    for variant, objects in variants.items():
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        container = worker_container(objects)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        # /tmp, and the image's WORKDIR where Faust creates its data directory.
        assert mounts.get("/tmp") in empty_dirs and mounts.get("/var/lib/streamproc") in empty_dirs, variant
        assert pod["automountServiceAccountToken"] is False


def test_grace_period_exceeds_the_worker_drain_bound(variants: dict, tmp_path: Path) -> None:
    for variant, objects in variants.items():
        settings = worker_settings(objects, tmp_path)
        grace = one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= settings.shutdown_timeout_s + 10, f"{variant}: {grace}s leaves no margin"


def test_gpu_overlay_requests_a_gpu_on_gpu_nodes_and_cpu_overlay_does_not(variants: dict) -> None:
    gpu_pod = one(variants["gpu"], "Deployment")["spec"]["template"]["spec"]
    gpu = worker_container(variants["gpu"])
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod["tolerations"]
    assert env_of(gpu)["STREAMPROC_DEVICE"]["value"] == "cuda"
    assert gpu["image"].endswith("-gpu")
    cpu_pod = one(variants["cpu"], "Deployment")["spec"]["template"]["spec"]
    cpu = worker_container(variants["cpu"])
    assert "nvidia.com/gpu" not in str(cpu["resources"]) and "nodeSelector" not in cpu_pod
    assert env_of(cpu)["STREAMPROC_DEVICE"]["value"] == "cpu"
    assert cpu["resources"]["requests"] == cpu["resources"]["limits"]  # Guaranteed QoS
    assert cpu["image"].endswith("-cpu")


def test_service_and_service_monitor_reach_the_metrics_port(variants: dict) -> None:
    objects = variants["cpu"]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port = service["spec"]["ports"][0]
    assert (port["port"], port["targetPort"], port["name"]) == (METRICS_PORT, "metrics", "metrics")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # The alerts select job="streamproc": the job label comes from this Service label.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "streamproc"


def test_pod_disruption_budget_covers_the_workers(variants: dict) -> None:
    objects = variants["cpu"]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_network_policy_admits_monitoring_only_and_egress_reaches_kafka_redis_dns(
    variants: dict, tmp_path: Path
) -> None:
    objects = variants["cpu"]
    settings = worker_settings(objects, tmp_path)
    policy = one(objects, "NetworkPolicy")["spec"]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    [ingress] = policy["ingress"]
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    egress_ports = {(p["port"], p.get("protocol", "TCP")) for rule in policy["egress"] for p in rule["ports"]}
    kafka_ports = {int(b.rsplit(":", 1)[1]) for b in settings.kafka.bootstrap.split(",")}
    redis_port = urlsplit(settings.redis.url).port or 6379
    assert {(p, "TCP") for p in kafka_ports} <= egress_ports, "egress misses the Kafka bootstrap port"
    assert (redis_port, "TCP") in egress_ports, "egress misses the Redis port"
    assert {(53, "UDP"), (53, "TCP")} <= egress_ports, "egress misses DNS"


def test_keda_scales_on_the_worker_group_lag_within_the_input_partitions(variants: dict, tmp_path: Path) -> None:
    objects = variants["cpu"]
    settings = worker_settings(objects, tmp_path)
    scaled = one(objects, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    assert "replicas" not in one(objects, "Deployment")["spec"], "the autoscaler owns the replica count"
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"kafka"}
    assert {t["metadata"]["topic"] for t in triggers} == set(settings.kafka.input_topics.values())
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == (settings.kafka.consumer_group or settings.app_id) == "streamproc"
        assert meta["bootstrapServers"] == settings.kafka.bootstrap
        assert meta["offsetResetPolicy"] == settings.kafka.auto_offset_reset
        assert int(meta["lagThreshold"]) > 0
    # Replicas beyond the partitions of the input topics would idle.
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= settings.kafka.partitions


def test_hpa_component_replaces_keda_within_the_input_partitions(variants: dict, tmp_path: Path) -> None:
    objects = variants["cpu+hpa"]
    settings = worker_settings(objects, tmp_path)
    assert not [o for o in objects if o["kind"] == "ScaledObject"], "two autoscalers would fight"
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    assert hpa["maxReplicas"] <= settings.kafka.partitions
    assert hpa["metrics"][0]["external"]["metric"]["name"] == "streamproc_consumer_lag"


def test_prometheus_rule_is_the_rules_file(variants: dict) -> None:
    rule = one(variants["cpu"], "PrometheusRule")
    source = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"], "run: python deploy/tools/sync_rules.py"


def test_kustomize_resources_have_why_comments() -> None:
    """Every manifest we write starts by saying what it is for."""
    for path in sorted(K8S.rglob("*.yaml")):
        first = path.read_text().lstrip().splitlines()[0]
        assert first.startswith("#"), f"{path.relative_to(REPO)} has no leading comment"
        assert not re.search(r"\t", path.read_text()), f"{path.relative_to(REPO)} has tabs"
