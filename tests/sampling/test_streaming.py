"""Folders of any count in the memory of a few batches: `sample` and `generate` (with the service
in this process) traced by tracemalloc at 200 and at 2,000 images. Images held until the end would
add 1,800 x 3 KB (32 px) = 5.4 MB, and their PNGs as much again; the bound here is four batches
of images and their PNGs, plus what resuming needs to know per image (the indices on disk, a set of
ints: under 200 bytes an image)."""

import tracemalloc

import pytest

from polypsynth.sampling.model import open_model
from polypsynth.sampling.request import make_params, make_request
from polypsynth.sampling.to_folder import sample_to_folder

BATCH = 8
IMAGE = 32 * 32 * 3
BOUND = 4 * BATCH * 2 * IMAGE  # four batches of pixels and as much again of PNG bytes
INDEX = 200  # bytes per image index kept for resuming


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sample_holds_a_few_batches_whatever_the_count(tiny_bundle, tmp_path):
    model = open_model(tiny_bundle, "onnxruntime")

    def run(count):
        params = make_params("AD", count, steps=1)
        return lambda: sample_to_folder(model, params, tmp_path / str(count), batch_size=BATCH)

    run(8)()  # first-call allocations (sessions, schedulers) out of the comparison
    small, large = _peak(run(200)), _peak(run(2000))
    assert len(list((tmp_path / "2000" / "AD").glob("*.png"))) == 2000
    assert large - small < BOUND, (small, large)


@pytest.mark.slow
def test_generate_through_the_service_holds_a_few_batches(tiny_bundle, tmp_path):
    from polypsynth.serve.client import SamplerClient
    from polypsynth.serve.server import SamplerServer, ServerOptions
    from polypsynth.serve.to_folder import write_folder

    server = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=BATCH, max_wait_ms=1))
    server.start()
    try:
        with SamplerClient(f"localhost:{server.port}") as client:

            def run(count):
                return lambda: write_folder(
                    client, tmp_path / str(count), "tiny", make_request("AD", count, steps=1)
                )

            run(8)()
            small, large = _peak(run(200)), _peak(run(2000))
    finally:
        server.stop(0)
    assert len(list((tmp_path / "2000" / "AD").glob("*.png"))) == 2000
    assert large - small < BOUND + 1800 * INDEX, (small, large)
