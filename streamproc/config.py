"""Configuration: one settings object from defaults, an optional YAML file and the environment.

Precedence (highest first): ``STREAMPROC_*`` environment variables, the YAML file named
by ``--config`` or ``STREAMPROC_CONFIG_FILE``, the defaults below. Every scalar setting
has an environment variable: the path of the field in upper case joined by ``_``
(``kafka.bootstrap`` -> ``STREAMPROC_KAFKA_BOOTSTRAP``). Mappings (``plugins``,
``kafka.input_topics``) take JSON in the environment. ``docs/configuration.md`` lists
every setting; ``streamproc config`` prints the effective values with secrets masked.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from streamproc.errors import ConfigError
from streamproc.events import PayloadLimits
from streamproc.records import DEFAULT_MAX_RESULT_BYTES

ENV_PREFIX = "STREAMPROC_"

log = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KafkaSettings(_Section):
    """Where events come from and results go (an existing cluster in production)."""

    bootstrap: str = Field("127.0.0.1:9092", description="bootstrap servers, comma-separated host:port")
    input_topics: dict[str, str] = Field(
        default_factory=lambda: {"playback": "playback-events", "upload": "upload-events", "audio": "audio-events"},
        description="event type -> input topic (events of any type are accepted on any of them)",
    )
    output_topic_prefix: str = Field(
        "streamproc-", description="results of kind K go to <prefix>K unless a plugin sets output_topic"
    )
    dead_letter_topic: str = Field("streamproc-dead-letters", description="refused events, with reason and stage")
    partitions: int = Field(4, ge=1, description="partitions of topics the worker creates")
    replication_factor: int = Field(1, ge=1, description="replication of topics the worker creates")
    consumer_group: str | None = Field(None, description="consumer group id (default: app_id)")
    auto_offset_reset: Literal["earliest", "latest"] = Field("earliest", description="where a new group starts")
    commit_interval_s: float = Field(
        1.0,
        gt=0,
        description="how often acknowledged offsets are committed (at_least_once; exactly_once commits "
        "them in each publication's transaction)",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="at_least_once: outputs are acknowledged, then offsets committed (a crash may repeat outputs); "
        "exactly_once: each publication batch's outputs, dead letters and input offsets are one Kafka transaction "
        "and inputs are read read_committed (docs/reliability.md)",
    )
    transaction_timeout_s: float = Field(
        60.0, gt=0, description="exactly_once: the broker aborts a transaction left open longer than this"
    )
    stream_buffer_maxsize: int = Field(256, ge=1, description="records buffered per partition before fetching pauses")
    session_timeout_s: float = Field(
        30.0,
        gt=0,
        description="consumer group session timeout: how long a silent member keeps its partitions (10 in the "
        "Kubernetes config)",
    )
    group_instance_id: str | None = Field(
        None,
        description="static group membership (Kafka group.instance.id): a worker restarted with the same id gets "
        "its partitions back at once, without a rebalance; unique per running worker (Kubernetes: the pod name)",
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024 * 1024,
        description="largest record the worker writes; topics it creates get this max.message.bytes, the producer "
        "this max_request_size (the brokers' message.max.bytes must be at least this)",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how clients talk to the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (SASL_* protocols)"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret: masked, never logged)")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL / SASL_SSL")
    ssl_certfile: str | None = Field(None, description="client certificate for mutual TLS")
    ssl_keyfile: str | None = Field(None, description="client key for mutual TLS")


class RedisSettings(_Section):
    """Where latest results and live feeds are kept, and the engine's keyed state."""

    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// (TLS) URL")
    password: SecretStr | None = Field(None, description="AUTH password (overrides one in the URL)")
    ssl_cafile: str | None = Field(None, description="CA bundle for rediss:// (else the system's trusted CAs)")
    key_prefix: str = Field("streamproc:", description="prefix of every key the worker writes")
    result_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="TTL of latest-result keys")
    feed_maxlen: int = Field(10_000, ge=1, description="approximate cap of each result-kind stream")
    dedupe_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="how long a published event id is remembered")
    state_ttl_s: int = Field(90 * 24 * 3600, ge=1, description="TTL of plugin keyed state")
    state_recent_ids: int = Field(
        64,
        ge=1,
        le=10_000,
        description="event ids remembered per state key: a re-published event among them changes nothing (a "
        "redelivered record is caught by its partition offset however old)",
    )
    state_cache_entries: int = Field(
        100_000, ge=1, description="keyed states cached in memory per worker (none with a write in flight is evicted)"
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{_mask_url(url)!r} is not a redis://, rediss:// or unix:// URL")
        try:
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
        database = parts.path.strip("/")
        if parts.scheme != "unix" and (not parts.hostname or not port_ok or not (database == "" or database.isdigit())):
            raise ValueError(f"{_mask_url(url)!r}: expected redis[s]://[[user]:password@]host[:port][/db]")
        return url


class HttpSettings(_Section):
    """The metrics and health endpoints (/metrics, /healthz, /readyz), and optionally the results page."""

    bind: str = Field("127.0.0.1", description="address to bind (0.0.0.0 in a pod)")
    port: int = Field(9464, ge=0, le=65535, description="port; 0 picks a free one")
    ui: bool = Field(
        False,
        description="also serve the live results page (/, docs/ui.md) on this port: read-only, but it shows "
        "results and dead-letter reasons to whoever reaches the port (off in the Kubernetes config)",
    )


class LimitSettings(_Section):
    """Payload limits, enforced before anything is decoded."""

    max_record_bytes: int = Field(8 * 1024 * 1024, ge=1, description="largest input record accepted")
    max_image_bytes: int = Field(5 * 1024 * 1024, ge=1, description="largest image (decoded bytes)")
    max_audio_bytes: int = Field(12 * 1024 * 1024, ge=1, description="largest WAV file (decoded bytes)")
    max_audio_seconds: float = Field(60.0, gt=0, description="longest audio clip, read from the WAV header")
    max_text_chars: int = Field(5000, ge=1, description="title plus description of an upload")
    max_future_skew_s: float = Field(
        86_400.0, gt=0, description="events stamped further ahead of the worker's clock are refused (ts)"
    )
    max_result_bytes: int = Field(
        DEFAULT_MAX_RESULT_BYTES,
        ge=1024,
        description="largest result body (JSON) a plugin may return; a larger one is dead-lettered (stage result)",
    )
    allow_uris: bool = Field(False, description="accept image_uri/audio_uri (off by default)")
    uri_allowlist: list[str] = Field(
        default_factory=list, description="with allow_uris: directories file:// URIs may point into"
    )

    def payload_limits(self) -> PayloadLimits:
        """The limits the event decoder checks."""
        data = self.model_dump()
        data["uri_allowlist"] = tuple(data["uri_allowlist"])
        return PayloadLimits(**{f.name: data[f.name] for f in fields(PayloadLimits)})


class BatchSettings(_Section):
    """Overrides of a plugin's default batch policy; unset fields keep the plugin's."""

    max_batch_size: int | None = Field(None, ge=1, description="largest batch")
    max_wait_ms: float | None = Field(None, ge=0, description="longest wait for a batch to fill")
    max_queue: int | None = Field(None, ge=1, description="items waiting before submitters wait")


class PluginSettings(_Section):
    """Per-plugin configuration: routes, output topic, batching and model options."""

    enabled: bool = Field(True, description="load and route to this plugin")
    consumes: list[str] | None = Field(None, description="event types / result kinds (default: the plugin's own)")
    output_topic: str | None = Field(None, description="default: <output_topic_prefix><kind>")
    batch: BatchSettings = Field(default_factory=BatchSettings)
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the plugin's load()")


class Settings(_Section):
    """Everything the worker, the CLI and the demo read."""

    app_id: str = Field("streamproc", description="Faust app id; also the default consumer group")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    plugins: dict[str, PluginSettings] = Field(default_factory=dict, description="by plugin name")
    enabled_plugins: list[str] | None = Field(
        None, description="load only these plugins (default: every discovered plugin not disabled)"
    )
    fail_fast: bool = Field(False, description="stop when any plugin fails to load")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast on CUDA (auto: bf16 if supported)"
    )
    cpu_threads: int = Field(
        0, ge=0, description="torch threads per plugin thread on CPU (0: cores - 1 shared by the enabled plugins, 1-8)"
    )
    model_processes: int = Field(
        0,
        ge=0,
        description="0: each plugin computes on a thread of the worker process; N: in N model processes of its own, "
        "off the event loop's GIL (docs/architecture.md, 'Model processes')",
    )
    model_threads: int = Field(1, ge=1, le=64, description="torch threads of each model process (model_processes > 0)")
    max_in_flight: int = Field(1024, ge=1, description="events accepted but not yet published, across partitions")
    infer_retries: int = Field(1, ge=0, description="one-by-one retries of items of a failed batch")
    infer_timeout_s: float = Field(60.0, gt=0, description="a batch taking longer fails (hung plugin)")
    max_abandoned_threads: int = Field(
        2,
        ge=1,
        description="model_processes 0: threads of timed-out batches (a thread cannot be killed) that may still "
        "run per plugin; at the bound its batches fail at once and /healthz fails",
    )
    publish_retry_s: float = Field(1.0, gt=0, description="pause between attempts while a sink is down")
    shutdown_timeout_s: float = Field(30.0, gt=0, description="SIGTERM: drain and commit within this bound")
    stall_timeout_s: float = Field(
        300.0,
        gt=0,
        description="/healthz fails when records wait this long with none acked, or wait in Kafka with none taken",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log threshold")
    log_format: Literal["text", "json"] = Field("text", description="text for people, json for log pipelines")

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"{device!r} is not a device: use auto, cpu, cuda or cuda:N")
        return device

    @field_validator("kafka")
    @classmethod
    def _bootstrap_servers(cls, kafka: KafkaSettings) -> KafkaSettings:
        for server in kafka.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap: {server.strip()!r} is not host:port (comma-separated for several)")
        return kafka

    def plugin(self, name: str) -> PluginSettings:
        return self.plugins.get(name) or PluginSettings()

    def plugin_enabled(self, name: str) -> bool:
        listed = self.enabled_plugins is None or name in self.enabled_plugins
        return listed and self.plugin(name).enabled

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, with every secret replaced by ``***``."""
        data = self.model_dump(mode="json")
        data["redis"]["url"] = _mask_url(self.redis.url)
        for section, key in (("kafka", "sasl_password"), ("redis", "password")):
            if data[section][key] is not None:
                data[section][key] = "***"
        return data


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}{sep}{user}:***@{host}"


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build the settings from defaults, the YAML file and the environment.

    Raises ``ConfigError`` naming the offending setting when a value is invalid or an
    environment variable matches no setting.
    """
    env = dict(os.environ if environ is None else environ)
    path = path or env.get(f"{ENV_PREFIX}CONFIG_FILE")
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: a mapping is required at the top level")
        data = loaded
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and name != f"{ENV_PREFIX}CONFIG_FILE" and name not in _NOT_SETTINGS:
            if name not in env_paths() and is_service_link(name, value):
                log.debug("ignoring %s: a Kubernetes service link, not a setting", name)
                continue
            _apply_env(data, name, value)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if message.startswith("bootstrap: "):  # checked on the kafka section as a whole
            where, message = f"{where}.bootstrap", message.removeprefix("bootstrap: ")
        raise ConfigError(f"setting {where}: {message}") from None


