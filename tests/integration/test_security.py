"""Security promises: safetensors only, Redis AUTH, secrets never logged, configurable bind."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import redis
from harness import WorkerProcess, create_topics, make_settings, password_redis, playback, produce, read_topic

from streamproc.dev.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
PICKLE_LOADERS = re.compile(r"\btorch\.load\(|\bpickle\.loads?\(|\bjoblib\.load\(|\bnp\.load\([^)]*allow_pickle=True")


def test_no_code_loads_weights_through_pickle() -> None:
    sources = [p for d in ("streamproc", "plugins") for p in (ROOT / d).rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in sources if PICKLE_LOADERS.search(p.read_text())]
    assert not offenders, f"pickle-based loading in {offenders}"


def test_shipped_weights_are_safetensors_and_json_only() -> None:
    allowed = {".safetensors", ".json", ".tsv", ".txt", ".md"}
    files = [p for p in (ROOT / "plugins").glob("*/streamproc_*/weights/*") if p.is_file()]
    assert [p.name for p in files if p.suffix not in allowed] == []


@pytest.mark.integration
def test_redis_auth_works_and_no_secret_reaches_the_logs(unique, tmp_path: Path, test_plugins_path: Path) -> None:
    """The worker authenticates to a ``redis-server --requirepass`` and to a broker listener
    that requires SASL/PLAIN (so the Kafka secret does reach the broker), and neither
    secret appears in its DEBUG logs or on /metrics."""
    password, sasl_secret = f"pw-{unique}-redis", f"pw-{unique}-kafka"
    stack = LocalStack(tmp_path / "sasl-stack", sasl_users={"streamproc": sasl_secret})
    info = stack.up(lambda message: None)
    try:
        with password_redis(password) as port:
            sasl = SimpleNamespace(kafka_bootstrap=info.sasl_bootstrap, redis_url=f"redis://127.0.0.1:{port}/0")
            settings = make_settings(sasl, unique, {}, enabled_plugins=["echo"], log_level="DEBUG")
            settings["redis"]["password"] = password
            settings["kafka"].update(
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN",
                sasl_username="streamproc",
                sasl_password=sasl_secret,
            )
            create_topics(info.kafka_bootstrap, settings["kafka"]["input_topics"].values())  # the plain listener
            worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
            try:
                produce(info.kafka_bootstrap, f"{unique}-playback", [playback("s1", "u1", "7")])
                read_topic(info.kafka_bootstrap, f"{unique}-out-echo", 1)
                _, metrics = worker.http("/metrics")
            finally:
                worker.terminate()
            client = redis.Redis(port=port, password=password)
            assert client.get(f"t:{unique}:latest:echo:u1") is not None, "the result went through AUTH"
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=port).get("x")
            exposed = worker.log_path.read_text() + metrics
            assert password not in exposed and sasl_secret not in exposed
    finally:
        stack.down()


@pytest.mark.integration
@pytest.mark.parametrize(("bind", "listening"), [("0.0.0.0", "0.0.0.0"), (None, "127.0.0.1")])
def test_probe_endpoints_bind_the_configured_address(
    endpoints, unique, tmp_path, test_plugins_path, bind: str | None, listening: str
) -> None:
    """An address other than the default is honoured; without ``http.bind`` it is loopback."""
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["echo"])
    if bind is None:
        del settings["http"]["bind"]
    else:
        settings["http"]["bind"] = bind
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
    try:
        sockets = psutil.Process(worker.proc.pid).net_connections(kind="tcp")
        bound = {c.laddr.ip for c in sockets if c.status == psutil.CONN_LISTEN and c.laddr.port == worker.port}
        assert bound == {listening}
        assert worker.http("/healthz")[0] == 200 and worker.http("/readyz")[0] == 200
    finally:
        worker.terminate()
