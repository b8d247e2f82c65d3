"""The plugin API through a real installed distribution: discovery, routing, batching, state."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import torch

from streamproc import registry
from streamproc.config import PluginSettings, load_settings
from streamproc.engine.batching import MicroBatcher
from streamproc.engine.routing import PluginRoute, Router
from streamproc.engine.runtime import PluginRuntime, choose_autocast, merged_policy
from streamproc.errors import ConfigError, PluginLoadError
from streamproc.events import decode_event
from streamproc.registry import build_router, load_plugins


@pytest.fixture()
def installed(test_plugins_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(test_plugins_path))
    for name in [m for m in sys.modules if m.startswith("streamproc_testplugins")]:
        monkeypatch.delitem(sys.modules, name)


def upload(event_id: str, title: str):
    return decode_event(
        f'{{"id": "{event_id}", "type": "upload", "ts": 1, "user_id": "u", '
        f'"upload_id": "{event_id}", "title": "{title}"}}'.encode()
    )


def test_plugins_are_found_through_entry_points_and_a_broken_one_is_reported(installed: None) -> None:
    found, failures = registry.discover()
    names = {p.name for p in found}
    assert {"echo", "shout", "counter", "flaky", "slow", "media"} <= names
    assert next(p for p in found if p.name == "echo").distribution == "streamproc-testplugins"
    broken = next(f for f in failures if f.name == "broken")
    assert "broken on purpose" in broken.reason


def test_one_plugin_is_loaded_by_name_and_an_unknown_or_broken_name_is_refused(installed: None) -> None:
    echo = registry.load_plugin("echo")
    assert echo.name == "echo" and echo.model_version
    with pytest.raises(PluginLoadError, match="no plugin 'nope'"):
        registry.load_plugin("nope")
    with pytest.raises(PluginLoadError, match="broken on purpose"):
        registry.load_plugin("broken")


def test_loading_reports_failures_and_fail_fast_stops(installed: None) -> None:
    settings = load_settings(environ={"STREAMPROC_ENABLED_PLUGINS": '["echo", "broken", "ehco"]'})
    runtimes, reports = load_plugins(settings)
    assert set(runtimes) == {"echo"}
    assert any(r.name == "broken" and r.error for r in reports)
    assert any(r.name == "ehco" and r.error and r.error.startswith("not installed") for r in reports)
    with pytest.raises(Exception, match="broken on purpose"):
        load_plugins(settings.model_copy(update={"fail_fast": True}))


def test_configured_routes_and_batching_override_plugin_defaults(installed: None) -> None:
    settings = load_settings(
        environ={
            "STREAMPROC_ENABLED_PLUGINS": '["echo"]',
            "STREAMPROC_PLUGINS": '{"echo": {"consumes": ["audio"], "batch": {"max_batch_size": 3}}}',
        }
    )
    runtimes, _ = load_plugins(settings)
    router = build_router(settings, runtimes)
    assert router.plugins_for("audio") == ("echo",) and router.plugins_for("upload") == ()
    assert type(runtimes["echo"].plugin).consumes != ("audio",)  # routes are the router's data, not the class's
    assert runtimes["echo"].policy.max_batch_size == 3 and runtimes["echo"].policy.max_wait_ms == 5


def test_router_chains_result_kinds_and_refuses_cycles() -> None:
    router = Router([PluginRoute("a", ("audio",), "transcript", "t1"), PluginRoute("b", ("transcript",), "tr", "t2")])
    assert router.plugins_for("audio") == ("a",) and router.plugins_for("transcript") == ("b",)
    with pytest.raises(ConfigError, match="cycle"):
        Router([PluginRoute("a", ("x",), "y", "t"), PluginRoute("b", ("y",), "x", "t")])


def _runtime(name: str, **batch: int) -> PluginRuntime:
    found = {p.name: p for p in registry.discover()[0]}
    settings = PluginSettings.model_validate({"batch": batch})
    runtime = PluginRuntime(found[name].cls(), settings, torch.device("cpu"), None, infer_retries=1)
    runtime.load()
    return runtime


def test_failed_batch_is_retried_item_by_item_so_only_the_poisonous_item_fails(installed: None) -> None:
    runtime = _runtime("flaky")
    outcomes, stats = runtime.run_batch(
        [
            (upload("a", "fine"), None),
            (upload("b", "boom"), None),
            (upload("c", "refuse"), None),
            (upload("d", "fine"), None),
        ]
    )
    assert outcomes[0].body == {"title": "fine"} and outcomes[3].body == {"title": "fine"}
    assert outcomes[1].failure.stage == "infer" and "boom" in outcomes[1].failure.reason
    assert outcomes[2].failure.stage == "prepare"
    assert stats.retried and stats.errors == {"infer": 1}


def test_micro_batcher_forms_batches_up_to_the_limit_and_answers_each_caller(installed: None) -> None:
    runtime = _runtime("echo", max_batch_size=4, max_wait_ms=50)
    sizes: list[int] = []

    async def run() -> list:
        batcher = MicroBatcher(runtime, timeout_s=10, observe=lambda _, stats: sizes.append(stats.size))
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(upload(f"e{i}", "t"), None) for i in range(10)))
        finally:
            await batcher.stop()

    outcomes = asyncio.run(run())
    assert [o.body["id"] for o in outcomes] == [f"e{i}" for i in range(10)]
    assert sizes == [4, 4, 2]


def test_hung_batch_times_out_and_the_next_batch_still_runs(installed: None) -> None:
    runtime = _runtime("slow", max_batch_size=1)
    runtime.context.options.update(delay_s=1.0)  # type: ignore[attr-defined]

    async def run() -> tuple:
        batcher = MicroBatcher(runtime, timeout_s=0.3)
        batcher.start()
        try:
            first = await batcher.submit(upload("a", "t"), None)
            runtime.context.options.update(delay_s=0.0)  # type: ignore[attr-defined]
            second = await batcher.submit(upload("b", "t"), None)
            return first, second
        finally:
            await batcher.stop()

    first, second = asyncio.run(run())
    assert first.failure.stage == "timeout"
    assert second.body == {"id": "b"}


def test_merged_policy_keeps_queue_at_least_one_batch() -> None:
    from streamproc.plugin import BatchPolicy

    policy = merged_policy(BatchPolicy(8, 5, 16), PluginSettings.model_validate({"batch": {"max_batch_size": 64}}))
    assert policy.max_batch_size == 64 and policy.max_queue == 64


def test_cpu_runs_in_float32_and_cuda_autocasts() -> None:
    assert choose_autocast(torch.device("cpu"), "auto") is None
    assert choose_autocast(torch.device("cuda"), "fp16") is torch.float16
    assert choose_autocast(torch.device("cuda"), "fp32") is None


def test_a_plugin_written_for_an_unsupported_api_version_is_refused_with_the_reason(installed: None) -> None:
    from importlib.metadata import EntryPoint

    from streamproc_testplugins.plugins import Echo

    class FutureEcho(Echo):
        name = "future"
        api_version = 2

    globals()["FutureEcho"] = FutureEcho  # importable by the entry point below
    entry = EntryPoint("future", f"{__name__}:FutureEcho", "streamproc.plugins")
    with pytest.raises(PluginLoadError, match="written for plugin API version 2; this engine supports 1"):
        registry.check_entry_point(entry)


def test_plugin_options_are_validated_against_its_options_model_with_uniform_messages() -> None:
    from streamproc_artwork.plugin import ArtworkPlugin

    assert registry.validated_options(ArtworkPlugin, {})["image_size"] == 28  # the generator's native size
    with pytest.raises(ConfigError, match=r"^plugins\.artwork\.options\.image_size: Input should be less than or"):
        registry.validated_options(ArtworkPlugin, {"image_size": 1000})
    with pytest.raises(ConfigError, match=r"^plugins\.artwork\.options\.colour: Extra inputs are not permitted"):
        registry.validated_options(ArtworkPlugin, {"colour": "red"})
