"""SamplerService: validates requests, hands them to the model's batcher and streams images back."""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass

import grpc

from polypsynth.sampling.loop import MAX_STEPS
from polypsynth.sampling.output import Provenance, encode_png
from polypsynth.sampling.schedulers import SCHEDULERS
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2_grpc as pb_grpc
from polypsynth.serve.batcher import Batcher, Job, QueueFull

log = logging.getLogger("polypsynth.serve")


@dataclass
class ServedModel:
    name: str
    model: object  # SamplerModel
    batcher: Batcher
    max_count: int = 10_000
    default_steps: int = 25
    default_guidance: float = 3.0
    default_scheduler: str = "dpm++"

    def info(self) -> pb.ModelInfo:
        return pb.ModelInfo(
            name=self.name,
            classes=self.model.classes,
            resolution=self.model.resolution,
            backend=self.model.backend_name,
            model_hash=self.model.model_hash,
            defaults=pb.Defaults(
                steps=self.default_steps,
                guidance_scale=self.default_guidance,
                scheduler=self.default_scheduler,
            ),
            limits=pb.Limits(
                max_count=self.max_count,
                max_steps=MAX_STEPS,
                max_batch=self.batcher.max_batch,
                max_queued_images=self.batcher.max_queued,
            ),
            schedulers=list(SCHEDULERS),
        )


class SamplerServicer(pb_grpc.SamplerServiceServicer):
    def __init__(self, models: dict[str, ServedModel]):
        self.models = models

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

    def _validate(self, request, served: ServedModel, context) -> Job:
        def bad(field, message):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}")

        classes = served.model.classes
        if request.class_name not in classes:
            bad(
                "class_name",
                f"unknown class {request.class_name!r}; the model's classes: {', '.join(classes)}",
            )
        if not 0 < request.count <= served.max_count:
            bad("count", f"must be between 1 and {served.max_count}, got {request.count}")
        steps = request.steps if request.HasField("steps") else served.default_steps
        if not 0 < steps <= MAX_STEPS:
            bad("steps", f"must be between 1 and {MAX_STEPS}, got {steps}")
        guidance = request.guidance_scale if request.HasField("guidance_scale") else served.default_guidance
        if not math.isfinite(guidance) or guidance < 0:
            bad("guidance_scale", f"must be a finite number >= 0, got {guidance}")
        scheduler = request.scheduler or served.default_scheduler
        if scheduler not in SCHEDULERS:
            bad("scheduler", f"unknown scheduler {scheduler!r}; valid schedulers: {', '.join(SCHEDULERS)}")
        if request.encoding not in (pb.ENCODING_UNSPECIFIED, pb.ENCODING_PNG, pb.ENCODING_RGB8):
            bad("encoding", f"unknown encoding {request.encoding}; valid: ENCODING_PNG, ENCODING_RGB8")
        return Job(request.class_name, request.count, request.seed, steps, float(guidance), scheduler)

    def Generate(self, request, context):
        served = self._model(request.model, context)
        job = self._validate(request, served, context)
        request_id = request.request_id or uuid.uuid4().hex[:12]
        encoding = pb.ENCODING_RGB8 if request.encoding == pb.ENCODING_RGB8 else pb.ENCODING_PNG
        provenance = Provenance(
            served.model.model_hash,
            job.class_name,
            job.scheduler,
            job.steps,
            job.guidance,
            served.model.backend_name,
        )
        start, sent, outcome = time.perf_counter(), 0, "ok"
        try:
            served.batcher.submit(job)
        except QueueFull as exc:
            self._log(request_id, request, 0, start, "resource_exhausted")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        # Cancellation, deadline and disconnect all end the RPC: drop the queued images at once.
        context.add_callback(lambda: served.batcher.cancel(job))
        try:
            for index, seed, pixels in job.stream():
                data = (
                    encode_png(pixels, provenance, index, seed)
                    if encoding == pb.ENCODING_PNG
                    else pixels.tobytes()
                )
                h, w = pixels.shape[:2]
                yield pb.GeneratedImage(
                    index=index,
                    seed=seed,
                    class_name=job.class_name,
                    width=w,
                    height=h,
                    encoding=encoding,
                    data=data,
                    model_hash=served.model.model_hash,
                    request_id=request_id,
                )
                sent += 1
            if sent < job.count:
                outcome = "cancelled"
        except Exception as exc:
            outcome = "error"
            context.abort(grpc.StatusCode.INTERNAL, f"sampling failed: {exc}")
        finally:
            if not context.is_active() and sent < job.count:
                outcome = "cancelled"
            self._log(request_id, request, sent, start, outcome)

    @staticmethod
    def _log(request_id, request, sent, start, outcome):
        seconds = time.perf_counter() - start
        log.info(
            "request=%s model=%s class=%s count=%d sent=%d duration=%.2fs images/s=%.1f outcome=%s",
            request_id,
            request.model,
            request.class_name,
            request.count,
            sent,
            seconds,
            sent / max(seconds, 1e-9),
            outcome,
        )