# Variables with the prefix that are not settings (used by the stack, tests and caches).
_NOT_SETTINGS = {f"{ENV_PREFIX}{n}" for n in ("CACHE", "VENV", "STACK_HOME", "TEST_FULL")}

# What the kubelet injects for every Service of the pod's namespace (unless the pod sets
# enableServiceLinks: false): for Service "streamproc-metrics" with port 9464 named
# "metrics", STREAMPROC_METRICS_SERVICE_HOST, ..._SERVICE_PORT, ..._SERVICE_PORT_METRICS,
# ..._PORT=tcp://10.0.0.1:9464 and ..._PORT_9464_TCP[_PROTO|_PORT|_ADDR].
_SERVICE_LINK_NAME = re.compile(
    r"^\w+?_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$"
)
_SERVICE_LINK_URL = re.compile(r"^(tcp|udp|sctp)://[^/\s]+:\d+$")


def is_service_link(name: str, value: str) -> bool:
    """Whether an environment variable is one Kubernetes injects for a Service (``docker
    --link`` style), recognised by its name's suffix or, for ``<SERVICE>_PORT``, by its
    ``tcp://host:port`` value. Only consulted for names that match no setting."""
    if _SERVICE_LINK_NAME.match(name):
        return True
    return name.endswith("_PORT") and bool(_SERVICE_LINK_URL.match(value))


