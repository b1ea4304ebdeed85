"""SamplerService: validates requests, hands them to the model's batcher and streams images back."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

import grpc

from polypsynth.sampling.model import SamplerModel
from polypsynth.sampling.output import Provenance, encode_png
from polypsynth.sampling.request import MAX_STEPS, RequestError
from polypsynth.sampling.schedulers import SCHEDULERS
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2_grpc as pb_grpc
from polypsynth.serve.batcher import Batcher, Job, QueueFull
from polypsynth.serve.metrics import ServiceMetrics
from polypsynth.serve.wire import PROTO_FIELDS, image_to_proto, request_from_proto, settings_to_proto

log = logging.getLogger("polypsynth.serve")
MAX_REQUEST_ID = 128


@dataclass
class ServedModel:
    name: str
    model: SamplerModel
    batcher: Batcher
    max_count: int = 100_000

    def info(self) -> pb.ModelInfo:
        return pb.ModelInfo(
            name=self.name,
            classes=self.model.classes,
            resolution=self.model.resolution,
            backend=self.model.backend_name,
            model_hash=self.model.model_hash,
            defaults=settings_to_proto(self.model.defaults),
            limits=pb.Limits(
                max_count=self.max_count,
                max_steps=MAX_STEPS,
                max_batch=self.batcher.max_batch,
                max_queued_images=self.batcher.max_queued,
                stream_window=self.batcher.window,
            ),
            schedulers=list(SCHEDULERS),
        )


class SamplerServicer(pb_grpc.SamplerServiceServicer):
    def __init__(self, models: dict[str, ServedModel], metrics: ServiceMetrics):
        self.models, self.metrics = models, metrics

    def _model(self, name: str, context) -> ServedModel:
        if name not in self.models:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model: unknown model {name!r}; served models: {', '.join(self.models)}",
            )
        return self.models[name]

    def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[m.info() for m in self.models.values()])

    def GetModel(self, request, context):
        return self._model(request.name, context).info()

    def _validate(self, request, served: ServedModel, abort) -> Job:
        """The request resolved against the model's defaults and validated (once, here), plus what
        only the wire has."""
        if request.encoding not in (pb.ENCODING_UNSPECIFIED, pb.ENCODING_PNG, pb.ENCODING_RGB8):
            abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"encoding: unknown encoding {request.encoding}; valid: ENCODING_PNG, ENCODING_RGB8",
            )
        if len(request.request_id) > MAX_REQUEST_ID or not request.request_id.isprintable():
            abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request_id: must be at most {MAX_REQUEST_ID} printable characters, got {len(request.request_id)}",
            )
        params = request_from_proto(request).resolve(served.model.defaults)
        try:
            params.validate(served.model.classes, served.max_count)
        except RequestError as exc:
            abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{PROTO_FIELDS.get(exc.field, exc.field)}: {exc.message}"
            )
        return Job(params)

    def Generate(self, request, context):
        yield from self._generate(request, context)

    def GenerateWithCredit(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "request":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "request: the first GenerateCredit message must carry the GenerateRequest",
            )
        yield from self._generate(first.request, context, credits=request_iterator)

    def _read_credits(self, credits, job: Job, served: ServedModel) -> None:
        """The client's running totals of images received, until the call ends."""
        try:
            for message in credits:
                if message.WhichOneof("kind") == "received":
                    served.batcher.ack(job, message.received)
        except Exception:  # the call ended (cancelled, finished, connection lost)
            pass

    def _generate(self, request, context, credits=None):
        start, sent = time.perf_counter(), 0
        given = request.request_id  # logged and echoed only when valid (no control characters)
        valid_id = given and len(given) <= MAX_REQUEST_ID and given.isprintable()
        request_id = given if valid_id else uuid.uuid4().hex[:12]
        code = grpc.StatusCode.OK

        def abort(status, message):
            nonlocal code
            code = status
            context.abort(status, message)

        served = self._model(request.model, context)
        try:
            job = self._validate(request, served, abort)
            self._start(job, served, context, credits, abort)
            answer = _Answer(request, served.model, job, request_id)
            try:
                for position, seed, pixels in job.stream():
                    yield answer.image(position, seed, pixels)
                    sent += 1
            except QueueFull as exc:  # the server stopped under the request
                abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            except Exception as exc:
                abort(grpc.StatusCode.INTERNAL, f"sampling failed: {exc}")
        finally:
            if code == grpc.StatusCode.OK and sent < request.count:
                ended = context.time_remaining()
                expired = ended is not None and ended <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            self._finished(request, served.name, request_id, sent, start, code=code)

    def _start(self, job: Job, served: ServedModel, context, credits, abort) -> None:
        """Queues the job; ties its end to the RPC's; reads the credits of a credit-based call."""
        job.credit = credits is not None
        try:
            served.batcher.submit(job)
        except QueueFull as exc:
            abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        # Cancellation, deadline and disconnect all end the RPC: drop the queued images at once.
        # The callback is refused when the RPC has already ended: then drop them now.
        if not context.add_callback(lambda: served.batcher.cancel(job)):
            served.batcher.cancel(job)
        if credits is not None:
            threading.Thread(
                target=self._read_credits, args=(credits, job, served), name="credits", daemon=True
            ).start()

    def _finished(self, request, model: str, request_id: str, sent: int, start: float, *, code) -> None:
        seconds = time.perf_counter() - start
        self.metrics.request(model, code.name, seconds)
        log.info(
            "request=%s model=%s class=%s count=%d sent=%d duration=%.2fs images/s=%.1f outcome=%s",
            request_id,
            model,
            request.class_name,
            request.count,
            sent,
            seconds,
            sent / max(seconds, 1e-9),
            code.name,
        )


class _Answer:
    """The GeneratedImage messages of one request: each carries the settings actually used and,
    as PNG, the same provenance in its text chunks."""

    def __init__(self, request, model: SamplerModel, job: Job, request_id: str):
        self.request_id, self.params = request_id, job.params
        self.encoding = pb.ENCODING_RGB8 if request.encoding == pb.ENCODING_RGB8 else pb.ENCODING_PNG
        self.provenance = Provenance.of(job.params, model_hash=model.model_hash, backend=model.backend_name)

    def image(self, position: int, seed: int, pixels) -> pb.GeneratedImage:
        index = self.params.draw.first_index + position
        png = self.encoding == pb.ENCODING_PNG
        data = encode_png(pixels, self.provenance, index, seed) if png else pixels.tobytes()
        return image_to_proto(
            self.params,
            self.provenance,
            index=index,
            seed=seed,
            pixels=pixels,
            data=data,
            encoding=self.encoding,
            request_id=self.request_id,
        )
