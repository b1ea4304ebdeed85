"""SamplerClient: iterate images from a server, or write them into an image folder with the same
provenance as `polypsynth sample`. A `dns:///host:port` target with several replicas is balanced
by gRPC's own round_robin policy."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np

from polypsynth.errors import PolypsynthError
from polypsynth.sampling.output import ImageFolderWriter, Provenance
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2_grpc as pb_grpc

SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


class SamplerClient:
    def __init__(
        self, target: str, token: str | None = None, tls_ca: str | None = None, max_message_mb: int = 64
    ):
        options = [
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.max_receive_message_length", max_message_mb << 20),
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def list_models(self) -> list[pb.ModelInfo]:
        return list(self.stub.ListModels(pb.ListModelsRequest(), metadata=self.metadata).models)

    def get_model(self, name: str) -> pb.ModelInfo:
        return self.stub.GetModel(pb.GetModelRequest(name=name), metadata=self.metadata)

    def generate(
        self,
        model: str,
        class_name: str,
        count: int,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        scheduler: str = "",
        encoding: int = pb.ENCODING_PNG,
        request_id: str = "",
        timeout: float | None = None,
    ) -> Iterator[pb.GeneratedImage]:
        request = pb.GenerateRequest(
            model=model,
            class_name=class_name,
            count=count,
            seed=seed,
            scheduler=scheduler,
            encoding=encoding,
            request_id=request_id,
        )
        if steps is not None:
            request.steps = steps
        if guidance is not None:
            request.guidance_scale = guidance
        return self.stub.Generate(request, metadata=self.metadata, timeout=timeout)

    @staticmethod
    def pixels(image: pb.GeneratedImage) -> np.ndarray:
        if image.encoding == pb.ENCODING_RGB8:
            return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
        import io

        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"))

    def write_folder(
        self,
        out: str | Path,
        model: str,
        class_name: str,
        count: int,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        scheduler: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> Path:
        """Write OUT/<class>/ like `polypsynth sample`; a re-run with the same request skips the
        images already on disk, and a folder of another model, class or seed is refused."""
        info = self.get_model(model)
        provenance = Provenance(
            info.model_hash,
            class_name,
            scheduler or info.defaults.scheduler,
            steps if steps is not None else info.defaults.steps,
            float(guidance if guidance is not None else np.float32(info.defaults.guidance_scale)),
            info.backend,
        )
        writer = ImageFolderWriter(Path(out) / class_name, provenance, seed)
        done = writer.done()
        if progress:
            progress(len(done))
        missing = [i for i in range(count) if i not in done]
        if not missing:
            return writer.folder
        start = missing[0]  # resume from the first image not on disk
        stream = self.generate(model, class_name, count - start, seed + start, steps, guidance, scheduler)
        for image in stream:
            index = start + image.index
            if image.model_hash != info.model_hash:
                raise PolypsynthError(
                    f"server answered with model {image.model_hash}, expected {info.model_hash}"
                )
            if index not in done:
                writer.write(index, image.seed, png=image.data)
                if progress:
                    progress(1)
        return writer.folder
