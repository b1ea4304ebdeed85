"""The service under misbehaving clients: backpressure, per-request failure isolation, readiness
and the Prometheus metrics, end to end over loopback gRPC."""

import dataclasses
import threading
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from polypsynth.sampling.model import open_model
from polypsynth.sampling.request import RequestError, make_params
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2_grpc as pb_grpc
from polypsynth.serve.client import SamplerClient
from polypsynth.serve.server import SERVICE_NAME, SamplerServer, ServerOptions

STEPS = 2
WAIT = 30


@pytest.fixture
def serve(tiny_bundle):
    started = []

    def start(loaded=None, **kw):
        opts = ServerOptions(port=0, max_batch=4, max_wait_ms=5, **kw)
        s = SamplerServer({} if loaded else {"tiny": tiny_bundle}, opts, loaded=loaded).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(grace=1)


def test_a_client_that_stops_reading_stops_its_work(serve, wait_until):
    server = serve(stream_window=8)
    batcher = server.models["tiny"].batcher
    # A client that reads one image and then nothing: no BDP probing, a 16 KiB receive window,
    # so its transport fills quickly (what any client's does once its window is full).
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
        stalled = pb_grpc.SamplerServiceStub(channel).Generate(
            pb.GenerateRequest(
                model="tiny", class_name="AD", count=5000, steps=STEPS, encoding=pb.ENCODING_RGB8
            )
        )
        next(stalled)
        with SamplerClient(f"127.0.0.1:{server.port}") as client:
            for round_ in range(3):
                wait_until(lambda: batcher.stats().buffered == 8, "the stalled stream's window to fill")
                queued = batcher.stats().queued
                # Others are served at full speed meanwhile, and the stalled request gets nothing.
                got = list(client.generate("tiny", "NON_AD", 12, seed=round_, steps=STEPS))
                assert sorted(m.index for m in got) == list(range(12))
                stats = batcher.stats()
                if round_ and stats.buffered == 8:
                    assert stats.queued == queued  # no image of the stalled request was computed
        stats = batcher.stats()
        assert stats.queued > 4900 and stats.peak_outstanding <= 8
        stalled.cancel()
    wait_until(lambda: batcher.stats().jobs == 0, "the cancelled request to be dropped")
    assert batcher.stats().queued == 0


def test_a_seed_past_the_generator_range_fails_that_request_only(serve):
    server = serve()
    target = f"127.0.0.1:{server.port}"
    results = {}

    def good():
        with SamplerClient(target) as c:
            results["good"] = [m.index for m in c.generate("tiny", "AD", 20, seed=2**64 - 20, steps=STEPS)]

    t = threading.Thread(target=good)
    t.start()
    with SamplerClient(target) as c, pytest.raises(grpc.RpcError) as err:
        list(c.generate("tiny", "AD", 20, seed=2**64 - 19, steps=STEPS))
    t.join(WAIT)
    assert not t.is_alive()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        "seed: image i uses seed + i, so seed + count - 1 must be at most 18446744073709551615 (torch "
        "generators); got seed 18446744073709551597 with count 20 (the largest seed for 20 images is "
        "18446744073709551596)"
    )
    # One limit, one message: the local path and the CLI say the same (sampling.request.Draw).
    with pytest.raises(RequestError) as local:
        make_params("AD", 20, seed=2**64 - 19).validate(["AD"])
    assert f"seed: {local.value.message}" == err.value.details()
    assert sorted(results["good"]) == list(range(20))  # the last seed used is 2**64 - 1


class GatedBackend:
    """The real backend, with decoding held until `gate` is set."""

    def __init__(self, inner):
        self.inner, self.gate, self.entered = inner, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, latents):
        self.entered.set()
        assert self.gate.wait(WAIT)
        return self.inner.decode(latents)


