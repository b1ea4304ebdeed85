"""The only place that knows the request's names on the wire: a `Request` to and from a
GenerateRequest, a model's `Settings` to and from the Defaults message, and what a
GeneratedImage says it was drawn with. Client and servicer both go through these functions."""

from __future__ import annotations

from polypsynth.sampling.output import Provenance
from polypsynth.sampling.request import Draw, Given, Params, Request, Settings
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb

# Request fields whose proto name differs (an error names the field as the caller sent it).
PROTO_FIELDS = {"guidance": "guidance_scale"}


def request_to_proto(
    model: str, request: Request, *, encoding: pb.Encoding = pb.ENCODING_PNG, request_id: str = ""
):
    """The GenerateRequest of `request` to model `model`; a setting left out is left unset."""
    draw, given = request.draw, request.given
    message = pb.GenerateRequest(
        model=model,
        class_name=draw.class_name,
        count=draw.count,
        seed=draw.seed,
        first_index=draw.first_index,
        scheduler=given.scheduler or "",
        encoding=encoding,
        request_id=request_id,
    )
    if given.steps is not None:
        message.steps = given.steps
    if given.guidance is not None:
        message.guidance_scale = given.guidance
    return message


def request_from_proto(message) -> Request:
    """The Request a GenerateRequest carries (settings not set are left to the model)."""
    return Request(
        Draw(message.class_name, message.count, message.seed, message.first_index),
        Given(
            steps=message.steps if message.HasField("steps") else None,
            guidance=message.guidance_scale if message.HasField("guidance_scale") else None,
            scheduler=message.scheduler or None,
        ),
    )


def settings_to_proto(settings: Settings):
    return pb.Defaults(steps=settings.steps, guidance_scale=settings.guidance, scheduler=settings.scheduler)


def settings_from_proto(message) -> Settings:
    return Settings(steps=message.steps, guidance=message.guidance_scale, scheduler=message.scheduler)


def image_to_proto(
    params: Params, provenance: Provenance, *, index: int, seed: int, pixels, data: bytes, **more
):
    """A GeneratedImage of a request's image: its settings, as drawn, beside its pixels."""
    h, w = pixels.shape[:2]
    return pb.GeneratedImage(
        index=index,
        seed=seed,
        class_name=params.class_name,
        width=w,
        height=h,
        data=data,
        model_hash=provenance.model_hash,
        steps=params.settings.steps,
        guidance_scale=params.settings.guidance,
        scheduler=params.settings.scheduler,
        backend=provenance.backend,
        **more,
    )


def provenance_of(image) -> Provenance:
    """The settings the server drew a GeneratedImage with, as it reports them."""
    return Provenance(
        model_hash=image.model_hash,
        class_name=image.class_name,
        scheduler=image.scheduler,
        steps=image.steps,
        guidance=image.guidance_scale,
        backend=image.backend,
    )
