"""Prometheus metrics of the sampling service (`serve --metrics-port`), prefixed `polypsynth_`.

Each server owns its registry, so two servers in one process (tests, benchmarks) never share or
clash over series. Gauges of queue state are read from the batchers when scraped.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

BATCH_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REQUEST_SECONDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


def batch_size_buckets(max_batch: int) -> tuple[float, ...]:
    """Powers of two up to max_batch, and max_batch itself (the bucket of full batches)."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(float(size))
        size *= 2
    return (*sizes, float(max_batch))


class ServiceMetrics:
    """The metric families of one server, labelled by model name."""

    def __init__(self, max_batch: int):
        self.registry = r = CollectorRegistry()
        self.queued = Gauge(
            "polypsynth_queued_images", "Images accepted but not yet in a batch.", ["model"], registry=r
        )
        self.in_flight = Gauge(
            "polypsynth_in_flight_images", "Images in the batch being computed.", ["model"], registry=r
        )
        self.buffered = Gauge(
            "polypsynth_buffered_images",
            "Images computed and not yet received by their clients (credit requests: not yet acknowledged; "
            "Generate: not yet accepted by the transport), at most the stream window per request.",
            ["model"],
            registry=r,
        )
        self.ready = Gauge(
            "polypsynth_model_ready", "1 while the model can take work, else 0.", ["model"], registry=r
        )
        self.generated = Counter(
            "polypsynth_images_generated", "Images computed by the backend.", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "polypsynth_batch_size",
            "Images per backend batch.",
            ["model"],
            buckets=batch_size_buckets(max_batch),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "polypsynth_batch_seconds",
            "Seconds per backend batch (denoising and decoding).",
            ["model"],
            buckets=BATCH_SECONDS,
            registry=r,
        )
        self.requests = Counter(
            "polypsynth_requests",
            "Generate requests by outcome (gRPC status code name).",
            ["model", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "polypsynth_request_seconds",
            "Seconds from a Generate request's arrival to its end.",
            ["model"],
            buckets=REQUEST_SECONDS,
            registry=r,
        )
        self._http: WSGIServer | None = None

    def watch(self, name: str, batcher) -> None:
        """Read a batcher's queue state at scrape time."""
        self.queued.labels(name).set_function(lambda: batcher.stats().queued)
        self.in_flight.labels(name).set_function(lambda: batcher.stats().in_flight)
        self.buffered.labels(name).set_function(lambda: batcher.stats().buffered)
        self.ready.labels(name).set_function(lambda: float(batcher.ready))

    def batch(self, name: str, size: int, seconds: float) -> None:
        self.batch_size.labels(name).observe(size)
        self.batch_seconds.labels(name).observe(seconds)
        self.generated.labels(name).inc(size)

    def request(self, name: str, code: str, seconds: float) -> None:
        self.requests.labels(name, code).inc()
        self.request_seconds.labels(name).observe(seconds)

    def serve_http(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP; returns the bound port (0 picks a free one)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return server.server_address[1]

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
