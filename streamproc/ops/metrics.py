"""Prometheus metrics of one worker.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` and ``_bytes``
units). ``METRIC_NAMES`` lists every family the worker itself exports; the deployment's
dashboard and alerts may only use these (a test checks them against a live worker).
"""

from __future__ import annotations

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
INFER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
INTAKE_BUCKETS = (*BATCH_BUCKETS, 512, 1024, 2048)


class Metrics:
    """Every metric of one worker, in its own registry (several workers may share a process in tests)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events_consumed = Counter(
            "streamproc_events_consumed_total", "Input records consumed, by event type", ["type"], registry=r
        )
        self.events_invalid = Counter(
            "streamproc_events_invalid_total",
            "Input records refused before any plugin, by stage",
            ["stage"],
            registry=r,
        )
        self.fields_ignored = Counter(
            "streamproc_event_fields_ignored_total",
            "Fields of valid input events this version does not know (dropped: schema evolution), by event type",
            ["type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamproc_dead_letters_total", "Records written to the dead-letter topic", ["stage", "plugin"], registry=r
        )
        self.results = Counter(
            "streamproc_results_total", "Results published, by plugin and kind", ["plugin", "kind"], registry=r
        )
        self.plugin_errors = Counter(
            "streamproc_plugin_errors_total", "Items a plugin failed, by stage", ["plugin", "stage"], registry=r
        )
        self.batch_size = Histogram(
            "streamproc_batch_size", "Items per inference batch", ["plugin"], buckets=BATCH_BUCKETS, registry=r
        )
        self.intake_batch = Histogram(
            "streamproc_intake_batch_records",
            "Records the engine took from the agent in one intake pass (decoded and routed together)",
            buckets=INTAKE_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "streamproc_inference_seconds",
            "Wall time of one batch (prepare, infer, results)",
            ["plugin"],
            buckets=INFER_BUCKETS,
            registry=r,
        )
        self.latency_seconds = Histogram(
            "streamproc_end_to_end_latency_seconds",
            "Event time to result acknowledged by both sinks",
            ["plugin"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "streamproc_queue_depth", "Items waiting for a batch, by plugin", ["plugin"], registry=r
        )
        self.in_flight = Gauge("streamproc_in_flight_events", "Records accepted and not yet acknowledged", registry=r)
        self.publish_seconds = Histogram(
            "streamproc_publish_seconds",
            "Time to write one publication batch to both sinks",
            buckets=INFER_BUCKETS,
            registry=r,
        )
        self.sink_failures = Counter(
            "streamproc_sink_failures_total", "Failed sink writes (retried), by sink", ["sink"], registry=r
        )
        self.consumer_lag = Gauge(
            "streamproc_consumer_lag",
            "Records behind the partition's high watermark",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_lag = Gauge(
            "streamproc_committed_lag",
            "Records behind the partition's high watermark that the group has not committed (a restart replays them)",
            ["topic", "partition"],
            registry=r,
        )
        self.model_info = Gauge(
            "streamproc_model_info",
            "Loaded plugin model (value 1)",
            ["plugin", "version", "device", "dtype"],
            registry=r,
        )
        self.abandoned_threads = Gauge(
            "streamproc_abandoned_threads",
            "Threads of timed-out batches still running, by plugin (thread mode; at max_abandoned_threads "
            "the plugin's batches are refused and /healthz fails)",
            ["plugin"],
            registry=r,
        )
        self.model_process_restarts = Counter(
            "streamproc_model_process_restarts_total",
            "Model processes restarted, by plugin and reason (timeout: a hung batch; died: it exited)",
            ["plugin", "reason"],
            registry=r,
        )
        self.model_process_memory = Gauge(
            "streamproc_model_process_resident_bytes",
            "Resident memory of a plugin's model processes, summed (model_processes > 0)",
            ["plugin"],
            registry=r,
        )
        self.plugin_load_failures = Gauge(
            "streamproc_plugin_load_failures", "Plugins that failed to load at start", registry=r
        )
        self.gpu_memory_used = Gauge(
            "streamproc_gpu_memory_used_bytes", "CUDA memory reserved by the worker", ["device"], registry=r
        )
        self.gpu_memory_total = Gauge(
            "streamproc_gpu_memory_total_bytes", "CUDA memory of the device", ["device"], registry=r
        )
        self.up = Gauge("streamproc_worker_ready", "1 when the worker is ready to consume", registry=r)

    def exposition(self) -> bytes:
        """The worker's metrics, then the process-wide default registry: the Python process
        (``process_*``, ``python_*``) and the counters plugins register there themselves
        (``streamproc_recommender_unknown_items_total``)."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)


METRIC_NAMES = (
    "streamproc_events_consumed_total",
    "streamproc_events_invalid_total",
    "streamproc_event_fields_ignored_total",
    "streamproc_dead_letters_total",
    "streamproc_results_total",
    "streamproc_plugin_errors_total",
    "streamproc_batch_size",
    "streamproc_intake_batch_records",
    "streamproc_inference_seconds",
    "streamproc_end_to_end_latency_seconds",
    "streamproc_queue_depth",
    "streamproc_in_flight_events",
    "streamproc_committed_lag",
    "streamproc_abandoned_threads",
    "streamproc_model_process_restarts_total",
    "streamproc_model_process_resident_bytes",
    "streamproc_publish_seconds",
    "streamproc_sink_failures_total",
    "streamproc_consumer_lag",
    "streamproc_model_info",
    "streamproc_plugin_load_failures",
    "streamproc_gpu_memory_used_bytes",
    "streamproc_gpu_memory_total_bytes",
    "streamproc_worker_ready",
)
