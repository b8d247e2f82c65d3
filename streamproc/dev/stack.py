"""The local stack: a real single-node Apache Kafka (KRaft) broker and a real Redis server.

For development, the demo and the tests on a machine without Docker. Kafka's jars come
from Maven Central through the Maven recipe ``kafka-pom.xml`` beside this module into a cache outside the clone
(``$STREAMPROC_CACHE``, default ``~/.cache/streamproc``); Redis is Debian's
``redis-server``. Both listen on free loopback ports. A stack lives in a home directory
(``$STREAMPROC_STACK_HOME``, else ``<cache>/stack``) holding ``stack.json`` with its PIDs and
addresses, so ``down`` and ``status`` find it and a second ``up`` reports the running
stack instead of starting another. The commands that need Kafka or Redis read the same
file (``with_local_stack``) when no address is configured, so a user who forgets the
printed ``export`` line still reaches the stack.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from streamproc.config import Settings
from streamproc.errors import StackError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
KAFKA_POM = Path(__file__).resolve().parent / "kafka-pom.xml"  # package data of streamproc-dev
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


def cache_dir() -> Path:
    """Where streamproc keeps downloads and state outside the clone."""
    return Path(os.environ.get("STREAMPROC_CACHE", Path.home() / ".cache" / "streamproc"))


def default_home() -> Path:
    """The stack's home unless one is given: ``$STREAMPROC_STACK_HOME``, else ``<cache>/stack``."""
    return Path(os.environ.get("STREAMPROC_STACK_HOME") or cache_dir() / "stack")


@dataclass(frozen=True)
class StackInfo:
    """A running stack: its addresses and the PIDs that ``down`` stops."""

    kafka_bootstrap: str
    redis_url: str
    kafka_pid: int
    redis_pid: int
    home: str
    controller_port: int = 0
    sasl_bootstrap: str = ""
    """A second listener requiring SASL/PLAIN (``LocalStack(sasl_users=...)``), else empty."""
    ssl_bootstrap: str = ""
    """A Kafka listener speaking TLS (``LocalStack(tls=True)``), else empty."""
    redis_tls_url: str = ""
    """Redis's TLS port as a ``rediss://`` URL (``LocalStack(tls=True)``), else empty."""
    tls_cafile: str = ""
    """The self-signed certificate both TLS ports present: the clients' CA bundle."""

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.rsplit(":", 1)[1])

    @property
    def redis_port(self) -> int:
        return int(self.redis_url.rsplit(":", 1)[1].split("/")[0])

    def describe(self) -> str:
        return (
            f"Kafka bootstrap: {self.kafka_bootstrap} (pid {self.kafka_pid})\n"
            f"Redis URL:       {self.redis_url} (pid {self.redis_pid})\n"
            f"Stack home:      {self.home}\n"
            f"export STREAMPROC_KAFKA_BOOTSTRAP={self.kafka_bootstrap} "
            f"STREAMPROC_REDIS_URL={self.redis_url}"
        )


def with_local_stack(settings: Settings, home: Path | None = None) -> tuple[Settings, str | None]:
    """``settings`` with the running local stack's Kafka and Redis addresses where none is
    configured (``kafka.bootstrap``, ``redis.url`` unset in the file and the environment),
    and the one line saying so; unchanged, with ``None``, when both are configured or no
    stack runs."""
    use_kafka = "bootstrap" not in settings.kafka.model_fields_set
    use_redis = "url" not in settings.redis.model_fields_set
    if not (use_kafka or use_redis):
        return settings, None
    stack = LocalStack(home)
    info = stack.status()
    if info is None:
        return settings, None
    update: dict[str, object] = {}
    used = []
    if use_kafka:
        update["kafka"] = settings.kafka.model_copy(update={"bootstrap": info.kafka_bootstrap})
        used.append(f"Kafka {info.kafka_bootstrap}")
    if use_redis:
        update["redis"] = settings.redis.model_copy(update={"url": info.redis_url})
        used.append(f"Redis {info.redis_url}")
    line = f"using the local stack ({stack.state_file}): {', '.join(used)}"
    return settings.model_copy(update=update), line


