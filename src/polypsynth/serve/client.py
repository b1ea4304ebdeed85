"""SamplerClient: the images of a request from a server, with their provenance. A
`dns:///host:port` target with several replicas is balanced by gRPC's own round_robin policy.
Writing them into a folder, with retries, is serve.to_folder's."""

from __future__ import annotations

import ipaddress
import json
import queue
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from polypsynth.errors import PolypsynthError
from polypsynth.sampling.request import Request, make_request
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2_grpc as pb_grpc
from polypsynth.serve.wire import request_to_proto

SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)  # the server went away or is restarting


def target_hosts(target: str) -> list[str]:
    """The hosts a gRPC target names: host:port, [v6]:port, dns:///host:port, ipv4:a:p,b:p, unix:..."""
    scheme, sep, rest = target.partition(":")
    if sep and scheme in ("unix", "unix-abstract", "vsock"):
        return []  # local sockets
    if sep and scheme in ("dns", "ipv4", "ipv6"):
        rest = rest.lstrip("/")
        if scheme == "dns" and "/" in rest:  # dns://authority/host:port
            rest = rest.split("/", 1)[1]
    else:
        rest = target
    hosts = []
    for address in rest.split(","):
        if address.startswith("["):
            hosts.append(address[1 : address.index("]")])
        elif address.count(":") > 1:  # a bare IPv6 address without port
            hosts.append(address)
        else:
            hosts.append(address.rsplit(":", 1)[0] if ":" in address else address)
    return hosts


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CreditedStream:
    """The images of one GenerateWithCredit call; taking an image sends the running total back.
    Behaves as the call does otherwise (iterate, cancel, code, details)."""

    def __init__(self, method, request: pb.GenerateRequest, metadata, timeout: float | None):
        self._credits: queue.SimpleQueue = queue.SimpleQueue()
        self._received = 0
        self._call = method(self._messages(request), metadata=metadata, timeout=timeout)

    def _messages(self, request: pb.GenerateRequest):
        yield pb.GenerateCredit(request=request)
        while True:
            try:
                received = self._credits.get(timeout=0.5)
            except queue.Empty:
                if self._call.done():  # ended without a last word (abandoned, cancelled, failed)
                    return
                continue
            if received is None:
                return
            yield pb.GenerateCredit(received=received)

    def __iter__(self):
        return self

    def __next__(self) -> pb.GeneratedImage:
        try:
            image = next(self._call)
        except BaseException:
            self._credits.put(None)
            raise
        self._received += 1
        self._credits.put(self._received)
        return image

    def __getattr__(self, name):  # cancel, code, details, done, ...
        return getattr(self._call, name)


class SamplerClient:
    def __init__(
        self,
        target: str,
        token: str | None = None,
        tls_ca: str | None = None,
        max_message_mb: int = 64,
        allow_plaintext_token: bool = False,
    ):
        if token and not tls_ca and not allow_plaintext_token:
            remote = [h for h in target_hosts(target) if not is_loopback(h)]
            if remote:
                raise PolypsynthError(
                    f"refusing to send the bearer token in plain text to {', '.join(remote)}: "
                    "pass the server's CA certificate (--tls-ca) or, on a network you trust, "
                    "--allow-plaintext-token"
                )
        self.target = target
        self.tls = bool(tls_ca)
        options = [
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.max_receive_message_length", max_message_mb << 20),
            # Reconnect to a restarted server within seconds, not gRPC's default of up to 2 min.
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        if tls_ca:
            creds = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.SamplerServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []

    def close(self) -> None:
        self.channel.close()

    def unreachable_hint(self, timeout: float = 2.0) -> str:
        """Why this client may not reach its server, when a socket can tell (gRPC says only
        UNAVAILABLE): nothing listens there, or the server speaks TLS and the client does not, or
        the other way round. Empty when the target is not a plain HOST:PORT or nothing is found."""
        hosts = target_hosts(self.target)
        if (
            len(hosts) != 1
            or ":" not in self.target
            or self.target.split(":", 1)[0] in ("dns", "ipv4", "ipv6", "unix")
        ):
            return ""
        host, port = hosts[0], int(self.target.rsplit(":", 1)[1])
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only: does it speak TLS?
                try:
                    with context.wrap_socket(raw, server_hostname=host):
                        speaks_tls = True
                except (ssl.SSLError, OSError):
                    speaks_tls = False
        except OSError as exc:
            return f"nothing accepts connections on {host}:{port} ({exc.strerror or exc})"
        if speaks_tls and not self.tls:
            return f"the server on {host}:{port} speaks TLS: pass its CA certificate with --tls-ca"
        if not speaks_tls and self.tls:
            return f"the server on {host}:{port} does not speak TLS: leave out --tls-ca"
        return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def list_models(self) -> list[pb.ModelInfo]:
        return list(self.stub.ListModels(pb.ListModelsRequest(), metadata=self.metadata).models)

    def get_model(self, name: str) -> pb.ModelInfo:
        return self.stub.GetModel(pb.GetModelRequest(name=name), metadata=self.metadata)

    def stream(
        self,
        model: str,
        request: Request,
        *,
        encoding: pb.Encoding = pb.ENCODING_PNG,
        request_id: str = "",
        timeout: float | None = None,
    ) -> Iterator[pb.GeneratedImage]:
        """The images of `request` (first_index .. first_index + count - 1 of the request seeded
        by its seed) over GenerateWithCredit: each image taken from the returned iterator tells
        the server it was received, so the server computes at most its stream window beyond what
        was taken."""
        message = request_to_proto(model, request, encoding=encoding, request_id=request_id)
        return CreditedStream(self.stub.GenerateWithCredit, message, self.metadata, timeout)

    def generate(
        self,
        model: str,
        class_name: str,
        count: int,
        *,
        encoding: pb.Encoding = pb.ENCODING_PNG,
        request_id: str = "",
        timeout: float | None = None,
        **given,
    ) -> Iterator[pb.GeneratedImage]:
        """`stream` of the request spelled out: `given` takes make_request's keywords (seed,
        first_index, steps, guidance, scheduler)."""
        request = make_request(class_name, count, **given)
        return self.stream(model, request, encoding=encoding, request_id=request_id, timeout=timeout)

    @staticmethod
    def pixels(image: pb.GeneratedImage) -> np.ndarray:
        if image.encoding == pb.ENCODING_RGB8:
            return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
        import io

        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"))
