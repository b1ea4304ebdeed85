import math
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from polypsynth.sampling.model import open_model
from polypsynth.sampling.request import make_params, make_request
from polypsynth.sampling.to_folder import sample_to_folder
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
from polypsynth.serve.client import SamplerClient
from polypsynth.serve.server import SamplerServer, ServeError, ServerOptions
from polypsynth.serve.to_folder import write_folder

STEPS = 2
WAIT = 60  # seconds; reached only when something is broken


def join(*threads):
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), f"{t.name} did not finish"


def _server(bundle, **kw):
    opts = ServerOptions(port=0, max_batch=4, max_wait_ms=5, **kw)
    return SamplerServer({"tiny": bundle}, opts).start()


@pytest.fixture(scope="module")
def server(tiny_bundle):
    s = _server(tiny_bundle)
    yield s
    s.stop(grace=1)


@pytest.fixture
def client(server):
    with SamplerClient(f"127.0.0.1:{server.port}") as c:
        yield c


def _all(stream):
    return list(stream)


def test_models_are_listed_with_defaults_and_limits(client, server):
    (info,) = client.list_models()
    assert info.name == "tiny" and list(info.classes) == ["AD", "NON_AD"]
    assert info.resolution == 32 and info.backend == "onnxruntime"
    assert info.model_hash == server.models["tiny"].model.model_hash
    assert info.limits.max_batch == 4 and info.limits.max_steps == 500 and info.defaults.scheduler == "dpm++"
    assert client.get_model("tiny") == info


def test_grpc_images_equal_local_sample_images(client, tiny_bundle, tmp_path):
    remote = write_folder(
        client, tmp_path / "remote", "tiny", make_request("AD", 5, seed=42, steps=STEPS, guidance=3.0)
    )
    local = sample_to_folder(
        open_model(tiny_bundle, "onnxruntime"),
        make_params("AD", 5, seed=42, steps=STEPS, guidance=3.0, scheduler="dpm++"),
        tmp_path / "local",
    )
    for i in range(5):
        name = f"{i:06d}.png"
        assert (remote / name).read_bytes() == (local / name).read_bytes()  # pixels and provenance
    rows_remote = (remote / "samples.jsonl").read_text().splitlines()
    rows_local = (local / "samples.jsonl").read_text().splitlines()
    assert sorted(rows_remote) == sorted(rows_local)


def test_raw_encoding(client):
    (img,) = _all(client.generate("tiny", "NON_AD", 1, seed=3, steps=STEPS, encoding=pb.ENCODING_RGB8))
    assert img.encoding == pb.ENCODING_RGB8 and len(img.data) == 32 * 32 * 3
    (png,) = _all(client.generate("tiny", "NON_AD", 1, seed=3, steps=STEPS))
    assert np.array_equal(SamplerClient.pixels(img), SamplerClient.pixels(png))


def test_sixteen_concurrent_clients_get_every_image_exactly_once(server):
    counts = [1, 3, 7, 2, 5, 1, 8, 4, 6, 2, 3, 1, 9, 2, 4, 5]
    results = [None] * len(counts)

    def run(i):
        with SamplerClient(f"127.0.0.1:{server.port}") as c:
            cls = "AD" if i % 2 else "NON_AD"
            steps = STEPS if i % 3 else STEPS + 1  # two batching groups
            results[i] = [
                (m.index, m.seed, m.class_name)
                for m in c.generate("tiny", cls, counts[i], seed=1000 * i, steps=steps)
            ]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(counts))]
    for t in threads:
        t.start()
    join(*threads)
    for i, got in enumerate(results):
        assert sorted(idx for idx, _, _ in got) == list(range(counts[i]))
        assert all(seed == 1000 * i + idx for idx, seed, _ in got)
        assert {c for _, _, c in got} == {"AD" if i % 2 else "NON_AD"}


def test_small_request_is_not_stuck_behind_a_large_one(server):
    finished, started = {}, threading.Event()

    def big():
        with SamplerClient(f"127.0.0.1:{server.port}") as c:
            for _ in c.generate("tiny", "AD", 100, seed=0, steps=STEPS):  # 25 batches of 4
                started.set()
        finished["big"] = time.monotonic()

    t = threading.Thread(target=big)
    t.start()
    assert started.wait(WAIT)  # the large request is being served
    with SamplerClient(f"127.0.0.1:{server.port}") as c:
        _all(c.generate("tiny", "NON_AD", 1, seed=5, steps=STEPS))
    finished["small"] = time.monotonic()
    join(t)
    assert finished["small"] < finished["big"]


def test_cancelling_frees_the_batcher(server, client, wait_until):
    stream = client.generate("tiny", "AD", 5000, seed=0, steps=STEPS)
    next(stream)
    stream.cancel()
    batcher = server.models["tiny"].batcher
    wait_until(lambda: batcher.stats().jobs == 0, "the cancelled request to be dropped")
    assert batcher.queued_images == 0
    assert len(_all(client.generate("tiny", "AD", 1, seed=1, steps=STEPS, timeout=WAIT))) == 1