class LocalStack:
    """Start, inspect and stop one local Kafka + Redis stack rooted at ``home``."""

    def __init__(
        self,
        home: Path | None = None,
        kafka_heap_mb: int = 512,
        persistent_redis: bool = False,
        sasl_users: Mapping[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        self.home = Path(home) if home else default_home()
        self.kafka_heap_mb = kafka_heap_mb
        # append-only file, fsynced every second: a restart or a SIGKILL of Redis keeps what was acknowledged
        # more than 2 s before (the file is written before the reply unless a slow fsync postpones the write by up
        # to 2 s); a host crash loses the writes of the last 1-2 s (docs/reliability.md, 'Redis persistence')
        self.persistent_redis = persistent_redis
        self.sasl_users = dict(sasl_users or {})  # user -> password of a SASL_PLAINTEXT listener (tests)
        self.tls = tls  # also a Kafka SSL listener and a Redis TLS port, both with a self-signed certificate (tests)
        self.libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def state_file(self) -> Path:
        """Where ``up`` writes the running stack's PIDs and addresses."""
        return self.home / "stack.json"

    def status(self) -> StackInfo | None:
        """The running stack, or ``None``. A half-dead stack is reported as not running."""
        if not self.state_file.exists():
            return None
        info = StackInfo(**json.loads(self.state_file.read_text()))
        if alive(info.kafka_pid) and alive(info.redis_pid):
            return info
        return None

    def up(self, progress: Callable[[str], None] = print) -> StackInfo:
        """Start Kafka and Redis (or return the running stack). Raises ``StackError``."""
        running = self.status()
        if running is not None:
            progress("stack already running")
            return running
        self.down(quiet=True)  # clear a half-dead stack's leftovers
        java = _require("java", "OpenJDK 17 is required: apt-get install -y openjdk-17-jre-headless")
        redis_server = ensure_redis_server(progress)
        self.ensure_kafka_jars(progress)
        self.home.mkdir(parents=True, exist_ok=True)
        redis_port, kafka_port, controller_port, sasl_port, ssl_port, redis_tls_port = free_ports(6)
        certificate = _self_signed_certificate(self.home / "tls") if self.tls else None
        redis_pid = self._start_redis(redis_server, redis_port, redis_tls_port, certificate)
        try:
            self._format_kafka(java, kafka_port, controller_port, sasl_port, ssl_port, certificate)
            kafka_pid = self._start_kafka(java, kafka_port, progress)
        except BaseException:
            _stop_pid(redis_pid)
            raise
        info = StackInfo(
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            kafka_pid=kafka_pid,
            redis_pid=redis_pid,
            home=str(self.home),
            controller_port=controller_port,
            sasl_bootstrap=f"127.0.0.1:{sasl_port}" if self.sasl_users else "",
            ssl_bootstrap=f"127.0.0.1:{ssl_port}" if certificate else "",
            redis_tls_url=f"rediss://127.0.0.1:{redis_tls_port}/0" if certificate else "",
            tls_cafile=str(certificate.cert) if certificate else "",
        )
        self._save(info)
        return info

    def _save(self, info: StackInfo) -> None:
        self.state_file.write_text(json.dumps(asdict(info), indent=2))

    def _running(self) -> StackInfo:
        if not self.state_file.exists():
            raise StackError(f"no stack in {self.home}")
        return StackInfo(**json.loads(self.state_file.read_text()))

    def restart_kafka(self, down_s: float = 0.0) -> StackInfo:
        """Fault injection: stop the broker (TERM), wait ``down_s``, start it on the same ports and data."""
        info = self._running()
        _stop_pid(info.kafka_pid)
        time.sleep(down_s)
        java = _require("java", "OpenJDK 17 is required")
        info = replace(info, kafka_pid=self._start_kafka(java, info.kafka_port, lambda _: None))
        self._save(info)
        return info

    def stop_redis(self) -> None:
        """Fault injection: stop the Redis server (the stack stays registered)."""
        _stop_pid(self._running().redis_pid)

    def start_redis(self) -> StackInfo:
        """Start Redis again on its port (after ``stop_redis`` or a kill); its data is back from the
        append-only file when the stack is ``persistent_redis``, else gone."""
        info = self._running()
        tls_port = int(info.redis_tls_url.rsplit(":", 1)[1].split("/")[0]) if info.redis_tls_url else 0
        certificate = _certificate_files(self.home / "tls") if info.redis_tls_url else None
        pid = self._start_redis(ensure_redis_server(), info.redis_port, tls_port, certificate)
        info = replace(info, redis_pid=pid)
        self._save(info)
        return info

    def down(self, quiet: bool = False) -> bool:
        """Stop the stack's processes (TERM, then KILL after a bound); True if one ran."""
        if not self.state_file.exists():
            return False
        info = StackInfo(**json.loads(self.state_file.read_text()))
        for pid in (info.kafka_pid, info.redis_pid):
            _stop_pid(pid)
        self.state_file.unlink(missing_ok=True)
        if not quiet:
            log.info("stack stopped")
        return True

    def ensure_kafka_jars(self, progress: Callable[[str], None] = print) -> Path:
        """Fetch Kafka's jars with Maven into the cache, once."""
        marker = self.libs / f"kafka_2.13-{KAFKA_VERSION}.jar"
        if marker.exists():
            return self.libs
        mvn = _require("mvn", "Maven is required to fetch Kafka's jars: apt-get install -y maven")
        if not KAFKA_POM.exists():
            raise StackError(f"Kafka recipe not found at {KAFKA_POM} (reinstall streamproc-dev)")
        progress(f"fetching Apache Kafka {KAFKA_VERSION} jars with Maven (first run only) ...")
        tmp = self.libs.with_name("libs.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            f"-Dkafka.version={KAFKA_VERSION}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not (tmp / marker.name).exists():
            raise StackError(f"Maven could not fetch Kafka's jars:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        shutil.rmtree(self.libs, ignore_errors=True)
        tmp.rename(self.libs)
        return self.libs

    def _start_redis(self, redis_server: str, port: int, tls_port: int, certificate: Certificate | None) -> int:
        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        out = open(self.home / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [
                redis_server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent_redis else "no",
                "--appendfsync",
                "everysec",  # with appendonly: fsync once a second (Redis's default, stated)
                "--dir",
                str(data),
                "--protected-mode",
                "yes",
                *(_redis_tls_options(tls_port, certificate) if certificate else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for(lambda: redis_ping(port), 20.0, f"Redis on port {port}", proc, self.home / "redis.log")
        return proc.pid

    def _format_kafka(
        self, java: str, port: int, controller_port: int, sasl_port: int, ssl_port: int, certificate: Certificate | None
    ) -> None:
        run = self.home / "kafka"
        shutil.rmtree(run, ignore_errors=True)
        (run / "data").mkdir(parents=True)
        properties = _server_properties(port, controller_port, run / "data")
        if self.sasl_users:
            properties = _with_sasl_listener(properties, sasl_port, self.sasl_users)
        if certificate:
            properties = _with_ssl_listener(properties, ssl_port, certificate)
        (run / "server.properties").write_text(properties)
        (run / "log4j2.properties").write_text(_LOG4J2)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if cluster_id.startswith("-"):
            cluster_id = "A" + cluster_id[1:]
        cmd = [
            *self._java(java),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(run / "server.properties"),
            "--standalone",
        ]
        fmt = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if fmt.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{fmt.stdout[-1500:]}{fmt.stderr[-1500:]}")

    def _java(self, java: str) -> list[str]:
        run = self.home / "kafka"
        return [
            java,
            f"-Xmx{self.kafka_heap_mb}m",
            f"-Xms{min(256, self.kafka_heap_mb)}m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={run / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={run}",
            "-cp",
            f"{self.libs}/*",
        ]

    def _start_kafka(self, java: str, port: int, progress: Callable[[str], None]) -> int:
        run = self.home / "kafka"
        progress(f"starting Kafka {KAFKA_VERSION} on 127.0.0.1:{port} ...")
        server_log = run / "server.log"
        started_at = server_log.stat().st_size if server_log.exists() else 0
        out = open(run / "kafka.out", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [*self._java(java), "kafka.Kafka", str(run / "server.properties")],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for(
            lambda: _kafka_ready(port, server_log, started_at),
            READY_TIMEOUT_S,
            f"Kafka on port {port}",
            proc,
            server_log,
        )
        return proc.pid


def ensure_redis_server(progress: Callable[[str], None] = print) -> str:
    """Path of ``redis-server``, installing Debian's package when missing and possible."""
    found = shutil.which("redis-server")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise StackError("redis-server is missing and cannot be installed here: apt-get install -y redis-server")
    progress("installing Debian's redis-server ...")
    for args in (["update", "-q"], ["install", "-y", "-q", "redis-server"]):
        done = subprocess.run(
            [apt, *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if done.returncode != 0:
            raise StackError(f"apt-get {' '.join(args)} failed:\n{done.stderr[-1500:]}")
    found = shutil.which("redis-server")
    if not found:
        raise StackError("redis-server still missing after apt-get install")
    return found


def _server_properties(port: int, controller_port: int, data: Path) -> str:
    return f"""process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
log.cleaner.dedupe.buffer.size=16777216
auto.create.topics.enable=true
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
"""


def _with_listener(properties: str, name: str, port: int, extra: list[str]) -> str:
    """``properties`` with one more client listener ``name`` (its security protocol too) on
    ``port``, followed by the ``extra`` lines that configure it."""
    replaced = []
    for line in properties.splitlines():
        key = line.split("=", 1)[0]
        if key in ("listeners", "advertised.listeners"):
            line += f",{name}://127.0.0.1:{port}"
        elif key == "listener.security.protocol.map":
            line += f",{name}:{name}"
        replaced.append(line)
    return "\n".join(replaced + extra) + "\n"


def _with_sasl_listener(properties: str, port: int, users: Mapping[str, str]) -> str:
    """``properties`` with a client listener on ``port`` requiring SASL/PLAIN with ``users``
    (no authorizer: any authenticated user may do anything)."""
    accounts = " ".join(f'user_{user}="{password}"' for user, password in users.items())
    return _with_listener(
        properties,
        "SASL_PLAINTEXT",
        port,
        [
            "sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {accounts};",
        ],
    )


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and its unencrypted PKCS#8 key, both PEM, and
    the two in one file (Kafka's PEM key store)."""

    cert: Path
    key: Path
    keystore: Path


def _certificate_files(directory: Path) -> Certificate:
    """Where a stack's certificate lives (``_self_signed_certificate`` writes it there)."""
    return Certificate(directory / "cert.pem", directory / "key.pem", directory / "keystore.pem")


def _self_signed_certificate(directory: Path) -> Certificate:
    """Make a two-day self-signed certificate for ``127.0.0.1`` with ``openssl``."""
    certificate = _certificate_files(directory)
    directory.mkdir(parents=True, exist_ok=True)
    openssl = _require("openssl", "openssl is required for a TLS stack: apt-get install -y openssl")
    # fmt: off
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(certificate.key), "-out", str(certificate.cert)],
        capture_output=True, text=True, check=False,
    )
    # fmt: on
    if made.returncode != 0:
        raise StackError(f"openssl could not make a certificate:\n{made.stderr[-1500:]}")
    certificate.keystore.write_text(certificate.key.read_text() + certificate.cert.read_text())
    return certificate


def _with_ssl_listener(properties: str, port: int, certificate: Certificate) -> str:
    """``properties`` with a client listener on ``port`` speaking TLS with ``certificate``
    (server authentication only; Kafka reads the PEM files directly)."""
    return _with_listener(
        properties,
        "SSL",
        port,
        [
            "listener.name.ssl.ssl.keystore.type=PEM",
            f"listener.name.ssl.ssl.keystore.location={certificate.keystore}",
        ],
    )


def _redis_tls_options(port: int, certificate: Certificate) -> list[str]:
    """``redis-server`` options adding a TLS port with ``certificate`` (no client certificates)."""
    # fmt: off
    return ["--tls-port", str(port), "--tls-cert-file", str(certificate.cert),
            "--tls-key-file", str(certificate.key), "--tls-auth-clients", "no"]
    # fmt: on


_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache
logger.apache.level = WARN
"""


def _require(tool: str, hint: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise StackError(f"{tool} not found. {hint}")
    return found


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _stop_pid(pid: int) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        if not alive(pid):
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and alive(pid):
            _reap(pid)
            time.sleep(0.1)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_for(
    check: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen[bytes], logfile: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with status {proc.returncode}; last log:\n{_tail(logfile)}")
        if check():
            return
        time.sleep(0.25)
    _stop_pid(proc.pid)
    raise StackError(f"{what} not ready after {timeout_s:.0f} s; last log:\n{_tail(logfile)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _kafka_ready(port: int, server_log: Path, log_offset: int = 0) -> bool:
    """Ready once the broker logged its start (after ``log_offset``) and accepts connections."""
    try:
        with server_log.open("rb") as log:
            log.seek(log_offset)
            if b"Kafka Server started" not in log.read():
                return False
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def main_progress(message: str) -> None:
    """Progress output of stack commands: to stderr, so stdout stays parseable."""
    print(message, file=sys.stderr, flush=True)
