import math
import re

import numpy as np
import pytest
import torch

from polypsynth.errors import SamplingError
from polypsynth.sampling.conditioning import Conditioning
from polypsynth.sampling.loop import sample_batch, sample_images
from polypsynth.sampling.model import open_model
from polypsynth.sampling.request import Settings, make_params
from polypsynth.sampling.schedulers import SCHEDULERS
from polypsynth.sampling.seeds import initial_noise

# Tolerance between backends and batch packings: float32 kernels differ in the last bits, which can
# move a pixel across a rounding boundary: at most 1 uint8 level is allowed (latents within 1e-3).
UINT8_TOL = 1


@pytest.fixture(scope="module")
def torch_model(tiny_checkpoint):
    return open_model(tiny_checkpoint, "torch")


@pytest.fixture(scope="module")
def ort_model(tiny_bundle):
    return open_model(tiny_bundle, "onnxruntime")


def _diff(a, b):
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_noise_is_per_image():
    both = initial_noise([5, 6], (4, 8, 8))
    assert torch.equal(both[1], initial_noise([6], (4, 8, 8))[0])
    assert not torch.equal(both[0], both[1])


def test_torch_and_onnxruntime_give_the_same_images(torch_model, ort_model):
    assert torch_model.model_hash == ort_model.model_hash  # provenance names the same model
    assert ort_model.classes == ["AD", "NON_AD"] and ort_model.latent_shape == (4, 8, 8)
    params = make_params("AD", 4, seed=10, steps=5, guidance=3.0, scheduler="ddim")
    a, b = sample_images(torch_model, params), sample_images(ort_model, params)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    assert _diff(a, b) <= UINT8_TOL


@pytest.mark.parametrize("which", ["torch", "onnxruntime"])
def test_batch_packing_does_not_change_images(which, torch_model, ort_model):
    model = torch_model if which == "torch" else ort_model
    params = make_params("NON_AD", 6, seed=100, steps=4, scheduler="dpm++")
    one_batch = sample_images(model, params, batch_size=6)
    singles = sample_images(model, params, batch_size=1)
    assert _diff(one_batch, singles) <= UINT8_TOL
    # A server packs images of other requests (and classes) alongside: the image stays the same.
    mixed = sample_batch(model, [999, 103, 7], ["AD", "NON_AD", "AD"], Settings(4, 3.0, "dpm++"))
    assert _diff(mixed[1], one_batch[3]) <= UINT8_TOL
    # Resuming at image 4 gives images 4 and 5 again.
    assert _diff(sample_images(model, params, batch_size=2, start=4), one_batch[4:]) <= UINT8_TOL


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_each_scheduler_runs(scheduler, torch_model):
    images = sample_images(torch_model, make_params("AD", 2, seed=1, steps=4, scheduler=scheduler))
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert images.std() > 0 and not np.array_equal(images[0], images[1])


def test_guidance_zero_is_the_unconditional_model(torch_model):
    """guidance 0 takes the unconditional pass alone; guidance 1 the conditional alone. With the
    class embedding replaced by the unconditional one, both must agree."""
    cond = torch_model.conditioning
    params0 = make_params("AD", 2, seed=4, steps=4, guidance=0.0, scheduler="ddim")
    uncond_only = sample_images(torch_model, params0)
    swapped = Conditioning(
        cond.prompts, cond.unconditional.expand_as(cond.embeddings).clone(), cond.unconditional
    )
    torch_model.conditioning = swapped
    try:
        as_class = sample_images(
            torch_model, make_params("AD", 2, seed=4, steps=4, guidance=1.0, scheduler="ddim")
        )
    finally:
        torch_model.conditioning = cond
    assert _diff(uncond_only, as_class) == 0
    guided = sample_images(torch_model, make_params("AD", 2, seed=4, steps=4, guidance=5.0, scheduler="ddim"))
    assert _diff(guided, uncond_only) > 0


def test_same_request_same_images(ort_model):
    params = make_params("AD", 2, seed=7, steps=3)
    assert np.array_equal(sample_images(ort_model, params), sample_images(ort_model, params))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (make_params("SSL", 1), r"class_name: unknown class 'SSL'; the model's classes: AD, NON_AD"),
        (make_params("AD", 0), "count: must be between 1 and 100000, got 0"),
        (make_params("AD", 100_001), "count: must be between 1 and 100000, got 100001"),
        (make_params("AD", 1, steps=0), "steps: must be between 1 and 500, got 0"),
        (make_params("AD", 1, steps=501), "steps: must be between 1 and 500, got 501"),
        (
            make_params("AD", 2, seed=2**64 - 1),
            re.escape(
                "seed: image i uses seed + i, so seed + count - 1 must be at most 18446744073709551615 (torch "
                "generators); got seed 18446744073709551615 with count 2"
            ),
        ),
        (make_params("AD", 1, guidance=-1.0), "guidance: must be a finite number >= 0, got -1.0"),
        (make_params("AD", 1, guidance=math.nan), "guidance: must be a finite number >= 0, got nan"),
        (
            make_params("AD", 1, scheduler="lms"),
            "scheduler: unknown scheduler 'lms'; valid schedulers: ddim, dpm\\+\\+, euler, pndm",
        ),
    ],
)
def test_bad_requests(params, message, ort_model):
    with pytest.raises(SamplingError, match=message):
        sample_images(ort_model, params)


