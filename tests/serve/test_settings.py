"""One request, one set of settings: a model's defaults come from its bundle, GetModel reports
them, `sample` and `generate` both use them when a setting is left out, and what samples.jsonl
records equals the PNG's provenance to the bit (guidance travels as a double)."""

import json

import pytest
from click.testing import CliRunner

from polypsynth.cli import main
from polypsynth.export.bundle import export_bundle
from polypsynth.sampling.output import read_provenance
from polypsynth.sampling.request import Settings
from polypsynth.serve.client import SamplerClient
from polypsynth.serve.server import SamplerServer, ServerOptions
from polypsynth.serve.wire import provenance_of

DEFAULTS = Settings(steps=3, guidance=0.1, scheduler="euler")  # 0.1 has no exact float32


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("defaults") / "bundle"
    export_bundle(tiny_checkpoint, out, defaults=DEFAULTS)
    return out


@pytest.fixture(scope="module")
def server(bundle):
    s = SamplerServer({"tiny": bundle}, ServerOptions(port=0, max_batch=4, max_wait_ms=5)).start()
    yield s
    s.stop(grace=1)


def _rows_and_pngs(folder):
    rows = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    return rows, {r["index"]: read_provenance(folder / r["file"]) for r in rows}


def test_defaults_live_in_the_bundle_and_getmodel_reports_them(bundle, server):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["defaults"] == {"steps": 3, "guidance": 0.1, "scheduler": "euler"}
    with SamplerClient(f"127.0.0.1:{server.port}") as client:
        defaults = client.get_model("tiny").defaults
    assert (defaults.steps, defaults.guidance_scale, defaults.scheduler) == (3, 0.1, "euler")


@pytest.mark.parametrize("given", [[], ["--guidance", "0.1", "--steps", "3", "--scheduler", "euler"]])
def test_generate_and_sample_record_the_same_settings_to_the_bit(bundle, server, tmp_path, given):
    result = CliRunner().invoke(
        main,
        ["generate", "--server", f"127.0.0.1:{server.port}", "--model", "tiny", "--class", "NON_AD"]
        + ["--count", "3", "--seed", "4", "--out", str(tmp_path / "remote"), *given],
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        main,
        ["sample", "--model", str(bundle), "--class", "NON_AD", "--count", "3", "--seed", "4"]
        + ["--out", str(tmp_path / "local"), *given],
    )
    assert result.exit_code == 0, result.output
    remote_rows, remote_pngs = _rows_and_pngs(tmp_path / "remote" / "NON_AD")
    local_rows, local_pngs = _rows_and_pngs(tmp_path / "local" / "NON_AD")
    for rows, pngs in ((remote_rows, remote_pngs), (local_rows, local_pngs)):
        for row in rows:
            png = pngs[row["index"]]
            assert (row["steps"], row["guidance"], row["scheduler"]) == (3, 0.1, "euler")
            assert (png["steps"], png["guidance"], png["scheduler"]) == (
                "3",
                "0.1",
                "euler",
            )  # not 0.10000000149
    assert sorted(map(json.dumps, remote_rows)) == sorted(map(json.dumps, local_rows))
    for i in range(3):
        name = f"{i:06d}.png"
        assert (tmp_path / "remote" / "NON_AD" / name).read_bytes() == (
            tmp_path / "local" / "NON_AD" / name
        ).read_bytes()


def test_every_image_carries_its_settings(server):
    with SamplerClient(f"127.0.0.1:{server.port}") as client:
        (image,) = list(client.generate("tiny", "AD", 1, seed=2, steps=2, scheduler="ddim"))
    assert (image.steps, image.guidance_scale, image.scheduler, image.backend) == (
        2,
        0.1,
        "ddim",
        "onnxruntime",
    )
    assert provenance_of(image).guidance == 0.1