def test_readiness_turns_not_serving_while_the_queue_is_full(serve, tiny_bundle, wait_until):
    model = open_model(tiny_bundle, "onnxruntime")
    backend = GatedBackend(model.backend)
    server = serve(loaded={"tiny": dataclasses.replace(model, backend=backend)}, max_queued_images=12)
    target = f"127.0.0.1:{server.port}"

    def status(service):
        return server.health.Check(health_pb2.HealthCheckRequest(service=service), None).status

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert status("tiny") == serving and status(SERVICE_NAME) == serving
    got = {}

    def pull(name, count):
        with SamplerClient(target) as c:
            got[name] = [m.index for m in c.generate("tiny", "AD", count, steps=STEPS)]

    first = threading.Thread(target=pull, args=("first", 4))
    first.start()
    assert backend.entered.wait(WAIT)  # one batch running and held: the queue holds what comes next
    second = threading.Thread(target=pull, args=("second", 12))
    second.start()
    wait_until(lambda: status("tiny") == not_serving, "readiness to turn NOT_SERVING")
    assert status(SERVICE_NAME) == not_serving and status("") == serving  # alive, not ready
    backend.gate.set()
    for t in (first, second):
        t.join(WAIT)
        assert not t.is_alive()
    assert got == {"first": [0, 1, 2, 3], "second": list(range(12))}
    assert status("tiny") == serving and status(SERVICE_NAME) == serving


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_count_images_batches_and_outcomes(serve, wait_until):
    server = serve(metrics_port=0)
    with SamplerClient(f"127.0.0.1:{server.port}") as c:
        assert len(list(c.generate("tiny", "AD", 6, steps=STEPS))) == 6
        with pytest.raises(grpc.RpcError):
            list(c.generate("tiny", "AD", 1, steps=0))
        stream = c.generate("tiny", "AD", 5000, steps=STEPS)
        next(stream)
        stream.cancel()
    tiny = (("model", "tiny"),)

    def requests(code, m):
        return m.get(("polypsynth_requests_total", (("code", code), ("model", "tiny"))), 0)

    wait_until(lambda: requests("CANCELLED", scrape(server.metrics_port)) == 1, "the cancel to be counted")
    wait_until(lambda: server.models["tiny"].batcher.stats().in_flight == 0, "the last batch to end")
    m = scrape(server.metrics_port)
    assert (requests("OK", m), requests("INVALID_ARGUMENT", m), requests("CANCELLED", m)) == (1, 1, 1)
    generated = m[("polypsynth_images_generated_total", tiny)]
    batches = m[("polypsynth_batch_size_count", tiny)]
    assert m[("polypsynth_batch_size_sum", tiny)] == generated and generated >= 7
    assert batches >= 3 and m[("polypsynth_batch_seconds_count", tiny)] == batches
    assert m[("polypsynth_batch_size_bucket", (("le", "4.0"), ("model", "tiny")))] == batches  # max 4
    assert m[("polypsynth_request_seconds_count", tiny)] == 3
    assert m[("polypsynth_queued_images", tiny)] == 0 and m[("polypsynth_in_flight_images", tiny)] == 0
    assert m[("polypsynth_model_ready", tiny)] == 1


class FreezingProxy:
    """A TCP relay that can go silent without closing anything: a client machine that vanished
    (power off, cable out) sends no RST, so only keepalive can tell."""

    def __init__(self, target_port: int):
        import socket

        self.target_port, self.frozen = target_port, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        while not self.frozen.is_set():
            try:
                data = src.recv(65536)
                if not data:
                    return
                if self.frozen.is_set():
                    return  # swallowed: the other side never hears of it
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        self.listener.close()
        for s in self.sockets:
            s.close()


def test_a_vanished_client_is_dropped_within_the_keepalive(serve, wait_until):
    server = serve(stream_window=8, keepalive_s=1.0, keepalive_timeout_s=1.0)
    batcher = server.models["tiny"].batcher
    proxy = FreezingProxy(server.port)
    client = SamplerClient(f"127.0.0.1:{proxy.port}")
    try:
        stream = client.generate("tiny", "AD", 5000, steps=STEPS)
        next(stream)
        assert batcher.stats().jobs == 1
        proxy.frozen.set()  # the client is gone; no FIN, no RST reaches the server
        # keepalive 1 s + timeout 1 s: dropped in about 2 s (60 s before the ping timeout was set).
        wait_until(lambda: batcher.stats().jobs == 0, "the vanished client's request to be freed", timeout=10)
        assert batcher.stats().queued == 0
    finally:
        client.close()
        proxy.close()
