"""`polypsynth serve`: the gRPC server with health checking, reflection, optional TLS and
bearer-token auth, message limits sized for the largest image, and graceful shutdown."""

from __future__ import annotations

import errno
import hmac
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from polypsynth.bundle_format import load_manifest
from polypsynth.errors import PolypsynthError
from polypsynth.sampling.model import open_model
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2_grpc as pb_grpc
from polypsynth.serve.batcher import Batcher
from polypsynth.serve.metrics import ServiceMetrics
from polypsynth.serve.servicer import SamplerServicer, ServedModel

log = logging.getLogger("polypsynth.serve")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SamplerService"].full_name
MAX_REQUEST_BYTES = 64 << 10  # a GenerateRequest is well under 1 KiB
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # probes and discovery need no token


class ServeError(PolypsynthError):
    """The server cannot start as asked."""


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 50051
    backend: str = "onnxruntime"
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_queued_images: int = 100_000
    max_count: int = (
        100_000  # sampling.request.MAX_COUNT: a request streams, so any count needs a few batches of memory
    )
    workers: int = 32
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    grace_seconds: float = 30.0
    stream_window: int | None = None  # images a request may have computed and unreceived (2 batches)
    # HTTP/2 keepalive: a ping every keepalive_s on connections with calls, even while a stalled
    # stream sends nothing; no answer within keepalive_timeout_s drops the connection and its calls.
    keepalive_s: float = 20.0
    keepalive_timeout_s: float = 10.0
    metrics_port: int | None = None  # Prometheus /metrics on host:PORT (0: a free port)
    # Options of the backend (backends.backend_options): providers, dtype, cuda_graphs, ...
    backend_options: dict = field(default_factory=dict)


