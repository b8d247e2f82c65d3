"""Container images and docker-compose, checked without a Docker engine.

The Dockerfiles are parsed here (instructions, stages, COPY sources, the final stage's
user, entrypoint, health check and environment) and their build contexts filtered with
their ``.dockerignore`` the way BuildKit does; the compose file is read as YAML and its
services, ports and environment compared with the worker's settings.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import DEPLOY, REPO

from streamproc.config import env_paths, load_settings

DOCKER = DEPLOY / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "gpu": DOCKER / "Dockerfile.gpu"}
COMPOSE = DOCKER / "docker-compose.yml"
INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}
METRICS_PORT = 9464


# ---- a small Dockerfile reader --------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def flags(self) -> tuple[dict[str, str], list[str]]:
        """``--name=value`` options and the remaining words."""
        words = shlex.split(self.args)
        options = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            options[name] = value
        return options, words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.args):
                name, _, value = word.partition("=")
                values[name] = value
        return values


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions grouped into stages; fails on an unknown instruction."""
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append((start, pending + stripped))
        pending = ""
    assert not pending, f"{path.name}: file ends inside a continued line"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        assert keyword in INSTRUCTIONS, f"{path.name}:{number}: unknown instruction {keyword}"
        instruction = Instruction(keyword, args.strip(), number)
        if keyword == "FROM":
            words = shlex.split(args)
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m[1] or m[2], m[0]), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"{path.name}:{number}: FROM image [AS name]"
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}:{number}: only ARG may come before the first FROM"
            name, _, default = args.strip().partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    lines = [line.strip() for line in ignore.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def excluded(path: str, patterns: list[str]) -> bool:
    """BuildKit's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            result = not negated
    return result


# ---- Dockerfiles ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request: pytest.FixtureRequest) -> tuple[str, Path, Dockerfile]:
    path = DOCKERFILES[request.param]
    return request.param, path, parse_dockerfile(path)


def test_stages_build_from_known_bases_and_earlier_stages(image: tuple[str, Path, Dockerfile]) -> None:
    variant, path, dockerfile = image
    names: list[str] = []
    for stage in dockerfile.stages:
        assert "$" not in stage.base, f"{path.name}: FROM {stage.base} has an undefined ARG"
        assert stage.base in names or re.fullmatch(r"[\w./-]+:[\w.-]+", stage.base), (
            f"{path.name}: FROM {stage.base} is neither an earlier stage nor a tagged image"
        )
        for copy in stage.all("COPY") + stage.all("ADD"):
            source = copy.flags()[0].get("from")
            assert source is None or source in names, f"{path.name}:{copy.line}: --from={source} is no earlier stage"
        if stage.name:
            assert stage.name not in names, f"{path.name}: stage {stage.name} defined twice"
            names.append(stage.name)
    assert len(dockerfile.stages) >= 2, "multi-stage: a builder and a runtime"
    bases = {s.base for s in dockerfile.stages if s.base not in names}  # images, not earlier stages
    if variant == "cpu":
        assert all(b.startswith("python:3.11-slim") for b in bases), bases
    else:
        cuda = next(b for b in bases if b.startswith("nvidia/cuda:"))
        assert cuda.endswith("-ubuntu22.04")
        cuda_version = re.match(r"nvidia/cuda:(\d+)\.(\d+)", cuda)
        assert cuda_version, cuda
        torch_index = next(a for s in dockerfile.stages for a in s.all("ARG") if a.args.startswith("TORCH_INDEX_URL"))
        assert torch_index.args.endswith(f"/cu{cuda_version[1]}{cuda_version[2]}"), (
            "torch's CUDA build must match the base image's CUDA version"
        )
        assert "python3.11" in " ".join(r.args for s in dockerfile.stages for r in s.all("RUN"))


def test_copy_sources_exist_and_survive_the_dockerignore(image: tuple[str, Path, Dockerfile]) -> None:
    _, path, dockerfile = image
    patterns = dockerignore_patterns(path)
    for stage in dockerfile.stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            options, words = copy.flags()
            if "from" in options:
                continue
            for source in words[:-1]:
                matches = list(REPO.glob(source.rstrip("/"))) if any(c in source for c in "*?[") else [REPO / source]
                assert matches and all(m.exists() for m in matches), (
                    f"{path.name}:{copy.line}: COPY source {source} does not exist in the repository"
                )
                for match in matches:
                    rel = match.relative_to(REPO).as_posix()
                    assert not excluded(rel, patterns), f"{path.name}: {rel} is excluded by the .dockerignore"


def test_dockerignore_keeps_plugin_weights_and_drops_caches(image: tuple[str, Path, Dockerfile]) -> None:
    _, path, _ = image
    patterns = dockerignore_patterns(path)
    for weights in (REPO / "plugins").glob("*/*/weights/*"):
        rel = weights.relative_to(REPO).as_posix()
        assert not excluded(rel, patterns), f"{rel} would not reach the image"
    for junk in (
        ".git/config",
        "streamproc/__pycache__/cli.cpython-311.pyc",
        "plugins/tagger/tests/test_x.py",
        ".venv/bin/python",
        "tests/conftest.py",
        "streamproc.egg-info/PKG-INFO",
    ):
        assert excluded(junk, patterns), f"{junk} would be sent to the builder"


def test_runtime_stage_runs_streamproc_worker_as_non_root(image: tuple[str, Path, Dockerfile]) -> None:
    _, path, dockerfile = image
    final = dockerfile.stages[-1]
    keywords = [i.keyword for i in final.instructions]
    assert "USER" in keywords and "ENTRYPOINT" in keywords
    assert keywords.index("USER") < keywords.index("ENTRYPOINT"), "USER must come before ENTRYPOINT"
    user = final.all("USER")[-1].args.split(":")[0]
    assert user not in ("root", "0") and user == "10001", f"{path.name}: runs as {user}"
    assert json.loads(final.all("ENTRYPOINT")[-1].args) == ["streamproc"]
    assert json.loads(final.all("CMD")[-1].args) == ["worker"]
    copies = [c.flags() for c in final.all("COPY")]
    assert ({"from": "builder"}, ["/opt/streamproc", "/opt/streamproc"]) in copies, "runtime copies the venv"
    assert "10001" in " ".join(r.args for r in final.all("RUN")), "the uid 10001 user is created"


def test_runtime_environment_binds_endpoints_and_names_only_real_settings(image: tuple[str, Path, Dockerfile]) -> None:
    _, path, dockerfile = image
    final = dockerfile.stages[-1]
    env = final.env()
    assert env["STREAMPROC_HTTP_BIND"] == "0.0.0.0"
    assert env["STREAMPROC_HTTP_PORT"] == str(METRICS_PORT)
    settings_env = {k: v for k, v in env.items() if k.startswith("STREAMPROC_")}
    assert set(settings_env) <= set(env_paths()), (
        f"{path.name}: unknown settings {set(settings_env) - set(env_paths())}"
    )
    load_settings(environ=settings_env)  # values valid too
    assert [e.args for e in final.all("EXPOSE")] == [str(METRICS_PORT)]
    [health] = final.all("HEALTHCHECK")
    assert "/healthz" in health.args and "STREAMPROC_HTTP_PORT" in health.args
    assert final.all("WORKDIR")[-1].args == "/var/lib/streamproc"


def test_builder_installs_every_plugin_distribution_as_a_wheel(image: tuple[str, Path, Dockerfile]) -> None:
    _, _, dockerfile = image
    runs = " ".join(r.args for s in dockerfile.stages for r in s.all("RUN"))
    assert "pip wheel" in runs and "plugins/*/pyproject.toml" in runs
    assert "streamproc plugins" in runs, "the build proves every plugin loads"
    assert "-e " not in runs and "--editable" not in runs


def test_plugin_weights_ship_as_package_data() -> None:
    """Every file under a plugin's weights/ matches its distribution's package-data globs."""
    for pyproject in sorted((REPO / "plugins").glob("*/pyproject.toml")):
        config = tomllib.loads(pyproject.read_text())
        package_data = config.get("tool", {}).get("setuptools", {}).get("package-data", {})
        for weights in sorted(pyproject.parent.glob("*/weights/*")):
            package = weights.parent.parent.name
            rel = weights.relative_to(weights.parent.parent).as_posix()
            globs = package_data.get(package, []) + package_data.get("*", [])
            assert any(fnmatch(rel, g) for g in globs), f"{weights.relative_to(REPO)} is not package data"


# ---- docker-compose -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def published(service: dict) -> list[tuple[str, str, int]]:
    """(host ip, host port or range, container port) of each published port."""
    out = []
    for spec in service.get("ports", []):
        ip, host, container = str(spec).rsplit(":", 2) if str(spec).count(":") == 2 else ("", *str(spec).split(":"))
        out.append((ip, host, int(container)))
    return out


def test_compose_has_the_whole_stack(compose: dict) -> None:
    assert set(compose["services"]) == {"kafka", "redis", "worker", "prometheus", "grafana"}
    for name, service in compose["services"].items():
        for ip, _, _ in published(service):
            assert ip == "127.0.0.1", f"{name} publishes a port beyond the laptop"


def test_compose_kafka_is_a_single_kraft_node(compose: dict) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "healthcheck" in kafka


def test_compose_worker_settings_point_at_the_compose_services(compose: dict) -> None:
    services = compose["services"]
    worker = services["worker"]
    env = {k: str(v) for k, v in worker["environment"].items()}
    assert set(env) <= set(env_paths()), f"unknown settings {set(env) - set(env_paths())}"
    settings = load_settings(environ=env)
    advertised = dict(
        (listener.split("://")[0], listener.split("://")[1])
        for listener in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    assert settings.kafka.bootstrap == advertised[services["kafka"]["environment"]["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    redis = urlsplit(settings.redis.url)
    assert (redis.hostname, redis.port) == ("redis", 6379)
    assert settings.http.bind == "0.0.0.0" and settings.http.port == METRICS_PORT
    assert [p[2] for p in published(worker)] == [METRICS_PORT]
    assert {worker["depends_on"][s]["condition"] for s in ("kafka", "redis")} == {"service_healthy"}
    grace = int(worker["stop_grace_period"].rstrip("s"))
    assert grace > settings.shutdown_timeout_s
    assert worker["read_only"] is True and {"/tmp", "/var/lib/streamproc"} <= {t.split(":")[0] for t in worker["tmpfs"]}


def test_compose_worker_is_built_from_the_cpu_dockerfile(compose: dict) -> None:
    build = compose["services"]["worker"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILES["cpu"]


def _mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of each bind mount (host paths relative to the compose file)."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            mounts[container] = (COMPOSE.parent / host).resolve()
    return mounts


def test_compose_prometheus_scrapes_the_worker_and_loads_the_alerts(compose: dict) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = _mounts(prometheus)
    for host in mounts.values():
        assert host.exists(), host
    assert mounts["/etc/prometheus/alerts.yml"] == DEPLOY / "prometheus" / "alerts.yml"
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "streamproc"
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == METRICS_PORT
    # The same Prometheus release as the promtool that checks the rules.
    pinned = re.search(
        r"PROMETHEUS_MODULE_VERSION=v0\.(\d+)\.(\d+)", (DEPLOY / "tools" / "install-tools.sh").read_text()
    )
    assert pinned
    major_minor = int(pinned[1])
    assert prometheus["image"] == f"prom/prometheus:v{major_minor // 100}.{major_minor % 100}.{pinned[2]}"


def test_compose_grafana_is_provisioned_with_the_dashboard(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "streamproc.yml").read_text())["providers"]
    dashboard_dir = provider["options"]["path"]
    assert mounts[f"{dashboard_dir}/streamproc.json"] == DEPLOY / "grafana" / "streamproc.json"
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
