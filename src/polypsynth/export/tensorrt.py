"""TensorRT engines from a bundle's ONNX graphs, with optimisation profiles from the same specs
and a timing cache kept beside them. Needs the tensorrt package and a CUDA GPU.

Networks are strongly typed: each tensor keeps the type the ONNX graph gives it, so an fp16
bundle builds fp16 engines and an fp32 bundle fp32 ones. TensorRT 10.12+ and 11.x build them this
way (11.x removed the weakly typed precision flags)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from polypsynth.backends.tensorrt_backend import import_tensorrt
from polypsynth.errors import SamplingError
from polypsynth.export.onnx import ExportError


def build_engines(bundle: Path, specs: dict, batch_sizes: Sequence[int]) -> dict:

    try:
        trt = import_tensorrt()
    except SamplingError as exc:
        raise ExportError(f"--tensorrt: {exc}") from exc
    logger = trt.Logger(trt.Logger.WARNING)
    cache_path = bundle / "timing.cache"
    engines: dict = {"batch_sizes": sorted(batch_sizes), "strongly_typed": True}
    for name, spec in specs.items():
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(bundle / f"{name}.onnx")):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT could not parse {name}.onnx: {errors or 'no error reported'}")
        config = builder.create_builder_config()
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        profile = builder.create_optimization_profile()
        for tensor, (lo, opt, hi) in spec.profile(batch_sizes).items():
            profile.set_shape(tensor, lo, opt, hi)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError(f"TensorRT failed to build an engine for {name} (see its log above)")
        (bundle / f"{name}.plan").write_bytes(bytes(serialized))
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
        engines[name] = f"{name}.plan"
    return engines