class _BearerAuth(grpc.ServerInterceptor):
    def __init__(self, token: str):
        self._token = token.encode()

        def deny(request, context):
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or invalid bearer token (metadata authorization: Bearer ...)",
            )

        # a refusal of the method's own kind: unary, server-streaming (Generate) or bidirectional
        # (GenerateWithCredit, the call the polypsynth client makes)
        self._deny = {
            (False, False): grpc.unary_unary_rpc_method_handler(deny),
            (False, True): grpc.unary_stream_rpc_method_handler(deny),
            (True, False): grpc.stream_unary_rpc_method_handler(deny),
            (True, True): grpc.stream_stream_rpc_method_handler(deny),
        }

    def intercept_service(self, continuation, details):
        if details.method.startswith(OPEN_METHODS):
            return continuation(details)
        meta = dict(details.invocation_metadata)
        given = meta.get("authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self._token):
            return continuation(details)
        handler = continuation(details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED, as without a token
            return None
        return self._deny[handler.request_streaming, handler.response_streaming]


def read_token(path: str | None) -> str | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ServeError(f"token file not found: {p}")
    token = p.read_text().strip()
    if not token:
        raise ServeError(f"token file {p} is empty")
    return token


def check_engines_cover(bundle: str | Path, max_batch: int) -> None:
    """A server whose batches outgrow its TensorRT engines would fail requests at run time; refuse
    to start instead."""

    engines = load_manifest(bundle, verify_hashes=False).engines or {}
    sizes = engines.get("batch_sizes")
    if sizes and max(sizes) < max_batch:
        raise ServeError(
            f"--max-batch {max_batch} exceeds the largest batch the bundle's TensorRT engines cover "
            f"({max(sizes)} images); lower --max-batch or re-export with --batch-sizes up to {max_batch}"
        )


def check_tls_pair(cert: str, key: str) -> None:
    """--tls-cert and --tls-key read as a PEM certificate and its private key, or a ServeError that
    names which file is wrong (gRPC itself only reports that it cannot bind)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ServeError(f"TLS file not found: {exc.filename}") from exc
    except ssl.SSLError as exc:
        reason = (exc.reason or "").upper()
        if "MISMATCH" in reason:
            raise ServeError(f"--tls-key {key} is not the private key of --tls-cert {cert}") from exc
        which = f"--tls-key {key}" if "KEY" in reason or "PRIVATE" in reason else f"--tls-cert {cert}"
        raise ServeError(
            f"{which} cannot be read as PEM ({exc.reason}); expected a PEM certificate and its PEM private key"
        ) from exc


def _bind_failure(host: str, port: int) -> str | None:
    """Why HOST:PORT cannot be bound, when a plain socket can tell: the port is in use."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} is already in use on {host} (another server?); choose another --port"
        return exc.strerror
    return None


class SamplerServer:
    """Loads every model first (a bad bundle stops the start, no half-up server), then serves."""

    def __init__(
        self,
        models: Mapping[str, str | Path],
        options: ServerOptions | None = None,
        loaded: dict | None = None,
    ):

        self.options = o = options or ServerOptions()
        if not models and not loaded:
            raise ServeError("no model to serve: pass --model NAME=BUNDLE at least once")
        if o.stream_window is not None and o.stream_window < 1:
            raise ServeError(f"--stream-window must be at least 1 image, got {o.stream_window}")
        models_by_name = dict(loaded or {})
        for name, path in models.items():
            try:
                if o.backend == "tensorrt":
                    check_engines_cover(path, o.max_batch)
                models_by_name[name] = open_model(path, o.backend, **o.backend_options)
            except PolypsynthError as exc:
                raise ServeError(f"model {name} ({path}): {exc}") from exc
        self.metrics = ServiceMetrics(o.max_batch)
        self.health = health.HealthServicer()
        self._health_lock = threading.Lock()
        self._ready: dict[str, bool] = {}
        self._started = False
        self.models = served = {name: self._served(name, model) for name, model in models_by_name.items()}
        try:
            self._build_server()
        except BaseException:
            for m in served.values():  # no batcher thread outlives a server that never started
                m.batcher.close()
            raise
        self._stopped = threading.Event()
        self._stop_lock, self._stopping = threading.Lock(), False
        self.metrics_port: int | None = None

    def _build_server(self) -> None:
        o, served = self.options, self.models
        biggest = max(m.model.resolution for m in served.values())
        limit = biggest * biggest * 3 * 2 + (1 << 20)  # raw RGB8 of the largest image or its PNG
        interceptors = [_BearerAuth(o.token)] if o.token else []
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=o.workers),
            interceptors=interceptors,
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.keepalive_time_ms", int(o.keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(o.keepalive_timeout_s * 1000)),
                # gRPC core times a keepalive ping's answer by the ping timeout (60 s by default)
                ("grpc.http2.ping_timeout_ms", int(o.keepalive_timeout_s * 1000)),
                ("grpc.http2.max_pings_without_data", 0),  # a stalled stream sends no data
                ("grpc.keepalive_permit_without_calls", 0),
                # a second server on a port in use must fail to start, not share it (gRPC reuses ports)
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_SamplerServiceServicer_to_server(SamplerServicer(served, self.metrics), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = f"{o.host}:{o.port}"
        if o.tls_cert or o.tls_key:
            if not (o.tls_cert and o.tls_key):
                raise ServeError("TLS needs both --tls-cert and --tls-key")
            check_tls_pair(o.tls_cert, o.tls_key)
            creds = grpc.ssl_server_credentials(
                [(Path(o.tls_key).read_bytes(), Path(o.tls_cert).read_bytes())]
            )
        try:
            if o.tls_cert:
                self.port = self.server.add_secure_port(address, creds)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ServeError(f"cannot bind {address}: {_bind_failure(o.host, o.port) or exc}") from exc
        if self.port == 0:
            raise ServeError(
                f"cannot bind {address}" + (f": {_bind_failure(o.host, o.port)}" if o.port else "")
            )

    def _served(self, name: str, model) -> ServedModel:
        o = self.options

        def on_ready(ready: bool) -> None:  # called under that batcher's lock: touch no other
            self._ready[name] = ready
            if self._started:
                self._set_health(name, ready)

        batcher = Batcher(
            model,
            max_batch=o.max_batch,
            max_wait_ms=o.max_wait_ms,
            max_queued_images=o.max_queued_images,
            window=o.stream_window,
            on_batch=lambda size, seconds: self.metrics.batch(name, size, seconds),
            on_ready=on_ready,
        )
        self.metrics.watch(name, batcher)
        return ServedModel(name, model, batcher, o.max_count)

    def _set_health(self, name: str, ready: bool) -> None:
        """A model is SERVING while it can take work (readiness); the service while any can."""
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        with self._health_lock:
            self.health.set(name, serving if ready else not_serving)
            anyone = any(self._ready.values())
            self.health.set(SERVICE_NAME, serving if anyone else not_serving)

    def start(self) -> SamplerServer:
        if self.options.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve_http(self.options.host, self.options.metrics_port)
            except OSError as exc:
                for m in self.models.values():
                    m.batcher.close()
                raise ServeError(
                    f"--metrics-port {self.options.metrics_port}: cannot bind {self.options.host}: {exc}"
                ) from exc
            log.info("metrics on http://%s:%d/metrics", self.options.host, self.metrics_port)
        self.server.start()
        self._started = True
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for name, served in self.models.items():
            self._ready[name] = served.batcher.ready
            self._set_health(name, self._ready[name])
        log.info("serving %s on %s:%d", ", ".join(self.models), self.options.host, self.port)
        return self

    def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING, new RPCs are refused, in-flight ones get `grace` seconds. Once:
        a second call (two signals, each on its own thread) waits for the first to finish."""
        with self._stop_lock:
            if self._stopping:
                first = False
            else:
                self._stopping = first = True
        if not first:
            self._stopped.wait()
            return
        self.health.enter_graceful_shutdown()
        event = self.server.stop(self.options.grace_seconds if grace is None else grace)
        event.wait()
        for served in self.models.values():
            served.batcher.close()
        self.metrics.close()
        self._stopped.set()

    def serve_forever(self) -> None:
        def handle(signum, frame):
            log.info("signal %d: shutting down gracefully", signum)
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self._stopped.wait()