def test_bad_backend_choices(tiny_checkpoint, tiny_bundle):
    with pytest.raises(
        SamplingError, match="unknown backend 'jax'; valid backends: torch, onnxruntime, tensorrt"
    ):
        open_model(tiny_bundle, "jax")
    with pytest.raises(
        SamplingError, match=r"backend 'onnxruntime' needs an exported bundle; .* is a checkpoint folder"
    ):
        open_model(tiny_checkpoint, "onnxruntime")
    with pytest.raises(
        SamplingError,
        match=r"onnxruntime provider 'cuda' is not available here; available providers: .*CPUExecutionProvider",
    ):
        open_model(tiny_bundle, "onnxruntime", providers=["cuda"])
    with pytest.raises(
        SamplingError,
        match=r"unknown compile mode 'turbo'; valid: False, True, default, reduce-overhead, max-autotune",
    ):
        open_model(tiny_checkpoint, "torch", compile="turbo")


try:
    import tensorrt  # noqa: F401  (whether this machine has it decides which test below runs)

    TENSORRT = True
except ImportError:
    TENSORRT = False


@pytest.mark.skipif(TENSORRT and torch.cuda.is_available(), reason="TensorRT and a GPU are here")
def test_tensorrt_backend_without_tensorrt_or_gpu_is_one_line(tiny_bundle):
    message = (
        "the tensorrt backend needs the TensorRT Python package and a CUDA GPU"
        if not TENSORRT
        else ("needs a CUDA GPU")
    )
    with pytest.raises(SamplingError, match=message):
        open_model(tiny_bundle, "tensorrt")


@pytest.mark.cuda
@pytest.mark.skipif(not (TENSORRT and torch.cuda.is_available()), reason="needs TensorRT and a CUDA GPU")
def test_tensorrt_backend_refuses_a_bundle_without_engines(tiny_bundle):
    with pytest.raises(SamplingError, match="has no TensorRT engines; export it with --tensorrt"):
        open_model(tiny_bundle, "tensorrt")


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++", "euler", "pndm"])
def test_every_scheduler_runs_the_largest_step_count_allowed(tiny_bundle, scheduler):
    """At 1000 steps (the model's training timesteps) ddim, dpm++ and pndm index past their tables
    after the whole batch was computed, and dpm++ turns NaN at 999: at the limit all run finite."""
    import json
    import warnings

    import torch

    from polypsynth.sampling.request import MAX_STEPS
    from polypsynth.sampling.schedulers import make_scheduler

    config = json.loads((tiny_bundle / "manifest.json").read_text())["scheduler_config"]
    sched = make_scheduler(scheduler, config)
    sched.set_timesteps(MAX_STEPS)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen) * sched.init_noise_sigma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in sched.timesteps:
            eps = 0.1 * torch.randn(x.shape, generator=gen)
            x = sched.step(eps, t, sched.scale_model_input(x, t)).prev_sample
    assert torch.isfinite(x).all() and len(sched.timesteps) >= MAX_STEPS


def test_sample_refuses_seeds_and_batch_sizes_out_of_range(tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from polypsynth.cli import main

    base = [
        "sample",
        "--model",
        str(tiny_bundle),
        "--class",
        "AD",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(main, [*base, "--seed", str(2**64 - 1), "--count", "2"])
    assert result.exit_code == 1 and "seed + count - 1 must be at most 18446744073709551615" in result.output
    result = CliRunner().invoke(main, [*base, "--batch-size", "0"])
    assert (
        result.exit_code == 2
        and "Invalid value for '--batch-size': 0 is not in the range x>=1" in result.output
    )
    assert not (tmp_path / "o").exists()
    result = CliRunner().invoke(
        main,
        [
            "generate",
            "--server",
            "127.0.0.1:1",
            "--model",
            "m",
            "--class",
            "AD",
            "--seed",
            "-1",
            "--out",
            "x",
        ],
    )
    assert (
        result.exit_code == 2
        and "'--seed': -1 is not in the range 0<=x<=18446744073709551615" in result.output
    )