def env_paths() -> dict[str, tuple[str, ...]]:
    """Every environment variable that maps to a setting, with its field path."""
    paths: dict[str, tuple[str, ...]] = {}

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        for field_name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, (*prefix, field_name))
            else:
                paths[ENV_PREFIX + "_".join((*prefix, field_name)).upper()] = (*prefix, field_name)

    walk(Settings, ())
    return paths


def _apply_env(data: dict[str, Any], name: str, value: str) -> None:
    path = env_paths().get(name)
    if path is None:
        raise ConfigError(f"environment variable {name} matches no setting (see docs/configuration.md)")
    target = data
    for part in path[:-1]:
        target = target.setdefault(part, {})
    leaf = path[-1]
    if value.lstrip().startswith(("{", "[")):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: invalid JSON ({exc.msg})") from None
        if isinstance(parsed, dict) and isinstance(target.get(leaf), dict):
            target[leaf] = {**target[leaf], **parsed}
        else:
            target[leaf] = parsed
    else:
        target[leaf] = value


def reference_markdown() -> str:
    """Every setting as Markdown tables: variable, YAML path, default, meaning."""
    rows = ["| environment variable | YAML path | default | meaning |", "| --- | --- | --- | --- |"]
    rows += reference_rows(Settings, (), with_env=True)
    rows += [
        "",
        "Per plugin, under `plugins.<name>` (YAML, or JSON in `STREAMPROC_PLUGINS`):",
        "",
        "| YAML path | default | meaning |",
        "| --- | --- | --- |",
    ]
    rows += reference_rows(PluginSettings, ("plugins", "<name>"), with_env=False)
    return "\n".join(rows) + "\n"


def reference_rows(model: type[BaseModel], prefix: tuple[str, ...], with_env: bool) -> list[str]:
    """Markdown table rows of ``model``'s fields (nested models flattened) under ``prefix``."""
    rows = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        path = (*prefix, name)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += reference_rows(annotation, path, with_env)
            continue
        default = json.dumps(info.get_default(call_default_factory=True))
        cells = [f"`{'.'.join(path)}`", f"`{default}`", info.description or ""]
        if with_env:
            cells.insert(0, f"`{ENV_PREFIX + '_'.join(path).upper()}`")
        rows.append("| " + " | ".join(cells) + " |")
    return rows
