"""Configuration: precedence, environment mapping, masking, documentation of every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import env_paths, load_settings, reference_markdown
from streamproc.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_environment_overrides_yaml_which_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  bootstrap: from-yaml:9092\n  partitions: 6\nhttp:\n  port: 1234\n")
    settings = load_settings(config, {"STREAMPROC_HTTP_PORT": "4321"})
    assert settings.kafka.bootstrap == "from-yaml:9092" and settings.kafka.partitions == 6
    assert settings.http.port == 4321
    assert settings.redis.key_prefix == "streamproc:"


def test_mappings_take_json_in_the_environment() -> None:
    settings = load_settings(
        environ={"STREAMPROC_PLUGINS": '{"tagger": {"enabled": false, "batch": {"max_batch_size": 8}}}'}
    )
    assert settings.plugin("tagger").enabled is False
    assert settings.plugin("tagger").batch.max_batch_size == 8
    assert settings.plugin("other").enabled is True


def test_unknown_variable_and_invalid_value_are_named() -> None:
    with pytest.raises(ConfigError, match="STREAMPROC_KAFKA_BOOTSTRAPS matches no setting"):
        load_settings(environ={"STREAMPROC_KAFKA_BOOTSTRAPS": "x"})
    with pytest.raises(ConfigError, match=r"setting http\.port"):
        load_settings(environ={"STREAMPROC_HTTP_PORT": "-1"})


def test_secrets_are_masked_in_the_printed_configuration() -> None:
    settings = load_settings(
        environ={
            "STREAMPROC_REDIS_URL": "redis://app:hunter2@redis:6379/0",
            "STREAMPROC_KAFKA_SASL_PASSWORD": "s3cret",
            "STREAMPROC_REDIS_PASSWORD": "pw",
        }
    )
    text = str(settings.masked())
    assert "hunter2" not in text and "s3cret" not in text and "'pw'" not in text
    assert settings.masked()["redis"]["url"] == "redis://app:***@redis:6379/0"


def test_every_setting_is_documented_and_the_reference_is_current() -> None:
    documented = DOCS.read_text()
    missing = [name for name in env_paths() if f"`{name}`" not in documented]
    assert not missing, f"docs/configuration.md lacks {missing}"
    assert reference_markdown() in documented, "regenerate with: streamproc config --reference"


def test_kubernetes_service_links_are_ignored_but_settings_and_typos_are_not(caplog: pytest.LogCaptureFixture) -> None:
    injected = {
        "STREAMPROC_METRICS_SERVICE_HOST": "10.96.0.12",
        "STREAMPROC_METRICS_SERVICE_PORT": "9464",
        "STREAMPROC_METRICS_SERVICE_PORT_METRICS": "9464",
        "STREAMPROC_METRICS_PORT": "tcp://10.96.0.12:9464",
        "STREAMPROC_METRICS_PORT_9464_TCP": "tcp://10.96.0.12:9464",
        "STREAMPROC_METRICS_PORT_9464_TCP_PROTO": "tcp",
        "STREAMPROC_METRICS_PORT_9464_TCP_PORT": "9464",
        "STREAMPROC_METRICS_PORT_9464_TCP_ADDR": "10.96.0.12",
    }
    with caplog.at_level("DEBUG", logger="streamproc.config"):
        settings = load_settings(environ={**injected, "STREAMPROC_HTTP_PORT": "9500"})
    assert settings.http.port == 9500
    assert {r.getMessage().split(":")[0] for r in caplog.records} == {f"ignoring {n}" for n in injected}
    # A setting named like a link is still a setting, and a bad value of it is still an error.
    with pytest.raises(ConfigError, match=r"setting http\.port"):
        load_settings(environ={"STREAMPROC_HTTP_PORT": "tcp://10.0.0.1:9464"})
    with pytest.raises(ConfigError, match="STREAMPROC_METRICS_PORT matches no setting"):
        load_settings(environ={"STREAMPROC_METRICS_PORT": "9464"})
