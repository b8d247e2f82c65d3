"""Shared fixtures: the real Kafka broker and Redis server, unique names, worker processes.

The stack comes from, in order: ``STREAMPROC_KAFKA_BOOTSTRAP`` and ``STREAMPROC_REDIS_URL``
when set; containers started through testcontainers when a Docker engine answers; else
the project's local stack (``streamproc.dev.stack``), started once per test session in a
temporary home and stopped at the end.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamproc.dev.stack import LocalStack, cache_dir

TESTS = Path(__file__).resolve().parent
FIXTURE_PLUGINS = TESTS / "fixture_plugins"


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    source: str


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """Addresses of a real Kafka broker and a real Redis server for the whole session."""
    bootstrap = os.environ.get("STREAMPROC_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("STREAMPROC_REDIS_URL")
    if bootstrap and redis_url:
        yield Endpoints(bootstrap, redis_url, "environment")
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka, RedisContainer("redis:7") as redis:
            host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
            yield Endpoints(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0", "testcontainers")
        return
    stack = LocalStack(tmp_path_factory.mktemp("stack"))
    info = stack.up(lambda message: print(message, file=sys.stderr))
    try:
        yield Endpoints(info.kafka_bootstrap, info.redis_url, "local stack")
    finally:
        stack.down()


@pytest.fixture()
def unique() -> str:
    """A short unique name for this test's topics, consumer group and Redis prefix."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def test_plugins_path() -> Path:
    """The test plugin distribution, pip-installed into its own target directory.

    Installed with pip (its entry points land in a real ``.dist-info``), but outside the
    virtual environment so the demo and production runs never see these plugins. Add
    the path to ``sys.path``/``PYTHONPATH`` to discover them.
    """
    digest = hashlib.sha256()
    for path in sorted(FIXTURE_PLUGINS.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(path.name.encode() + path.read_bytes())
    target = cache_dir() / f"testplugins-{digest.hexdigest()[:12]}"
    if not (target / "streamproc_testplugins").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--target",
                str(target),
                str(FIXTURE_PLUGINS),
            ],
            check=True,
        )
    return target
