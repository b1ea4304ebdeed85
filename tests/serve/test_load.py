"""A short version of the bounded load test of benchmarks/bench_grpc.py --load: 16 concurrent
clients over loopback, mixed counts, some cancelling, some with deadlines."""

import importlib.util
import sys
from pathlib import Path

import pytest

from polypsynth.sampling.model import open_model
from polypsynth.serve.server import SamplerServer, ServerOptions

pytestmark = pytest.mark.slow


def load_module():
    path = Path(__file__).parents[2] / "benchmarks" / "grpc_load.py"
    spec = importlib.util.spec_from_file_location("grpc_load", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_sixteen_clients_under_load_get_exactly_their_images(tiny_bundle):
    grpc_load = load_module()
    server = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=8, max_wait_ms=5)).start()
    try:
        batcher = server.models["tiny"].batcher
        figures = grpc_load.run_load(
            f"127.0.0.1:{server.port}",
            grpc_load.MetricsView("tiny", registry=server.metrics.registry),
            open_model(tiny_bundle, "onnxruntime"),
            batcher,
            clients=16,
            max_count=60,
            steps=2,
        )
    finally:
        server.stop(grace=1)
    print(figures)
    plans = grpc_load.plan_clients(16, 60)
    assert figures["errors"] == []
    assert figures["cancelled"] == sum(p.cancel_after is not None for p in plans) == 3
    assert 0 < figures["delivered_images"] <= figures["requested_images"] == sum(p.count for p in plans)
    assert figures["probe_requests"] >= 1 and figures["peak_outstanding"] <= figures["window"] == 16


def test_the_load_test_catches_a_wrong_image(tiny_bundle):
    """The check can fail: a server whose images are off by one seed is caught."""
    grpc_load = load_module()
    server = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=8, max_wait_ms=5)).start()
    real = server.models["tiny"].batcher._run

    def shifted(model, seeds, *rest):
        return real(model, [s + 1 for s in seeds], *rest)

    server.models["tiny"].batcher._run = shifted
    try:
        figures = grpc_load.run_load(
            f"127.0.0.1:{server.port}",
            grpc_load.MetricsView("tiny", registry=server.metrics.registry),
            open_model(tiny_bundle, "onnxruntime"),
            clients=2,
            max_count=4,
            steps=2,
        )
    finally:
        server.stop(grace=1)
    assert figures["errors"] and all("differs from the local sampler's" in e for e in figures["errors"])