def test_deadline_exceeded_drops_the_queue(server, client, wait_until):
    with pytest.raises(grpc.RpcError) as err:
        _all(client.generate("tiny", "AD", 5000, seed=0, steps=STEPS, timeout=0.5))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: server.models["tiny"].batcher.stats().jobs == 0, "the expired request to be dropped")
    assert server.models["tiny"].batcher.queued_images == 0


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"class_name": "SSL"}, "class_name", "unknown class 'SSL'; the model's classes: AD, NON_AD"),
        ({"count": 0}, "count", "must be between 1 and 100000, got 0"),
        ({"count": 100001}, "count", "must be between 1 and 100000, got 100001"),
        ({"steps": 501}, "steps", "must be between 1 and 500, got 501"),
        ({"steps": 0}, "steps", "must be between 1 and 500, got 0"),
        ({"guidance": -1.0}, "guidance_scale", "must be a finite number >= 0, got -1.0"),
        ({"guidance": math.nan}, "guidance_scale", "must be a finite number >= 0, got nan"),
        (
            {"scheduler": "lms"},
            "scheduler",
            "unknown scheduler 'lms'; valid schedulers: ddim, dpm++, euler, pndm",
        ),
        ({"encoding": 7}, "encoding", "unknown encoding 7"),
    ],
)
def test_invalid_arguments_name_the_field(client, kwargs, field, message):
    args = {"model": "tiny", "class_name": "AD", "count": 1, "steps": STEPS, **kwargs}
    with pytest.raises(grpc.RpcError) as err:
        _all(client.generate(**args))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}: ") and message in err.value.details()


def test_unknown_model_is_not_found(client):
    for call in (lambda: _all(client.generate("big", "AD", 1)), lambda: client.get_model("big")):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert (
            err.value.code() == grpc.StatusCode.NOT_FOUND
            and "unknown model 'big'; served models: tiny" in err.value.details()
        )


def test_resource_exhausted_when_the_queue_is_full(tiny_bundle):
    s = _server(tiny_bundle, max_queued_images=10)
    try:
        with SamplerClient(f"127.0.0.1:{s.port}") as c:
            with pytest.raises(grpc.RpcError) as err:
                _all(c.generate("tiny", "AD", 20, steps=STEPS))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue full: 0 images queued, the request adds 20, the limit is 10" in err.value.details()
    finally:
        s.stop(grace=1)


def test_bearer_token(tiny_bundle):
    s = _server(tiny_bundle, token="s3cret")
    target = f"127.0.0.1:{s.port}"
    try:
        for token in (None, "wrong"):
            with SamplerClient(target, token=token) as c:
                for call in (c.list_models, lambda c=c: _all(c.generate("tiny", "AD", 1, steps=STEPS))):
                    with pytest.raises(grpc.RpcError) as err:
                        call()
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "bearer token" in err.value.details()
        with SamplerClient(target, token="s3cret") as c:
            assert len(_all(c.generate("tiny", "AD", 1, steps=STEPS))) == 1
        with grpc.insecure_channel(target) as ch:  # probes need no token
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        s.stop(grace=1)


def test_health_reflection_and_graceful_shutdown(tiny_bundle, wait_until):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    s = _server(tiny_bundle)
    target = f"127.0.0.1:{s.port}"
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "tiny", "polypsynth.v1.SamplerService"):
            assert (
                stub.Check(health_pb2.HealthCheckRequest(service=service)).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        services = ProtoReflectionDescriptorDatabase(ch).get_services()
        assert "polypsynth.v1.SamplerService" in services and "grpc.health.v1.Health" in services
    # An in-flight request finishes within the grace period; health turns NOT_SERVING at once.
    got, first = [], threading.Event()

    def inflight():
        with SamplerClient(target) as c:
            for image in c.generate("tiny", "AD", 200, steps=STEPS):
                got.append(image)
                first.set()

    t = threading.Thread(target=inflight)
    t.start()
    assert first.wait(WAIT)
    stopper = threading.Thread(target=s.stop, kwargs={"grace": WAIT})
    stopper.start()

    def status():
        return s.health.Check(health_pb2.HealthCheckRequest(service="tiny"), None).status

    wait_until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, "NOT_SERVING")
    join(t, stopper)
    assert sorted(m.index for m in got) == list(range(200))
    with SamplerClient(target) as c, pytest.raises(grpc.RpcError):
        c.list_models()


def test_bad_bundle_stops_the_start(tmp_path, tiny_bundle):
    with pytest.raises(ServeError, match=r"model broken \(.*nope\): model not found"):
        SamplerServer({"broken": tmp_path / "nope"}, ServerOptions(port=0))
    with pytest.raises(ServeError, match="no model to serve"):
        SamplerServer({}, ServerOptions(port=0))


def test_stubs_are_current(tmp_path):
    import importlib.util
    from pathlib import Path

    root = Path(__file__).parents[2]
    spec = importlib.util.spec_from_file_location("gen_proto", root / "scripts" / "gen_proto.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = gen.generate(tmp_path)
    committed = root / "src" / "polypsynth" / "serve" / "_proto" / "polypsynth" / "v1"
    for f in fresh:
        assert (committed / f.name).read_text() == f.read_text(), f"{f.name} is stale: run make proto"
